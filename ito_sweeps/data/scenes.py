"""Procedurally rendered scenes of coloured shapes with compositional captions.

The embedded benchmark needs no download. Every image holds exactly one large "main"
shape and up to two small distractors, and half of the distractors share the main
shape's colour or its shape. A caption therefore only matches its image if the model
binds each colour to the right shape and size, counts the objects and reads the spatial
relation between the main shape and the first distractor; a bag of words is not enough.

Everything is drawn from one seeded numpy Generator, so a seed fixes images and captions.
Rendering is vectorised over images: each shape is a boolean mask evaluated on a grid of
twice the output resolution and averaged over 2x2 blocks, which anti-aliases the edges.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from ito_sweeps.data.imageset import ImageTextSet, synonym_map

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 45, 45),
    "green": (50, 185, 70),
    "blue": (55, 95, 235),
    "yellow": (235, 215, 50),
    "purple": (155, 70, 205),
    "cyan": (50, 205, 215),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "diamond", "ring", "cross")

MAX_OBJECTS = 3  # slot 0 is the main object, slots 1 and 2 the distractors
LARGE_RADIUS = (0.22, 0.28)  # fractions of the image size
SMALL_RADIUS = (0.10, 0.14)
SHARE_COLOUR_P = 0.25  # a distractor with the main colour but another shape
SHARE_SHAPE_P = 0.25  # a distractor with the main shape but another colour
COLOUR_JITTER = 20.0  # per RGB channel, out of 255
BACKGROUND_MAX = 45.0  # backgrounds are dark so that every colour stands out
BACKGROUND_NOISE = 5.0  # std of the per-pixel background noise, out of 255
PLACEMENT_TRIES = 64
CLEAR_RELATION = 1.3  # the dominant axis must beat the other by this factor
RENDER_CHUNK = 1024  # images per vectorised render step, bounds the memory of the masks

COUNT_WORDS = ("one", "two", "three")
OBJECT_CLASSNAMES = [f"{colour} {shape}" for colour in COLOURS for shape in SHAPES]
OBJECT_TEMPLATES = [
    "a large {}.",
    "a picture of a big {}.",
    "a scene with a large {}.",
    "a big {} and maybe some small shapes.",
]
COUNT_CLASSNAMES = ["one object", "two objects", "three objects"]
COUNT_TEMPLATES = [
    "{}.",
    "a picture of {}.",
    "a scene with {}.",
    "{} on a dark background.",
]


@dataclass
class SceneLayout:
    """What was drawn in each image; the ground truth behind captions and labels."""

    present: np.ndarray  # bool (N, 3); slot 2 is only present together with slot 1
    shape: np.ndarray  # int (N, 3) index into SHAPES
    colour: np.ndarray  # int (N, 3) index into COLOURS
    rgb: np.ndarray  # float (N, 3, 3) jittered colour in 0..255
    centre: np.ndarray  # float (N, 3, 2) (x, y) in pixels, y pointing down
    radius: np.ndarray  # float (N, 3) in pixels
    background: np.ndarray  # float (N, 3) background colour in 0..255

    @property
    def count(self) -> np.ndarray:
        return self.present.sum(axis=1)

    def side_of_first_distractor(self) -> np.ndarray:
        """Where the first distractor lies as seen from the main object, per image.

        The larger of |dx| and |dy| decides between a horizontal and a vertical relation;
        images without a distractor get "".
        """
        dx, dy = np.moveaxis(self.centre[:, 1] - self.centre[:, 0], -1, 0)
        horizontal = np.where(dx > 0, "right", "left")
        vertical = np.where(dy > 0, "below", "above")
        side = np.where(np.abs(dx) >= np.abs(dy), horizontal, vertical)
        return np.where(self.present[:, 1], side, "")


def make_scenes(n: int, seed: int, image_size: int, captions_per_image: int) -> ImageTextSet:
    """n scenes of image_size x image_size pixels with captions_per_image paraphrases each."""
    return make_scenes_with_layout(n, seed, image_size, captions_per_image)[0]


def make_scenes_with_layout(
    n: int, seed: int, image_size: int, captions_per_image: int
) -> tuple[ImageTextSet, SceneLayout]:
    """make_scenes, plus the layout it was drawn from (for tests and inspection)."""
    rng = np.random.default_rng(seed)
    layout = _sample_layout(rng, n, image_size)
    images = _render(rng, layout, image_size)
    captions = _write_captions(rng, layout, captions_per_image)
    main_object = layout.colour[:, 0] * len(SHAPES) + layout.shape[:, 0]
    data = ImageTextSet(
        images=torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(),
        captions=captions,
        labels={
            "object": torch.from_numpy(main_object).long(),
            "count": torch.from_numpy(layout.count - 1).long(),
        },
        classnames={"object": OBJECT_CLASSNAMES, "count": COUNT_CLASSNAMES},
        templates={"object": OBJECT_TEMPLATES, "count": COUNT_TEMPLATES},
        synonyms=synonym_map(*SYNONYM_GROUPS),
    )
    return data, layout


# --- layout ---------------------------------------------------------------------------


def _sample_layout(rng: np.random.Generator, n: int, size: int) -> SceneLayout:
    shape, colour = _sample_identities(rng, n)
    radius = np.concatenate(
        [
            rng.uniform(*LARGE_RADIUS, size=(n, 1)),
            rng.uniform(*SMALL_RADIUS, size=(n, MAX_OBJECTS - 1)),
        ],
        axis=1,
    ) * size
    wanted = np.arange(MAX_OBJECTS)[None, :] < rng.integers(1, MAX_OBJECTS + 1, size=(n, 1))
    present, centre = _place(rng, radius, wanted, size)
    base = np.array(list(COLOURS.values()), dtype=np.float64)[colour]
    rgb = np.clip(base + rng.uniform(-COLOUR_JITTER, COLOUR_JITTER, size=base.shape), 0, 255)
    background = rng.uniform(0, BACKGROUND_MAX, size=(n, 3))
    return SceneLayout(present, shape, colour, rgb, centre, radius, background)


def _sample_identities(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Shape and colour indices (N, 3); distractors often echo the main object."""
    n_shapes, n_colours, n_distractors = len(SHAPES), len(COLOURS), MAX_OBJECTS - 1
    main_shape = rng.integers(n_shapes, size=(n, 1))
    main_colour = rng.integers(n_colours, size=(n, 1))
    # Adding a non-zero offset modulo the count gives a value guaranteed to differ.
    other_shape = (main_shape + rng.integers(1, n_shapes, size=(n, n_distractors))) % n_shapes
    other_colour = (main_colour + rng.integers(1, n_colours, size=(n, n_distractors))) % n_colours
    free_shape = rng.integers(n_shapes, size=(n, n_distractors))
    free_colour = rng.integers(n_colours, size=(n, n_distractors))
    kind = rng.random(size=(n, n_distractors))
    same_colour = kind < SHARE_COLOUR_P
    same_shape = ~same_colour & (kind < SHARE_COLOUR_P + SHARE_SHAPE_P)
    shape = np.where(same_colour, other_shape, np.where(same_shape, main_shape, free_shape))
    colour = np.where(same_colour, main_colour, np.where(same_shape, other_colour, free_colour))
    return (
        np.concatenate([main_shape, shape], axis=1),
        np.concatenate([main_colour, colour], axis=1),
    )


def _place(
    rng: np.random.Generator, radius: np.ndarray, wanted: np.ndarray, size: int
) -> tuple[np.ndarray, np.ndarray]:
    """Centres inside the image, apart by at least the sum of radii.

    Distractors are placed by rejection sampling over PLACEMENT_TRIES candidates per
    image at once; one that finds no room is dropped (and the later one with it, so
    slot 1 is always the first distractor the captions relate to the main object).
    """
    n = radius.shape[0]
    centre = np.zeros((n, MAX_OBJECTS, 2))
    present = np.zeros((n, MAX_OBJECTS), dtype=bool)
    centre[:, 0] = rng.uniform(radius[:, :1], size - radius[:, :1], size=(n, 2))
    present[:, 0] = True
    for slot in range(1, MAX_OBJECTS):
        r = radius[:, slot, None, None]
        candidates = rng.uniform(r, size - r, size=(n, PLACEMENT_TRIES, 2))
        offset = candidates[:, :, None, :] - centre[:, None, :slot, :]  # (n, tries, slot, 2)
        apart = np.linalg.norm(offset, axis=-1) >= radius[:, None, slot, None] + radius[:, None, :slot]
        valid = np.all(apart | ~present[:, None, :slot], axis=2)
        if slot == 1:
            # A near-diagonal offset would make "left of" versus "above" a coin toss.
            dx, dy = np.abs(offset[:, :, 0, 0]), np.abs(offset[:, :, 0, 1])
            valid &= np.maximum(dx, dy) >= CLEAR_RELATION * np.minimum(dx, dy)
        first_valid = np.argmax(valid, axis=1)
        centre[:, slot] = candidates[np.arange(n), first_valid]
        present[:, slot] = wanted[:, slot] & valid.any(axis=1) & present[:, slot - 1]
    centre[~present] = 0.0
    return present, centre


# --- rendering ------------------------------------------------------------------------


def _inside_circle(dx: np.ndarray, dy: np.ndarray, r: np.ndarray) -> np.ndarray:
    return dx * dx + dy * dy <= r * r


def _inside_square(dx: np.ndarray, dy: np.ndarray, r: np.ndarray) -> np.ndarray:
    # 0.85 gives the square about the area of the circle of the same radius.
    return np.maximum(np.abs(dx), np.abs(dy)) <= 0.85 * r


def _inside_triangle(dx: np.ndarray, dy: np.ndarray, r: np.ndarray) -> np.ndarray:
    # Apex at (0, -r), base at dy = 0.8 r with half-width r: it stays within the radius box.
    return (dy <= 0.8 * r) & (1.8 * np.abs(dx) - dy <= r)


def _inside_diamond(dx: np.ndarray, dy: np.ndarray, r: np.ndarray) -> np.ndarray:
    return np.abs(dx) + np.abs(dy) <= r


def _inside_ring(dx: np.ndarray, dy: np.ndarray, r: np.ndarray) -> np.ndarray:
    distance2 = dx * dx + dy * dy
    return (distance2 <= r * r) & (distance2 >= 0.25 * r * r)


def _inside_cross(dx: np.ndarray, dy: np.ndarray, r: np.ndarray) -> np.ndarray:
    ax, ay = np.abs(dx), np.abs(dy)
    return (np.minimum(ax, ay) <= 0.33 * r) & (np.maximum(ax, ay) <= 0.95 * r)


_INSIDE: dict[str, Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]] = {
    "circle": _inside_circle,
    "square": _inside_square,
    "triangle": _inside_triangle,
    "diamond": _inside_diamond,
    "ring": _inside_ring,
    "cross": _inside_cross,
}


def _render(rng: np.random.Generator, layout: SceneLayout, size: int) -> np.ndarray:
    """uint8 images (N, H, W, 3)."""
    n = layout.present.shape[0]
    images = np.empty((n, size, size, 3), dtype=np.uint8)
    for start in range(0, n, RENDER_CHUNK):
        rows = slice(start, min(start + RENDER_CHUNK, n))
        images[rows] = _render_chunk(rng, layout, rows, size)
    return images


def _render_chunk(rng: np.random.Generator, layout: SceneLayout, rows: slice, size: int) -> np.ndarray:
    background = layout.background[rows].astype(np.float32)
    canvas = np.broadcast_to(background[:, None, None, :], (len(background), size, size, 3)).copy()
    covered = np.zeros(canvas.shape[:3], dtype=np.float32)
    for slot in range(MAX_OBJECTS):
        alpha = _coverage(layout, rows, slot, size)
        colour = layout.rgb[rows, slot, None, None, :].astype(np.float32)
        canvas += alpha[..., None] * (colour - canvas)
        covered = np.maximum(covered, alpha)
    noise = rng.standard_normal(canvas.shape, dtype=np.float32) * BACKGROUND_NOISE
    canvas += noise * (1.0 - covered[..., None])
    return np.clip(np.rint(canvas), 0, 255).astype(np.uint8)


def _coverage(layout: SceneLayout, rows: slice, slot: int, size: int) -> np.ndarray:
    """Fraction (B, H, W) of each pixel covered by the object in this slot."""
    supersampled = 2 * size
    # Sub-pixel centres, measured in output pixels.
    grid = (np.arange(supersampled, dtype=np.float32) + 0.5) / 2
    mask = np.zeros((rows.stop - rows.start, supersampled, supersampled), dtype=bool)
    for index, name in enumerate(SHAPES):
        chosen = np.flatnonzero(layout.present[rows, slot] & (layout.shape[rows, slot] == index))
        if chosen.size == 0:
            continue
        images = chosen + rows.start
        cx, cy = layout.centre[images, slot].astype(np.float32).T
        r = layout.radius[images, slot].astype(np.float32)[:, None, None]
        dx = grid[None, None, :] - cx[:, None, None]
        dy = grid[None, :, None] - cy[:, None, None]
        mask[chosen] = _INSIDE[name](dx, dy, r)
    # Summing the four strided sub-pixel views is ~10x faster than a reshape-and-sum.
    hits = mask.view(np.uint8)
    pooled = (hits[:, 0::2, 0::2] + hits[:, 1::2, 0::2]) + (hits[:, 0::2, 1::2] + hits[:, 1::2, 1::2])
    return pooled.astype(np.float32) / 4.0


# --- captions -------------------------------------------------------------------------

_LARGE_WORDS = ("large", "big")
_SMALL_WORDS = ("small", "little")
# Words the templates below already use interchangeably, so text augmentation can swap them
# without leaving the captions' vocabulary. ("picture" has no partner: no caption says "image".)
SYNONYM_GROUPS: tuple[tuple[str, ...], ...] = (_LARGE_WORDS, _SMALL_WORDS, ("objects", "shapes"))
_OPPOSITE = {"left": "right", "right": "left", "above": "below", "below": "above"}
_BARE = {"left": "left of", "right": "right of", "above": "above", "below": "below"}
_TO_THE = {"left": "to the left of", "right": "to the right of", "above": "above", "below": "below"}
_ON_ITS = {"left": "on its left", "right": "on its right", "above": "above it", "below": "below it"}
_TO_ITS = {"left": "to its left", "right": "to its right", "above": "above it", "below": "below it"}


@dataclass
class _Words:
    """The phrases one caption is assembled from; size synonyms are already chosen."""

    main: str  # colour and shape of the main object, e.g. "red circle"
    large: str  # "large" or "big"
    distractors: list[str]  # e.g. ["a small blue square", "a little red ring"]
    side: str  # where the first distractor lies, seen from the main object
    count: str  # "two" or "three"

    @property
    def first(self) -> str:
        return self.distractors[0]

    @property
    def rest(self) -> str:
        """The second distractor, appended after the main relation."""
        return "".join(f", and {d}" for d in self.distractors[1:])

    @property
    def listing(self) -> str:
        *head, last = [f"a {self.large} {self.main}", *self.distractors]
        return f"{', '.join(head)} and {last}"


# Every template names each object as "<colour> <shape>", so the object label's class name
# always occurs in the caption, and no template names a shape any other time.
_SINGLE_TEMPLATES: tuple[Callable[[_Words], str], ...] = (
    lambda w: f"a {w.large} {w.main}",
    lambda w: f"a single {w.large} {w.main}",
    lambda w: f"one {w.main}",
    lambda w: f"one object: a {w.large} {w.main}",
    lambda w: f"a {w.main}, {w.large}, on a dark background",
    lambda w: f"a picture of a {w.large} {w.main}",
    lambda w: f"a {w.large} {w.main} on its own",
)
_MULTI_TEMPLATES: tuple[Callable[[_Words], str], ...] = (
    lambda w: f"a {w.large} {w.main} {_BARE[_OPPOSITE[w.side]]} {w.first}{w.rest}",
    lambda w: f"{w.first} {_TO_THE[w.side]} a {w.large} {w.main}{w.rest}",
    lambda w: f"{w.count} objects: a {w.large} {w.main} and {w.first} {_ON_ITS[w.side]}{w.rest}",
    lambda w: f"a {w.main}, {w.large}, with {w.first} {_TO_ITS[w.side]}{w.rest}",
    lambda w: f"{w.count} shapes: {w.listing}",
    lambda w: f"on a dark background, {w.first} {_TO_THE[w.side]} a {w.large} {w.main}{w.rest}",
    lambda w: f"there is a {w.large} {w.main} with {w.first} {_ON_ITS[w.side]}{w.rest}",
)


def _write_captions(rng: np.random.Generator, layout: SceneLayout, per_image: int) -> list[list[str]]:
    """per_image paraphrases per image, cycling through the templates in a random order."""
    n = layout.present.shape[0]
    n_templates = len(_MULTI_TEMPLATES)
    assert len(_SINGLE_TEMPLATES) == n_templates
    # All randomness is drawn up front in fixed-size arrays, keeping the loop below cheap.
    order = np.argsort(rng.random((n, n_templates)), axis=1)
    synonym = rng.integers(2, size=(n, per_image, MAX_OBJECTS))
    sides = layout.side_of_first_distractor()
    colour_names, counts = list(COLOURS), layout.count
    captions = []
    for i in range(n):
        names = [
            f"{colour_names[layout.colour[i, slot]]} {SHAPES[layout.shape[i, slot]]}"
            for slot in range(counts[i])
        ]
        templates = _SINGLE_TEMPLATES if counts[i] == 1 else _MULTI_TEMPLATES
        paraphrases = []
        for k in range(per_image):
            words = _Words(
                main=names[0],
                large=_LARGE_WORDS[synonym[i, k, 0]],
                distractors=[f"a {_SMALL_WORDS[synonym[i, k, s]]} {names[s]}" for s in range(1, counts[i])],
                side=sides[i],
                count=COUNT_WORDS[counts[i] - 1],
            )
            paraphrases.append(templates[order[i, k % n_templates]](words))
        captions.append(paraphrases)
    return captions
