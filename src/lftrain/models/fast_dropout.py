"""Dropout that costs a fraction of `bernoulli_`'s time on CPU, with dropout's distribution.

`bernoulli_` draws one float per element; on this class of machine that was ~37% of a bf16 training step
(see docs/performance.md). lftrain has two CPU paths:

- **Compiled** (`kernels/dropout.c`, when the machine has a C compiler): one pass over the tensor. Element j is
  dropped when a 32-bit hash of j under two keys falls below p·2^32, so the rate is p to within 2^-33 and each
  element's fate is independent of its neighbours' (the tests check rates, pairs and counts). The keys (63 random bits
  drawn from torch's default generator per call) are all backward needs: it recomputes the mask. A BERT-family
  output block's dropout and residual add (`RESIDUAL_OUTPUTS`) run as one pass each way too, with the values
  of the two operators. Kept values are scaled in float and rounded to bf16 as torch rounds.
- **PyTorch** (no compiler, `LFT_KERNELS=off`, or `USE_KERNELS = False`): for 0 < p <= 0.25 lftrain draws the
  *gaps* between dropped elements: in a sequence of independent drops with probability p, the distance from
  one drop to the next is geometric(p), so ~p·n draws place every drop, and each element is still dropped
  independently with probability p (to within ~1e-7, the resolution of the float32 draws). Kept values are
  multiplied by 1/(1-p) and the dropped positions zero-filled; the positions (~p·n indices) are all backward
  needs. Higher rates use one 64-bit draw for four 16-bit uniforms (drop rate p to within 2^-17).

The two paths draw different random streams from the same generator (the manifest's `dropout_kernel` says which
ran); either way seeding and checkpointed RNG state govern them. Off the CPU, and under `torch.compile` (where
in-place random draws, foreign calls and a data-dependent number of drops would break the graph at every
dropout), torch's own dropout runs, which the compiler fuses.
"""

from __future__ import annotations

import math
import types

import torch
from torch import nn

from lftrain import kernels
from lftrain.kernels.dropout import KERNELS, MAX_ELEMENTS, KernelDrop, KernelDropAdd
from lftrain.models.forward_scope import BERT_FAMILIES

_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
USE_KERNELS = True  # False: the PyTorch paths below even where the compiled kernel loads (tests, benchmarks)
KERNEL_ATTENTION = True  # False: attention's softmax and dropout as separate operators even where the kernel loads
GAPS_MAX_RATE = 0.25  # at 0.25 the gaps take ~n/4 draws, as many as the 16-bit uniforms take 64-bit words


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
        # u uniform on [0, 1) in steps of 2^-24, so 1-u in (0, 1]: no log(0), and every probability below is
        # geometric(p)'s to within ~1e-7 (float32 is ~40% cheaper here than 53-bit doubles)
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


def dropout_add(x: torch.Tensor, residual: torch.Tensor, dropout: nn.Dropout) -> torch.Tensor:
    """residual + dropout(x): fused when x is bf16 and the residual float32 of the same shape (a bf16 block on
    a float residual stream), else the two operators."""
    fused = (dropout.training and 0.0 < dropout.p < 1.0 and x.dtype == torch.bfloat16 and x.shape == residual.shape
             and residual.dtype == torch.float32 and x.device.type == "cpu" and use_kernel(x)
             and not torch.compiler.is_compiling())
    if fused:
        return KernelDropAdd.apply(x, residual, dropout.p)
    return dropout(x) + residual


def _output_forward(self, hidden_states: torch.Tensor, input_tensor: torch.Tensor) -> torch.Tensor:
    """BertSelfOutput / BertOutput: LayerNorm(dropout(dense(h)) + residual), with the dropout and add fused."""
    return self.LayerNorm(dropout_add(self.dense(hidden_states), input_tensor, self.dropout))


# Residual output blocks computing LayerNorm(dropout(dense(h)) + input_tensor) (transformers' BertSelfOutput and
# its "Copied from" twins), whose forward fast dropout replaces by `_output_forward`.
RESIDUAL_OUTPUTS = {f"{family}{part}" for family in BERT_FAMILIES for part in ("SelfOutput", "Output")}


def describe(enabled: bool, device: torch.device, compiled: bool) -> str:
    """Which dropout a run's steps use, for the log and the manifest (the paths draw different random streams)."""
    if not enabled:
        return "off (torch's dropout)"
    if device.type != "cpu" or compiled:
        return "torch's dropout (off the CPU and under train.compile)"
    if not USE_KERNELS:
        return "torch (USE_KERNELS = False)"
    if kernels.load() is None:
        return kernels.describe()
    if not KERNEL_ATTENTION:
        return "compiled (bf16 attention: torch's softmax, KERNEL_ATTENTION = False)"
    if not kernels.load().lft_attn_available():
        return "compiled (bf16 attention: torch's softmax, built without AVX-512)"
    return "compiled (and the bf16 attention of unpadded BERT-family layers)"


def use_kernel(x: torch.Tensor) -> bool:
    """Whether the compiled kernel takes this tensor (its hash indexes elements with 32 bits)."""
    return USE_KERNELS and x.dtype in KERNELS and x.numel() <= MAX_ELEMENTS and kernels.load() is not None


def fast_dropout(x: torch.Tensor, p: float, training: bool = True) -> torch.Tensor:
    if not training or p <= 0.0:
        return x
    if p >= 1.0:
        return torch.zeros_like(x)
    if x.device.type != "cpu" or torch.compiler.is_compiling():  # torch's dropout is fused there; ours would
        return torch.nn.functional.dropout(x, p, training=True)  # break a compiled graph at every call
    if use_kernel(x):
        return KernelDrop.apply(x, p)
    if p <= GAPS_MAX_RATE:
        return _DropAt.apply(x, drop_positions(x.numel(), p, x.device), 1.0 / (1.0 - p))
    return _MaskedScale.apply(x, _uniform16_mask(x, p))


class FastDropout(nn.Dropout):
    """Drop-in for nn.Dropout (keeps `.p`, which model code reads for attention dropout)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return fast_dropout(x, self.p, self.training)


def install_fast_dropout(model: nn.Module) -> int:
    """Swap every nn.Dropout in `model` for FastDropout, and fuse the dropout and residual add of BERT-family
    output blocks (`RESIDUAL_OUTPUTS`). Returns how many dropouts were swapped."""
    count = 0
    for module in model.modules():
        if type(module).__name__ in RESIDUAL_OUTPUTS and "forward" not in vars(module):
            module.forward = types.MethodType(_output_forward, module)
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


def kernel_attention_applies(module: nn.Module, query: torch.Tensor, keys: int) -> bool:
    """Whether an encoder layer's attention may run on the compiled kernel (kernels/attention.c) instead of
    `eager_attention_fast_dropout`: fast dropout on (this attention registered), bf16 queries on the CPU (autocast),
    no compiler tracing, and a CPU the kernel was built with AVX-512 for. The caller supplies the key-padding mask,
    the only mask the kernel takes."""
    from lftrain.kernels.attention import available

    return (getattr(module.config, "_attn_implementation", None) == ATTENTION_NAME and USE_KERNELS
            and KERNEL_ATTENTION and query.dtype == torch.bfloat16 and query.device.type == "cpu"
            and not torch.compiler.is_compiling() and available(query[..., 0].numel() * keys, keys))


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
