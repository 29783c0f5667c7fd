"""Text normalisation shared by the checks: two texts that differ only in case, accents' encoding,
punctuation or spacing are the same text for duplicate, leakage and contamination purposes."""

from __future__ import annotations

import re
import unicodedata

_NON_WORD = re.compile(r"[^\w\s]+")
_WS = re.compile(r"\s+")


def normalise(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).casefold()
    return _WS.sub(" ", _NON_WORD.sub(" ", text)).strip()


def example_text(ex, i: int) -> str:
    """The text of row i; a pair task's two texts joined (a pair is a duplicate only if both parts are)."""
    pair = ex.fields.get("text_pair")
    return ex.fields["text"][i] if pair is None else f"{ex.fields['text'][i]} [SEP] {pair[i]}"


def normalised_texts(ex) -> list[str]:
    return [normalise(example_text(ex, i)) for i in range(len(ex))]
