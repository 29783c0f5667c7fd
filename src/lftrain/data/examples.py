"""Examples: validated, column-oriented rows that remember where each came from."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

_WS = re.compile(r"\s+")


def clean_text(value: Any, normalize: bool) -> str:
    text = value if isinstance(value, str) else str(value)
    return _WS.sub(" ", text).strip() if normalize else text


@dataclass
class Examples:
    """Validated examples of one split. `fields` hold equal-length lists; `where[i]` = (file, row, line)."""

    name: str
    fields: dict[str, list[Any]]
    where: list[tuple[str, int, int | None]] = field(default_factory=list)
    dropped: dict[str, int] = field(default_factory=dict)  # rows skipped while reading, by label

    def __len__(self) -> int:
        return len(self.where)

    def subset(self, indices: list[int] | np.ndarray, name: str | None = None) -> Examples:
        idx = [int(i) for i in indices]
        return Examples(name or self.name, {k: [v[i] for i in idx] for k, v in self.fields.items()},
                        [self.where[i] for i in idx])

    @classmethod
    def concat(cls, name: str, parts: list[Examples]) -> Examples:
        """The rows of `parts`, in order, as one (the fields they all have)."""
        keys = [k for k in parts[0].fields if all(k in p.fields for p in parts)]
        dropped: dict[str, int] = {}
        for p in parts:
            for label, n in p.dropped.items():
                dropped[label] = dropped.get(label, 0) + n
        return cls(name, {k: [v for p in parts for v in p.fields[k]] for k in keys},
                   [w for p in parts for w in p.where], dropped)

    def location(self, i: int) -> str:
        file, row, line = self.where[i]
        return f"{file} row {row}" + (f" (line {line})" if line else "")
