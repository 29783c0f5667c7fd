"""Dropout whose masks cost a fraction of `bernoulli_`'s time on CPU.

On this class of machine mask generation was ~37% of a bf16 training step (see docs/performance.md):
`bernoulli_` draws one float per element. Here one 64-bit draw yields four 16-bit uniforms, and an
element is kept when its uniform is at or above round(p·2^16): the drop rate is p to within 2^-17, and
kept values are scaled by the exact inverse keep rate, so the expectation is unchanged and the
regularisation is dropout's. The masks
come from torch's default generator, so seeding and checkpointed RNG state govern them as before.
"""

from __future__ import annotations

import torch
from torch import nn

_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


class _MaskedScale(torch.autograd.Function):
    """y = x * m with m in {0, 1/keep_rate}: one multiply forward, one backward, the mask saved once."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(mask)
        return x * mask

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (mask,) = ctx.saved_tensors
        return grad * mask, None


def fast_dropout(x: torch.Tensor, p: float, training: bool = True) -> torch.Tensor:
    if not training or p <= 0.0:
        return x
    if p >= 1.0:
        return torch.zeros_like(x)
    n = x.numel()
    words = torch.empty((n + 3) // 4, dtype=torch.int64, device=x.device).random_(_INT64_MIN, _INT64_MAX)
    uniform16 = words.view(torch.int16)[:n].view(x.shape)  # each value uniform over [-2^15, 2^15)
    threshold = round(p * 65536)
    mask = (uniform16 >= threshold - 32768).to(x.dtype).mul_(65536 / (65536 - threshold))
    return _MaskedScale.apply(x, mask)


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
                setattr(module, name, FastDropout(child.p).train(child.training))
                count += 1
    return count


def eager_attention_fast_dropout(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """transformers attention kernel: eager attention kept in the compute dtype, with fast dropout.

    On CPU, eager attention trains faster than `sdpa` at these shapes (sdpa's fused bf16 backward is slow
    there). Under bf16 autocast, `softmax` would be upcast to fp32 and its output cast straight back to
    bf16 for the next matmul; the CPU bf16 softmax kernel accumulates in fp32 anyway, so doing it in bf16
    gives the same probabilities at half the memory traffic.
    """
    if scaling is None:
        scaling = query.size(-1) ** -0.5
    groups = getattr(module, "num_key_value_groups", 1)
    if groups > 1:  # grouped-query attention (Llama, Qwen, SmolLM2): each key/value head serves `groups` queries
        key = key.repeat_interleave(groups, dim=1)
        value = value.repeat_interleave(groups, dim=1)
    with torch.autocast(query.device.type, enabled=False):
        # q/k/v come out of the projections in the compute dtype (bf16 under autocast, else fp32).
        scores = torch.matmul(query, key.to(query.dtype).transpose(2, 3)).mul_(scaling)
        if attention_mask is not None:
            scores = scores + attention_mask.to(scores.dtype)
        probs = fast_dropout(torch.softmax(scores, dim=-1), dropout, module.training)
        out = torch.matmul(probs, value.to(probs.dtype)).transpose(1, 2).contiguous()
    return out, probs


ATTENTION_NAME = "lft_eager"


def register_attention() -> str:
    """Register the kernel, and the mask it needs: transformers builds no mask at all (so padding would be
    attended to) for an attention name it has no mask function for."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, eager_mask

    AttentionInterface.register(ATTENTION_NAME, eager_attention_fast_dropout)
    AttentionMaskInterface.register(ATTENTION_NAME, eager_mask)
    return ATTENTION_NAME


def set_dropout_rate(model: nn.Module, p: float) -> int:
    """Set every dropout module's rate (hidden and, for models that read it from the module, attention)."""
    count = 0
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = p
            count += 1
    return count
