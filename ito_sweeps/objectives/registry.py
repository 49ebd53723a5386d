"""Objectives by name, so a sweep file picks one without code edits.

An objective declares the `Inputs` it needs (image views, captions, augmented captions, fused
(view, caption) pairs, extra heads) and turns the model's `Features` into a dict of scalar losses whose
"loss" entry is optimised. ITO's training-time fusion term is not part of any objective: it is added
to whichever one is chosen when objective.fusion_weight and fusion.depth are both above 0.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Protocol

import torch

from ito_sweeps import catalog
from ito_sweeps.config import Config, ObjectiveConfig
from ito_sweeps.models.towers import Features


@dataclass(frozen=True)
class Inputs:
    views: int = 1  # image views per sample: Features.image[:views]
    captions: int = 1  # distinct captions per sample: Features.text[:captions]
    augmented_captions: int = 0  # text-augmented copies of caption 1, after them: Features.text[captions:]
    fusion_pairs: tuple[tuple[int, int], ...] = ()  # (view, caption) pairs to fuse; empty = no fusion module
    independent_heads: bool = False  # deep feature separation's training-only projection heads


def alignment_counts(o: ObjectiveConfig) -> tuple[int, int]:
    """(views, captions) that the alignment variant brings per sample, for the objectives that use it."""
    views = o.num_views if o.alignment in ("views", "views_captions") else 1
    captions = o.num_captions if o.alignment in ("captions", "views_captions") else 1
    return views, captions


class Objective(Protocol):
    inputs: Inputs

    def __call__(self, features: Features) -> dict[str, torch.Tensor]: ...


OBJECTIVES: dict[str, Callable[[Config], Objective]] = {}


def register(name: str):
    """Register an objective factory under a name declared in `catalog.OBJECTIVES`, which also holds what a
    config needs to know of it without torch (its default lambda, whether objective.alignment applies)."""

    def add(factory: Callable[[Config], Objective]) -> Callable[[Config], Objective]:
        if name not in catalog.OBJECTIVES:
            raise ValueError(f"objective {name!r} is not declared in ito_sweeps/catalog.py")
        if name in OBJECTIVES:
            raise ValueError(f"objective {name!r} is registered twice")
        OBJECTIVES[name] = factory
        return factory

    return add
