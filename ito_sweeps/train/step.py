"""One optimizer step of any objective, in plain PyTorch: forward and loss under autocast, backward,
optional gradient clipping, AdamW, and open_clip's clamp of the temperature.

`train()` runs this object, and `benchmarks/step_throughput.py` times the same object against
open_clip's own CLIP step, so what is benchmarked is what trains. It never waits on the host: the
losses come back as device tensors and are read only where the loop logs them.
"""
from __future__ import annotations

import math
from typing import Callable, ContextManager

import torch
from torch import nn

from ito_sweeps.config import Config
from ito_sweeps.models.towers import ITOModel
from ito_sweeps.objectives.registry import Objective

MAX_LOGIT_SCALE = math.log(100)


class TrainStep:
    def __init__(
        self, cfg: Config, model: ITOModel, objective: Objective, optimizer: torch.optim.Optimizer,
        autocast: Callable[[], ContextManager], wrapped: nn.Module | None = None,
    ):
        """`wrapped` is the model as data parallelism wraps it (DDP); `model` is what it wraps."""
        self.model, self.optimizer, self.grad_clip = model, optimizer, cfg.optim.grad_clip
        self.params = [p for p in model.parameters() if p.requires_grad]
        forward = wrapped if wrapped is not None else model
        pairs = objective.inputs.fusion_pairs

        def forward_loss(images: torch.Tensor, texts: torch.Tensor) -> dict[str, torch.Tensor]:
            with autocast():
                return objective(forward(images, texts, pairs))

        # the whole forward and loss in one graph; the optimizer is already one fused kernel on CUDA
        self.forward_loss = torch.compile(forward_loss) if cfg.run.compile else forward_loss

    def __call__(self, images: torch.Tensor, texts: torch.Tensor, lr: float) -> dict[str, torch.Tensor]:
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        losses = self.forward_loss(images, texts)
        self.optimizer.zero_grad(set_to_none=True)
        losses["loss"].backward()
        if self.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(self.params, self.grad_clip)
        self.optimizer.step()
        with torch.no_grad():
            self.model.clip.logit_scale.clamp_(0, MAX_LOGIT_SCALE)
        return {k: v.detach() for k, v in losses.items()}
