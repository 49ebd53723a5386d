"""Real handwriting as a second data option: scikit-learn's bundled 8x8 digits.

The 1797 scans ship inside scikit-learn, so nothing is downloaded. Each scan is upscaled
bilinearly to the requested size and tinted, a random bright ink on a random dark paper,
so that colour carries no information about the digit. Captions are template sentences
naming the digit; the zero-shot task "digit" asks for its name.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits

from ito_sweeps.data.imageset import ImageTextSet, synonym_map

DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
INK_RANGE = (0.5, 1.0)  # per RGB channel, as a fraction of full intensity
PAPER_RANGE = (0.0, 0.15)

# Every caption spells the digit out, and some add the numeral as well.
CAPTION_TEMPLATES = (
    "a handwritten digit {word}",
    "the number {word}",
    "a hand-written {word}",
    "the digit {word}, written by hand",
    "a scan of a handwritten {word} ({numeral})",
    "the numeral {numeral}, a handwritten {word}",
    "a picture of the number {word}",
)
# Words the caption templates use interchangeably, for text augmentation's synonym replacement.
SYNONYM_GROUPS: tuple[tuple[str, ...], ...] = (("digit", "number", "numeral"), ("handwritten", "hand-written"))
DIGIT_TEMPLATES = [
    "a handwritten digit {}.",
    "the number {}.",
    "a hand-written {}.",
    "a picture of the digit {}.",
]


def load_digits_set(seed: int, image_size: int, captions_per_image: int) -> ImageTextSet:
    """All 1797 digits in an order shuffled by seed, as image_size x image_size colour images."""
    rng = np.random.default_rng(seed)
    digits = load_digits()
    order = rng.permutation(len(digits.target))
    labels = digits.target[order]
    return ImageTextSet(
        images=_tinted_images(rng, digits.images[order], image_size),
        captions=_captions(rng, labels, captions_per_image),
        labels={"digit": torch.from_numpy(labels).long()},
        classnames={"digit": list(DIGIT_WORDS)},
        templates={"digit": DIGIT_TEMPLATES},
        synonyms=synonym_map(*SYNONYM_GROUPS),
    )


def _tinted_images(rng: np.random.Generator, scans: np.ndarray, size: int) -> torch.Tensor:
    """uint8 (N, 3, size, size) from scans (N, 8, 8) with values 0..16."""
    ink_amount = torch.from_numpy(scans / 16.0).float().unsqueeze(1)
    ink_amount = F.interpolate(ink_amount, size=(size, size), mode="bilinear", align_corners=False)
    n = len(scans)
    ink = torch.from_numpy(rng.uniform(*INK_RANGE, size=(n, 3, 1, 1))).float()
    paper = torch.from_numpy(rng.uniform(*PAPER_RANGE, size=(n, 3, 1, 1))).float()
    images = paper + ink_amount.clamp(0, 1) * (ink - paper)
    return (images * 255).round().to(torch.uint8)


def _captions(rng: np.random.Generator, labels: np.ndarray, per_image: int) -> list[list[str]]:
    """per_image paraphrases per image, cycling through the templates in a random order."""
    n_templates = len(CAPTION_TEMPLATES)
    order = np.argsort(rng.random((len(labels), n_templates)), axis=1)
    return [
        [
            CAPTION_TEMPLATES[order[i, k % n_templates]].format(word=DIGIT_WORDS[label], numeral=label)
            for k in range(per_image)
        ]
        for i, label in enumerate(labels)
    ]
