"""Adapter training under bf16 autocast without the per-step casts.

Under autocast every `F.linear` casts its fp32 weight to bf16 on each call, and peft casts each adapter
layer's bf16 input back to fp32 before the adapter runs (where autocast then casts it to bf16 again).
For an adapter run the base Linear weights are frozen, so their bf16 copy never changes: storing them
in bf16 once gives bit-identical matmuls (autocast would round them the same way) and removes those casts
from every step. Adapter weights, norms and
embeddings stay fp32 (the optimiser and the residual stream need their precision). Only for peft models:
their saved output is the adapter alone, so the rounded base weights are never written anywhere.
"""

from __future__ import annotations

import torch
from torch import nn


def _tied_to_input(model: nn.Module) -> set[int]:
    emb = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    return {id(emb.weight)} if emb is not None and hasattr(emb, "weight") else set()


def bf16_frozen_base(model: nn.Module) -> int:
    """Store frozen base Linear weights of a peft model in bf16 and stop peft's input up-casting.
    Returns how many weights were converted (0 for models that are not peft-wrapped)."""
    from lftrain.models.layers import unwrap

    if unwrap(model) is model:  # not peft-wrapped
        return 0
    from peft.tuners.tuners_utils import BaseTunerLayer

    tied = _tied_to_input(model)
    count = 0
    for module in model.modules():
        if isinstance(module, BaseTunerLayer):
            module.cast_input_dtype_enabled = False  # keep the bf16 activations; autocast handles the adapter
        if type(module) is nn.Linear and not module.weight.requires_grad and id(module.weight) not in tied:
            module.weight.data = module.weight.data.to(torch.bfloat16)
            if module.bias is not None and not module.bias.requires_grad:
                module.bias.data = module.bias.data.to(torch.bfloat16)
            count += 1
    return count
