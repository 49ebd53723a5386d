"""Latent modality structures (Jiang et al., CVPR 2023; methods.md section 4) and CyCLIP.

`latent_structure` trains L_con = 1/4 (L_V2T + L_T2V + L_V2V + L_T2T), whose in-modal positives are a
second image view and a text-augmented copy of the caption, plus any of three regularisers:

- `sep`, deep feature separation: training-only heads give "independent" features z^i that must be
  orthogonal to the shared ones, contrastive within their modality and uniform;
- `br`, Brownian bridge: the augmented image must lie on the bridge between image and text;
- `gc`, geometric consistency: image-text and image-image similarities must agree, also under
  augmentation.

`cyclip` is CLIP plus the two symmetry terms of L_gc, as in the CyCLIP paper. Terms that couple the
samples of a batch see the global batch; per-sample terms stay local (see contrastive.gather).
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from ito_sweeps.config import Config, LatentStructureConfig
from ito_sweeps.models.towers import Features
from ito_sweeps.objectives.contrastive import clip_loss, gather, info_nce, uniformity
from ito_sweeps.objectives.registry import Inputs, register

# Features rows: image[0] is z_V, image[1] the augmented view z^a_V; text[0] is z_T, text[1] z^a_T.
ORIGINAL, AUGMENTED = 0, 1


def latent_contrastive(
    v: torch.Tensor, t: torch.Tensor, v_aug: torch.Tensor, t_aug: torch.Tensor, scale: torch.Tensor
) -> torch.Tensor:
    """L_con = 1/4 (L_V2T + L_T2V + L_V2V + L_T2T); each term is one direction of InfoNCE."""
    return (info_nce(v, t, scale) + info_nce(t, v, scale) + info_nce(v, v_aug, scale) + info_nce(t, t_aug, scale)) / 4


def orthogonality(z: torch.Tensor, z_ind: torch.Tensor) -> torch.Tensor:
    """mean_j <z_j, z^i_j>^2: shared and independent features of one modality."""
    return (z * z_ind).sum(dim=-1).square().mean()


def separation(
    v: torch.Tensor, t: torch.Tensor,
    v_ind: torch.Tensor, t_ind: torch.Tensor, v_aug_ind: torch.Tensor, t_aug_ind: torch.Tensor,
    scale: torch.Tensor,
) -> torch.Tensor:
    """L_sep = L_ortho + L^i_con + L^i_uni over the global batch.

    L_ortho = mean_j (<z_V, z^i_V>^2 + <z_T, z^i_T>^2); L^i_con and L^i_uni average the image and the
    text term (choice): InfoNCE from each independent feature to its augmented view's, and
    Wang-Isola uniformity (t = 2, i != j).
    """
    ortho = orthogonality(v, v_ind) + orthogonality(t, t_ind)
    contrast = (info_nce(v_ind, v_aug_ind, scale) + info_nce(t_ind, t_aug_ind, scale)) / 2
    uniform = (uniformity(v_ind, 2.0, exclude_self=True) + uniformity(t_ind, 2.0, exclude_self=True)) / 2
    return ortho + contrast + uniform


def brownian_bridge(v: torch.Tensor, t: torch.Tensor, v_aug: torch.Tensor, bridge_t: float) -> torch.Tensor:
    """L_br = mean_j ||z^a_Vj - mu_j||^2, mu = normalise(t z_V + (1 - t) z_T)."""
    mu = F.normalize(bridge_t * v + (1 - bridge_t) * t, dim=-1)
    return (v_aug - mu).square().sum(dim=-1).mean()


def symmetry_terms(v: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """CyCLIP's (cross-modal, in-modal) terms: 1/B sum_{j,k} (<v_j,t_k> - <v_k,t_j>)^2 and (<v_j,v_k> - <t_j,t_k>)^2."""
    b = v.shape[0]
    cross = v @ t.T
    return (cross - cross.T).square().sum() / b, (v @ v.T - t @ t.T).square().sum() / b


def geometric_consistency(v: torch.Tensor, t: torch.Tensor, v_aug: torch.Tensor, t_aug: torch.Tensor) -> torch.Tensor:
    """L_gc + L^a_gc: the symmetry terms, and the same similarities kept under augmentation."""
    b = v.shape[0]
    l_gc = sum(symmetry_terms(v, t))
    in_modal = (v @ v.T - v_aug @ v_aug.T).square().sum() + (t @ t.T - t_aug @ t_aug.T).square().sum()
    paired = ((v * t).sum(dim=-1) - (v_aug * t_aug).sum(dim=-1)).square().sum()
    return l_gc + (in_modal + paired) / b


def _sep(f: Features, c: LatentStructureConfig) -> torch.Tensor:
    return separation(
        *gather(f.image[ORIGINAL], f.text[ORIGINAL], f.image_independent[ORIGINAL], f.text_independent[ORIGINAL],
                f.image_independent[AUGMENTED], f.text_independent[AUGMENTED]),
        f.logit_scale,
    )


def _br(f: Features, c: LatentStructureConfig) -> torch.Tensor:
    return brownian_bridge(f.image[ORIGINAL], f.text[ORIGINAL], f.image[AUGMENTED], c.bridge_t)


def _gc(f: Features, c: LatentStructureConfig) -> torch.Tensor:
    return geometric_consistency(*gather(f.image[ORIGINAL], f.text[ORIGINAL], f.image[AUGMENTED], f.text[AUGMENTED]))


REGULARIZERS: dict[str, Callable[[Features, LatentStructureConfig], torch.Tensor]] = {
    "sep": _sep, "br": _br, "gc": _gc,
}


@register("latent_structure")
class LatentStructureObjective:
    def __init__(self, cfg: Config):
        self.cfg = cfg.objective.latent_structure
        self.inputs = Inputs(views=2, captions=1, augmented_captions=1,
                             independent_heads="sep" in self.cfg.regularizers)

    def __call__(self, f: Features) -> dict[str, torch.Tensor]:
        losses = {"loss_con": latent_contrastive(
            *gather(f.image[ORIGINAL], f.text[ORIGINAL], f.image[AUGMENTED], f.text[AUGMENTED]), f.logit_scale
        )}
        total = losses["loss_con"]
        for name in self.cfg.regularizers:
            losses[f"loss_{name}"] = REGULARIZERS[name](f, self.cfg)
            total = total + getattr(self.cfg, f"{name}_weight") * losses[f"loss_{name}"]
        return {"loss": total, **losses}


@register("cyclip")
class CyCLIPObjective:
    inputs = Inputs()

    def __init__(self, cfg: Config):
        self.cfg = cfg.objective.cyclip
        self.loss = clip_loss(cfg.objective.local_loss)

    def __call__(self, f: Features) -> dict[str, torch.Tensor]:
        clip = self.loss(f.image[0], f.text[0], f.logit_scale)
        cross, in_modal = symmetry_terms(*gather(f.image[0], f.text[0]))
        total = clip + self.cfg.cross_weight * cross + self.cfg.inmodal_weight * in_modal
        return {"loss": total, "loss_clip": clip, "loss_cross": cross, "loss_inmodal": in_modal}
