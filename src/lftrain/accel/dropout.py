"""Dropout with torch's distribution at a fraction of `bernoulli_`'s cost on CPU.

`bernoulli_` draws one float per element. For 0 < p <= 0.25 we draw the *gaps* between dropped elements
instead: in independent drops of probability p the distance from one drop to the next is geometric(p), so
~p·n draws place every drop and each element is still dropped independently with probability p (to within
~1e-7, the resolution of float32 draws). Higher rates use one 64-bit draw for four 16-bit uniforms. Draws come
from torch's default generator, so seeds and checkpointed RNG state govern them; the stream differs from torch's
dropout. Off the CPU and under `torch.compile` torch's own dropout runs (the compiler fuses it).
Measured: docs/performance.md.
"""

from __future__ import annotations

import math

import torch
from torch import nn

_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
GAPS_MAX_RATE = 0.25  # at 0.25 the gaps take ~n/4 draws, as many as the 16-bit uniforms take 64-bit words
ATTENTION_NAME = "lft_eager"


def _chunk(rest: int, p: float) -> int:
    """Gaps to draw for `rest` more elements: the expected number of drops plus six standard deviations."""
    return int(rest * p + 6 * math.sqrt(rest * p) + 16)


def drop_positions(n: int, p: float, device: torch.device | str = "cpu") -> torch.Tensor:
    """Sorted indices in [0, n) of the elements to drop, each dropped independently with probability p.

    The gap from one drop to the next (1 for neighbours) is 1 + floor(log(1-u) / log(1-p)) for u uniform in
    [0, 1), which is geometric(p); the positions are the running sums of the gaps."""
    log_keep = math.log1p(-p)
    chunks, end = [], 0  # end: 1-based position of the last drop placed so far
    while end < n:  # until a drop lands at or past n (each chunk is sized so that one almost always does)
        # u in [0, 1) in steps of 2^-24, so 1-u in (0, 1]: no log(0)
        u = torch.empty(_chunk(n - end, p), device=device).uniform_()
        gaps = u.neg_().log1p_().div_(log_keep).floor_().long().add_(1)
        chunks.append(gaps.cumsum_(0).add_(end))
        end = int(chunks[-1][-1])
    if not chunks:
        return torch.empty(0, dtype=torch.int64, device=device)
    pos = chunks[0] if len(chunks) == 1 else torch.cat(chunks)
    return pos[: int(torch.searchsorted(pos, n, right=True))].sub_(1)


def _scale_and_zero(t: torch.Tensor, positions: torch.Tensor, scale: float) -> torch.Tensor:
    """t * scale with the elements at `positions` (row-major order of t's shape) set to zero."""
    out = torch.mul(t, scale, out=torch.empty(t.shape, dtype=t.dtype, device=t.device))  # contiguous, one pass
    out.view(-1).index_fill_(0, positions, 0)
    return out


class _DropAt(torch.autograd.Function):
    """y = x / (1-p) with the dropped positions zeroed; backward does the same to the gradient."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, positions: torch.Tensor, scale: float) -> torch.Tensor:
        ctx.save_for_backward(positions)
        ctx.scale = scale
        return _scale_and_zero(x, positions, scale)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (positions,) = ctx.saved_tensors
        return _scale_and_zero(grad, positions, ctx.scale), None, None


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


def _uniform16_mask(x: torch.Tensor, p: float) -> torch.Tensor:
    n = x.numel()
    words = torch.empty((n + 3) // 4, dtype=torch.int64, device=x.device).random_(_INT64_MIN, _INT64_MAX)
    uniform16 = words.view(torch.int16)[:n].view(x.shape)  # each value uniform over [-2^15, 2^15)
    threshold = round(p * 65536)
    return (uniform16 >= threshold - 32768).to(x.dtype).mul_(65536 / (65536 - threshold))


def fast_dropout(x: torch.Tensor, p: float, training: bool = True) -> torch.Tensor:
    if not training or p <= 0.0:
        return x
    if p >= 1.0:
        return torch.zeros_like(x)
    if x.device.type != "cpu" or torch.compiler.is_compiling():  # torch's dropout is fused there; ours would
        return torch.nn.functional.dropout(x, p, training=True)  # break a compiled graph at every call
    if p <= GAPS_MAX_RATE:
        return _DropAt.apply(x, drop_positions(x.numel(), p, x.device), 1.0 / (1.0 - p))
    return _MaskedScale.apply(x, _uniform16_mask(x, p))


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
    """A transformers attention function: eager attention in the compute dtype, with fast dropout on the
    probabilities (the largest dropout of a layer). On CPU it trains faster than `sdpa` (docs/performance.md)."""
    if scaling is None:
        scaling = query.size(-1) ** -0.5
    groups = getattr(module, "num_key_value_groups", 1)
    if groups > 1:  # grouped-query attention (Llama, Qwen, SmolLM2): each key/value head serves `groups` queries
        key = key.repeat_interleave(groups, dim=1)
        value = value.repeat_interleave(groups, dim=1)
    with torch.autocast(query.device.type, enabled=False):
        # q/k/v come out of the projections in the compute dtype (bf16 under autocast, else fp32); the CPU bf16
        # softmax accumulates in fp32, so it need not be upcast.
        scores = torch.matmul(query, key.to(query.dtype).transpose(2, 3)).mul_(scaling)
        if attention_mask is not None:
            scores = scores + attention_mask.to(scores.dtype)
        probs = fast_dropout(torch.softmax(scores, dim=-1), dropout, module.training)
        out = torch.matmul(probs, value.to(probs.dtype)).transpose(1, 2).contiguous()
    return out, probs


def register_attention() -> str:
    """Register the attention function and its mask with transformers; returns its name. Without a mask function
    transformers would build no padding mask at all for an attention name it does not know."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, eager_mask

    AttentionInterface.register(ATTENTION_NAME, eager_attention_fast_dropout)
    AttentionMaskInterface.register(ATTENTION_NAME, eager_mask)
    return ATTENTION_NAME
