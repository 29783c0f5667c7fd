"""Students for distillation: a model made shallower by keeping some of its blocks (DistilBERT-style).

A student starts either from a smaller pre-trained model (just `model.path`) or from a deeper one —
the pre-trained base, or the fine-tuned teacher's own `model/` — with layers dropped (`model.keep_layers`).
Dropping happens right after loading and before anything else sees the model, and the config's layer
count is updated, so the saved model reloads as an ordinary, shallower Hugging Face model.
"""

from __future__ import annotations

import logging
import math
from typing import Literal

import numpy as np
from torch import nn

from lftrain.errors import InputError

log = logging.getLogger("lftrain")

KeepLayers = list[int] | Literal["every_other"]


def every_other(n_layers: int) -> list[int]:
    """Half the blocks (rounded up), spread evenly with the first and the last kept.

    This is DistilBERT's choice: 12 -> [0, 2, 4, 7, 9, 11] (the lowest block reads the embeddings as
    pre-training taught it to; the top block feeds the pooler and head). 6 -> [0, 2, 5]."""
    k = math.ceil(n_layers / 2)
    if k <= 1:
        return [n_layers - 1] if n_layers else []
    return sorted({int(i) for i in np.rint(np.linspace(0, n_layers - 1, k))})


def resolve_keep(spec: KeepLayers, n_layers: int) -> list[int]:
    """Validated, sorted block indices to keep (negative indices count from the top)."""
    if spec == "every_other":
        return every_other(n_layers)
    keep = [i + n_layers if i < 0 else i for i in spec]
    bad = [i for i, k in zip(spec, keep) if not 0 <= k < n_layers]
    if bad:
        raise InputError(f"model.keep_layers: {bad} out of range for a model with {n_layers} layers "
                         f"(valid 0..{n_layers - 1}, or negative from the top)")
    if len(set(keep)) != len(keep):
        raise InputError(f"model.keep_layers: {list(spec)} names a layer twice")
    if not keep:
        raise InputError("model.keep_layers: keep at least one layer")
    return sorted(keep)


def drop_layers(model: nn.Module, spec: KeepLayers | None) -> nn.Module:
    """Keep only the blocks `spec` names (in their original order); returns the same model, made shallower."""
    if spec is None:
        return model
    from lftrain.models.layers import find_layers, stack_config, unwrap

    stack = find_layers(model)
    if stack is None:
        raise InputError(f"model.keep_layers: cannot find the layer stack of {type(model).__name__}")
    n = len(stack.layers)
    keep = resolve_keep(spec, n)
    kept = [stack.layers[i] for i in keep]
    for new_idx, block in enumerate(kept):
        _renumber(block, new_idx)
    parent = getattr(unwrap(model), "base_model", unwrap(model))
    *route, last = stack.path.split(".")
    for part in route:
        parent = getattr(parent, part)
    setattr(parent, last, nn.ModuleList(kept))
    config = stack_config(model)  # the stack owner's: for task.pooling: mean, the nested encoder config
    for attr in ("num_hidden_layers", "n_layer", "num_layers"):
        if hasattr(config, attr):
            setattr(config, attr, len(keep))
    if getattr(config, "layer_types", None) is not None:  # per-layer settings (sliding/full attention)
        config.layer_types = [config.layer_types[i] for i in keep]
    log.info("student: kept layers %s of %d (model.keep_layers)", keep, n)
    return model


def _renumber(block: nn.Module, idx: int) -> None:
    """Decoder blocks carry their index (KV-cache slot); keep it consistent with the new position."""
    for module in block.modules():
        if hasattr(module, "layer_idx") and isinstance(module.layer_idx, int):
            module.layer_idx = idx
