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


def is_text(ex) -> bool:
    return "text" in ex.fields


def example_text(ex, i: int) -> str:
    """The text of row i; a pair task's two texts joined (a pair is a duplicate only if both parts are).
    Examples that are not text (images, audio) are named by where they came from."""
    if not is_text(ex):
        file, row, _ = ex.where[i]
        return f"{file} #{row}"
    pair = ex.fields.get("text_pair")
    return ex.fields["text"][i] if pair is None else f"{ex.fields['text'][i]} [SEP] {pair[i]}"


def normalised_texts(ex) -> list[str]:
    if not is_text(ex):  # images, audio: exact duplicates are the same decoded content, whatever the file
        return content_hashes(ex)
    return [normalise(example_text(ex, i)) for i in range(len(ex))]


def content_hashes(ex) -> list[str]:
    """sha1 of each example's decoded array (its first non-label field) and shape."""
    import hashlib

    import numpy as np

    field = next(k for k in ex.fields if k != "label")
    out = []
    for value in ex.fields[field]:
        arr = np.ascontiguousarray(value)
        out.append(hashlib.sha1(str(arr.shape).encode() + arr.tobytes()).hexdigest())
    return out
