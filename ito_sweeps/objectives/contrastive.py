"""Contrastive building blocks over the global batch.

With several data-parallel workers the features are gathered with gradients (open_clip's
`gather_features(gather_with_grad=True)`), so every loss sees the global batch exactly as one process
holding it would; in one process they fall back to the local batch.
"""
from __future__ import annotations

import math

import torch
import torch.distributed as dist
import torch.nn.functional as F
from open_clip.loss import ClipLoss


def world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def clip_loss(local_loss: bool = False) -> ClipLoss:
    """CLIP(I, T) = 1/2 [CE(s I T^T, diag) + CE(s T I^T, diag)], open_clip's own implementation."""
    rank, world_size = world()
    return ClipLoss(local_loss=local_loss, gather_with_grad=True, rank=rank, world_size=world_size)


def gather(*features: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Each (B_local, ...) tensor as the global batch (B, ...), with gradients flowing back to every rank.

    For losses that couple the samples of a batch; per-sample losses stay local, since data-parallel
    gradient averaging already turns the ranks' local means into the global mean.
    """
    rank, world_size = world()
    if world_size == 1:
        return features
    import torch.distributed.nn

    return tuple(torch.cat(torch.distributed.nn.all_gather(f), dim=0) for f in features)


def info_nce(a: torch.Tensor, b: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """One direction of InfoNCE: CE(s a b^T, diag), row i of `a` against every row of `b`."""
    return F.cross_entropy(scale * a @ b.T, torch.arange(a.shape[0], device=a.device))


def uniformity(z: torch.Tensor, t: float, exclude_self: bool = False) -> torch.Tensor:
    """log mean_{i,j} exp(-t ||z_i - z_j||^2) over the rows of z (B, D); pairs i = j left out on request.

    Wang and Isola's uniformity is t = 2 over i != j; UniAlign's Gaussian kernel of width tau is
    t = 1 / (2 tau^2) over all pairs. Rows need not be unit vectors (UniAlign's centroids are not), so
    distances come from the norms, clamped at 0 against rounding: unlike cdist's, the gradient stays
    finite where two rows coincide.
    """
    n = z.shape[0]
    norms = z.square().sum(dim=-1)
    logits = -t * (norms[:, None] + norms[None, :] - 2 * z @ z.T).clamp_min(0)
    pairs = n * n
    if exclude_self:
        logits = logits.masked_fill(torch.eye(n, dtype=torch.bool, device=z.device), float("-inf"))
        pairs = n * (n - 1)
    return torch.logsumexp(logits.flatten(), dim=0) - math.log(pairs)


def nt_xent(a: torch.Tensor, b: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Symmetric NT-Xent between two sets of L2-normalised embeddings, positives on the diagonal.

    For row i of `a` the positive is b_i and the negatives are every other embedding of either set
    (2B - 2 of them over the global batch B); the same for `b`, and the two losses are averaged.
    """
    a, b = gather(a, b)
    n = a.shape[0]
    self_mask = torch.eye(n, dtype=torch.bool, device=a.device)
    labels = torch.arange(n, device=a.device)

    def one_side(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        cross = scale * x @ y.T
        same = (scale * x @ x.T).masked_fill(self_mask, float("-inf"))
        return F.cross_entropy(torch.cat([cross, same], dim=1), labels)

    return (one_side(a, b) + one_side(b, a)) / 2
