"""One sample of streamed real data as read from a shard or a CSV row, before its image is decoded.

Readers of every format produce Records, so skipping bad samples, decoding and eval-set building are
written once. A sample is skipped for one of SKIP_REASONS: `corrupt_image` (no image file, or bytes PIL
cannot decode) or `missing_caption` (no caption, or only empty ones).
"""
from __future__ import annotations

import io
import json
import warnings
from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image
from torchvision.io import ImageReadMode
from torchvision.io import decode_image as decode_image_tensor

from ito_sweeps.errors import UserError

SKIP_REASONS = ("corrupt_image", "missing_caption")
IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp")  # what img2dataset and CLIP_benchmark write
# torchvision 0.29 marks its decoders deprecated in favour of TorchCodec's (the same libjpeg-turbo, the same
# speed here); until torchvision drops them they need no extra package, also on GPU images without TorchCodec
TORCHVISION_DECODE_DEPRECATED = "The image decoding and encoding capabilities of TorchVision are deprecated"
warnings.filterwarnings("ignore", message=TORCHVISION_DECODE_DEPRECATED, category=DeprecationWarning)
# PIL raises these for truncated, garbled or absurdly large images; anything else is a bug worth seeing
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, Image.DecompressionBombError)


class DataError(UserError, RuntimeError):
    """Streamed data that cannot train anything, e.g. a pass in which every sample was skipped."""


@dataclass
class Record:
    key: str
    image: bytes | None  # encoded (PNG, JPEG, ...); None when the sample has no image file
    captions: list[str] = field(default_factory=list)
    label: int | None = None  # the class of a zero-shot task, when the data carries one


def from_webdataset(sample: dict) -> Record:
    """A sample grouped by webdataset (extension -> bytes) in img2dataset or CLIP_benchmark layout.

    Captions: the `captions` list of key.json when it has one (several paraphrases), else the lines of key.txt.
    Label: key.cls (CLIP_benchmark), else the `label` of key.json.
    """
    image = next((sample[ext] for ext in IMAGE_EXTENSIONS if ext in sample), None)
    try:
        meta = json.loads(sample["json"]) if "json" in sample else {}
    except ValueError:
        meta = {}  # img2dataset's json is metadata only; a broken one costs the sample nothing else
    captions = meta.get("captions") if isinstance(meta, dict) else None
    if not isinstance(captions, list):
        # CLIP_benchmark's retrieval layout keeps an image's captions one per line
        captions = sample["txt"].decode("utf-8", "replace").splitlines() if "txt" in sample else []
    label = int(sample["cls"]) if "cls" in sample else meta.get("label") if isinstance(meta, dict) else None
    return Record(sample["__key__"], image, clean_captions(captions), label)


def clean_captions(captions: list) -> list[str]:
    return [c.strip() for c in captions if isinstance(c, str) and c.strip()]


def skip_reason(record: Record) -> str | None:
    """Why a record cannot be used before its image is even decoded (checked first: it is free)."""
    if not record.captions:
        return "missing_caption"
    if record.image is None:
        return "corrupt_image"
    return None


def decode_image(data: bytes) -> Image.Image | None:
    """The image as RGB, fully decoded (so truncation surfaces here), or None if PIL cannot read it."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            return image.convert("RGB")
    except _DECODE_ERRORS:
        return None


def decode_pixels(data: bytes) -> torch.Tensor | None:
    """The image as uint8 RGB (3, H, W), or None if it cannot be decoded.

    torchvision's decoders (libjpeg-turbo, libpng, libwebp straight into a tensor) take about 70% of PIL's
    CPU time on a 224-px JPEG (benchmarks/loader_throughput.py); what they refuse, PIL gets a second try at.
    """
    try:
        return decode_image_tensor(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=ImageReadMode.RGB)
    except RuntimeError:
        image = decode_image(data)
        return None if image is None else to_uint8_tensor(image)


def jpeg_size(data: bytes) -> tuple[int, int] | None:
    """(height, width) of a complete RGB or greyscale JPEG, from its header, or None if data is anything else.

    What data.decode=gpu leaves to the GPU's decoder: a cut-off file (no end-of-image marker) or a header PIL
    cannot parse is decoded on the CPU instead, where it is skipped as corrupt, as are other formats and CMYK.
    """
    if not data.startswith(b"\xff\xd8") or not data.rstrip(b"\x00").endswith(b"\xff\xd9"):
        return None
    try:
        with Image.open(io.BytesIO(data)) as image:  # reads the header only
            if image.format != "JPEG" or image.mode not in ("RGB", "L"):
                return None
            width, height = image.size
            return height, width
    except _DECODE_ERRORS:
        return None


def to_uint8_tensor(image: Image.Image) -> torch.Tensor:
    """PIL RGB -> uint8 (3, H, W)."""
    return torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1)
