"""Checkpoints as plain state dicts, loadable with `torch.load(weights_only=True)` (no pickled code).

A checkpoint is two files: `step_N.pt` (step, config, model weights: what evaluation and export read)
and beside it `step_N.optimizer.pt` (the optimizer state, which only resuming training needs and which is
twice the size of the weights under AdamW). Keeping them apart lets a finished sweep trial drop its
optimizer state without anyone reading the weights again.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

LAST = "last.pt"
OPTIMIZER_SUFFIX = ".optimizer.pt"


def optimizer_file(path: Path) -> Path:
    """The optimizer state that belongs to the checkpoint `path`: step_N.pt -> step_N.optimizer.pt."""
    return path.with_name(path.name.removesuffix(".pt") + OPTIMIZER_SUFFIX)


def save(directory: Path, step: int, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None,
         config: dict) -> Path:
    """Without `optimizer`, the weights alone: a checkpoint to evaluate, not to train on from."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"step_{step:08d}.pt"
    last = directory / LAST
    links = [(path, last)]
    # the optimizer state first: a checkpoint whose weights file exists is complete
    if optimizer is not None:
        _write(optimizer_file(path), {"optimizer": optimizer.state_dict()})
        links.insert(0, (optimizer_file(path), optimizer_file(last)))
    else:  # the last checkpoint's optimizer state must never be read as this one's
        optimizer_file(last).unlink(missing_ok=True)
    _write(path, {"step": step, "model": model.state_dict(), "config": config})
    for source, target in links:
        tmp = target.with_name(target.name + ".tmp")
        tmp.unlink(missing_ok=True)
        os.link(source, tmp)
        os.replace(tmp, target)
    return path


def load(path: Path) -> dict[str, Any]:
    """The checkpoint's step, config and model weights, plus "optimizer" when its state was kept."""
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if optimizer_file(path).is_file():
        state.update(torch.load(optimizer_file(path), map_location="cpu", weights_only=True))
    return state


def latest(directory: Path) -> Path | None:
    path = directory / LAST
    return path if path.is_file() else None


def _write(path: Path, state: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)  # a crash mid-write never leaves a truncated file behind
