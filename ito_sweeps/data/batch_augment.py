"""Views made a batch at a time on the training device: crop and resize, colour jitter, grayscale, normalisation.

Loader processes only decode each image once to uint8 and draw its views' parameter rows (data/augment.py).
The training process turns a whole batch of them into normalised views here, on its own device, so on a GPU
the pixel work costs the CPU nothing. It is plain torch on any device, so CPU runs and the tests take the same
code (the tests also run the accelerator's form of it on the CPU); data/augment.py's `apply_view` is the
per-image reference it is tested against.

Crop and resize are one linear map per view and axis: a (size x H) matrix holding the weights of torch's
antialiased bilinear resize of the crop's rows (zero outside the crop), likewise for columns, so a view is
Wy @ image @ Wx^T: two batched matmuls for all views at once. The weights are those of torch's
_upsample_bilinear2d_aa (a triangle filter widened by the downscale factor, renormalised at the crop's edges),
so views equal torchvision's resized_crop(antialias=True) up to float rounding. Images of different sizes in
one batch are zero-padded by the collation; padding lies outside every crop, so its weight is 0. The matmul
reads the whole image for every output row, which a GPU does not notice but one CPU core does from about
64 px views on: there the CPU resizes each crop by torch's own kernel (`crop_resize_each`) instead.

Colour jitter applies each view's ops in that view's own order: at each of the four positions every view takes
its own op. Brightness, contrast and saturation are all torchvision's blend x * f + other * (1 - f), clamped,
with other = 0, the image's mean grey level, or its grey image; a view whose op there is hue, or none, blends
with f = 1, which leaves it as it is.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD
from torchvision.io import ImageReadMode, decode_jpeg

from ito_sweeps.data.augment import (CONTRAST, FACTORS, GRAYSCALE, HEIGHT, HUE, LEFT, NO_OP, ORDER, SATURATION, TOP,
                                     WIDTH, adjust_hue)
from ito_sweeps.data.records import DataError

MEAN = torch.tensor(OPENAI_DATASET_MEAN).view(3, 1, 1)
STD = torch.tensor(OPENAI_DATASET_STD).view(3, 1, 1)
CPU_CHUNK_VALUES = 2**19  # floats of views made at once on the CPU: about 2 MB, within a core's cache
CPU_MATMUL_MAX_SIZE = 40  # on one core the matmul resize was faster up to 32-48 px views, 3-7x slower from 64 px


def device_pixels(pixels: torch.Tensor | list[torch.Tensor], device: torch.device) -> torch.Tensor:
    """A loader batch's images as one uint8 (B, 3, H, W) on the device. A list holds still-encoded JPEGs
    (data.decode=gpu), decoded here together, by nvJPEG on a GPU, among images the loader decoded already."""
    if isinstance(pixels, torch.Tensor):
        return pixels.to(device, non_blocking=True)
    encoded = [i for i, p in enumerate(pixels) if p.dim() == 1]
    try:
        decoded = decode_jpeg([pixels[i] for i in encoded], mode=ImageReadMode.RGB, device=device)
    except RuntimeError as err:
        raise DataError(
            f"a JPEG whose header and end marker look whole failed to decode on {device} ({err}); train with "
            f"data.decode=cpu, which skips and counts corrupt images"
        ) from None
    images = [p.to(device, non_blocking=True) for p in pixels]
    for i, image in zip(encoded, decoded):
        images[i] = image
    return pad_stack(images)


def pad_stack(images: list[torch.Tensor]) -> torch.Tensor:
    """uint8 (3, h, w) images -> (B, 3, H, W), each zero-padded at the bottom and right to the largest size."""
    height, width = max(p.shape[1] for p in images), max(p.shape[2] for p in images)
    out = torch.zeros(len(images), 3, height, width, dtype=torch.uint8, device=images[0].device)
    for row, image in zip(out, images):
        row[:, : image.shape[1], : image.shape[2]] = image
    return out


def make_views(pixels: torch.Tensor, params: torch.Tensor, size: int, whole_batch: bool | None = None) -> torch.Tensor:
    """uint8 images (B, 3, H, W) and their views' float64 parameter rows (B, K, VIEW_PARAMS), on one device
    -> normalised views (B, K, 3, size, size).

    whole_batch (by default: on an accelerator) computes every op for every view and keeps each view's own
    result, resizing by matmul: a few large kernels and no wait for the device. Otherwise each op runs on
    the views it applies to, and views above CPU_MATMUL_MAX_SIZE are resized one crop at a time by torch's
    own kernel. Both give the same views; the tests run both on the CPU.
    """
    whole_batch = pixels.device.type != "cpu" if whole_batch is None else whole_batch
    if pixels.device.type != "cpu":
        return _views(pixels, params, size, whole_batch)
    # Whole-batch temporaries of 224-px views overflow the CPU's caches and cost a page fault per fresh
    # allocation: a few samples at a time ran twice as fast (batch 32, 224 px: 9.3 against 18.0 ms a sample).
    chunk = max(1, CPU_CHUNK_VALUES // (params.shape[1] * 3 * size * size))
    out = torch.empty(*params.shape[:2], 3, size, size)
    for start in range(0, len(pixels), chunk):
        part = slice(start, start + chunk)
        out[part] = _views(pixels[part], params[part], size, whole_batch)
    return out


def _views(pixels: torch.Tensor, params: torch.Tensor, size: int, whole_batch: bool) -> torch.Tensor:
    batch, views = params.shape[:2]
    rows = params.flatten(0, 1)
    images = pixels.float() / 255
    each = not whole_batch and size > CPU_MATMUL_MAX_SIZE
    out = (crop_resize_each if each else crop_resize)(images, params, size).flatten(0, 1)
    out = colour_jitter(out, rows[:, FACTORS], rows[:, ORDER].long(), whole_batch)
    out = _where_views(rows[:, GRAYSCALE].bool(), whole_batch, out, lambda x: grey(x).expand_as(x))
    return normalize(out.clamp(0.0, 1.0)).unflatten(0, (batch, views))


def crop_resize(images: torch.Tensor, params: torch.Tensor, size: int) -> torch.Tensor:
    """float images (B, 3, H, W) -> each view's crop resized to size x size, (B, K, 3, size, size)."""
    batch, views = params.shape[:2]
    rows = params.flatten(0, 1)
    height, width = images.shape[-2:]
    wy = resize_weights(rows[:, TOP], rows[:, HEIGHT], height, size).view(batch, views, 1, size, height)
    wx = resize_weights(rows[:, LEFT], rows[:, WIDTH], width, size).view(batch, views, 1, size, width)
    return wy @ (images.unsqueeze(1) @ wx.transpose(-1, -2))


def crop_resize_each(images: torch.Tensor, params: torch.Tensor, size: int) -> torch.Tensor:
    """crop_resize one view at a time by torch's antialiased resize of the crop alone, whose cost grows with
    the crop where the matmul's grows with the image times the view."""
    boxes = params[..., [TOP, LEFT, HEIGHT, WIDTH]].long().tolist()
    out = images.new_empty(*params.shape[:2], 3, size, size)
    for image, image_boxes, image_views in zip(images, boxes, out):
        for (top, left, height, width), view in zip(image_boxes, image_views):
            crop = image[None, :, top : top + height, left : left + width]
            view.copy_(F.interpolate(crop, size=(size, size), mode="bilinear", antialias=True, align_corners=False)[0])
    return out


def resize_weights(start: torch.Tensor, length: torch.Tensor, in_size: int, out_size: int) -> torch.Tensor:
    """(N, out_size, in_size) float32: row i weighs the pixels of an axis of in_size that output pixel i of an
    antialiased bilinear resize of [start, start + length) to out_size reads; start, length: float64 (N,)."""
    f64 = dict(dtype=torch.float64, device=start.device)
    length = length.view(-1, 1, 1)
    scale = length / out_size
    shrinking = scale >= 1.0
    support = torch.where(shrinking, scale, 1.0)  # bilinear's one pixel either side, widened when shrinking
    inverse = torch.where(shrinking, 1.0 / scale, 1.0)
    centre = scale * (torch.arange(out_size, **f64).view(1, -1, 1) + 0.5)
    position = torch.arange(in_size, **f64).view(1, 1, -1) - start.view(-1, 1, 1)  # within the crop
    # torch's window: int64 casts truncate, and the crop's edges bound it
    low = (centre - support + 0.5).trunc().clamp(min=0.0)
    high = torch.minimum((centre + support + 0.5).trunc(), length)
    weights = (1.0 - ((position - centre + 0.5) * inverse).abs()).clamp(min=0.0)
    weights = torch.where((position >= low) & (position < high), weights, 0.0)
    return (weights / weights.sum(-1, keepdim=True)).float()


def colour_jitter(views: torch.Tensor, factors: torch.Tensor, order: torch.Tensor, whole_batch: bool) -> torch.Tensor:
    """views (N, 3, S, S) in [0, 1]; factors float64 (N, 4); order (N, 4): each view's ops as they apply;
    whole_batch: as in make_views.

    A view's hue shift splits its other ops into those before and those after it, so the (costly) hue
    shift runs once for the whole batch, between the blends that precede it and those that follow it.
    """
    positions = torch.arange(order.shape[1], device=order.device)
    hue_at = torch.where(order == HUE, positions, order.shape[1]).amin(1)  # past the end: no hue shift
    for position in positions[:-1].tolist():
        views = _blend_step(views, order[:, position], factors, hue_at > position, whole_batch)
    hue = factors[:, HUE].view(-1, 1, 1, 1)
    views = _where_views(hue_at < order.shape[1], whole_batch, views, adjust_hue, hue)
    for position in positions[1:].tolist():
        views = _blend_step(views, order[:, position], factors, hue_at < position, whole_batch)
    return views


def _blend_step(views: torch.Tensor, op: torch.Tensor, factors: torch.Tensor, before: torch.Tensor,
                whole_batch: bool) -> torch.Tensor:
    """Each view's brightness, contrast or saturation op (op (N,)) where `before` and op is one of them."""
    selected = before & (op != NO_OP) & (op != HUE)
    ratio = factors.gather(1, op.clamp(min=0).unsqueeze(1)).view(-1, 1, 1, 1)
    kind = op.view(-1, 1, 1, 1)

    def blend(x: torch.Tensor, ratio: torch.Tensor, kind: torch.Tensor) -> torch.Tensor:
        # x * ratio + other * (1 - ratio) with other's weight moved onto per-view scalars: a zero weight
        # adds exactly 0, so each view still gets torchvision's rounding, without full-size selects
        grey_image = grey(x)
        weight = (1.0 - ratio).float()
        mean_term = torch.where(kind == CONTRAST, grey_image.mean(dim=(-3, -2, -1), keepdim=True) * weight, 0.0)
        grey_weight = torch.where(kind == SATURATION, weight, 0.0)
        return (x * ratio.float()).add_(grey_image * grey_weight).add_(mean_term).clamp_(0.0, 1.0)

    return _where_views(selected, whole_batch, views, blend, ratio, kind)


def grey(images: torch.Tensor) -> torch.Tensor:
    """(N, 3, S, S) -> (N, 1, S, S) luma, torchvision's formula step by step (so its rounding too)."""
    r, g, b = images.unbind(dim=-3)
    return r.mul(0.2989).add_(g, alpha=0.587).add_(b, alpha=0.114).unsqueeze(-3)


def normalize(images: torch.Tensor) -> torch.Tensor:
    """uint8 or [0, 1] float images -> the model's input normalisation (open_clip's defaults)."""
    if images.dtype == torch.uint8:
        images = images.float() / 255
    return (images - MEAN.to(images.device)) / STD.to(images.device)


def _where_views(selected: torch.Tensor, whole_batch: bool, views: torch.Tensor, fn: Callable,
                 *per_view: torch.Tensor) -> torch.Tensor:
    """fn(views, *per_view) on the selected views (N,), the others unchanged: computed for all views when
    whole_batch (picking them out would make the host wait for the device), else for the selected only."""
    if whole_batch:
        return torch.where(selected.view(-1, 1, 1, 1), fn(views, *per_view), views)
    index = selected.nonzero().squeeze(1)
    if len(index) in (0, len(views)):
        return fn(views, *per_view) if len(index) else views
    return views.index_copy_(0, index, fn(views[index], *(x[index] for x in per_view)))
