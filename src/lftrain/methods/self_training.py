"""Self-training: a teacher labels the unlabelled pool; its confident predictions join the labelled rows.

    method: {type: self-training, threshold: 0.9, selection: adaptive, balance: true, rounds: 2}
    data:   {train: labelled.csv, unlabeled: pool.csv}

One round = one training run of a *student* on the labelled rows plus the pseudo-labelled ones. The teacher is
`teacher:` when given, else the model the stage starts from when it is already a classifier of these classes
(the previous stage), else a supervised fit on the labelled rows run first. With `rounds: N` each student is
the next round's teacher. The orchestration (teacher fit, rounds, run directories) is in orchestrator/stages.py;
this module is one round: selection and the training set.

Selection, on the teacher's softmax p(x), confidence max p and predicted class ŷ:
- fixed:    keep x when max p ≥ threshold.
- adaptive: FlexMatch's per-class threshold (Zhang et al., 2021) from the teacher's own "learning status":
            σ_c = #{x: ŷ = c, max p ≥ threshold}, β_c = σ_c / max_c σ_c, τ_c = β_c / (2 − β_c) · threshold,
            so classes the teacher is rarely sure about get a lower bar and are not crowded out.
- quantile: keep each class's most confident `fraction` of the rows predicted as it, whatever their absolute
            confidence (a teacher trained on few labels is rarely above 0.9 on anything).
- balance:  cap every class at the count of the rarest selected class (the most confident rows kept), so a
            teacher biased to one class does not tilt the student further.
"""

from __future__ import annotations

import copy
import json
import logging
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field

from lftrain.config.base import Section
from lftrain.data.batching import append_rows
from lftrain.methods.base import METHODS, Method

log = logging.getLogger("lftrain")
PSEUDO_FILE = "pseudo_labels.json"  # the round's selection statistics, in the round's run directory


def select(probs: np.ndarray, *, threshold: float, selection: str = "fixed", balance: bool = False,
           max_per_class: int | None = None, fraction: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """(indices of the rows kept, their pseudo-labels), indices ascending. `probs`: (N, C) class probabilities."""
    conf, pred = probs.max(1), probs.argmax(1)
    n_classes = probs.shape[1]
    if selection == "quantile":  # each class's most confident `fraction` of the rows predicted as it
        per_class = np.array([np.quantile(conf[pred == c], 1 - fraction) if (pred == c).any() else np.inf
                              for c in range(n_classes)])
    elif selection == "adaptive":
        sigma = np.bincount(pred[conf >= threshold], minlength=n_classes).astype(np.float64)
        beta = sigma / sigma.max() if sigma.max() > 0 else np.ones(n_classes)
        per_class = beta / (2.0 - beta) * threshold
    else:
        per_class = np.full(n_classes, threshold)
    keep = conf >= per_class[pred]
    caps = []
    if balance:
        counts = np.bincount(pred[keep], minlength=n_classes)
        caps.append(int(counts.min()))
    if max_per_class is not None:
        caps.append(max_per_class)
    if caps:
        cap = min(caps)
        chosen = []
        for c in range(n_classes):
            rows = np.flatnonzero(keep & (pred == c))
            chosen.append(rows[np.argsort(-conf[rows], kind="stable")[:cap]])  # the most confident first
        idx = np.sort(np.concatenate(chosen)) if chosen else np.empty(0, dtype=np.int64)
    else:
        idx = np.flatnonzero(keep)
    return idx.astype(np.int64), pred[idx].astype(np.int64)


def selection_stats(pred: np.ndarray, names: list[str], pool_size: int, truth: np.ndarray | None,
                    pool_pred: np.ndarray, idx: np.ndarray) -> dict[str, Any]:
    """Counts per class, and — where the pool's true labels are known (-1: unknown) — pseudo-label accuracy."""
    counts = np.bincount(pred, minlength=len(names))
    stats: dict[str, Any] = {"pool": pool_size, "selected": int(len(idx)),
                             "per_class": {n: int(c) for n, c in zip(names, counts)}}
    if truth is not None:
        known = truth[idx] >= 0
        if known.any():
            stats["pseudo_label_accuracy"] = float((truth[idx][known] == pred[known]).mean())
            stats["pseudo_label_accuracy_n"] = int(known.sum())
        all_known = truth >= 0
        if all_known.any():
            stats["teacher_pool_accuracy"] = float((truth[all_known] == pool_pred[all_known]).mean())
    return stats


def pool_truth(recipe, task, unlabeled) -> np.ndarray | None:
    """True labels of the unlabelled rows when that file has the label column (for evaluation only; -1 where a
    row's label is missing or unknown), else None."""
    from lftrain.data.prepare import read_role

    cfg = recipe.data
    if getattr(task.config, "label", None) is None:
        return None
    try:
        ex, _ = read_role(cfg.unlabeled, cfg.model_copy(update={"unknown_labels": "drop"}), task, "unlabeled",
                          with_labels=True)
    except Exception as exc:  # noqa: BLE001  (labels are optional here: evaluation, never training, uses them)
        log.info("data.unlabeled: labels not usable for pseudo-label accuracy (%s)", exc)
        return None
    truth = {task.dedupe_key(ex, i): task.labels.lookup(ex.fields["label"][i]) for i in range(len(ex))}
    out = [truth.get(task.dedupe_key(unlabeled, i)) for i in range(len(unlabeled))]
    return np.asarray([-1 if v is None else v for v in out], dtype=np.int64)


@METHODS.register("self-training")
class SelfTraining(Method):
    """Self-training: a teacher pseudo-labels `data.unlabeled`; confident rows (fixed or per-class adaptive
    threshold, optionally class-balanced) join the labelled ones; repeated for `rounds`."""

    class Config(Section):
        type: Literal["self-training"] = "self-training"
        teacher: str | None = None
        """The first teacher: a finished run or classifier directory with this recipe's classes. Default: the
        starting model when it is such a classifier (a previous stage), else a supervised fit on the labelled
        rows, run first."""
        rounds: int = Field(1, ge=1)
        """Teacher -> student rounds; each round's student is the next round's teacher."""
        threshold: float = Field(0.9, ge=0, le=1)
        """Confidence (max class probability) a pseudo-label needs (`adaptive`: the bar of the best-learnt class)."""
        selection: Literal["fixed", "adaptive", "quantile"] = "fixed"
        """`fixed`: one threshold; `adaptive`: FlexMatch-style per-class thresholds (lower for classes the teacher
        is rarely confident about); `quantile`: each class's most confident `fraction` (threshold unused)."""
        fraction: float = Field(0.5, gt=0, le=1)
        """Share of each predicted class kept by `selection: quantile`."""
        balance: bool = False
        """Cap every class's pseudo-labels at the rarest class's count (the most confident kept)."""
        max_per_class: int | None = Field(None, gt=0)
        """At most this many pseudo-labels per class (the most confident)."""
        student: Literal["fresh", "continue"] = "fresh"
        """`fresh`: each student starts from the stage's starting model; `continue`: from the teacher's weights."""
        student_dropout: float | None = Field(None, ge=0, lt=1)
        """Dropout of the student (input noise, as in Noisy Student); null keeps the model's own."""
        teacher_train: dict = {}
        """`train` overrides for the supervised teacher fit (when one is needed), e.g. `{epochs: 5}`."""

    uses_unlabeled = True
    several_runs = True

    @classmethod
    def plan_stages(cls, name: str, recipe: dict, start: str, start_is_classifier: bool, add) -> tuple[str, bool]:
        """A supervised teacher fit first when nothing labels the pool yet (no `teacher`, and the stage does not
        start from a classifier), then one run per round whose teacher is the run before."""
        from lftrain.errors import RecipeError

        method = recipe["method"]
        if not recipe["data"].get("unlabeled"):
            raise RecipeError(f"stage '{name}': method self-training needs unlabelled text: set data.unlabeled")
        teacher = method.get("teacher") or (str(Path(start).parent) if start_is_classifier else None)
        if teacher is None:
            fit = copy.deepcopy(recipe)
            fit["method"] = {"type": METHODS.default}  # the teacher learns from the labels alone
            fit["model"]["path"] = start
            fit["train"] = {**fit["train"], **method.get("teacher_train", {})}
            teacher = str(add(f"{name}-teacher", fit))
        for r in range(1, method["rounds"] + 1):
            rnd = copy.deepcopy(recipe)
            rnd["method"] = {**method, "teacher": teacher, "rounds": 1}
            rnd["model"]["path"] = start if method["student"] == "fresh" else str(Path(teacher) / "model")
            if method.get("student_dropout") is not None:
                rnd["model"]["dropout"] = method["student_dropout"]
            teacher = str(add(f"{name}-round{r}", rnd))
        return str(Path(teacher) / "model"), True

    def __init__(self, config: Config, task) -> None:
        from lftrain.errors import InputError
        from lftrain.methods.teacher import check_labels, find_teacher

        super().__init__(config, task)
        if config.teacher is None:
            raise InputError("method.teacher: one self-training round needs a teacher (lft train sets it per round; "
                             "call lftrain.api.train, not train_run, for a self-training recipe)")
        self.teacher = find_teacher(config.teacher)
        if task.labels is not None:
            check_labels(self.teacher, task.labels.names)

    def prepare(self, model, train_encoded: dict[str, np.ndarray], *, data, recipe, encode, precision: str,
                device, tokenizer=None) -> tuple[dict[str, np.ndarray], Any]:
        """The labelled rows followed by the selected pseudo-labelled ones (hard labels)."""
        from lftrain.errors import DataError
        from lftrain.evaluation.metrics import softmax
        from lftrain.methods.teacher import teacher_outputs

        if data.unlabeled is None:
            raise DataError("method self-training needs unlabelled text: set data.unlabeled")
        cfg = self.config
        logits = teacher_outputs(self.teacher, recipe, [data.unlabeled], layers=[], precision=precision,
                                 device=device, cache_dir=recipe.data.cache_dir)["logits"]
        probs = softmax(logits)
        idx, pseudo = select(probs, threshold=cfg.threshold, selection=cfg.selection, balance=cfg.balance,
                             max_per_class=cfg.max_per_class, fraction=cfg.fraction)
        stats = selection_stats(pseudo, data.labels, len(data.unlabeled), pool_truth(recipe, self.task,
                                                                                      data.unlabeled),
                                probs.argmax(1), idx)
        stats["teacher"] = str(self.teacher.model_dir)
        _write_stats(Path(recipe.output.dir), stats)
        log.info("self-training: %d of %d unlabelled rows pseudo-labelled (%s)%s", len(idx), len(data.unlabeled),
                 ", ".join(f"{k} {v}" for k, v in stats["per_class"].items()),
                 f"; pseudo-label accuracy {stats['pseudo_label_accuracy']:.4f}"
                 if "pseudo_label_accuracy" in stats else "")
        if not len(idx):
            log.warning("self-training: no pseudo-label passed the selection (teacher's highest confidence %.3f); "
                        "the student sees the labelled rows only. Lower method.threshold or use selection: "
                        "quantile", float(probs.max(1).max()))
            return train_encoded, self.task
        chosen = encode(data.unlabeled.subset(idx))
        return append_rows(train_encoded, chosen, pseudo), self.task


def _write_stats(run_dir: Path, stats: dict) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / PSEUDO_FILE).write_text(json.dumps(stats, indent=1))
