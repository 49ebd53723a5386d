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
from typing import TYPE_CHECKING, Any

import open_clip
import torch
import torch.nn.functional as F
from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD
from open_clip.transformer import VisionTransformer, text_global_pool
from torch import nn

from ito_sweeps.config import Config, ConfigError
from ito_sweeps.models.fusion import FusionModule
from ito_sweeps.models.patch_dropout import keep_random_patches

if TYPE_CHECKING:  # the registry imports this module for Features
    from ito_sweeps.objectives.registry import Inputs

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


def preprocess_config(cfg: Config) -> dict[str, Any]:
    """The open_clip `preprocess_cfg` of the exported model: its eval transform is how evaluation sees images."""
    return {"size": cfg.data.image_size, "mean": list(OPENAI_DATASET_MEAN), "std": list(OPENAI_DATASET_STD),
            "interpolation": "bicubic", "resize_mode": "shortest"}


def eval_transform(cfg: Config):
    """PIL image -> normalised tensor, exactly as open_clip preprocesses images for the exported model."""
    from open_clip.transform import PreprocessCfg, image_transform_v2

    return image_transform_v2(PreprocessCfg(**preprocess_config(cfg)), is_train=False)


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
        self.view_patch_dropout = cfg.model.view_patch_dropout
        if self.view_patch_dropout:
            self._check_token_tower(cfg, "model.view_patch_dropout", "Set model.view_patch_dropout=0.")
        self.fusion = self._build_fusion(cfg) if with_fusion else None
        self.independent = self._build_heads(cfg) if independent_heads else None

    @classmethod
    def for_inputs(cls, cfg: Config, needs: Inputs) -> "ITOModel":
        """The model an objective's declared inputs need: fusion and separation heads only if used."""
        return cls(cfg, with_fusion=bool(needs.fusion_pairs), independent_heads=needs.independent_heads)

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
        return FusionModule(width, f.depth, f.heads, f.mlp_ratio, f.readout, grid[0], f.patch_dropout)

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

    def _image_with_tokens(
        self, images: torch.Tensor, drop: float = 0.0
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """The image tower's pooled output, its final-norm tokens (unprojected) and the kept patches.

        The same operations as open_clip's `VisionTransformer.forward` for a CLS-pooled ViT, whose pooled
        output is the CLS row of the final-norm tokens; `drop` > 0 keeps a random part of each image's
        patches after the position embedding (FLIP), and the kept indices come back for the fusion module.
        Tokens come back unprojected, so that only those a fusion pair uses get projected.
        """
        visual = self.clip.visual
        x = visual._embeds(images)  # patches + CLS + positions, then ln_pre (per token: commutes with dropping)
        index = None
        if drop:
            x, index = keep_random_patches(x, drop)
        tokens = visual.ln_post(visual.transformer(x))
        pooled = _project(tokens[:, 0], visual.proj)
        return pooled, tokens, index

    def _text_with_tokens(self, texts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # the last block's tokens through the final norm, with the pooled output of the same pass
        out = self.clip.forward_intermediates(text=texts, text_indices=1, normalize_intermediates=True, normalize=False)
        return out["text_features"], out["text_intermediates"][0]

    def _views_with_tokens(
        self, images: torch.Tensor, drop: float
    ) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor | None]]:
        """images (B, V, ...) -> pooled (V * B, D) view-major, and per view its tokens and kept patches.

        One pass over all views; two when later views drop patches (their sequences are shorter).
        """
        b, v = images.shape[:2]
        by_view = images.transpose(0, 1)
        groups = [(by_view, 0.0)] if not drop else [(by_view[:1], 0.0), (by_view[1:], drop)]
        pooled, tokens, index = [], [], []
        for group, p in groups:
            n = group.shape[0]
            g_pooled, g_tokens, g_index = self._image_with_tokens(group.flatten(0, 1), p)
            pooled.append(g_pooled)
            tokens += g_tokens.unflatten(0, (n, b)).unbind(0)
            index += [None] * n if g_index is None else g_index.unflatten(0, (n, b)).unbind(0)
        return torch.cat(pooled), tokens, index

    def _fusion_image(self, image_tokens: torch.Tensor) -> torch.Tensor:
        return _project(image_tokens, self.clip.visual.proj)

    def _fusion_text(self, text_tokens: torch.Tensor) -> torch.Tensor:
        """Projected into the joint space, plus the tower's position embedding (projected too)."""
        tower = self.text_tower
        positions = _project(tower.positional_embedding[: text_tokens.shape[-2]], tower.text_projection)
        return _project(text_tokens, tower.text_projection) + positions.to(text_tokens.dtype)

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
        self, image_cls: torch.Tensor, text_tokens: torch.Tensor, texts: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Separation-head embeddings of the pooled, unprojected outputs (the CLS token; the text pool)."""
        pool, eos_id = self._text_pooling
        return self.independent(image_cls, text_global_pool(text_tokens, texts, pool, eos_id))

    def forward(
        self, images: torch.Tensor, texts: torch.Tensor, fusion_pairs: tuple[tuple[int, int], ...] = ()
    ) -> Features:
        """images (B, V, 3, H, W), texts (B, C, L) token ids; fusion_pairs index (view, caption)."""
        b, v, c = images.shape[0], images.shape[1], texts.shape[1]
        # view-major rows: each view and each caption is one contiguous block of B rows
        flat_texts = texts.transpose(0, 1).flatten(0, 1)
        blocks = lambda x, n: x.unflatten(0, (n, b))  # (n * B, D) -> (n, B, D)  # noqa: E731
        drop = self.view_patch_dropout if self.training and v > 1 else 0.0
        independent: tuple[torch.Tensor | None, torch.Tensor | None] = (None, None)
        fused = None
        if not fusion_pairs and self.independent is None and not drop:
            image, text = self.encode_image(images.transpose(0, 1).flatten(0, 1)), self.encode_text(flat_texts)
        else:
            image, view_tokens, view_index = self._views_with_tokens(images, drop)
            text, text_tokens = self._text_with_tokens(flat_texts)
            if self.independent is not None:
                image_cls = torch.cat([t[:, 0] for t in view_tokens])
                image_ind, text_ind = self._independent(image_cls, text_tokens, flat_texts)
                independent = blocks(image_ind, v), blocks(text_ind, c)
            if fusion_pairs:
                fused = self._fuse(view_tokens, view_index, text_tokens, flat_texts, fusion_pairs)
        image = blocks(F.normalize(image, dim=-1), v)
        text = blocks(F.normalize(text, dim=-1), c)
        return Features(image=image, text=text, fused=fused, logit_scale=self.clip.logit_scale.exp(),
                        image_independent=independent[0], text_independent=independent[1])

    def _fuse(
        self, view_tokens: list[torch.Tensor], view_index: list[torch.Tensor | None], text_tokens: torch.Tensor,
        flat_texts: torch.Tensor, fusion_pairs: tuple[tuple[int, int], ...],
    ) -> torch.Tensor:
        """(P, B, D) fused embeddings of the (view, caption) pairs, from the towers' token outputs."""
        b = view_tokens[0].shape[0]
        c = text_tokens.shape[0] // b
        views, captions = zip(*fusion_pairs)
        # project each used view and caption once
        image_in = {i: self._fusion_image(view_tokens[i]) for i in set(views)}
        text_blocks = text_tokens.unflatten(0, (c, b))
        text_in = {j: self._fusion_text(text_blocks[j]) for j in set(captions)}
        valid = self._text_valid(flat_texts).unflatten(0, (c, b))
        # pairs whose image sequences have one length share one fusion call
        groups: dict[tuple[int, bool], list[int]] = {}
        for p, i in enumerate(views):
            groups.setdefault((view_tokens[i].shape[1], view_index[i] is None), []).append(p)
        fused: list[torch.Tensor] = [None] * len(fusion_pairs)  # type: ignore[list-item]
        for members in groups.values():
            index = [view_index[views[p]] for p in members]
            out = self.fusion(
                torch.cat([image_in[views[p]] for p in members]),
                torch.cat([text_in[captions[p]] for p in members]),
                torch.cat([valid[captions[p]] for p in members]),
                None if index[0] is None else torch.cat(index),  # type: ignore[arg-type]
            )
            for p, one in zip(members, out.split(b)):
                fused[p] = one
        return torch.stack(fused)
