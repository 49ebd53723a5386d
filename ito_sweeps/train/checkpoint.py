"""Checkpoints as plain state dicts, loadable with `torch.load(weights_only=True)` (no pickled code)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

LAST = "last.pt"


def save(directory: Path, step: int, model: torch.nn.Module, optimizer: torch.optim.Optimizer, config: dict) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    state = {"step": step, "model": model.state_dict(), "optimizer": optimizer.state_dict(), "config": config}
    path = directory / f"step_{step:08d}.pt"
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)  # a crash mid-write never leaves a truncated checkpoint behind
    last = directory / LAST
    tmp_last = directory / (LAST + ".tmp")
    tmp_last.unlink(missing_ok=True)
    os.link(path, tmp_last)
    os.replace(tmp_last, last)
    return path


def load(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    return torch.load(path, map_location="cpu", weights_only=True)


def latest(directory: Path) -> Path | None:
    path = directory / LAST
    return path if path.is_file() else None
