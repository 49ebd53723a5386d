"""Export a trained run as a plain open_clip model folder: the towers only, no fusion parameter.

`open_clip.create_model_and_transforms('local-dir:DIR')` and `open_clip.get_tokenizer('local-dir:DIR')`
load the result with open_clip alone; its embeddings are bit-identical to the trained towers'.
"""
from __future__ import annotations

import json
from pathlib import Path

import open_clip
from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD
from safetensors.torch import save_file

from ito_sweeps import config as config_mod
from ito_sweeps.models.towers import model_config
from ito_sweeps.train import checkpoint

TOWERS = "clip."  # state-dict prefix of the dual encoder inside ITOModel; everything else is training-only
WEIGHTS = "open_clip_model.safetensors"


def export(run_dir: Path, out: Path, ckpt: Path | None = None) -> Path:
    cfg_path = run_dir / "config.yaml"
    if not cfg_path.is_file():
        raise FileNotFoundError(f"{run_dir} is not a run directory: {cfg_path.name} is missing")
    cfg = config_mod.load(cfg_path)
    ckpt = ckpt or checkpoint.latest(run_dir / "checkpoints")
    if ckpt is None:
        raise FileNotFoundError(f"no checkpoint in {run_dir / 'checkpoints'}: train the run first")
    state = checkpoint.load(ckpt)["model"]
    towers = {k[len(TOWERS):]: v.contiguous() for k, v in state.items() if k.startswith(TOWERS)}

    out.mkdir(parents=True, exist_ok=True)
    save_file(towers, str(out / WEIGHTS))
    preprocess = {
        "size": cfg.data.image_size,
        "mean": list(OPENAI_DATASET_MEAN),
        "std": list(OPENAI_DATASET_STD),
        "interpolation": "bicubic",
        "resize_mode": "shortest",
    }
    (out / "open_clip_config.json").write_text(
        json.dumps({"model_cfg": model_config(cfg), "preprocess_cfg": preprocess}, indent=2) + "\n"
    )
    # open_clip loads it back strictly: a broken export fails here, not on a user's cluster
    open_clip.create_model(f"local-dir:{out}")
    return out
