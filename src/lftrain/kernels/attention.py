"""Attention probabilities from the compiled kernel (attention.c) as an autograd function, and the attention core
around it; `models/unpad.py` decides when it runs."""

from __future__ import annotations

import torch

from lftrain import kernels
from lftrain.kernels.dropout import MAX_ELEMENTS, _mask, draw_keys

MAX_KEYS = 8192  # attention.c's row buffer


def available(scores_numel: int, keys: int) -> bool:
    """Whether the compiled kernel takes scores of this size (it exists only where AVX-512 was compiled in)."""
    lib = kernels.load()
    return lib is not None and bool(lib.lft_attn_available()) and keys <= MAX_KEYS and scores_numel <= MAX_ELEMENTS


class KernelAttentionProbs(torch.autograd.Function):
    """dropout(softmax(scores * scaling over the real keys)), in one pass each way. Saves the probabilities and
    their dropped copy (which the value matmul saves anyway); backward reads the mask off the dropped copy."""

    @staticmethod
    def forward(ctx, scores: torch.Tensor, real: torch.Tensor, scaling: float, p: float) -> torch.Tensor:
        batch, heads, queries, keys = scores.shape
        scores = scores.contiguous()
        probs = torch.empty_like(scores)
        dropped = torch.empty_like(scores) if p > 0.0 else None
        drop = _mask(draw_keys(), p) if p > 0.0 else (0, 0, 0, 1.0)
        kernels.load().lft_attn_probs_bf16(scores.data_ptr(), real.data_ptr(), probs.data_ptr(),
                                           None if dropped is None else dropped.data_ptr(), scores.numel() // keys,
                                           heads * queries, keys, scaling, *drop)
        out = probs if dropped is None else dropped
        ctx.save_for_backward(probs, out)
        ctx.scaling, ctx.scale = scaling, drop[3]
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        probs, out = ctx.saved_tensors
        grad = grad.contiguous()
        grad_scores = torch.empty_like(probs)
        keys = probs.shape[-1]
        kernels.load().lft_attn_probs_grad_bf16(grad.data_ptr(), probs.data_ptr(), out.data_ptr(),
                                                grad_scores.data_ptr(), probs.numel() // keys, keys, ctx.scaling,
                                                ctx.scale)
        return grad_scores, None, None, None


def kernel_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, real: torch.Tensor,
                     scaling: float, p: float) -> torch.Tensor:
    """Attention of bf16 (B, heads, W, d) queries, keys and values with a (B, W) uint8 key-padding mask (1: a real
    key): the context, (B, heads, W, d)."""
    with torch.autocast(query.device.type, enabled=False):
        scores = torch.matmul(query, key.transpose(2, 3))
        probs = KernelAttentionProbs.apply(scores, real, scaling, p)
        return torch.matmul(probs, value)
