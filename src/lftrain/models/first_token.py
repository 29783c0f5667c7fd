"""The last encoder layer computes only the row the classification head reads.

A BERT-family sequence classifier (BERT, RoBERTa, XLM-R, CamemBERT, ELECTRA) classifies the last layer's
first token ([CLS] / <s>) and nothing else. In that layer every other row's query, attention output, feed-forward
block and layer norms are computed and thrown away: the first row needs the keys and values of all rows, but
nothing else from them. Computing that one row instead gives the same logits and the same gradients (a test
compares both with the unchanged model) and saves ~5/6 of the layer's matmul work: ~5/36 of a 6-layer encoder's, and
~5/12 of the trained part's when the bottom 4 of 6 layers are frozen and cached (measured: docs/performance.md).

The layer's `forward` is replaced on the instance, so parameter names, checkpoints and the saved model are those of
the plain Hugging Face model. The short path is taken only inside the classifier's own forward call and only when
that call asks for no hidden states or attentions, so anything that reads the encoder's per-token output (the
contrastive method calls the encoder directly; distillation asks for hidden states) gets the full layer
(`forward_scope.py`). With `train.unpad` the layers below skip padding rows (`unpad.py`) and hand this layer their rows
packed: it computes keys and values for the real tokens only.
"""

from __future__ import annotations

import types

import torch
from torch import nn

from lftrain.models.forward_scope import (
    BERT_FAMILIES,
    FIRST_TOKEN_STATE,
    UNPAD_STATE,
    ShortPath,
    during_plain_forward,
    supported_layer,
)

# Sequence classifiers whose head reads only position 0 of the last hidden state (BERT through its pooler).
FIRST_TOKEN_HEADS = {f"{family}ForSequenceClassification" for family in BERT_FAMILIES}
_STATE = FIRST_TOKEN_STATE


def _first_token_forward(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None,
                         *args, **kwargs) -> torch.Tensor:
    if not getattr(self, _STATE).on:  # (the layer below hands up packed rows only when this is on: same hooks)
        return type(self).forward(self, hidden_states, attention_mask, *args, **kwargs)
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
    from transformers.models.bert.modeling_bert import eager_attention_forward

    sa = self.attention.self
    heads = sa.attention_head_size
    if hidden_states.dim() == 2:  # packed rows (`unpad.py`): keys and values for the real tokens only
        rows = getattr(self, UNPAD_STATE)
        (batch, _), first = rows.grid, hidden_states.index_select(0, rows.first).unsqueeze(1)
        key, value = rows.on_grid(sa.key(hidden_states), heads), rows.on_grid(sa.value(hidden_states), heads)
    else:
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
    from lftrain.models.adaptation import find_layers, unwrap

    hf = unwrap(model)
    if type(hf).__name__ not in FIRST_TOKEN_HEADS:
        return f"{type(hf).__name__}'s head may read more than the first token"
    stack = find_layers(model)
    if stack is None or not supported_layer(stack.layers[-1]):
        return "the last layer is not a BERT-style encoder layer"
    last = stack.layers[-1]
    if "forward" in vars(last):  # e.g. unpad.py's, installed first: it would hand this path rows it cannot place
        return "the last layer already runs its own forward (install this first)"
    last.forward = types.MethodType(_first_token_forward, last)
    state = ShortPath()
    setattr(last, _STATE, state)
    during_plain_forward(hf, _STATE, state)
    return None
