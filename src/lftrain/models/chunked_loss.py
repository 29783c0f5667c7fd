"""Cross-entropy over a large vocabulary without the logits tensor: the loss and its gradients chunk by chunk.

A causal LM's loss needs tokens × vocabulary logits, and autograd keeps them (and their fp32 copy and softmax) for
the backward pass: at 2,048 tokens and Qwen's 151,936-token vocabulary that is 1.2 GB per copy, more than the
activations of a 1B model's whole layer stack. Here the LM head is told to hand back its input while training; the
loss then computes, for 1,024 tokens at a time, the logits, the loss, and the gradients with respect to the hidden
states (and the head's weight when it trains), which are all the backward pass needs. The peak holds one chunk's
logits; nothing is computed twice (docs/large-models.md has the measurement).
"""

from __future__ import annotations

import types
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

IGNORE = -100
CHUNK = 1024


def install(model: nn.Module) -> nn.Linear | None:
    """Make the output head of `model` return its input in training mode (eval and generation are untouched).
    Returns the head, or None when the model has no plain Linear head."""
    from lftrain.models.layers import unwrap

    hf: Any = unwrap(model)
    head = hf.get_output_embeddings() if hasattr(hf, "get_output_embeddings") else None
    if type(head) is not nn.Linear:  # a head wrapped by an adapter, or none
        return None
    plain = type(head).forward

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return hidden if self.training else plain(self, hidden)

    patched: Any = head
    patched.forward = types.MethodType(forward, head)  # an instance attribute: parameter names stay as they are
    return head


def loss_sum(hidden: torch.Tensor, head: nn.Linear, labels: torch.Tensor, chunk: int = CHUNK) -> torch.Tensor:
    """Summed next-token cross-entropy of `hidden` (…, H) under `head` against `labels` (…), -100 ignored."""
    return _ChunkedCrossEntropy.apply(hidden.reshape(-1, hidden.shape[-1]), head.weight, labels.reshape(-1), chunk)


class _ChunkedCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, labels, chunk):  # type: ignore[override]
        grad_hidden = torch.empty_like(hidden)
        grad_weight = torch.zeros_like(weight, dtype=torch.float32) if weight.requires_grad else None
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        for s in range(0, hidden.shape[0], chunk):
            h, y = hidden[s:s + chunk], labels[s:s + chunk]
            logits = F.linear(h, weight).float()
            valid = y != IGNORE
            target = torch.where(valid, y, 0)
            lse = torch.logsumexp(logits, dim=-1)
            total += ((lse - logits.gather(1, target[:, None])[:, 0]) * valid).sum()
            grad = logits.sub_(lse[:, None]).exp_()  # softmax, in place of the logits
            grad[torch.arange(len(y), device=y.device), target] -= 1.0
            grad *= valid[:, None]
            grad_low = grad.to(_compute_dtype(h))
            grad_hidden[s:s + chunk] = (grad_low @ weight.to(grad_low.dtype)).to(hidden.dtype)
            if grad_weight is not None:
                grad_weight += grad_low.T.float() @ h.float()
        ctx.save_for_backward(grad_hidden, *([grad_weight] if grad_weight is not None else []))
        ctx.weight_grad = grad_weight is not None
        return total

    @staticmethod
    def backward(ctx, grad_out):  # type: ignore[override]
        saved = ctx.saved_tensors
        grad_weight = saved[1] * grad_out if ctx.weight_grad else None
        return saved[0] * grad_out, grad_weight, None, None


def _compute_dtype(h: torch.Tensor) -> torch.dtype:
    """The dtype the head's matmul ran in (autocast's, else the hidden states'): the gradient matmuls use it too."""
    device = h.device.type
    return torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else h.dtype
