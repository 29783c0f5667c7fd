"""Where a transformers model keeps its blocks, embeddings and head (peft-wrapped or not), for any adaptation."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

# Where transformers models keep their stack of blocks, relative to `model.base_model`: BERT-likes
# (`encoder.layer`), DistilBERT (`transformer.layer`), Llama/Mistral/Qwen (`layers`), GPT-2 (`h`), T5 (`block`).
LAYER_PATHS = ("encoder.layer", "encoder.layers", "transformer.layer", "layers", "h", "block", "encoder.block",
               "decoder.layers")


@dataclass
class LayerStack:
    """The model's stack of blocks in the order they run, and the input stage below them."""

    path: str  # where the blocks are, relative to `model.base_model` (e.g. "encoder.layer")
    layers: nn.ModuleList
    embeddings: list[nn.Parameter]  # every parameter below layer 0: embeddings, their norm, shared position tables


def unwrap(model: nn.Module) -> nn.Module:
    """The transformers model inside a peft wrapper (adapter layers included), or the model itself."""
    if hasattr(model, "peft_config") and hasattr(model, "get_base_model"):
        return model.get_base_model()
    return model


def stack_config(model: nn.Module):
    """The config of the model that owns the layer stack: the base model's (for a wrapper such as
    task.pooling: mean, its encoder's, which rebuilds the encoder on load), or the whole model's when the base
    has none (EfficientNet). For a plain Hugging Face classifier both are the same object."""
    hf = unwrap(model)
    return getattr(getattr(hf, "base_model", None), "config", None) or getattr(hf, "config", None)


def find_layers(model: nn.Module) -> LayerStack | None:
    """The block stack of a transformers encoder or decoder (peft-wrapped or not), or None if not found."""
    hf = unwrap(model)
    base = getattr(hf, "base_model", hf)
    for path in LAYER_PATHS:
        chain, node = [base], base
        for part in path.split("."):
            node = getattr(node, part, None) if isinstance(node, nn.Module) else None
            chain.append(node)
        if not isinstance(node, nn.ModuleList) or len(node) == 0:
            continue
        parts = path.split(".")
        below: list[nn.Parameter] = []
        # Children of the base model registered before the branch holding the blocks are the input stage.
        for name, child in base.named_children():
            if name == parts[0]:
                break
            below.extend(child.parameters())
        # Tensors beside the blocks inside their container (DeBERTa's relative position table) feed every
        # block; they count as input stage too.
        for container, part in zip(chain[:-1], parts):
            below.extend(container.parameters(recurse=False))
            if container is not base:
                for name, child in container.named_children():
                    if name != part:
                        below.extend(child.parameters())
        return LayerStack(path=path, layers=node, embeddings=below)
    return None


def head_layer(model: nn.Module) -> nn.Linear:
    """The task head's output layer: the last Linear producing `config.num_labels` outputs (for adapter runs, the
    trained copy peft keeps in `modules_to_save`)."""
    from lftrain.errors import InputError

    n = getattr(getattr(model, "config", None), "num_labels", None)
    found = [m for _, m in model.named_modules() if isinstance(m, nn.Linear) and m.out_features == n]
    if not found:
        raise InputError(f"cannot find the model's output layer (a Linear with num_labels={n} outputs)")
    return found[-1]


def set_dropout_rate(model: nn.Module, p: float) -> int:
    """Set every dropout module's rate (hidden and, for models that read it from the module, attention)."""
    count = 0
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = p
            count += 1
    return count


def trainable_summary(model: nn.Module) -> str:
    total = sum(p.numel() for p in model.parameters())
    train = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return f"{train:,} of {total:,} parameters train ({100 * train / max(total, 1):.2f}%)"
