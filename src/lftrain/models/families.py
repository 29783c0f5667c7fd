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

import json
import logging
from typing import Any

log = logging.getLogger("lftrain")


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


def token_types(enc, tokenizer) -> list[list[int]] | None:
    """The encoding's token type ids where the model takes them, else None."""
    return enc["token_type_ids"] if takes_token_types(tokenizer) and "token_type_ids" in enc else None


def is_byte_level(tokenizer) -> bool:
    """A byte-level BPE tokenizer (its pre-tokenizer maps bytes to symbols, GPT-2's scheme)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return False
    try:
        spec: Any = json.loads(backend.to_str()).get("pre_tokenizer")
    except (ValueError, AttributeError):
        return False
    return "ByteLevel" in json.dumps(spec)


def for_split_words(tokenizer, load):
    """The tokenizer to encode pre-split words with: a byte-level BPE one without a prefix space is loaded again
    by `load(add_prefix_space=True)`; any other is returned as it is."""
    if not is_byte_level(tokenizer) or getattr(tokenizer, "add_prefix_space", None):
        return tokenizer
    log.info("byte-level BPE tokenizer: loaded with add_prefix_space=True for pre-split words")
    return load(add_prefix_space=True)
