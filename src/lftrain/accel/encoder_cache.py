"""Cached encoder outputs for encoder-decoder models (Whisper) whose encoder is frozen.

Decoder-only fine-tuning of a speech recogniser (`adaptation: {type: freeze, patterns: ["^model\\.encoder\\."]}`)
trains nothing in the encoder: with no dropout and no input augmentation there, a clip's encoder output is the
same in every epoch. We compute it once per training clip and each step hands the decoder the cached states
instead of running the encoder, which is most of a Whisper step's work (its encoder reads hundreds of positions,
the decoder a transcript's dozen tokens). The swap lasts one forward pass; evaluation and saving see the real model.
"""

from __future__ import annotations

import contextlib
import logging

import numpy as np
import torch
from torch import nn

from lftrain.models.precision import autocast

log = logging.getLogger("lftrain")


def frozen_encoder(model: nn.Module, *, augments_input: bool) -> tuple[nn.Module | None, str]:
    """(the encoder to cache, why) or (None, why not)."""
    from lftrain.models.layers import unwrap

    hf = unwrap(model)
    config = getattr(hf, "config", None)
    encoder = getattr(getattr(hf, "model", None), "encoder", None)
    if config is None or not getattr(config, "is_encoder_decoder", False) or not isinstance(encoder, nn.Module):
        return None, "not an encoder-decoder model"
    if any(p.requires_grad for p in encoder.parameters()):
        return None, "the encoder trains"
    if augments_input or getattr(config, "apply_spec_augment", False):
        return None, "the inputs are augmented (task.spec_augment): they differ between epochs"
    rates = {k: getattr(config, k, 0.0) or 0.0
             for k in ("dropout", "attention_dropout", "activation_dropout", "encoder_layerdrop")}
    if any(rates.values()):
        return None, f"the frozen encoder runs dropout or layer drop ({rates})"
    return encoder, "the encoder is frozen and deterministic"


class EncoderCache:
    """The encoder's last hidden states of every training row, replayed into the model one micro-batch at a time."""

    def __init__(self, encoder: nn.Module) -> None:
        self.encoder = encoder
        self.states: torch.Tensor | None = None

    @torch.no_grad()
    def build(self, data: dict[str, np.ndarray], *, batch_size: int, precision: str, device, dtype) -> None:
        feats = data["input_features"]
        was_training = self.encoder.training
        self.encoder.eval()
        parts = []
        for start in range(0, len(feats), batch_size):
            x = torch.from_numpy(np.ascontiguousarray(feats[start:start + batch_size])).to(device)
            with autocast(precision, device):
                parts.append(self.encoder(x).last_hidden_state.to(dtype).cpu())
        self.encoder.train(was_training)
        self.states = torch.cat(parts)

    @contextlib.contextmanager
    def replaying(self, indices: np.ndarray, batch: dict[str, torch.Tensor]):
        from transformers.modeling_outputs import BaseModelOutput

        assert self.states is not None, "the encoder cache was released"
        device = batch["input_features"].device
        states = self.states[torch.as_tensor(np.asarray(indices))].to(device)
        self.encoder.forward = lambda *args, **kwargs: BaseModelOutput(last_hidden_state=states)
        try:
            yield
        finally:
            del self.encoder.forward  # the class's own forward again

    def release(self) -> None:
        self.states = None
