"""`train.curriculum`: the order examples become available in (training/curriculum.py runs it)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from lftrain.config.base import Section


class CurriculumConfig(Section):
    difficulty: Literal["length", "loss", "column"] = "length"
    """What makes an example hard: its token count, a scoring model's loss on it (`scorer`), or a number in the
    training file's `column`."""
    column: str | None = None
    """Column of the training file holding each row's difficulty (a number; higher = harder), for
    `difficulty: column`."""
    scorer: str | None = None
    """A finished run directory or classifier directory whose cross-entropy on each labelled row is its
    difficulty, for `difficulty: loss`."""
    pacing: Literal["linear", "root", "step"] = "root"
    """How competence grows from `start` to 1 (see docs/semi-supervised.md)."""
    start: float = Field(0.2, gt=0, le=1)
    """Initial competence c0: the easiest share of the data available at step 0."""
    duration: float = Field(0.5, gt=0, le=1)
    """Share of the training steps after which every example is available (T in the pacing formulas)."""
    steps: int = Field(4, ge=1)
    """Number of equal jumps of `pacing: step`."""
    order: Literal["easy-first", "hard-first", "random"] = "easy-first"
    """Rank easy to hard (curriculum), hard to easy (anti-curriculum), or at random (pacing-only ablation)."""

    @model_validator(mode="after")
    def _needs(self) -> CurriculumConfig:
        if self.difficulty == "column" and not self.column:
            raise ValueError("difficulty: column needs `column:` (the training file's column of difficulty scores)")
        if self.difficulty == "loss" and not self.scorer:
            raise ValueError("difficulty: loss needs `scorer:` (a run or classifier directory that scores each row)")
        return self
