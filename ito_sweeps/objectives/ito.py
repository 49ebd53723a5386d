"""ITO: multiple alignment plus the training-time fusion NT-Xent, L = L_align + lambda * L_fusion.

Alignment variants draw K views and/or K' captions and average CLIP over every (view, caption) pair.
The fusion loss contrasts fuse(view 1, caption 1) with fuse(view 2, caption 1); with a single view it
contrasts fuse(view 1, caption 1) with fuse(view 1, caption 2) (the spec's choice for `captions`), and
with neither (`none`) a second view is drawn for fusion alone.
"""
from __future__ import annotations

import torch

from ito_sweeps.config import Config
from ito_sweeps.models.towers import Features
from ito_sweeps.objectives.contrastive import clip_loss, nt_xent
from ito_sweeps.objectives.registry import register


def uses_fusion(cfg: Config) -> bool:
    return cfg.objective.fusion_weight > 0 and cfg.fusion.depth > 0


@register("ito")
class ITOObjective:
    def __init__(self, cfg: Config):
        o = cfg.objective
        k_views = o.num_views if o.alignment in ("views", "views_captions") else 1
        k_captions = o.num_captions if o.alignment in ("captions", "views_captions") else 1
        self.align_pairs = [(v, c) for v in range(k_views) for c in range(k_captions)]
        self.weight = o.fusion_weight
        if not uses_fusion(cfg):
            self.fusion_pairs: tuple[tuple[int, int], ...] = ()
        elif k_views >= 2 or k_captions == 1:
            self.fusion_pairs = ((0, 0), (1, 0))
            k_views = max(k_views, 2)
        else:
            self.fusion_pairs = ((0, 0), (0, 1))
        self.views, self.captions = k_views, k_captions
        self.loss = clip_loss(o.local_loss)

    def __call__(self, f: Features) -> dict[str, torch.Tensor]:
        align = torch.stack([self.loss(f.image[v], f.text[c], f.logit_scale) for v, c in self.align_pairs]).mean()
        if not self.fusion_pairs:
            return {"loss": align, "loss_align": align}
        fusion = nt_xent(f.fused[0], f.fused[1], f.logit_scale)
        return {"loss": align + self.weight * fusion, "loss_align": align, "loss_fusion": fusion}
