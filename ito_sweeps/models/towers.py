"""The trained model: an open_clip dual encoder plus, during training only, ITO's fusion module.

`ITOModel.forward` runs each tower once per batch and returns everything any objective needs: the
pooled (deployed) embeddings of every view and caption, fused embeddings of the requested
(view, caption) pairs built from the per-token outputs of that same pass, and, for deep feature
separation, "independent" embeddings from extra heads on the towers' pooled outputs. The fusion
module and the extra heads are training-only: export keeps the open_clip towers alone.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import open_clip
import torch
import torch.nn.functional as F
from open_clip.transformer import VisionTransformer, text_global_pool
from torch import nn

from ito_sweeps.config import Config, ConfigError
from ito_sweeps.models.fusion import FusionModule

# Small configurations for CPU runs, registered with open_clip so they are ordinary model names.
open_clip.add_model_config(Path(__file__).parent / "configs")


@dataclass
class Features:
    image: torch.Tensor  # (V, B, D) L2-normalised pooled embeddings, one row block per view
    text: torch.Tensor  # (C, B, D) L2-normalised pooled embeddings, one row block per caption
    fused: torch.Tensor | None  # (P, B, D) fused embeddings, one block per requested (view, caption) pair
    logit_scale: torch.Tensor  # exp(logit_scale), a scalar
    image_independent: torch.Tensor | None = None  # (V, B, D) L2-normalised, from the separation heads
    text_independent: torch.Tensor | None = None  # (C, B, D) likewise


def model_config(cfg: Config) -> dict[str, Any]:
    """The open_clip `model_cfg` this run trains; export writes exactly this."""
    base = open_clip.get_model_config(cfg.model.name)
    if base is None:
        raise ConfigError(
            f"model.name: unknown model {cfg.model.name!r}; use a registered small config (tiny) "
            f"or an open_clip name such as ViT-B-16 (see open_clip.list_models())"
        )
    model_cfg = copy.deepcopy(base)
    model_cfg["vision_cfg"]["image_size"] = cfg.data.image_size
    return model_cfg


def build_tokenizer(cfg: Config):
    return open_clip.get_tokenizer(cfg.model.name)


def _project(x: torch.Tensor, projection: nn.Module | torch.Tensor | None) -> torch.Tensor:
    if projection is None:
        return x
    return projection(x) if isinstance(projection, nn.Module) else x @ projection


class IndependentHeads(nn.Module):
    """Deep feature separation's extra projections (Jiang et al.): pooled tower output -> joint space.

    They read the same pooled features as the towers' own projections, initialised the same way.
    """

    def __init__(self, image_width: int, text_width: int, dim: int):
        super().__init__()
        self.image = nn.Parameter(image_width**-0.5 * torch.randn(image_width, dim))
        self.text = nn.Parameter(text_width**-0.5 * torch.randn(text_width, dim))

    def forward(self, image_pooled: torch.Tensor, text_pooled: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return F.normalize(image_pooled @ self.image, dim=-1), F.normalize(text_pooled @ self.text, dim=-1)


class ITOModel(nn.Module):
    def __init__(self, cfg: Config, with_fusion: bool, independent_heads: bool = False):
        super().__init__()
        model_config(cfg)  # fails early, with the key name, on an unknown model
        self.clip = open_clip.create_model(
            cfg.model.name, pretrained=cfg.model.pretrained, force_image_size=cfg.data.image_size
        )
        if cfg.model.grad_checkpointing:
            self.clip.set_grad_checkpointing(True)
        self.fusion = self._build_fusion(cfg) if with_fusion else None
        self.independent = self._build_heads(cfg) if independent_heads else None

    def _check_token_tower(self, cfg: Config, needs: str, fix: str) -> VisionTransformer:
        visual = self.clip.visual
        if not isinstance(visual, VisionTransformer) or visual.pool_type != "tok" or visual.attn_pool is not None:
            raise ConfigError(
                f"{needs} needs the CLS and patch tokens of a plain ViT image tower; {cfg.model.name} has none. {fix}"
            )
        return visual

    def _build_fusion(self, cfg: Config) -> FusionModule:
        visual = self._check_token_tower(
            cfg, "fusion.depth: the fusion module", "Set fusion.depth=0 or objective.fusion_weight=0."
        )
        grid = visual.grid_size
        if grid[0] != grid[1]:
            raise ConfigError(f"data.image_size: the fusion module needs a square patch grid, got {grid}")
        width = visual.output_dim
        f = cfg.fusion
        return FusionModule(width, f.depth, f.heads, f.mlp_ratio, f.readout, grid[0])

    def _build_heads(self, cfg: Config) -> IndependentHeads:
        visual = self._check_token_tower(
            cfg, "objective.latent_structure.regularizers: sep", "Choose another regulariser (br, gc)."
        )
        return IndependentHeads(visual.transformer.width, self.text_tower.transformer.width, visual.output_dim)

    @property
    def text_tower(self) -> nn.Module:
        return getattr(self.clip, "text", self.clip)  # CustomTextCLIP keeps its text tower apart

    # ---- the deployed path: exactly what an exported open_clip model computes --------------------

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        return self.clip.encode_image(images)

    def encode_text(self, texts: torch.Tensor) -> torch.Tensor:
        return self.clip.encode_text(texts)

    # ---- the training path: one pass per tower giving pooled and token outputs --------------------

    # forward_intermediates(indices=1) returns the last block's tokens through the final norm together
    # with the pooled output of the same pass: one extra LayerNorm, never a second pass of a tower.
    # Tokens come back unprojected, so that only those a fusion pair uses get projected.
    def _image_with_tokens(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.clip.visual.forward_intermediates(
            images, indices=1, normalize_intermediates=True, output_fmt="NLC", output_extra_tokens=True
        )
        tokens = torch.cat([out["image_intermediates_prefix"][0], out["image_intermediates"][0]], dim=1)
        return out["image_features"], tokens

    def _text_with_tokens(self, texts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.clip.forward_intermediates(text=texts, text_indices=1, normalize_intermediates=True, normalize=False)
        return out["text_features"], out["text_intermediates"][0]

    def _fusion_inputs(self, image_tokens: torch.Tensor, text_tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Project tokens into the joint space; text gets the tower's position embedding (projected too)."""
        tower = self.text_tower
        image = _project(image_tokens, self.clip.visual.proj)
        text = _project(text_tokens, tower.text_projection)
        positions = _project(tower.positional_embedding[: text_tokens.shape[-2]], tower.text_projection)
        return image, text + positions.to(text.dtype)

    @property
    def _text_pooling(self) -> tuple[str, int | None]:
        """The text tower's pool type and end-of-text id, named as open_clip's towers name them."""
        tower = self.text_tower
        pool = getattr(tower, "text_pool_type", getattr(tower, "pool_type", "argmax"))
        return pool, getattr(tower, "text_eos_id", getattr(tower, "eos_id", None))

    def _text_valid(self, texts: torch.Tensor) -> torch.Tensor:
        """True up to and including end-of-text, found the way open_clip's pooling finds it."""
        pool, eos_id = self._text_pooling
        if pool == "argmax":
            eot = texts.argmax(dim=-1)
        elif pool == "eos":
            eot = (texts == eos_id).int().argmax(dim=-1)
        else:
            return torch.ones_like(texts, dtype=torch.bool)
        return torch.arange(texts.shape[1], device=texts.device)[None, :] <= eot[:, None]

    def _independent(
        self, image_tokens: torch.Tensor, text_tokens: torch.Tensor, texts: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Separation-head embeddings of the pooled, unprojected outputs (the CLS token; the text pool)."""
        pool, eos_id = self._text_pooling
        return self.independent(image_tokens[:, 0], text_global_pool(text_tokens, texts, pool, eos_id))

    def forward(
        self, images: torch.Tensor, texts: torch.Tensor, fusion_pairs: tuple[tuple[int, int], ...] = ()
    ) -> Features:
        """images (B, V, 3, H, W), texts (B, C, L) token ids; fusion_pairs index (view, caption)."""
        b, v = images.shape[:2]
        c = texts.shape[1]
        flat_images, flat_texts = images.flatten(0, 1), texts.flatten(0, 1)
        per_block = lambda x, n: x.unflatten(0, (b, n)).transpose(0, 1)  # (B * n, D) -> (n, B, D)  # noqa: E731
        independent: tuple[torch.Tensor | None, torch.Tensor | None] = (None, None)
        if not fusion_pairs and self.independent is None:
            image, text, fused = self.encode_image(flat_images), self.encode_text(flat_texts), None
        else:
            image, image_tokens = self._image_with_tokens(flat_images)
            text, text_tokens = self._text_with_tokens(flat_texts)
            if self.independent is not None:
                image_ind, text_ind = self._independent(image_tokens, text_tokens, flat_texts)
                independent = per_block(image_ind, v), per_block(text_ind, c)
            fused = self._fuse(image_tokens, text_tokens, flat_texts, b, fusion_pairs) if fusion_pairs else None
        image = per_block(F.normalize(image, dim=-1), v)
        text = per_block(F.normalize(text, dim=-1), c)
        return Features(image=image, text=text, fused=fused, logit_scale=self.clip.logit_scale.exp(),
                        image_independent=independent[0], text_independent=independent[1])

    def _fuse(
        self, image_tokens: torch.Tensor, text_tokens: torch.Tensor, flat_texts: torch.Tensor, b: int,
        fusion_pairs: tuple[tuple[int, int], ...],
    ) -> torch.Tensor:
        """(P, B, D) fused embeddings of the (view, caption) pairs, from (B * V or C, ...) token outputs."""
        v, c = image_tokens.shape[0] // b, text_tokens.shape[0] // b
        views, captions = zip(*fusion_pairs)
        # project each used view / caption once, then lay out all pairs for one fusion call:
        # (B, V or C, ...) -> (P * B, ...)
        used_v, used_c = sorted(set(views)), sorted(set(captions))
        image_used, text_used = self._fusion_inputs(
            image_tokens.unflatten(0, (b, v))[:, used_v], text_tokens.unflatten(0, (b, c))[:, used_c]
        )
        valid_used = self._text_valid(flat_texts).unflatten(0, (b, c))[:, used_c]
        pick = lambda x, idx, used: x[:, [used.index(i) for i in idx]].transpose(0, 1).flatten(0, 1)  # noqa: E731
        fused = self.fusion(
            pick(image_used, views, used_v), pick(text_used, captions, used_c), pick(valid_used, captions, used_c)
        )
        return fused.unflatten(0, (len(fusion_pairs), b))
