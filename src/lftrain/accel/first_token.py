"""The last encoder layer computes only the row the classification head reads.

A BERT-family sequence classifier classifies the last layer's first token ([CLS] / <s>) and nothing else. That
row needs the keys and values of every row, but no other row's query, attention output or feed-forward block, so
computing it alone gives the same logits and gradients for ~5/6 less of that layer's work.

The layer's `forward` is replaced on the instance (parameter names and saved models are the plain model's). The
short path runs only inside the classifier's own forward call, and only when that call asks for no hidden states or
attentions: anything else that runs the layers (the contrastive method calls the encoder directly; distillation
asks for hidden states) gets the full layer. The switch lives on the model, so a deep copy switches its own layer.
"""

from __future__ import annotations

import types

import torch
from torch import nn

# transformers' BERT and the models whose layers are "Copied from" it (same modules, same forwards)
BERT_FAMILIES = ("Bert", "Roberta", "XLMRoberta", "Camembert", "Electra")
FIRST_TOKEN_HEADS = {f"{family}ForSequenceClassification" for family in BERT_FAMILIES}
_STATE = "_lft_first_token_only"


class _Switch:
    on: bool = False


def _during_plain_forward(hf: nn.Module, state: _Switch) -> None:
    """Turn `state` on for each forward of `hf` that asks for no hidden states or attentions and passes its inputs
    by keyword; off after every forward, also one that raises."""
    setattr(hf, _STATE, state)

    def before(module, args, kwargs):
        config = module.config
        wants = (kwargs.get("output_hidden_states", config.output_hidden_states)
                 or kwargs.get("output_attentions", config.output_attentions))
        if not wants and len(args) <= 1:  # flags passed by position may be among args: take the full layer
            getattr(module, _STATE).on = True

    def after(module, args, output):
        getattr(module, _STATE).on = False

    hf.register_forward_pre_hook(before, with_kwargs=True)
    hf.register_forward_hook(after, always_call=True)


def _supported(layer: nn.Module) -> bool:
    """A BERT-style encoder layer (self-attention with query/key/value, no cross-attention, no FFN chunking)."""
    sa = getattr(getattr(layer, "attention", None), "self", None)
    return (all(hasattr(sa, a) for a in ("query", "key", "value", "dropout", "scaling", "attention_head_size"))
            and hasattr(layer.attention, "output") and hasattr(layer, "feed_forward_chunk")
            and not getattr(layer, "is_decoder", False) and not getattr(layer, "add_cross_attention", False)
            and getattr(layer, "chunk_size_feed_forward", 0) == 0)


def _first_token_forward(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None,
                         *args, **kwargs) -> torch.Tensor:
    if not getattr(self, _STATE).on:
        return type(self).forward(self, hidden_states, attention_mask, *args, **kwargs)
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
    from transformers.models.bert.modeling_bert import eager_attention_forward

    sa = self.attention.self
    heads = sa.attention_head_size
    batch, length, _ = hidden_states.shape
    first = hidden_states[:, :1]
    key = sa.key(hidden_states).view(batch, length, -1, heads).transpose(1, 2)
    value = sa.value(hidden_states).view(batch, length, -1, heads).transpose(1, 2)
    query = sa.query(first).view(batch, 1, -1, heads).transpose(1, 2)
    if attention_mask is not None and attention_mask.dim() == 4 and attention_mask.shape[-2] > 1:
        attention_mask = attention_mask[..., :1, :]  # the first query's row of a (B, 1, T, T) mask
    attend = ALL_ATTENTION_FUNCTIONS.get_interface(sa.config._attn_implementation, eager_attention_forward)
    context, _ = attend(sa, query, key, value, attention_mask, dropout=sa.dropout.p if sa.training else 0.0,
                        scaling=sa.scaling)
    attention_output = self.attention.output(context.reshape(batch, 1, -1), first)
    return self.feed_forward_chunk(attention_output)  # (B, 1, H): the pooler / head reads row 0


def install_first_token_only(model: nn.Module) -> str | None:
    """Make the last layer of a first-token classifier compute only that row during the classifier's forward.
    Returns why it was not installed (None when it was)."""
    from lftrain.models.layers import find_layers, unwrap

    hf = unwrap(model)
    if type(hf).__name__ not in FIRST_TOKEN_HEADS:
        return f"{type(hf).__name__}'s head may read more than the first token"
    stack = find_layers(model)
    if stack is None or not _supported(stack.layers[-1]):
        return "the last layer is not a BERT-style encoder layer"
    last = stack.layers[-1]
    if "forward" in vars(last):
        return "the last layer already runs its own forward"
    last.forward = types.MethodType(_first_token_forward, last)
    state = _Switch()
    setattr(last, _STATE, state)
    _during_plain_forward(hf, state)
    return None
