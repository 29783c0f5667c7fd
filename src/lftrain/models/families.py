"""What differs between the model families text tasks meet, in one place, read from the tokenizer and config
rather than from a list of model names:

- a pad token for decoders that ship none (Llama 3, Mistral): batches need one, and a decoder sequence classifier
  finds each row's last token through `config.pad_token_id`;
- token type ids only for models that take them (BERT, DeBERTa, ELECTRA), as the tokenizer's
  `model_input_names` says: RoBERTa-style models have a single type, ModernBERT, ESM and decoders none;
- a prefix space for byte-level BPE tokenizers (RoBERTa, GPT-2-style) fed pre-split words, so a word inside a
  sentence is encoded as it is in running text (transformers refuses `is_split_into_words` without it).
"""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger("lftrain")
TEXT_INPUTS = ("input_ids", "attention_mask", "token_type_ids")  # what an encoder's forward may take


def ensure_pad_token(tokenizer) -> None:
    """Give a tokenizer without a pad token its end-of-sequence token (else its unknown token) as one. Padded
    positions are masked out of attention and loss, so which token pads does not change what is learnt."""
    if getattr(tokenizer, "pad_token", None) is not None:
        return
    for name in ("eos_token", "unk_token"):
        token = getattr(tokenizer, name, None)
        if token is not None:
            tokenizer.pad_token = token
            log.info("the tokenizer has no pad token: padding with its %s %r", name.split("_")[0], token)
            return


def takes_token_types(tokenizer) -> bool:
    """Whether the model this tokenizer belongs to takes `token_type_ids`."""
    return "token_type_ids" in getattr(tokenizer, "model_input_names", ())


def text_inputs(batch: dict[str, Any]) -> dict[str, Any]:
    """A text batch's model inputs: token types only where the encoding kept them (`token_types`)."""
    return {k: batch[k] for k in TEXT_INPUTS if k in batch}


def token_types(enc, tokenizer) -> list[list[int]] | None:
    """The encoding's token type ids where the model takes them, else None."""
    return enc["token_type_ids"] if takes_token_types(tokenizer) and "token_type_ids" in enc else None


def _byte_level_steps(tokenizer) -> list:
    """The ByteLevel steps of a fast tokenizer's pre-tokenizer (alone or inside a Sequence)."""
    from tokenizers import pre_tokenizers

    backend = getattr(tokenizer, "backend_tokenizer", None)
    step = getattr(backend, "pre_tokenizer", None)
    if isinstance(step, pre_tokenizers.ByteLevel):
        return [step]
    found, i = [], 0
    while isinstance(step, pre_tokenizers.Sequence):
        try:
            part = step[i]
        except IndexError:
            break
        if isinstance(part, pre_tokenizers.ByteLevel):
            found.append(part)
        i += 1
    return found


def for_split_words(tokenizer):
    """`tokenizer`, made to encode pre-split words as running text does: a byte-level BPE one (RoBERTa,
    GPT-2-style) gets a prefix space before each word, so a word inside a sentence is the token it is in text.
    Saved with the model, so an exported folder encodes words the same way."""
    steps = [s for s in _byte_level_steps(tokenizer) if not s.add_prefix_space]
    for step in steps:
        step.add_prefix_space = True
    if steps:
        tokenizer.init_kwargs["add_prefix_space"] = True  # written to tokenizer_config.json as well
        if hasattr(tokenizer, "add_prefix_space"):
            tokenizer.add_prefix_space = True
        log.info("byte-level BPE tokenizer: a prefix space before each pre-split word")
    return tokenizer
