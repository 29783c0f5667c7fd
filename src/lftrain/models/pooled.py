"""A sequence classifier whose head reads the mean of the encoder's last-layer token vectors.

`task.pooling: mean` (text classification). A sentence-transformers encoder (all-MiniLM-L6-v2 and its kin) was
trained so that the *mean* of its token vectors is the sentence's embedding; BERT's own classification head reads
the [CLS] vector through a pooler layer that such training never touched. With few labels the difference is
large (docs/semi-supervised.md), which is why SetFit classifies mean-pooled embeddings.

The model wraps any `AutoModel` encoder, kept whole under `encoder` (the base model: layer-range freezing, LoRA
target defaults, the frozen-layer cache and `keep_layers` find it as in any Hugging Face classifier), with the
encoder's own config nested in ours. Config and class are registered with the Auto classes when this module is
imported (lftrain's loaders do), so a saved model loads with `AutoModelForSequenceClassification.from_pretrained`
after `import lftrain.models.pooled`.
"""

from __future__ import annotations

import torch
from transformers import AutoConfig, AutoModel, AutoModelForSequenceClassification, PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import SequenceClassifierOutput

MODEL_TYPE = "lftrain-mean-pooled"


class MeanPooledConfig(PretrainedConfig):
    model_type = MODEL_TYPE
    sub_configs = {"encoder": AutoConfig}

    def __init__(self, encoder: PretrainedConfig | dict | None = None, classifier_dropout: float | None = None,
                 **kwargs) -> None:
        if isinstance(encoder, dict):
            encoder = AutoConfig.for_model(**encoder)
        self.encoder = encoder
        # None: the encoder's hidden dropout, as BERT's own head does.
        self.classifier_dropout = classifier_dropout
        super().__init__(**kwargs)

    @property
    def hidden_size(self) -> int:
        return self.encoder.hidden_size


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of the token vectors that are not padding: (B, T, H) -> (B, H)."""
    m = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * m).sum(1) / m.sum(1).clamp_min(1)


class MeanPooledForSequenceClassification(PreTrainedModel):
    config_class = MeanPooledConfig
    base_model_prefix = "encoder"
    _supports_sdpa = True
    _supports_attention_backend = True  # our eager kernel with fast dropout (accel/dropout.py)

    def __init__(self, config: MeanPooledConfig, encoder: PreTrainedModel | None = None) -> None:
        super().__init__(config)
        self.encoder = encoder if encoder is not None else AutoModel.from_config(config.encoder)
        # One config object for the encoder and ours: what changes the encoder's shape (model.keep_layers) is saved.
        config.encoder = self.encoder.config
        if getattr(self.encoder, "pooler", None) is not None:
            self.encoder.pooler = None  # its [CLS] pooler is never read: no parameters that get no gradient
        rate = config.classifier_dropout
        if rate is None:
            rate = getattr(config.encoder, "hidden_dropout_prob", 0.0)
        self.dropout = torch.nn.Dropout(rate)
        self.classifier = torch.nn.Linear(config.encoder.hidden_size, config.num_labels)
        self.post_init()

    def _init_weights(self, module) -> None:
        # Only our own head is new; the encoder arrives trained (or initialises itself in from_config).
        if module is getattr(self, "classifier", None):
            std = getattr(self.config.encoder, "initializer_range", 0.02)
            module.weight.data.normal_(0.0, std)
            module.bias.data.zero_()

    def get_input_embeddings(self):
        return self.encoder.get_input_embeddings()

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, labels=None, inputs_embeds=None,
                output_hidden_states=None, output_attentions=None, **kwargs) -> SequenceClassifierOutput:
        extra = {"token_type_ids": token_type_ids} if token_type_ids is not None else {}
        out = self.encoder(input_ids=input_ids, attention_mask=attention_mask, inputs_embeds=inputs_embeds,
                           output_hidden_states=output_hidden_states, output_attentions=output_attentions,
                           **extra, **kwargs)
        hidden = out.last_hidden_state
        if attention_mask is None:
            attention_mask = torch.ones(hidden.shape[:2], dtype=torch.long, device=hidden.device)
        logits = self.classifier(self.dropout(mean_pool(hidden, attention_mask)))
        loss = torch.nn.functional.cross_entropy(logits.float(), labels) if labels is not None else None
        return SequenceClassifierOutput(loss=loss, logits=logits, hidden_states=out.hidden_states,
                                        attentions=out.attentions)


def wrap_encoder(encoder: PreTrainedModel, **head) -> MeanPooledForSequenceClassification:
    """A mean-pooled classifier around a loaded (pre-trained) encoder; only the linear head is new. `head`: the
    config's num_labels, id2label, label2id (and problem_type)."""
    impl = encoder.config._attn_implementation  # building our config resets the nested one's: set it back
    config = MeanPooledConfig(encoder=encoder.config, **head)
    config._attn_implementation = impl
    return MeanPooledForSequenceClassification(config, encoder=encoder)


AutoConfig.register(MODEL_TYPE, MeanPooledConfig, exist_ok=True)
AutoModelForSequenceClassification.register(MeanPooledConfig, MeanPooledForSequenceClassification, exist_ok=True)
