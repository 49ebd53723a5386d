"""The batched, on-device views (data/batch_augment.py) against the per-image reference (data/augment.py, built
from torchvision's own ops), and the loader's side of the new data path: uint8 decoding, parameter rows, collation.

Bound on the pixels: the batched crop-and-resize is a matmul with torch's antialiased-bilinear weights, so it
differs from torchvision's resized_crop by float rounding only. Measured: at most 2.1e-5 (in [0, 1] units) on
224-px views, mean 6e-8. The tests hold every view within MAX_ABS_DIFF and the mean within MEAN_ABS_DIFF.
"""
from __future__ import annotations

import io
import itertools

import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from ito_sweeps import config as C
from ito_sweeps.data import augment as A
from ito_sweeps.data import batch_augment
from ito_sweeps.data.augment import VIEW_PARAMS, apply_view, augment_view, draw_view
from ito_sweeps.data.batch_augment import make_views, normalize, resize_weights
from ito_sweeps.data.loader import ViewsDataset, collate, draw_views
from ito_sweeps.data.records import decode_image, decode_pixels, jpeg_size, to_uint8_tensor
from ito_sweeps.data.scenes import make_scenes
from ito_sweeps.models.towers import build_tokenizer

MAX_ABS_DIFF, MEAN_ABS_DIFF = 1e-4, 1e-6
DEFAULTS = vars(C.AugmentConfig())
STRONG = dict(crop_scale=(0.08, 1.0), crop_ratio=(0.5, 2.0), jitter=(0.8, 0.8, 0.8, 0.5), jitter_p=1.0,
              grayscale_p=0.3)


def reference(pixels: torch.Tensor, params: torch.Tensor, size: int) -> torch.Tensor:
    """Per view, torchvision's ops one image at a time; (B, K, 3, size, size) like make_views."""
    return torch.stack([
        torch.stack([normalize(apply_view(image.float() / 255, row.tolist(), size)) for row in rows])
        for image, rows in zip(pixels, params)
    ])


def assert_close_to_reference(views: torch.Tensor, expected: torch.Tensor) -> None:
    diff = ((views - expected) * batch_augment.STD.view(3, 1, 1)).abs()  # back in [0, 1] pixel units
    assert diff.amax().item() <= MAX_ABS_DIFF and diff.mean().item() <= MEAN_ABS_DIFF, diff.amax()


def scenes(n: int, size: int) -> torch.Tensor:
    return make_scenes(n, 0, size, 1).images


# ---- crop and resize -------------------------------------------------------------------------------

@pytest.mark.parametrize("in_size,start,length,out_size", [
    (32, 0, 32, 32),  # identity
    (32, 5, 17, 32),  # upscaling a crop
    (224, 13, 180, 64),  # shrinking 2.8x: the antialiasing filter is wider than bilinear's
    (64, 0, 64, 24), (64, 40, 24, 24), (50, 3, 7, 3), (96, 11, 80, 224),
])
def test_resize_weights_are_torchs_antialiased_bilinear_resize(in_size, start, length, out_size):
    row = torch.rand(2, 3, 5, in_size, generator=torch.Generator().manual_seed(in_size + start))
    expected = F.interpolate(row[..., start: start + length], size=(5, out_size), mode="bilinear",
                             antialias=True, align_corners=False)
    weights = resize_weights(torch.tensor([float(start)], dtype=torch.float64),
                             torch.tensor([float(length)], dtype=torch.float64), in_size, out_size)[0]
    assert weights.shape == (out_size, in_size)
    torch.testing.assert_close(row @ weights.T, expected, atol=1e-5, rtol=0)  # float32 rounding
    outside = torch.ones(in_size, dtype=torch.bool)
    outside[start: start + length] = False
    assert torch.all(weights[:, outside] == 0)  # nothing outside the crop is read, so padding never is


def test_resizing_by_matmul_and_crop_by_crop_agree():
    images = scenes(6, 96).float() / 255
    g = torch.Generator().manual_seed(3)
    params = torch.stack([draw_views((96, 96), 2, g, C.AugmentConfig(**STRONG)) for _ in images])
    for size in (24, 64, 224):
        each = batch_augment.crop_resize_each(images, params, size)
        torch.testing.assert_close(batch_augment.crop_resize(images, params, size), each, atol=1e-5, rtol=0)
        top, left, height, width = (int(v) for v in params[4, 1, [A.TOP, A.LEFT, A.HEIGHT, A.WIDTH]])
        alone = F.interpolate(images[4:5, :, top:top + height, left:left + width], size=(size, size),
                              mode="bilinear", antialias=True)
        assert torch.equal(each[4, 1], alone[0])


# ---- whole views against the reference ----------------------------------------------------------

@pytest.mark.parametrize("whole_batch", [False, True], ids=["cpu-form", "accelerator-form"])
@pytest.mark.parametrize("image_size,view_size,spec", [
    (32, 32, DEFAULTS), (32, 32, STRONG), (64, 32, STRONG), (24, 40, STRONG), (80, 64, STRONG), (96, 224, DEFAULTS),
])
def test_batched_views_equal_the_reference_for_the_same_draws(image_size, view_size, spec, whole_batch):
    pixels = scenes(12, image_size)
    g, g_reference = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
    params = torch.stack([draw_views(image.shape[-2:], 3, g, C.AugmentConfig(**spec)) for image in pixels])
    # the reference draws from its own generator: the same draws give the same boxes, factors and order
    expected = torch.stack([
        torch.stack([normalize(augment_view(image.float() / 255, g_reference, size=view_size, **spec))
                     for _ in range(3)])
        for image in pixels
    ])
    views = make_views(pixels, params, view_size, whole_batch)
    assert views.shape == (12, 3, 3, view_size, view_size) and views.dtype == torch.float32
    assert_close_to_reference(views, expected)


@pytest.mark.parametrize("whole_batch", [False, True], ids=["cpu-form", "accelerator-form"])
def test_every_order_of_the_jitter_ops_matches_torchvision(whole_batch):
    pixels = scenes(24, 32)
    rows = []
    for order in itertools.permutations(range(4)):
        row = [0.0] * VIEW_PARAMS
        row[A.TOP], row[A.LEFT], row[A.HEIGHT], row[A.WIDTH] = 2, 3, 27, 25
        row[A.FACTORS] = [1.5, 0.4, 1.7, 0.3]  # strong, so a wrong order would show
        row[A.ORDER] = list(order)
        rows.append([row])
    params = torch.tensor(rows, dtype=torch.float64)
    assert_close_to_reference(make_views(pixels, params, 32, whole_batch), reference(pixels, params, 32))
    # and orders are really applied: reversing them changes the views
    flipped = params.clone()
    flipped[..., A.ORDER] = params[..., A.ORDER].flip(-1)
    assert (make_views(pixels, flipped, 32) - make_views(pixels, params, 32)).abs().amax() > 0.1


def test_ops_of_strength_zero_and_undrawn_jitter_leave_gaps_in_the_order():
    g = torch.Generator().manual_seed(0)
    spec = dict(DEFAULTS, jitter=(0.4, 0.0, 0.4, 0.0), jitter_p=0.5)
    rows = torch.tensor([draw_view(32, 32, g, **spec) for _ in range(400)])
    order = rows[:, A.ORDER]
    jittered = (order != A.NO_OP).any(1)
    assert 150 < jittered.sum() < 250  # jitter_p = 0.5
    for ops in order[jittered].tolist():  # brightness and saturation in some order, then two gaps
        assert sorted(ops[:2]) == [A.BRIGHTNESS, A.SATURATION] and ops[2:] == [A.NO_OP, A.NO_OP]
    assert torch.all(order[~jittered] == A.NO_OP)
    pixels = scenes(1, 32).expand(400, 3, 32, 32)
    params = rows.view(400, 1, VIEW_PARAMS).double()
    assert_close_to_reference(make_views(pixels, params, 32), reference(pixels, params, 32))


def test_op_orders_are_uniform_and_probabilities_hold():
    g = torch.Generator().manual_seed(1)
    rows = torch.tensor([draw_view(32, 32, g, **dict(DEFAULTS, jitter_p=1.0)) for _ in range(4800)])
    counts = {}
    for order in rows[:, A.ORDER].long().tolist():
        counts[tuple(order)] = counts.get(tuple(order), 0) + 1
    assert sorted(counts) == sorted(itertools.permutations(range(4)))  # each of the 24 orders occurs
    assert max(counts.values()) < 300 and min(counts.values()) > 110  # expected 200 each
    grey = torch.tensor([draw_view(32, 32, g, **DEFAULTS)[A.GRAYSCALE] for _ in range(2000)]).mean()
    assert abs(grey - DEFAULTS["grayscale_p"]) < 0.04
    brightness, contrast, saturation, hue = rows[:, A.FACTORS].unbind(1)
    assert 0.6 <= brightness.min() and brightness.max() < 1.4 and hue.abs().max() <= 0.1


# ---- what the batch does not change ---------------------------------------------------------------

def test_views_do_not_depend_on_the_batch_or_chunk_they_are_made_in(monkeypatch):
    pixels = scenes(16, 32)
    params = torch.stack([draw_views(p.shape[-2:], 2, torch.Generator().manual_seed(i), C.AugmentConfig(**STRONG))
                          for i, p in enumerate(pixels)])
    whole = make_views(pixels, params, 32)
    halves = torch.cat([make_views(pixels[:8], params[:8], 32), make_views(pixels[8:], params[8:], 32)])
    assert torch.equal(whole, halves)  # two ranks' local batches give what one rank's global batch gives
    monkeypatch.setattr(batch_augment, "CPU_CHUNK_VALUES", 1)  # one sample at a time
    assert torch.equal(make_views(pixels, params, 32), whole)


def test_collation_pads_images_of_other_sizes_without_changing_their_views():
    small, large = scenes(1, 24)[0], scenes(1, 40)[0][:, :, :36]
    spec = C.AugmentConfig(**STRONG)
    samples = [(image, draw_views(image.shape[-2:], 2, torch.Generator().manual_seed(i), spec), torch.zeros(1, 4))
               for i, image in enumerate((small, large))]
    pixels, params, tokens = collate(samples)
    assert pixels.shape == (2, 3, 40, 36) and pixels.dtype == torch.uint8 and tokens.shape == (2, 1, 4)
    assert torch.all(pixels[0, :, 24:] == 0) and torch.all(pixels[0, :, :, 24:] == 0)
    batched = make_views(pixels, params, 32)
    for i, (image, rows, _) in enumerate(samples):
        alone = make_views(image[None], rows[None], 32)[0]
        torch.testing.assert_close(batched[i], alone, atol=1e-5, rtol=0)
        assert_close_to_reference(batched[i:i + 1], reference(image[None], rows[None], 32))


def test_views_dataset_ships_the_image_once_with_its_view_parameters():
    cfg = C.load(None, ["data.num_train=8", "data.batch_size=4"])
    data = make_scenes(8, 0, 32, 5)
    dataset = ViewsDataset(data, build_tokenizer(cfg), 2, 1, cfg.data, seed=0)
    pixels, params, tokens = dataset[(3, 5)]
    assert torch.equal(pixels, data.images[5]) and params.shape == (2, VIEW_PARAMS)
    assert torch.equal(params, dataset[(3, 5)][1]) and not torch.equal(params, dataset[(4, 5)][1])
    g = torch.Generator().manual_seed(hash((0, 3, 5)) & 0x7FFF_FFFF_FFFF_FFFF)
    expected = [augment_view(data.images[5].float() / 255, g, **DEFAULTS) for _ in range(2)]
    assert_close_to_reference(make_views(pixels[None], params[None], 32), normalize(torch.stack(expected))[None])


# ---- decoding ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("fmt,mode", [("JPEG", "RGB"), ("PNG", "RGB"), ("WEBP", "RGB"), ("PNG", "L"),
                                      ("PNG", "RGBA"), ("PNG", "P"), ("JPEG", "CMYK"), ("JPEG", "L")])
def test_decoded_pixels_equal_pils(fmt, mode):
    image = Image.fromarray(scenes(1, 48)[0][:, :, :40].permute(1, 2, 0).numpy()).convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    data = buffer.getvalue()
    pixels = decode_pixels(data)
    assert pixels.dtype == torch.uint8 and pixels.shape == (3, 48, 40)
    assert torch.equal(pixels, to_uint8_tensor(decode_image(data)))
    assert decode_pixels(data[: len(data) // 2]) is None  # truncated: skipped as corrupt, as PIL would
    assert decode_pixels(b"not an image") is None
    # data.decode=gpu leaves only whole RGB or greyscale JPEGs to the GPU, sized from their header
    gpu_decodable = fmt == "JPEG" and mode in ("RGB", "L")
    assert jpeg_size(data) == ((48, 40) if gpu_decodable else None)
    assert jpeg_size(data[: len(data) // 2]) is None
