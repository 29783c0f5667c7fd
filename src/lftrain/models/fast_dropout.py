"""Dropout whose masks cost a fraction of `bernoulli_`'s time on CPU.

On this class of machine mask generation was ~37% of a bf16 training step (see docs/performance.md):
`bernoulli_` draws one float per element. Here one 64-bit draw yields four 16-bit uniforms, and an
element is kept when its uniform is at or above p·2^16. The keep rate differs from 1-p by less than
2^-16, and kept values are scaled by 1/(1-p) as usual, so the regularisation is the same. The masks
come from torch's default generator, so seeding and checkpointed RNG state govern them as before.
"""

from __future__ import annotations

import torch
from torch import nn

_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


def fast_dropout(x: torch.Tensor, p: float, training: bool = True) -> torch.Tensor:
    if not training or p <= 0.0:
        return x
    if p >= 1.0:
        return torch.zeros_like(x)
    n = x.numel()
    words = torch.empty((n + 3) // 4, dtype=torch.int64, device=x.device).random_(_INT64_MIN, _INT64_MAX)
    uniform16 = words.view(torch.int16)[:n].view(x.shape)  # each value uniform over [-2^15, 2^15)
    keep = uniform16 >= (round(p * 65536) - 32768)
    return x * keep.to(x.dtype) * (1.0 / (1.0 - p))


class FastDropout(nn.Dropout):
    """Drop-in for nn.Dropout (keeps `.p`, which model code reads for attention dropout)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return fast_dropout(x, self.p, self.training)


def install_fast_dropout(model: nn.Module) -> int:
    """Swap every nn.Dropout in `model` for FastDropout. Returns how many were swapped."""
    count = 0
    for module in model.modules():
        for name, child in list(module.named_children()):
            if type(child) is nn.Dropout:
                setattr(module, name, FastDropout(child.p))
                count += 1
    return count


def eager_attention_fast_dropout(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """transformers attention kernel: plain eager attention with fast dropout on the probabilities.

    On CPU, eager attention trains faster than `sdpa` at these shapes (sdpa's fused bf16 backward is slow
    there), and the probabilities' dropout is the other half of the mask cost.
    """
    if scaling is None:
        scaling = query.size(-1) ** -0.5
    scores = torch.matmul(query, key.transpose(2, 3)) * scaling
    if attention_mask is not None:
        scores = scores + attention_mask
    probs = torch.softmax(scores, dim=-1)
    probs = fast_dropout(probs, dropout, module.training)
    out = torch.matmul(probs, value).transpose(1, 2).contiguous()
    return out, probs


ATTENTION_NAME = "lft_eager"


def register_attention() -> str:
    from transformers import AttentionInterface

    AttentionInterface.register(ATTENTION_NAME, eager_attention_fast_dropout)
    return ATTENTION_NAME
