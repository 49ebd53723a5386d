"""Geometry of a joint image-text embedding space, measured on paired embeddings.

All metrics see L2-normalised embeddings, so every point lies on the unit sphere:

- modality gap (Liang et al. 2022, "Mind the Gap"): || mean_i x_i - mean_i y_i ||, the distance
  between the centroids of the image cloud x and the text cloud y;
- mean paired distance: mean_i ||x_i - y_i||;
- alignment (Wang & Isola 2020, "Understanding Contrastive Representation Learning through
  Alignment and Uniformity on the Hypersphere"): mean_i ||x_i - y_i||^2;
- uniformity (same paper, t = 2): log mean_{i != j} exp(-2 ||u_i - u_j||^2), for the images,
  for the texts, and for their union [x; y]. Lower means more spread out over the sphere.

Everything is computed in float64 so that small differences between runs are not rounding noise.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

# Rows of the pairwise-distance matrix handled at once in `uniformity`: a full N x N matrix for the
# union of 2 x 5000 points would take 800 MB in float64, a 1024-row block takes 80 MB.
_UNIFORMITY_BLOCK_ROWS = 1024


def geometry_metrics(image: torch.Tensor, text: torch.Tensor) -> dict[str, float]:
    """Gap, paired distances, alignment and uniformity of paired embeddings image[i] <-> text[i]."""
    if image.ndim != 2 or image.shape != text.shape:
        raise ValueError(f"expected paired (N, D) embeddings, got {tuple(image.shape)} and {tuple(text.shape)}")
    x = F.normalize(image.to(torch.float64), dim=1)
    y = F.normalize(text.to(torch.float64), dim=1)

    paired_distance = (x - y).norm(dim=1)
    return {
        "modality_gap": (x.mean(dim=0) - y.mean(dim=0)).norm().item(),
        "mean_paired_distance": paired_distance.mean().item(),
        "alignment": paired_distance.square().mean().item(),
        "uniformity_image": uniformity(x),
        "uniformity_text": uniformity(y),
        "uniformity_union": uniformity(torch.cat([x, y], dim=0)),
    }


def uniformity(u: torch.Tensor) -> float:
    """log mean_{i != j} exp(-2 ||u_i - u_j||^2) over the L2-normalised rows of u (N, D), N >= 2."""
    n = u.shape[0]
    if n < 2:
        raise ValueError(f"uniformity needs at least 2 points, got {n}")
    u = F.normalize(u.to(torch.float64), dim=1)

    kernel_sum = 0.0
    for start in range(0, n, _UNIFORMITY_BLOCK_ROWS):
        rows = u[start : start + _UNIFORMITY_BLOCK_ROWS]
        # On the unit sphere ||a - b||^2 = 2 - 2 a.b; clamp the tiny negatives rounding can produce.
        squared_distance = (2.0 - 2.0 * rows @ u.T).clamp_min(0.0)
        kernel = torch.exp(-2.0 * squared_distance)
        # The mean runs over i != j only, so the self-pairs (each exp(0) = 1) must not count.
        own = torch.arange(rows.shape[0])
        kernel[own, start + own] = 0.0
        kernel_sum += kernel.sum().item()
    # Every term lies in [exp(-8), 1], so the plain sum neither underflows nor needs log-sum-exp.
    return math.log(kernel_sum / (n * (n - 1)))
