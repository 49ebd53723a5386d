"""ITO's training-time fusion module: a small bidirectional transformer over [image tokens ; text tokens].

It exists only to shape the towers during training (its NT-Xent loss back-propagates into both
encoders) and is dropped at export, so nothing here may be needed to compute a deployed embedding.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from open_clip.pos_embed import get_2d_sincos_pos_embed
from torch import nn

from ito_sweeps.models.patch_dropout import keep_random_patches


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

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor, only: int | None = None) -> torch.Tensor:
        """only: compute the output at that one position (keys and values still cover every token).

        The last block needs no more for a CLS or token readout, which saves most of its work.
        """
        b, n, d = x.shape
        h = self.ln_1(x)
        if only is None:
            q, k, v = self.qkv(h).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        else:
            w, bias = self.qkv.weight, self.qkv.bias
            x, h_only = x[:, only].unsqueeze(1), h[:, only].unsqueeze(1)
            q = F.linear(h_only, w[:d], bias[:d]).view(b, 1, self.heads, d // self.heads).transpose(1, 2)
            k, v = F.linear(h, w[d:], bias[d:]).view(b, n, 2, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        attn = F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask)
        x = x + self.proj(attn.transpose(1, 2).reshape(b, -1, d))
        return x + self.mlp(self.ln_2(x))


class FusionModule(nn.Module):
    """fuse(image tokens, text tokens) -> one L2-normalised embedding per pair.

    image_tokens: (B, 1 + P, D), the CLS token first, already projected into the joint space.
    text_tokens: (B, L, D), projected, with the text tower's position embedding already added.
    text_valid: (B, L) bool, False after end-of-text: those positions are masked as keys.
    patch_index: (B, K) the grid positions of the image's patch tokens when the tower kept only K of
        them (model.view_patch_dropout); None when every patch is there, in grid order.
    In training, `patch_dropout` of the patch tokens are dropped after their positions are added.
    """

    def __init__(self, width: int, depth: int, heads: int, mlp_ratio: float, readout: str, grid_size: int,
                 patch_dropout: float = 0.0):
        super().__init__()
        if width % heads:
            raise ValueError(f"fusion.heads: {heads} does not divide the embedding width {width}")
        self.readout = readout
        self.patch_dropout = patch_dropout
        pos = get_2d_sincos_pos_embed(width, grid_size, cls_token=True)  # CLS gets the zero position
        # fixed, so a buffer rather than a parameter, and not saved: it is rebuilt from the config
        self.register_buffer("image_pos", torch.from_numpy(pos).float(), persistent=False)
        self.blocks = nn.ModuleList(Block(width, heads, mlp_ratio) for _ in range(depth))
        self.ln_final = nn.LayerNorm(width)
        self.token = nn.Parameter(torch.zeros(width)) if readout == "token" else None

    def forward(self, image_tokens: torch.Tensor, text_tokens: torch.Tensor, text_valid: torch.Tensor,
                patch_index: torch.Tensor | None = None) -> torch.Tensor:
        b = image_tokens.shape[0]
        pos = self.image_pos.to(image_tokens.dtype)
        if patch_index is not None:
            pos = torch.cat([pos[:1].expand(b, 1, -1), pos[1:][patch_index]], dim=1)
        image = image_tokens + pos
        if self.training and self.patch_dropout:
            image, _ = keep_random_patches(image, self.patch_dropout)
        parts = [image, text_tokens]
        valid = [text_valid.new_ones(b, image.shape[1]), text_valid]
        if self.token is not None:
            parts.append(self.token.to(image_tokens.dtype).expand(b, 1, -1))
            valid.append(text_valid.new_ones(b, 1))
        x = torch.cat(parts, dim=1)
        valid = torch.cat(valid, dim=1)
        key_mask = valid[:, None, None, :]  # broadcast over heads and queries
        readout_at = {"cls": 0, "token": x.shape[1] - 1}.get(self.readout)
        for i, block in enumerate(self.blocks):
            x = block(x, key_mask, only=readout_at if i == len(self.blocks) - 1 else None)
        if self.readout == "cls":
            out = x[:, 0]
        elif self.readout == "token":
            out = x[:, -1]
        else:  # mean over valid tokens only, so padding never reaches the embedding
            w = valid.to(x.dtype).unsqueeze(-1)
            out = (x * w).sum(1) / w.sum(1)
        return F.normalize(self.ln_final(out), dim=-1)
