"""The recipe's `tune:` section: which fields to search, how, for how long, and where the study lives."""

from __future__ import annotations

import builtins
from typing import Any, Literal

from pydantic import Field, model_validator

from lftrain.config.base import Section

KINDS = ("uniform", "log_uniform", "int", "log_int", "choice")


class ParamSpace(Section):
    """The values one recipe field may take. Exactly one of the kinds is given."""

    uniform: list[float] | None = None
    """`[low, high]`: a float drawn uniformly."""
    log_uniform: list[float] | None = None
    """`[low, high]`: a float drawn uniformly on a log scale (learning rates, weight decay)."""
    int: list[builtins.int] | None = None
    """`[low, high]`: an integer, both ends included."""
    log_int: list[builtins.int] | None = None
    """`[low, high]`: an integer on a log scale."""
    choice: list[Any] | None = None
    """A list of values (numbers, strings, booleans, null, or lists such as LoRA target modules)."""
    step: float | None = Field(None, gt=0)
    """Grid step for `uniform` and `int` (e.g. `int: [8, 64], step: 8`)."""

    @model_validator(mode="after")
    def _one_kind(self) -> ParamSpace:
        given = [k for k in KINDS if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of {', '.join(KINDS)} (got {', '.join(given) or 'none'})")
        kind = given[0]
        values = getattr(self, kind)
        if kind == "choice":
            if not values:
                raise ValueError("choice: needs at least one value")
        else:
            if len(values) != 2 or not values[0] < values[1]:
                raise ValueError(f"{kind}: expected [low, high] with low < high (got {values})")
            if kind.startswith("log") and values[0] <= 0:
                raise ValueError(f"{kind}: the low end must be > 0 on a log scale (got {values[0]})")
        if self.step is not None and kind not in ("uniform", "int"):
            raise ValueError(f"step applies to uniform and int only, not {kind}")
        return self

    @property
    def kind(self) -> str:
        return next(k for k in KINDS if getattr(self, k) is not None)

    @property
    def values(self) -> list[Any]:
        return getattr(self, self.kind)


class TuneConfig(Section):
    space: dict[str, ParamSpace] = Field(min_length=1)
    """Recipe fields to search, by dotted name, and their values: `train.lr: {log_uniform: [1.0e-5, 1.0e-3]}`,
    `adaptation.r: {choice: [4, 8, 16]}`, `train.warmup_ratio: {uniform: [0, 0.2]}`, `train.batch_size: {int:
    [16, 64], step: 16}`. Kinds: uniform, log_uniform, int, log_int, choice. See docs/tuning.md."""
    metric: str | None = None
    """Objective: this metric of the eval split, its best value over the trial's evaluations. Default
    `train.metric`. Never the test split: the test set stays unseen until the best recipe is trained."""
    direction: Literal["auto", "maximize", "minimize"] = "auto"
    """`auto`: minimise `loss`, maximise every other metric."""
    trials: builtins.int = Field(20, gt=0)
    """Trials of the whole study (finished or pruned), across restarts and workers."""
    timeout: float | None = Field(None, gt=0)
    """Time budget in seconds of one `lft tune` invocation: no new trial starts after it."""
    sampler: Literal["tpe", "random", "gp", "qmc"] = "tpe"
    """How the next trial's values are chosen: `tpe` (Bayesian, tree-structured Parzen estimator), `gp`
    (Bayesian, Gaussian process), `random`, `qmc` (quasi-random Sobol)."""
    startup_trials: int = Field(4, ge=0)
    """Random trials before the sampler starts modelling, and finished trials before the pruner compares."""
    pruner: Literal["median", "hyperband", "asha", "none"] = "median"
    """Stop weak trials early from their intermediate evaluations: `median` (below the median of earlier
    trials at the same step), `hyperband`, `asha` (successive halving), `none`. Needs several evaluations
    per trial: set `train.eval_every`."""
    warmup_steps: int = Field(0, ge=0)
    """Optimiser steps before a trial may be pruned (median pruner); the first evaluations are noisy."""
    seed: int = 0
    """Seed of the sampler."""
    storage: str | None = None
    """Study database URL. Default: SQLite in the study directory (resumable). `postgresql://user@host/db`
    lets several machines work on one study (password via PGPASSWORD or ~/.pgpass, not in the recipe)."""
    study_name: str | None = None
    """Name of the study in the storage. Default: the recipe's `name`, else the study directory's name."""
    dir: str | None = None
    """Study directory: `trials/trial-N/` run directories, `best.yaml`, `report/`. Default `<output.dir>-tune`."""
    max_retries: int = Field(2, ge=0)
    """Times a trial whose worker died (killed, machine lost) is run again; the retry resumes its run directory."""
