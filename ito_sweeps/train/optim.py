"""AdamW with CLIP's parameter groups, and the cosine-with-warm-up learning rate as a pure function."""
from __future__ import annotations

import math

import torch
from torch import nn

from ito_sweeps.config import OptimConfig, ScheduleConfig


def no_decay(name: str, param: nn.Parameter) -> bool:
    # open_clip's rule: gains, biases and the temperature are not pulled towards zero
    return param.ndim < 2 or "bias" in name or "logit_scale" in name


def build_optimizer(model: nn.Module, cfg: OptimConfig, device: torch.device) -> torch.optim.AdamW:
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    groups = [
        {"params": [p for n, p in params if not no_decay(n, p)], "weight_decay": cfg.weight_decay},
        {"params": [p for n, p in params if no_decay(n, p)], "weight_decay": 0.0},
    ]
    fused = device.type == "cuda"  # one kernel for all parameters; not available on CPU for every dtype
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), eps=cfg.eps, fused=fused)


def lr_at(step: int, lr: float, schedule: ScheduleConfig) -> float:
    """Learning rate for optimizer step `step` (0-based): linear warm-up, then cosine to the floor."""
    if step < schedule.warmup_steps:
        return lr * (step + 1) / schedule.warmup_steps
    span = max(1, schedule.steps - schedule.warmup_steps)
    progress = min(1.0, (step - schedule.warmup_steps) / span)
    floor = lr * schedule.min_lr_ratio
    return floor + (lr - floor) * 0.5 * (1 + math.cos(math.pi * progress))
