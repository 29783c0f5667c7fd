"""Label names and the mapping from raw label values (strings or integers) to class indices."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from lftrain.errors import DataError


def _int_like(value: str) -> bool:
    return value.lstrip("-").isdigit()


def label_key(value: Any, table, i: int, column: str) -> str:
    """Canonical string form of a raw label: 1, 1.0 and "1" are the same label; " pos " is "pos"."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isfinite(value) and value.is_integer():
            return str(int(value))
        raise DataError(f"label {value!r} is neither a name nor an integer", column=column, **table.where(i))
    if isinstance(value, str):
        text = value.strip()
        if _int_like(text.replace(".0", "", 1)) and text.endswith(".0"):
            text = text[:-2]  # "1.0" from a spreadsheet export is the integer label 1
        return text
    raise DataError(f"label of type {type(value).__name__} is not supported", column=column, **table.where(i))


class LabelSet:
    """Ordered label names. Raw integer labels that are not names index into the list."""

    stratifies = True  # splits may be stratified by these labels

    def __init__(self, names: list[str]) -> None:
        if len(set(names)) != len(names):
            raise DataError(f"task.labels lists a label twice: {names}")
        if len(names) < 2:
            raise DataError(f"classification needs at least 2 labels, found {names}")
        self.names = list(names)
        self._index = {n: i for i, n in enumerate(self.names)}
        self._ints_are_indices = not any(_int_like(n) for n in self.names)

    @classmethod
    def from_config_or_data(cls, configured: list[str] | None, raw: list[str]) -> LabelSet:
        if configured:
            return cls([str(x) for x in configured])
        found = set(raw)
        if all(_int_like(v) for v in found):
            return cls(sorted(found, key=int))
        return cls(sorted(found))

    def __len__(self) -> int:
        return len(self.names)

    def lookup(self, raw: str) -> int | None:
        if raw in self._index:
            return self._index[raw]
        if self._ints_are_indices and _int_like(raw) and 0 <= int(raw) < len(self.names):
            return int(raw)
        return None

    def index(self, raw: str, ex, i: int, column: str | None = None) -> int:
        idx = self.lookup(raw)
        if idx is None:
            self.unknown(raw, ex, i, column)
        return idx

    def unknown(self, raw: str, ex, i: int, column: str | None):
        file, row, line = ex.where[i]
        raise DataError(f"unknown label '{raw}' (labels: {', '.join(self.names)}); add it to task.labels "
                        "or set data.unknown_labels: drop", file=file, row=row, line=line, column=column)

    def encode(self, ex) -> np.ndarray | None:
        """Class indices of `ex`'s labels (int64), or None when the rows are unlabelled (e.g. predict input)."""
        raw = ex.fields["label"]
        if not all(label is not None for label in raw):
            return None
        return np.asarray([self.index(v, ex, i) for i, v in enumerate(raw)], dtype=np.int64)

    def id2label(self) -> dict[int, str]:
        return dict(enumerate(self.names))

    def label2id(self) -> dict[str, int]:
        return dict(self._index)


class _Places:
    """`where(i)` for label errors, as a Table gives it, from (file, row, line) tuples."""

    def __init__(self, where: list[tuple]) -> None:
        self._where = where

    def where(self, i: int) -> dict[str, Any]:
        file, row, line = self._where[i]
        return {"file": file, "row": row, "line": line}


def keep_labelled(labels: list, where: list[tuple], with_labels: bool, drop_label) -> tuple[list[int], list, dict]:
    """For media rows read one file at a time: (indices kept, their canonical label keys or None, dropped count
    per label) — rows whose label `drop_label` rejects are dropped and counted."""
    from collections import Counter

    keep, keys, dropped, places = [], [], Counter(), _Places(where)
    for i, raw in enumerate(labels):
        key = None
        if with_labels:
            key = label_key(raw, places, i, "label")
            if drop_label is not None and drop_label(key):
                dropped[key] += 1
                continue
        keep.append(i)
        keys.append(key)
    return keep, keys, dict(dropped)


class LabelTuples(LabelSet):
    """Label names where a row's raw label is a tuple of names (a word's tags, a text's label set)."""

    stratifies = False  # too many distinct tuples to stratify splits by

    @classmethod
    def from_config_or_data(cls, configured: list[str] | None, raw: list[tuple]) -> LabelTuples:
        return super().from_config_or_data(configured, [name for row in raw for name in row])

    def lookup(self, raw: tuple) -> tuple | None:
        ids = tuple(LabelSet.lookup(self, name) for name in raw)
        return None if None in ids else ids

    def index(self, raw: tuple, ex, i: int, column: str | None = None) -> tuple:
        ids = self.lookup(raw)
        if ids is None:
            self.unknown(next(n for n in raw if LabelSet.lookup(self, n) is None), ex, i, column)
        return ids
