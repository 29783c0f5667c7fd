"""Curriculum learning (`train.curriculum`): which examples each optimiser step may draw from.

Competence-based curriculum (Platanios et al., 2019, "Competence-based Curriculum Learning for Neural
Machine Translation"): examples are ranked by difficulty once; at step t the model's *competence* c(t) ∈ [c0, 1]
says which easiest share of the ranked data is available, and the step's batch is drawn uniformly from it.

    linear: c(t) = min(1, t·(1 − c0)/T + c0)
    root:   c(t) = min(1, sqrt(t·(1 − c0²)/T + c0²))      (more steps on the early, small pools' hardest part)
    step:   c(t) = min(1, c0 + (1 − c0)·floor(t·n/T)/n)   ("baby steps": n equal jumps)

with T = `duration` × total steps. `order: hard-first` ranks the other way round (anti-curriculum),
`order: random` ranks by a seeded permutation (the pacing without the difficulty: an ablation).

A batch is a pure function of (seed, step), so a resumed run draws exactly the batches an uninterrupted
one would: nothing beyond the step counter needs saving.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np

from lftrain.config.curriculum import CurriculumConfig
from lftrain.errors import DataError, InputError

log = logging.getLogger("lftrain")


def competence(t: int | np.ndarray, total: int, cfg: CurriculumConfig) -> np.ndarray:
    """c(t) for step(s) t (0-based) of a run of `total` steps."""
    horizon = max(1.0, cfg.duration * total)
    x = np.minimum(np.asarray(t, dtype=np.float64) / horizon, 1.0)
    c0 = cfg.start
    if cfg.pacing == "linear":
        c = x * (1 - c0) + c0
    elif cfg.pacing == "root":
        c = np.sqrt(x * (1 - c0 ** 2) + c0 ** 2)
    else:
        c = c0 + (1 - c0) * np.floor(x * cfg.steps) / cfg.steps
    return np.minimum(c, 1.0)


@dataclass
class CurriculumPlan:
    """The ranked examples (easiest first, as `order` says) and the pacing; `batches(epoch)` draws an epoch."""

    ranked: np.ndarray
    cfg: CurriculumConfig
    total_steps: int
    steps_per_epoch: int
    batch_size: int
    seed: int

    def batch_at(self, step: int) -> np.ndarray:
        """The indices of optimiser step `step` (0-based): a uniform draw from the easiest c(step) share."""
        n = len(self.ranked)
        pool = min(n, max(self.batch_size, math.ceil(float(competence(step, self.total_steps, self.cfg)) * n)))
        rng = np.random.default_rng([self.seed, 7919, step])  # 7919: keeps these draws apart from epoch shuffles
        return self.ranked[rng.choice(pool, size=min(self.batch_size, pool), replace=False)]

    def batches(self, epoch: int) -> list[np.ndarray]:
        first = epoch * self.steps_per_epoch
        return [self.batch_at(first + j) for j in range(self.steps_per_epoch)]


def rank(difficulty: np.ndarray, order: str, seed: int) -> np.ndarray:
    """Example indices, easiest first (ties broken by a seeded permutation, so equal lengths still mix)."""
    rng = np.random.default_rng([seed, 104729])
    perm = rng.permutation(len(difficulty))
    if order == "random":
        return perm
    key = difficulty[perm] if order == "easy-first" else -difficulty[perm]
    return perm[np.argsort(key, kind="stable")]


# ---- difficulty scores ----------------------------------------------------------------------------------

def column_difficulty(recipe, train) -> np.ndarray:
    """The training rows' values of `train.curriculum.column`, read from the rows' files (validated: numbers)."""
    from lftrain.data.readers import read_table

    cfg = recipe.train.curriculum
    tables: dict[str, tuple] = {}  # file -> (table, row number -> index)
    out = np.empty(len(train), dtype=np.float64)
    for i, (file, row, line) in enumerate(train.where):
        if file not in tables:
            table = read_table(file, recipe.data.format, recipe.data.encoding)
            if cfg.column not in table.columns:
                raise DataError(f"train.curriculum.column: no column '{cfg.column}' (columns: "
                                f"{', '.join(table.columns)})", file=file)
            tables[file] = (table, {r: k for k, r in enumerate(table.row_numbers)})
        table, index = tables[file]
        value = table.rows[index[row]].get(cfg.column)
        try:
            out[i] = float(value)
        except (TypeError, ValueError):
            raise DataError(f"difficulty {value!r} is not a number", file=file, line=line, row=row,
                            column=cfg.column) from None
        if not np.isfinite(out[i]):
            raise DataError(f"difficulty {value!r} is not a finite number", file=file, line=line, row=row,
                            column=cfg.column)
    return out


def loss_difficulty(recipe, train, *, precision: str, device) -> np.ndarray:
    """Each labelled row's cross-entropy under the scoring model (run once; cached like a distillation teacher)."""
    from lftrain.evaluation.metrics import softmax
    from lftrain.methods.teacher import check_labels, find_teacher, teacher_outputs
    from lftrain.tasks.base import build_task

    ref = find_teacher(recipe.train.curriculum.scorer)
    task = build_task(recipe.task)
    names = task.fit_labels(train)
    if names is None:
        raise InputError(f"train.curriculum.scorer: a teacher scores the rows of a task with classes, not "
                         f"{recipe.task.type}")
    check_labels(ref, names.names)
    logits = teacher_outputs(ref, recipe, [train], layers=[], precision=precision, device=device,
                             cache_dir=recipe.data.cache_dir)["logits"]
    labels = np.asarray([names.lookup(v) for v in train.fields["label"]])
    return -np.log(np.clip(softmax(logits)[np.arange(len(labels)), labels], 1e-12, None))


def check(recipe, data) -> None:
    """Fail on a bad curriculum input (a column's values, the scorer's path) before any model loads."""
    cfg = recipe.train.curriculum
    if cfg is None:
        return
    if cfg.difficulty == "column":
        column_difficulty(recipe, data.train)
    elif cfg.difficulty == "loss":
        from lftrain.methods.teacher import find_teacher

        find_teacher(cfg.scorer)


def plan_curriculum(recipe, data, train_encoded: dict[str, np.ndarray], lengths: np.ndarray, *, total_steps: int,
                    steps_per_epoch: int, precision: str, device) -> CurriculumPlan | None:
    """The curriculum of this run (None without `train.curriculum`). Rows a method appended after the labelled ones
    (pseudo-labelled text) rank by length, or — for column/loss difficulty — at the labelled rows' median."""
    cfg = recipe.train.curriculum
    if cfg is None:
        return None
    n_labelled = len(data.train)
    if cfg.difficulty == "length":
        difficulty = lengths.astype(np.float64)
    else:
        scores = column_difficulty(recipe, data.train) if cfg.difficulty == "column" else \
            loss_difficulty(recipe, data.train, precision=precision, device=device)
        if len(scores) != n_labelled:
            raise InputError("train.curriculum: difficulty scores do not match the training rows")
        extra = np.full(len(lengths) - n_labelled, np.median(scores))
        difficulty = np.concatenate([scores, extra])
    plan = CurriculumPlan(rank(difficulty, cfg.order, recipe.train.seed), cfg, total_steps, steps_per_epoch,
                          recipe.train.batch_size, recipe.train.seed)
    log.info("curriculum: %s by %s, %s pacing from %.0f%% of %d rows, all available after step %d", cfg.order,
             cfg.difficulty, cfg.pacing, 100 * cfg.start, len(difficulty), math.ceil(cfg.duration * total_steps))
    return plan
