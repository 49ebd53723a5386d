"""UniAlign: decoupled alignment and uniformity for M >= 2 embeddings per sample (methods.md section 3).

Every image view and every caption a sample brings counts as one modality, so the `alignment`
variants decide M: `none` gives (image, text), `views` gives (view 1, view 2, text), and so on.

    L = w_uni sum_m U(Z_m) + w_align L_align + w_ctr U(C) + w_vol L_vol

Uniformity couples the samples of a batch and sees the global batch; alignment and volume are
per-sample terms and stay local (see contrastive.gather).
"""
from __future__ import annotations

import torch

from ito_sweeps.config import Config
from ito_sweeps.models.towers import Features
from ito_sweeps.objectives.contrastive import gather, uniformity
from ito_sweeps.objectives.registry import Inputs, alignment_counts, register


def gaussian(tau: float) -> float:
    """The t of contrastive.uniformity for UniAlign's kernel exp(-||z_i - z_j||^2 / (2 tau^2))."""
    return 1 / (2 * tau**2)


def anchor_alignment(z: torch.Tensor, anchor: int) -> torch.Tensor:
    """L_align = 1/(B(M-1)) sum_i sum_{n != a} ||z_i^a - z_i^n||^2 for z (M, B, D)."""
    others = torch.cat([z[:anchor], z[anchor + 1:]])
    return (others - z[anchor]).square().sum(dim=-1).mean()


def gram_volume(z: torch.Tensor) -> torch.Tensor:
    """mean_i sqrt(det G_i), G_i the Gram matrix of sample i's M vectors; z (M, B, D).

    det G is 0 for linearly dependent vectors, where sqrt has an infinite slope: such samples give
    volume 0 and no gradient instead of NaN (the double-where keeps NaN out of the backward pass).
    """
    per_sample = z.transpose(0, 1)  # (B, M, D)
    det = torch.linalg.det(per_sample @ per_sample.transpose(1, 2))
    tiny = torch.finfo(det.dtype).tiny
    positive = det > tiny
    return torch.where(positive, torch.where(positive, det, 1.0).sqrt(), 0.0).mean()


@register("unialign")
class UniAlignObjective:
    def __init__(self, cfg: Config):
        views, captions = alignment_counts(cfg.objective)
        self.inputs = Inputs(views=views, captions=captions)
        self.cfg = cfg.objective.unialign
        self.anchor = 0 if self.cfg.anchor == "image" else views  # the first view or the first caption

    def __call__(self, f: Features) -> dict[str, torch.Tensor]:
        u = self.cfg
        z = torch.cat([f.image[: self.inputs.views], f.text[: self.inputs.captions]])  # (M, B, D)
        everyone = gather(*z)
        losses = {
            "loss_uniformity": torch.stack([uniformity(m, gaussian(u.uniformity_tau)) for m in everyone]).sum(),
            "loss_align": anchor_alignment(z, self.anchor),
        }
        total = u.uniformity_weight * losses["loss_uniformity"] + u.align_weight * losses["loss_align"]
        if u.centroid_weight:
            losses["loss_centroid"] = uniformity(torch.stack(everyone).mean(dim=0), gaussian(u.centroid_tau))
            total = total + u.centroid_weight * losses["loss_centroid"]
        if u.volume_weight:
            losses["loss_volume"] = gram_volume(z)
            total = total + u.volume_weight * losses["loss_volume"]
        return {"loss": total, **losses}
