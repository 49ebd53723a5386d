"""A streamed split's first samples as an in-memory ImageTextSet, for evaluation and the linear probe.

Images are resized (shorter side to image_size, bicubic) and centre-cropped exactly as open_clip's
preprocessing of an exported model does, so CLIP_benchmark sees the same pixels as the platform.
Captions: the first c of each sample, c the smallest caption count in the split, at most
data.captions_per_image (retrieval needs the same count per image). Labels and zero-shot classes come
with the data when every sample has a label (key.cls or json `label`) and classnames.txt and
zeroshot_classification_templates.txt (CLIP_benchmark's files, one entry per line, templates with
`{c}` or `{}`) lie next to the data or one folder up; otherwise the split has no labels, and evaluation
reports retrieval and geometry only.
"""
from __future__ import annotations

from itertools import islice
from pathlib import Path

import torch
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as TF

from ito_sweeps.data.imageset import ImageTextSet
from ito_sweeps.data.records import DataError, decode_image, skip_reason, to_uint8_tensor

TASK = "class"  # the zero-shot task of real data; evaluation reports it as zeroshot_top1
CLASSNAMES_FILE = "classnames.txt"
TEMPLATES_FILE = "zeroshot_classification_templates.txt"


def read_heldout(source, folders: list[Path], n: int, image_size: int, captions_per_image: int) -> ImageTextSet:
    """Up to n usable samples of source, in stored order (corrupt or captionless ones are passed over)."""
    kept = islice(filter(None, (_usable(r, image_size) for r in source.records(source.units))), n)
    images, captions, labels = [], [], []
    for pixels, caps, label in kept:
        images.append(pixels)
        captions.append(caps)
        labels.append(label)
    if not images:
        raise DataError(f"{source.describe(source.units)}: no usable sample (every image corrupt or captionless)")
    per_image = min(captions_per_image, *map(len, captions))
    data = ImageTextSet(torch.stack(images), [caps[:per_image] for caps in captions], {}, {}, {})
    classes = _classes(folders)
    if classes is not None and None not in labels:
        data.labels[TASK] = torch.tensor(labels, dtype=torch.int64)
        data.classnames[TASK], data.templates[TASK] = classes
    return data


def _usable(record, image_size: int):
    image = decode_image(record.image) if skip_reason(record) is None else None
    if image is None:
        return None
    image = TF.center_crop(TF.resize(image, image_size, interpolation=InterpolationMode.BICUBIC), image_size)
    return to_uint8_tensor(image), record.captions, record.label


def _classes(folders: list[Path]) -> tuple[list[str], list[str]] | None:
    for folder in folders:
        names, templates = folder / CLASSNAMES_FILE, folder / TEMPLATES_FILE
        if names.is_file() and templates.is_file():
            return _lines(names), [t.replace("{c}", "{}") for t in _lines(templates)]
    return None


def _lines(path: Path) -> list[str]:
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]
