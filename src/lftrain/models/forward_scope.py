"""Switch a layer's short path on for the length of a classifier's own forward call, and only then.

The short paths (`first_token.py`, `unpad.py`) change what a layer returns for rows the classification head never
reads. That is safe inside the classifier's forward when it returns only logits; anything else that runs the same
layers (a direct encoder call, a call asking for hidden states or attentions) must get the full layer.

The state lives on the model (and on the layers that read it), not in the hooks' closures, so a deep copy of the
model switches its own layers.
"""

from __future__ import annotations

from torch import nn

# transformers' BERT and the models whose layers are "Copied from" it (same modules, same forwards): the families
# lftrain's BERT-specific paths (the short paths, the fused dropout-add of `fast_dropout.py`) recognise by class name.
BERT_FAMILIES = ("Bert", "Roberta", "XLMRoberta", "Camembert", "Electra")

# Where each short path keeps its state, on the model and on the layers that read it.
FIRST_TOKEN_STATE = "_lft_first_token_only"
UNPAD_STATE = "_lft_unpad"  # the unpadded layers' rows (`unpad.py`), also read by the first-token layer


class ShortPath:
    """What the layers read. `enter` sees the classifier's keyword arguments; `leave` switches the path off."""

    on: bool = False

    def enter(self, kwargs: dict) -> None:
        self.on = True

    def leave(self) -> None:
        self.on = False


def during_plain_forward(hf: nn.Module, name: str, state: ShortPath) -> None:
    """Keep `state` on `hf` as `name`; call its `enter(kwargs)` before each forward of `hf` that asks for no hidden
    states or attentions and passes its inputs by keyword, and its `leave()` after every forward, also one that
    raises."""
    setattr(hf, name, state)

    def before(module, args, kwargs):
        config = module.config
        wants = (kwargs.get("output_hidden_states", config.output_hidden_states)
                 or kwargs.get("output_attentions", config.output_attentions))
        # More than input_ids passed by position: the flags may be among them, so take the full layer.
        if not wants and len(args) <= 1:
            getattr(module, name).enter(kwargs)

    hf.register_forward_pre_hook(before, with_kwargs=True)
    # always_call: a forward that raises must not leave the short path on for a later direct encoder call.
    hf.register_forward_hook(lambda module, args, output: getattr(module, name).leave(), always_call=True)


def supported_layer(layer: nn.Module) -> bool:
    """A BERT-style encoder layer (self-attention with query/key/value, no cross-attention, no FFN chunking)."""
    sa = getattr(getattr(layer, "attention", None), "self", None)
    return (all(hasattr(sa, a) for a in ("query", "key", "value", "dropout", "scaling", "attention_head_size"))
            and hasattr(layer.attention, "output") and hasattr(layer, "feed_forward_chunk")
            and not getattr(layer, "is_decoder", False) and not getattr(layer, "add_cross_attention", False)
            and getattr(layer, "chunk_size_feed_forward", 0) == 0)


def install_short_paths(model: nn.Module, *, first_token_only: bool, unpad: bool,
                        checkpointing: bool = False) -> list[str]:
    """The first-token last layer, then the unpadded layers below it (the same logits for less work). Returns one
    line per path asked for: on, or off with the reason."""
    from lftrain.models.first_token import install_first_token_only
    from lftrain.models.unpad import install_unpadded_layers

    # transformers checkpoints a layer through its class's forward: a layer with its own forward would silently stop
    # being checkpointed, and a recomputation would run outside the classifier's forward anyway.
    skip = "train.gradient_checkpointing recomputes the layers" if checkpointing else None
    lines = []
    for enabled, name, install, on in (
            (first_token_only, "first-token-only last layer", install_first_token_only,
             "the head reads only the first token"),
            (unpad, "unpadded layers", install_unpadded_layers,
             "projections and feed-forward blocks skip padding tokens")):
        if enabled:
            why_not = skip or install(model)
            lines.append(f"{name}: " + (f"on ({on})" if why_not is None else f"off ({why_not})"))
    return lines
