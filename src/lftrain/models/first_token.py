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
contrastive method calls the encoder directly; distillation asks for hidden states) gets the full layer.
"""

from __future__ import annotations

import types

import torch
from torch import nn

# Sequence classifiers whose head reads only position 0 of the last hidden state (BERT through its pooler).
FIRST_TOKEN_HEADS = {
    "BertForSequenceClassification", "RobertaForSequenceClassification", "XLMRobertaForSequenceClassification",
    "CamembertForSequenceClassification", "ElectraForSequenceClassification",
}
_FLAG = "_lft_first_token_only"


def _first_token_forward(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None,
                         *args, **kwargs) -> torch.Tensor:
    if not getattr(self, _FLAG, False):
        return type(self).forward(self, hidden_states, attention_mask, *args, **kwargs)
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
    from transformers.models.bert.modeling_bert import eager_attention_forward

    sa = self.attention.self
    batch, length, _ = hidden_states.shape
    first = hidden_states[:, :1]
    query = sa.query(first).view(batch, 1, -1, sa.attention_head_size).transpose(1, 2)
    key = sa.key(hidden_states).view(batch, length, -1, sa.attention_head_size).transpose(1, 2)
    value = sa.value(hidden_states).view(batch, length, -1, sa.attention_head_size).transpose(1, 2)
    if attention_mask is not None and attention_mask.dim() == 4 and attention_mask.shape[-2] > 1:
        attention_mask = attention_mask[..., :1, :]  # the first query's row of a (B, 1, T, T) mask
    attend = ALL_ATTENTION_FUNCTIONS.get_interface(sa.config._attn_implementation, eager_attention_forward)
    context, _ = attend(sa, query, key, value, attention_mask, dropout=sa.dropout.p if sa.training else 0.0,
                        scaling=sa.scaling)
    attention_output = self.attention.output(context.reshape(batch, 1, -1), first)
    return self.feed_forward_chunk(attention_output)  # (B, 1, H): the pooler / head reads row 0


def _supported_layer(layer: nn.Module) -> bool:
    sa = getattr(getattr(layer, "attention", None), "self", None)
    return (all(hasattr(sa, a) for a in ("query", "key", "value", "dropout", "scaling", "attention_head_size"))
            and hasattr(layer.attention, "output") and hasattr(layer, "feed_forward_chunk")
            and not getattr(layer, "is_decoder", False) and not getattr(layer, "add_cross_attention", False)
            and getattr(layer, "chunk_size_feed_forward", 0) == 0)


def install_first_token_only(model: nn.Module) -> str | None:
    """Make the last layer of a first-token classifier compute only that row during the classifier's forward.
    Returns why it was not installed (None when it was)."""
    from lftrain.models.adaptation import find_layers, unwrap

    hf = unwrap(model)
    if type(hf).__name__ not in FIRST_TOKEN_HEADS:
        return f"{type(hf).__name__}'s head may read more than the first token"
    stack = find_layers(model)
    if stack is None or not _supported_layer(stack.layers[-1]):
        return "the last layer is not a BERT-style encoder layer"
    last = stack.layers[-1]
    last.forward = types.MethodType(_first_token_forward, last)

    def before(module, args, kwargs):
        config = module.config
        wants = (kwargs.get("output_hidden_states", config.output_hidden_states)
                 or kwargs.get("output_attentions", config.output_attentions))
        # More than input_ids passed by position: the flags may be among them, so take the full layer.
        setattr(last, _FLAG, not wants and len(args) <= 1)

    def after(module, args, output):
        setattr(last, _FLAG, False)

    hf.register_forward_pre_hook(before, with_kwargs=True)
    hf.register_forward_hook(after, always_call=True)  # also when the forward raises: a later direct encoder
    # call must get the full layer
    return None
