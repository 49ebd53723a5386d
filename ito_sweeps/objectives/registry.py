"""Objectives by name, so a sweep file picks one without code edits.

An objective says which inputs it needs (image views, captions, fused (view, caption) pairs) and turns
the model's `Features` into a dict of scalar losses whose "loss" entry is optimised.
"""
from __future__ import annotations

from typing import Callable, Protocol

import torch

from ito_sweeps.config import Config
from ito_sweeps.models.towers import Features


class Objective(Protocol):
    views: int
    captions: int
    fusion_pairs: tuple[tuple[int, int], ...]  # empty when no fusion module is needed

    def __call__(self, features: Features) -> dict[str, torch.Tensor]: ...


OBJECTIVES: dict[str, Callable[[Config], Objective]] = {}


def register(name: str):
    def add(factory: Callable[[Config], Objective]) -> Callable[[Config], Objective]:
        if name in OBJECTIVES:
            raise ValueError(f"objective {name!r} is registered twice")
        OBJECTIVES[name] = factory
        return factory

    return add


def build_objective(cfg: Config) -> Objective:
    return OBJECTIVES[cfg.objective.name](cfg)  # the name was checked when the config was built


# importing the families registers them
from ito_sweeps.objectives import clip, ito  # noqa: E402,F401
