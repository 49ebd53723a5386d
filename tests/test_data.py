"""Tests of the embedded data sets and the view augmentation.

The scene captions are checked against a small independent reading of the caption text
(which size word introduces which object, which relation phrase is used) and against
the rendered layout, so a template that says the wrong thing fails here.
"""
from __future__ import annotations

import re
import time

import numpy as np
import pytest
import torch
from torchvision.transforms import RandomResizedCrop
from torchvision.transforms.v2 import functional as F

from ito_sweeps.data.augment import _crop_box, adjust_hue, augment_view
from ito_sweeps.data.digits import load_digits_set
from ito_sweeps.data.scenes import COLOURS, SHAPES, make_scenes, make_scenes_with_layout

# ---------------------------------------------------------------------------------------
# scenes

SIZE = 32
SHAPE_WORD = re.compile(r"\b(" + "|".join(SHAPES) + r")\b")
COUNT_PHRASE = re.compile(r"\b(one|two|three) (?:object|shape)s?\b")
# "on its right" / "above it": the phrase says where the first distractor is.
PRONOUN_RELATION = re.compile(r"\b(?:on|to) its (left|right)\b|\b(above|below) it\b")
# "X left of Y" / "X to the right of Y" / "X above Y": says where X is relative to Y.
BARE_RELATION = re.compile(r"\b(left|right) of\b|\b(above|below)\b(?! it\b)")
SIZE_WORD = re.compile(r"\b(large|big|small|little)\b")
OPPOSITE = {"left": "right", "right": "left", "above": "below", "below": "above"}


@pytest.fixture(scope="module")
def scenes():
    return make_scenes_with_layout(600, seed=3, image_size=SIZE, captions_per_image=5)


def expected_side(centre: np.ndarray) -> str:
    """Where the first distractor lies, seen from the main object (image y points down)."""
    dx, dy = centre[1] - centre[0]
    if abs(dx) >= abs(dy):
        return "right" if dx > 0 else "left"
    return "below" if dy > 0 else "above"


def stated_side(caption: str) -> str | None:
    """The side of the first distractor as the caption states it, or None if it states none."""
    pronoun = PRONOUN_RELATION.search(caption)
    if pronoun:
        return pronoun.group(1) or pronoun.group(2)
    bare = BARE_RELATION.search(caption)
    if not bare:
        return None
    side = bare.group(1) or bare.group(2)
    subject_size = SIZE_WORD.findall(caption[: bare.start()])[-1]
    # "a large red circle left of a small ..." places the main object, so invert it.
    return OPPOSITE[side] if subject_size in ("large", "big") else side


def test_scenes_shapes_types_and_label_ranges(scenes):
    data, _ = scenes
    assert data.images.shape == (600, 3, SIZE, SIZE)
    assert data.images.dtype == torch.uint8
    assert all(len(c) == 5 for c in data.captions)
    assert list(data.labels) == ["object", "count"]  # "object" is the headline task
    n_objects = len(COLOURS) * len(SHAPES)
    assert len(data.classnames["object"]) == n_objects
    assert data.classnames["count"] == ["one object", "two objects", "three objects"]
    for task, labels in data.labels.items():
        assert labels.dtype == torch.int64
        assert labels.min() >= 0 and labels.max() == len(data.classnames[task]) - 1
        assert len(data.templates[task]) >= 3
        assert all("{}" in t for t in data.templates[task])
    assert set(data.labels["count"].tolist()) == {0, 1, 2}


def test_scenes_are_deterministic_per_seed():
    a = make_scenes(50, seed=7, image_size=SIZE, captions_per_image=3)
    b = make_scenes(50, seed=7, image_size=SIZE, captions_per_image=3)
    c = make_scenes(50, seed=8, image_size=SIZE, captions_per_image=3)
    assert torch.equal(a.images, b.images) and a.captions == b.captions
    assert all(torch.equal(a.labels[k], b.labels[k]) for k in a.labels)
    assert not torch.equal(a.images, c.images) and a.captions != c.captions


def test_object_label_is_colour_and_shape_of_the_main_object(scenes):
    data, layout = scenes
    colour_names = list(COLOURS)
    for i in range(len(data)):
        name = f"{colour_names[layout.colour[i, 0]]} {SHAPES[layout.shape[i, 0]]}"
        label = data.labels["object"][i].item()
        assert label == layout.colour[i, 0] * len(SHAPES) + layout.shape[i, 0]
        assert data.classnames["object"][label] == name


def test_captions_name_every_object_with_its_colour_and_shape(scenes):
    data, layout = scenes
    colour_names = list(COLOURS)
    for i, captions in enumerate(data.captions):
        names = [
            f"{colour_names[layout.colour[i, s]]} {SHAPES[layout.shape[i, s]]}"
            for s in range(3)
            if layout.present[i, s]
        ]
        object_class = data.classnames["object"][data.labels["object"][i]]
        for caption in captions:
            assert object_class in caption
            assert sorted(SHAPE_WORD.findall(caption)) == sorted(n.split()[1] for n in names)
            for name in names:
                assert name in caption


def test_captions_counts_agree_with_count_label(scenes):
    data, layout = scenes
    words = ["one", "two", "three"]
    seen = 0
    for i, captions in enumerate(data.captions):
        count = data.labels["count"][i].item() + 1
        assert count == layout.present[i].sum()
        for caption in captions:
            match = COUNT_PHRASE.search(caption)
            if match:
                assert match.group(1) == words[count - 1], caption
                seen += 1
            # One small word per distractor; the main object may go without its size word.
            sizes = SIZE_WORD.findall(caption)
            assert sum(s in ("large", "big") for s in sizes) <= 1, caption
            assert sum(s in ("small", "little") for s in sizes) == count - 1, caption
    assert seen > 100


def test_caption_relations_agree_with_object_positions(scenes):
    data, layout = scenes
    checked = 0
    for i, captions in enumerate(data.captions):
        truth = expected_side(layout.centre[i]) if layout.present[i, 1] else None
        for caption in captions:
            side = stated_side(caption)
            if truth is None:
                assert side is None, caption
            elif side is not None:
                assert side == truth, (caption, layout.centre[i])
                checked += 1
    assert checked > 500


def test_scene_objects_lie_inside_the_image_and_apart(scenes):
    _, layout = scenes
    for i in range(len(layout.present)):
        slots = np.flatnonzero(layout.present[i])
        for s in slots:
            r = layout.radius[i, s]
            assert np.all(layout.centre[i, s] >= r - 1e-9) and np.all(layout.centre[i, s] <= SIZE - r + 1e-9)
        for a in slots:
            for b in slots[slots > a]:
                gap = np.linalg.norm(layout.centre[i, a] - layout.centre[i, b])
                assert gap >= layout.radius[i, a] + layout.radius[i, b] - 1e-9
    assert np.all(layout.radius[:, 0] > layout.radius[:, 1:].max(axis=1))


def test_distractors_often_share_colour_or_shape(scenes):
    _, layout = scenes
    distractor = layout.present[:, 1]
    shares = (layout.colour[:, 1] == layout.colour[:, 0]) | (layout.shape[:, 1] == layout.shape[:, 0])
    assert 0.4 < shares[distractor].mean() < 0.8


def test_pixel_inside_the_main_object_has_its_colour(scenes):
    data, layout = scenes
    for i in range(len(data)):
        x, y = layout.centre[i, 0]
        if SHAPES[layout.shape[i, 0]] == "ring":  # the centre of a ring is its hole
            x += 0.75 * layout.radius[i, 0]
        pixel = data.images[i, :, int(y), int(x)].float().numpy()
        np.testing.assert_allclose(pixel, layout.rgb[i, 0], atol=1.0)


def test_background_is_dark(scenes):
    data, layout = scenes
    corner = data.images[:, :, 0, 0].float().numpy()
    # Skip images where some object may reach the top-left pixel.
    near = layout.present & np.all(layout.centre < 1.5 * layout.radius[..., None], axis=-1)
    assert corner[~near.any(axis=1)].max() < 80


def test_ten_thousand_scenes_are_fast():
    start = time.perf_counter()
    data = make_scenes(10_000, seed=0, image_size=32, captions_per_image=2)
    assert time.perf_counter() - start < 10.0
    assert len(data) == 10_000


def test_more_captions_than_templates_still_vary():
    data = make_scenes(20, seed=1, image_size=16, captions_per_image=12)
    assert all(len(c) == 12 for c in data.captions)
    assert all(len(set(c)) >= 7 for c in data.captions)


# ---------------------------------------------------------------------------------------
# digits

DIGIT_WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


def test_digits_set_contents():
    data = load_digits_set(seed=0, image_size=24, captions_per_image=4)
    assert data.images.shape == (1797, 3, 24, 24) and data.images.dtype == torch.uint8
    labels = data.labels["digit"]
    assert labels.dtype == torch.int64 and set(labels.tolist()) == set(range(10))
    assert data.classnames["digit"] == DIGIT_WORDS
    assert all("{}" in t for t in data.templates["digit"])
    for captions, label in zip(data.captions, labels.tolist()):
        assert len(captions) == 4 and len(set(captions)) == 4
        for caption in captions:
            assert re.search(rf"\b{DIGIT_WORDS[label]}\b", caption), caption


def test_digits_match_the_bundled_scans():
    from sklearn.datasets import load_digits

    scans = load_digits()
    data = load_digits_set(seed=5, image_size=8, captions_per_image=1)
    # At the native size the tinted image is an affine map of the scan per channel, so its
    # brightness must correlate with the scan that carries the same label.
    brightness = data.images.float().mean(dim=1).flatten(1).numpy()
    for row in range(20):
        label = data.labels["digit"][row].item()
        candidates = scans.images[scans.target == label].reshape(-1, 64)
        best = max(np.corrcoef(brightness[row], c)[0, 1] for c in candidates)
        assert best > 0.99


def test_digits_are_shuffled_by_seed():
    a = load_digits_set(seed=0, image_size=8, captions_per_image=2)
    b = load_digits_set(seed=0, image_size=8, captions_per_image=2)
    c = load_digits_set(seed=1, image_size=8, captions_per_image=2)
    assert torch.equal(a.images, b.images) and a.captions == b.captions
    assert not torch.equal(a.labels["digit"], c.labels["digit"])


# ---------------------------------------------------------------------------------------
# augmentation

DEFAULTS = dict(
    crop_scale=(0.5, 1.0),
    crop_ratio=(3 / 4, 4 / 3),
    jitter=(0.4, 0.4, 0.4, 0.1),
    jitter_p=0.8,
    grayscale_p=0.2,
)
NO_CROP = dict(crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0))
IDENTITY = dict(NO_CROP, jitter=(0.4, 0.4, 0.4, 0.1), jitter_p=0.0, grayscale_p=0.0)


@pytest.fixture
def image():
    return torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(0))


def views(image: torch.Tensor, seed: int, count: int = 8, **kwargs) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.stack([augment_view(image, generator, **(kwargs or DEFAULTS)) for _ in range(count)])


def test_augment_is_reproducible_from_the_generator_seed(image):
    assert torch.equal(views(image, 1), views(image, 1))
    assert not torch.equal(views(image, 1), views(image, 2))
    successive = views(image, 1)
    assert not torch.equal(successive[0], successive[1])


def test_augment_keeps_shape_and_range(image):
    out = views(image, 3, count=32)
    assert out.shape == (32, 3, 32, 32) and out.dtype == torch.float32
    assert out.min() >= 0.0 and out.max() <= 1.0


def test_augment_identity_settings_return_the_input(image):
    out = augment_view(image, torch.Generator().manual_seed(0), **IDENTITY)
    torch.testing.assert_close(out, image, atol=1e-6, rtol=0)


def test_augment_grayscale_makes_channels_equal(image):
    out = views(image, 4, **{**DEFAULTS, "grayscale_p": 1.0})
    assert torch.equal(out[:, 0], out[:, 1]) and torch.equal(out[:, 1], out[:, 2])


def test_augment_crop_falls_back_to_torchvision_centre_crop(image):
    # No attempt can fit an aspect ratio of 4 at full area, so both take the centre crop.
    scale, ratio = (1.0, 1.0), (4.0, 4.0)
    expected = RandomResizedCrop.get_params(image, list(scale), list(ratio))
    assert expected == (12, 0, 8, 32)
    settings = dict(crop_scale=scale, crop_ratio=ratio, jitter=(0, 0, 0, 0), jitter_p=0.0, grayscale_p=0.0)
    out = augment_view(image, torch.Generator().manual_seed(0), **settings)
    torch.testing.assert_close(out, F.resized_crop(image, *expected, size=[32, 32], antialias=True))


def test_augment_crop_distribution_matches_torchvision():
    scale, ratio = (0.3, 1.0), (0.5, 2.0)
    draws = torch.rand(4000, 40, generator=torch.Generator().manual_seed(0)).tolist()
    ours = np.array([_crop_box(32, 48, scale, ratio, d) for d in draws], dtype=float)
    state = torch.get_rng_state()
    torch.manual_seed(0)
    boxes = [RandomResizedCrop.get_params(torch.empty(3, 32, 48), list(scale), list(ratio)) for _ in draws]
    theirs = np.array(boxes, dtype=float)
    torch.set_rng_state(state)
    for column in range(4):  # top, left, height, width
        assert abs(ours[:, column].mean() - theirs[:, column].mean()) < 0.6
    assert np.all(ours[:, 0] + ours[:, 2] <= 32) and np.all(ours[:, 1] + ours[:, 3] <= 48)


def test_augment_jitter_changes_colours_without_cropping(image):
    settings = dict(NO_CROP, jitter=(0.4, 0.4, 0.4, 0.1), jitter_p=1.0, grayscale_p=0.0)
    out = views(image, 5, **settings)
    assert all((view - image).abs().max() > 1e-3 for view in out)


def test_hue_shift_matches_torchvision(image):
    image = image.clone()
    image[:, :4, :4] = 0.5  # grey pixels have no hue
    image[1, 8, :] = image[0, 8, :]  # ties between the largest channels
    image[2, 9, :] = image[1, 9, :]
    for factor in torch.linspace(-0.5, 0.5, 21).tolist():
        torch.testing.assert_close(adjust_hue(image, factor), F.adjust_hue(image, factor), atol=2e-6, rtol=0)


def test_augment_does_not_touch_the_global_rng(image):
    before = torch.get_rng_state()
    views(image, 6, count=16)
    assert torch.equal(torch.get_rng_state(), before)
