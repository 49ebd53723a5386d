"""The one in-memory form every data source produces: images, paraphrased captions, class labels."""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import torch


@dataclass
class ImageTextSet:
    images: torch.Tensor  # uint8 (N, 3, H, W)
    captions: list[list[str]]  # captions[i]: paraphrases of image i, the same count for every image
    labels: dict[str, torch.Tensor]  # zero-shot task -> int64 (N,) class index
    classnames: dict[str, list[str]]  # zero-shot task -> class names, indexed by label
    templates: dict[str, list[str]]  # zero-shot task -> prompt templates, each containing "{}"
    # word -> its alternatives in the data set's own captions, for text augmentation; with none
    # declared, synonym replacement leaves captions unchanged (there is no WordNet to fall back on)
    synonyms: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def captions_per_image(self) -> int:
        return len(self.captions[0])

    def subset(self, index: torch.Tensor | slice) -> "ImageTextSet":
        rows = torch.arange(len(self))[index].tolist()
        return ImageTextSet(
            images=self.images[rows],
            captions=[self.captions[i] for i in rows],
            labels={k: v[rows] for k, v in self.labels.items()},
            classnames=self.classnames,
            templates=self.templates,
            synonyms=self.synonyms,
        )


def synonym_map(*groups: Iterable[str]) -> dict[str, tuple[str, ...]]:
    """Each member of each group of interchangeable words -> the other members of its group."""
    synonyms: dict[str, tuple[str, ...]] = {}
    for group in groups:
        members = tuple(group)
        for word in members:
            synonyms[word] = tuple(other for other in members if other != word)
    return synonyms
