"""The ITO image-view augmentation: random resized crop, colour jitter, random grayscale.

It follows torchvision's RandomResizedCrop, ColorJitter and RandomGrayscale, sampled the
same way, but every random number comes from an explicit torch.Generator and never from
the global RNG, so a view is reproducible from (seed, epoch, sample) alone, whatever the
data-loader workers or the training loop draw elsewhere.

A view is split into its parameters and their application. `draw_view` draws the parameters
(crop box, whether to jitter, the four jitter factors and the order of the ops, grayscale)
as one row of VIEW_PARAMS numbers: that is all a loader process does per view. The pixels are
made a batch at a time on the training device (data/batch_augment.py). `augment_view` applies
one row to one image with torchvision's own ops; it is the reference the batched path is
tested against, and it shows in a dozen lines what a view is.

Each view takes one fixed-size batch of uniform numbers from the generator. A fixed count
keeps the generator's stream aligned from view to view however many crop attempts were
needed, and one call is cheaper than a dozen small ones.
"""
from __future__ import annotations

import math

import torch
from torchvision.transforms.v2 import functional as F

CROP_ATTEMPTS = 10  # torchvision's RandomResizedCrop.get_params tries this often
_CROP_DRAWS = 4 * CROP_ATTEMPTS  # scale, log-ratio, top, left per attempt
_JITTER_DRAWS = 1 + 4 + 4  # apply?, four factors, four keys for the order of the ops
_DRAWS_PER_VIEW = _CROP_DRAWS + _JITTER_DRAWS + 1  # + grayscale?
_HUE_SECTOR_OFFSETS = torch.tensor([5.0, 3.0, 1.0]).view(3, 1, 1)  # red, green, blue

# The columns of a view's parameter row. ORDER holds the jitter ops (BRIGHTNESS..HUE, as 0..3) in the
# order they apply, NO_OP where none does (jitter not drawn, or an op of strength 0).
TOP, LEFT, HEIGHT, WIDTH = 0, 1, 2, 3
FACTORS = slice(4, 8)  # brightness, contrast, saturation, hue
ORDER = slice(8, 12)
GRAYSCALE = 12
VIEW_PARAMS = 13
BRIGHTNESS, CONTRAST, SATURATION, HUE, NO_OP = 0, 1, 2, 3, -1


def draw_view(
    height: int,
    width: int,
    generator: torch.Generator,
    *,
    crop_scale: tuple[float, float],
    crop_ratio: tuple[float, float],
    jitter: tuple[float, float, float, float],
    jitter_p: float,
    grayscale_p: float,
) -> list[float]:
    """The parameters of one random view of a height x width image (a row of VIEW_PARAMS numbers).

    jitter holds the (brightness, contrast, saturation, hue) strengths of ColorJitter.
    """
    draws = torch.rand(_DRAWS_PER_VIEW, generator=generator).tolist()
    crop_draws, jitter_draws, grayscale_draw = draws[:_CROP_DRAWS], draws[_CROP_DRAWS:-1], draws[-1]
    row = [0.0] * VIEW_PARAMS
    row[TOP], row[LEFT], row[HEIGHT], row[WIDTH] = _crop_box(height, width, crop_scale, crop_ratio, crop_draws)
    order = [NO_OP] * 4
    factor_draws, order_keys = jitter_draws[1:5], jitter_draws[5:]
    ranges = [_around_one(s) for s in jitter[:3]] + [(-jitter[3], jitter[3])]
    row[FACTORS] = [_between(r, u) for r, u in zip(ranges, factor_draws)]
    if jitter_draws[0] < jitter_p:
        # Sorting by independent uniform keys gives a uniformly random permutation; ColorJitter leaves
        # out an op of strength 0.
        applied = [op for op in sorted(range(4), key=order_keys.__getitem__) if jitter[op] > 0]
        order[: len(applied)] = applied
    row[ORDER] = order
    row[GRAYSCALE] = float(grayscale_draw < grayscale_p)
    return row


def augment_view(image: torch.Tensor, generator: torch.Generator, *, size: int | None = None,
                 **augment) -> torch.Tensor:
    """A random view of a float (3, H, W) image in [0, 1], in the same range, one op at a time.

    The view has the image's shape, or is size x size when size is given: RandomResizedCrop(size), so a
    view can be cut straight from a full-resolution decoded image without resizing it first. augment: the
    keywords of draw_view (AugmentConfig's fields).
    """
    return apply_view(image, draw_view(*image.shape[-2:], generator, **augment), size)


def apply_view(image: torch.Tensor, row: list[float], size: int | None = None) -> torch.Tensor:
    """One parameter row applied with torchvision's ops: the reference for data/batch_augment.py."""
    top, left, height, width = (int(v) for v in row[:4])
    out = list(image.shape[-2:]) if size is None else [size, size]
    view = F.resized_crop(image, top, left, height, width, out, antialias=True)
    adjust = (F.adjust_brightness, F.adjust_contrast, F.adjust_saturation, adjust_hue)
    for op in row[ORDER]:
        if op != NO_OP:
            view = adjust[int(op)](view, row[FACTORS][int(op)])
    if row[GRAYSCALE]:
        view = F.rgb_to_grayscale(view, num_output_channels=3)
    return view.clamp(0.0, 1.0)


def _crop_box(
    height: int,
    width: int,
    scale: tuple[float, float],
    ratio: tuple[float, float],
    draws: list[float],
) -> tuple[int, int, int, int]:
    """(top, left, height, width) as RandomResizedCrop.get_params samples it."""
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for attempt in range(CROP_ATTEMPTS):
        u_scale, u_ratio, u_top, u_left = draws[4 * attempt : 4 * attempt + 4]
        target_area = area * _between(scale, u_scale)
        aspect = math.exp(_between(log_ratio, u_ratio))
        w = round(math.sqrt(target_area * aspect))
        h = round(math.sqrt(target_area / aspect))
        if 0 < w <= width and 0 < h <= height:
            # Same as randint(0, height - h + 1): a uniform draw scaled and floored.
            return int(u_top * (height - h + 1)), int(u_left * (width - w + 1)), h, w
    return _centre_crop(height, width, ratio)


def _centre_crop(height: int, width: int, ratio: tuple[float, float]) -> tuple[int, int, int, int]:
    """torchvision's fallback: the largest centred crop whose aspect lies within ratio."""
    in_ratio = width / height
    if in_ratio < min(ratio):
        w, h = width, round(width / min(ratio))
    elif in_ratio > max(ratio):
        w, h = round(height * max(ratio)), height
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def adjust_hue(image: torch.Tensor, factor: float | torch.Tensor) -> torch.Tensor:
    """F.adjust_hue for float RGB images (equal within 2e-6), in elementwise ops only.

    factor: a number, or float64 factors that broadcast against the image (one per image of a batch).

    torchvision's version costs ~300 us on a 32x32 image and its aminmax and gather
    can take milliseconds when intra-op threads compete for busy cores; this one takes
    ~100 us either way. It rotates the hue in sixths of a turn and maps back with
    rgb = value - chroma * clamp(min(k, 4 - k), 0, 1), k = (hue + n) mod 6, n = 5, 3, 1.
    """
    r, g, b = image.unbind(-3)
    value = torch.maximum(torch.maximum(r, g), b).unsqueeze(-3)
    chroma = value - torch.minimum(torch.minimum(r, g), b).unsqueeze(-3)
    r, g, b = (c.unsqueeze(-3) for c in (r, g, b))
    # Grey pixels have no hue; any finite one works because their chroma is 0.
    safe_chroma = torch.where(chroma > 0, chroma, 1.0)
    hue = torch.where(
        value == r,
        (g - b) / safe_chroma,
        torch.where(value == g, (b - r) / safe_chroma + 2.0, (r - g) / safe_chroma + 4.0),
    )
    shift = torch.as_tensor(6.0 * factor, dtype=image.dtype, device=image.device)  # rounded as a scalar is
    k = (hue + shift + _HUE_SECTOR_OFFSETS.to(image.device)).remainder_(6.0)
    return value - chroma * torch.minimum(k, 4.0 - k).clamp_(0.0, 1.0)


def _around_one(strength: float) -> tuple[float, float]:
    return max(0.0, 1.0 - strength), 1.0 + strength


def _between(bounds: tuple[float, float], u: float) -> float:
    """Map a uniform draw u in [0, 1) onto [low, high)."""
    low, high = bounds
    return low + (high - low) * u
