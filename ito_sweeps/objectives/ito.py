"""ITO: multiple alignment, plus the training-time fusion term that any objective can take.

L = L_align + lambda * L_fusion. Alignment variants draw K views and/or K' captions and average CLIP
over every (view, caption) pair. `WithFusion` adds lambda * L_fusion to any objective: it contrasts
fuse(view 1, caption 1) with fuse(view 2, caption 1); with a single view and several captions it
contrasts fuse(view 1, caption 1) with fuse(view 1, caption 2) (the spec's choice for `captions`),
and when the objective uses one view and one caption a second view is drawn for fusion alone.
"""
from __future__ import annotations

from dataclasses import replace

import torch

from ito_sweeps.config import Config
from ito_sweeps.models.towers import Features
from ito_sweeps.objectives.contrastive import clip_loss, nt_xent
from ito_sweeps.objectives.registry import Inputs, Objective, alignment_counts, register


@register("ito")
class ITOObjective:
    def __init__(self, cfg: Config):
        views, captions = alignment_counts(cfg.objective)
        self.inputs = Inputs(views=views, captions=captions)
        self.align_pairs = [(v, c) for v in range(views) for c in range(captions)]
        self.loss = clip_loss(cfg.objective.local_loss)

    def __call__(self, f: Features) -> dict[str, torch.Tensor]:
        align = torch.stack([self.loss(f.image[v], f.text[c], f.logit_scale) for v, c in self.align_pairs]).mean()
        return {"loss": align, "loss_align": align}


class WithFusion:
    """Any objective plus lambda * NT-Xent between two fused (view, caption) pairs."""

    def __init__(self, base: Objective, weight: float):
        self.base, self.weight = base, weight
        needs = base.inputs
        if needs.views >= 2 or needs.captions == 1:
            self.inputs = replace(needs, views=max(needs.views, 2), fusion_pairs=((0, 0), (1, 0)))
        else:
            self.inputs = replace(needs, fusion_pairs=((0, 0), (0, 1)))

    def __call__(self, f: Features) -> dict[str, torch.Tensor]:
        losses = self.base(f)
        fusion = nt_xent(f.fused[0], f.fused[1], f.logit_scale)
        return {**losses, "loss": losses["loss"] + self.weight * fusion, "loss_fusion": fusion}
