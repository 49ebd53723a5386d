"""The CLIP baseline: one view, one caption, the symmetric InfoNCE (the "OpenCLIP" row of every table)."""
from __future__ import annotations

import torch

from ito_sweeps.config import Config
from ito_sweeps.models.towers import Features
from ito_sweeps.objectives.contrastive import clip_loss
from ito_sweeps.objectives.registry import Inputs, register


@register("clip")
class CLIPObjective:
    inputs = Inputs()

    def __init__(self, cfg: Config):
        self.loss = clip_loss(cfg.objective.local_loss)

    def __call__(self, f: Features) -> dict[str, torch.Tensor]:
        return {"loss": self.loss(f.image[0], f.text[0], f.logit_scale)}
