"""AdamW with the usual parameter groups, and warm-up + decay schedules."""

from __future__ import annotations

import math

import torch
from torch import nn


def _no_decay(name: str, param: torch.Tensor) -> bool:
    # Biases and normalisation weights are 1-D; decaying them only hurts (BERT, and every peer since).
    return param.ndim < 2 or "norm" in name.lower()


def build_optimizer(model: nn.Module, cfg) -> torch.optim.Optimizer:
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (no_decay if _no_decay(name, p) else decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    # The fused kernel runs the whole update in one pass per tensor (CPU and CUDA); same maths as foreach.
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=cfg.lr, fused=True)


def warmup_steps(cfg, total_steps: int) -> int:
    return cfg.warmup_steps if cfg.warmup_steps is not None else int(math.ceil(cfg.warmup_ratio * total_steps))


def build_scheduler(optimizer: torch.optim.Optimizer, cfg, total_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    warm = warmup_steps(cfg, total_steps)

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / (warm + 1)  # never exactly 0: a zero first step would waste a batch
        progress = (step - warm) / max(1, total_steps - warm)
        if cfg.scheduler == "linear":
            return max(0.0, 1.0 - progress)
        if cfg.scheduler == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
        return 1.0

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
