"""AdamW with the usual parameter groups (fp32 or 8-bit moments), and warm-up + decay schedules."""

from __future__ import annotations

import math
import re

import torch
from torch import nn


def _no_decay(name: str, param: torch.Tensor) -> bool:
    # Biases and normalisation weights are 1-D; decaying them only hurts (BERT, and every peer since).
    return param.ndim < 2 or "norm" in name.lower()


_LAYER = re.compile(r"\.(?:layer|layers|h|block|blocks)\.(\d+)\.")


def _depth(name: str, n_layers: int) -> int:
    """0 for embeddings, i+1 for transformer layer i, n_layers+1 for everything above (pooler, head)."""
    m = _LAYER.search(name)
    if m:
        return int(m.group(1)) + 1
    return 0 if "embed" in name else n_layers + 1


def build_optimizer(model: nn.Module, cfg) -> torch.optim.Optimizer:
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    n_layers = 1 + max((int(m.group(1)) for n, _ in named if (m := _LAYER.search(n))), default=-1)
    groups: dict[tuple[float, float], list[torch.Tensor]] = {}
    for name, p in named:
        scale = cfg.layer_lr_decay ** (n_layers + 1 - _depth(name, n_layers)) if cfg.layer_lr_decay else 1.0
        wd = 0.0 if _no_decay(name, p) else cfg.weight_decay
        groups.setdefault((cfg.lr * scale, wd), []).append(p)
    params = [{"params": ps, "lr": lr, "weight_decay": wd} for (lr, wd), ps in groups.items()]
    if getattr(cfg, "optimizer", "adamw") == "adamw8bit":
        return _adamw8bit(params, cfg.lr)
    # The fused kernel runs the whole update in one pass per tensor (CPU and CUDA); same maths as foreach.
    return torch.optim.AdamW(params, lr=cfg.lr, fused=True)


def _adamw8bit(params: list[dict], lr: float) -> torch.optim.Optimizer:
    """bitsandbytes' AdamW with block-wise 8-bit moments (Dettmers et al. 2022): 2 bytes of state per parameter
    instead of 8; tensors under 4,096 elements keep fp32 moments (bitsandbytes' own rule)."""
    from lftrain.extras import need

    bnb = need("bitsandbytes", "train.optimizer: adamw8bit")
    return bnb.optim.AdamW8bit(params, lr=lr)


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
