"""ITO's training-time fusion module: a small bidirectional transformer over [image tokens ; text tokens].

It exists only to shape the towers during training (its NT-Xent loss back-propagates into both
encoders) and is dropped at export, so nothing here may be needed to compute a deployed embedding.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from open_clip.pos_embed import get_2d_sincos_pos_embed
from torch import nn


class Block(nn.Module):
    """Pre-norm transformer block; attention through scaled_dot_product_attention (fused kernels)."""

    def __init__(self, width: int, heads: int, mlp_ratio: float):
        super().__init__()
        self.heads = heads
        self.ln_1 = nn.LayerNorm(width)
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        self.ln_2 = nn.LayerNorm(width)
        hidden = int(width * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(width, hidden), nn.GELU(), nn.Linear(hidden, width))

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(self.ln_1(x)).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        attn = F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask)
        x = x + self.proj(attn.transpose(1, 2).reshape(b, n, d))
        return x + self.mlp(self.ln_2(x))


class FusionModule(nn.Module):
    """fuse(image tokens, text tokens) -> one L2-normalised embedding per pair.

    image_tokens: (B, 1 + P, D), the CLS token first, already projected into the joint space.
    text_tokens: (B, L, D), projected, with the text tower's position embedding already added.
    text_valid: (B, L) bool, False after end-of-text: those positions are masked as keys.
    """

    def __init__(self, width: int, depth: int, heads: int, mlp_ratio: float, readout: str, grid_size: int):
        super().__init__()
        if width % heads:
            raise ValueError(f"fusion.heads: {heads} does not divide the embedding width {width}")
        self.readout = readout
        pos = get_2d_sincos_pos_embed(width, grid_size, cls_token=True)  # CLS gets the zero position
        # fixed, so a buffer rather than a parameter, and not saved: it is rebuilt from the config
        self.register_buffer("image_pos", torch.from_numpy(pos).float(), persistent=False)
        self.blocks = nn.ModuleList(Block(width, heads, mlp_ratio) for _ in range(depth))
        self.ln_final = nn.LayerNorm(width)
        self.token = nn.Parameter(torch.zeros(width)) if readout == "token" else None

    def forward(self, image_tokens: torch.Tensor, text_tokens: torch.Tensor, text_valid: torch.Tensor) -> torch.Tensor:
        b, n_img, _ = image_tokens.shape
        parts = [image_tokens + self.image_pos.to(image_tokens.dtype), text_tokens]
        valid = [text_valid.new_ones(b, n_img), text_valid]
        if self.token is not None:
            parts.append(self.token.to(image_tokens.dtype).expand(b, 1, -1))
            valid.append(text_valid.new_ones(b, 1))
        x = torch.cat(parts, dim=1)
        valid = torch.cat(valid, dim=1)
        key_mask = valid[:, None, None, :]  # broadcast over heads and queries
        for block in self.blocks:
            x = block(x, key_mask)
        if self.readout == "cls":
            out = x[:, 0]
        elif self.readout == "token":
            out = x[:, -1]
        else:  # mean over valid tokens only, so padding never reaches the embedding
            w = valid.to(x.dtype).unsqueeze(-1)
            out = (x * w).sum(1) / w.sum(1)
        return F.normalize(self.ln_final(out), dim=-1)
