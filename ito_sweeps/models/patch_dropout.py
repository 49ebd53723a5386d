"""FLIP-style patch dropout that also returns which patches it kept.

open_clip's `PatchDropout` drops the same way but forgets the kept positions; ITO's fusion module needs
them to give each kept patch its own 2-D position embedding.
"""
from __future__ import annotations

import torch


def keep_random_patches(tokens: torch.Tensor, drop: float) -> tuple[torch.Tensor, torch.Tensor]:
    """tokens (B, 1 + N, W), CLS first -> (B, 1 + K, W) and the kept patches' indices (B, K) into the N.

    Every row keeps its CLS token and its own random K = max(1, floor(N * (1 - drop))) patches.
    """
    b, n = tokens.shape[0], tokens.shape[1] - 1
    keep = max(1, int(n * (1 - drop)))
    index = torch.rand(b, n, device=tokens.device).topk(keep, dim=1).indices
    patches = tokens[:, 1:].gather(1, index.unsqueeze(-1).expand(-1, -1, tokens.shape[-1]))
    return torch.cat([tokens[:, :1], patches], dim=1), index
