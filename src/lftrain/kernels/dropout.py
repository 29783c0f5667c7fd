"""The compiled dropout (dropout.c) as autograd functions; `models/fast_dropout.py` decides when they run."""

from __future__ import annotations

import torch

from lftrain import kernels

KERNELS = {torch.bfloat16: "lft_dropout_bf16", torch.float32: "lft_dropout_float"}
_KEY_BITS = 2**32
MAX_ELEMENTS = _KEY_BITS  # the hash indexes elements with 32 bits


def draw_keys() -> tuple[int, int]:
    """The two 32-bit keys of one compiled dropout call, from torch's default generator (so seeds and the
    checkpointed RNG state govern them)."""
    word = int(torch.empty((), dtype=torch.int64).random_())  # one draw: uniform over [0, 2^63)
    return word % _KEY_BITS, word // _KEY_BITS


def threshold(p: float) -> int:
    """Elements whose 32-bit hash is below this are dropped: a rate of p to within 2^-33."""
    return min(round(p * _KEY_BITS), _KEY_BITS - 1)


def _mask(keys: tuple[int, int], p: float) -> tuple[int, int, int, float]:
    """The kernels' last four arguments: the keys, the threshold and the scale of kept values."""
    return (*keys, threshold(p), 1.0 / (1.0 - p))


def kernel_dropout(x: torch.Tensor, keys: tuple[int, int], p: float) -> torch.Tensor:
    """x / (1-p) with the elements the keys select dropped, in one pass (kernels/dropout.c)."""
    x = x.contiguous()
    out = torch.empty(x.shape, dtype=x.dtype, device=x.device)
    getattr(kernels.load(), KERNELS[x.dtype])(x.data_ptr(), out.data_ptr(), x.numel(), *_mask(keys, p))
    return out


class KernelDrop(torch.autograd.Function):
    """Compiled dropout: backward recomputes the same mask from the saved keys, so nothing else is kept."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, p: float) -> torch.Tensor:
        ctx.keys, ctx.p = draw_keys(), p
        return kernel_dropout(x, ctx.keys, p)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return kernel_dropout(grad, ctx.keys, ctx.p), None


class KernelDropAdd(torch.autograd.Function):
    """residual + dropout(x) for x bf16 and the residual float, in one pass each way (kernels/dropout.c); the
    same values as dropout then add, mask for mask."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, residual: torch.Tensor, p: float) -> torch.Tensor:
        ctx.keys, ctx.p = draw_keys(), p
        x, residual = x.contiguous(), residual.contiguous()
        out = torch.empty(residual.shape, dtype=residual.dtype, device=residual.device)
        kernels.load().lft_dropout_add_bf16(x.data_ptr(), residual.data_ptr(), out.data_ptr(), x.numel(),
                                            *_mask(ctx.keys, p))
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        if not ctx.needs_input_grad[0]:
            return None, grad, None
        grad = grad.contiguous()
        grad_x = torch.empty(grad.shape, dtype=torch.bfloat16, device=grad.device)
        kernels.load().lft_dropout_add_grad_bf16(grad.data_ptr(), grad_x.data_ptr(), grad.numel(),
                                                 *_mask(ctx.keys, ctx.p))
        return grad_x, grad, None
