"""Conditions a recipe writes as text (`eval.fail_if: {macro_f1: "< 0.8"}`), parsed where the recipe is validated."""

from __future__ import annotations

import re

_CONDITION = re.compile(r"^\s*(<=|>=|<|>)\s*([-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?)\s*$")


def parse_condition(text: str) -> tuple[str, float]:
    """'< 0.8' -> ('<', 0.8); ValueError with the accepted forms otherwise."""
    m = _CONDITION.match(str(text))
    if not m:
        raise ValueError(f"{text!r} is not a condition; write e.g. '< 0.8', '<= 0.8', '> 0.05' or '>= 0.05'")
    return m.group(1), float(m.group(2))
