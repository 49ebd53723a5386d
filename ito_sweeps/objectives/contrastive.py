"""Contrastive building blocks over the global batch.

With several data-parallel workers the features are gathered with gradients (open_clip's
`gather_features(gather_with_grad=True)`), so every loss sees the global batch exactly as one process
holding it would; in one process they fall back to the local batch.
"""
from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from open_clip.loss import ClipLoss, gather_features


def world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def clip_loss(local_loss: bool = False) -> ClipLoss:
    """CLIP(I, T) = 1/2 [CE(s I T^T, diag) + CE(s T I^T, diag)], open_clip's own implementation."""
    rank, world_size = world()
    return ClipLoss(local_loss=local_loss, gather_with_grad=True, rank=rank, world_size=world_size)


def nt_xent(a: torch.Tensor, b: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Symmetric NT-Xent between two sets of L2-normalised embeddings, positives on the diagonal.

    For row i of `a` the positive is b_i and the negatives are every other embedding of either set
    (2B - 2 of them over the global batch B); the same for `b`, and the two losses are averaged.
    """
    rank, world_size = world()
    if world_size > 1:
        a, b = gather_features(a, b, gather_with_grad=True, rank=rank, world_size=world_size)
    n = a.shape[0]
    self_mask = torch.eye(n, dtype=torch.bool, device=a.device)
    labels = torch.arange(n, device=a.device)

    def one_side(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        cross = scale * x @ y.T
        same = (scale * x @ x.T).masked_fill(self_mask, float("-inf"))
        return F.cross_entropy(torch.cat([cross, same], dim=1), labels)

    return (one_side(a, b) + one_side(b, a)) / 2
