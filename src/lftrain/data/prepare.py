"""From recipe paths to validated train/eval/test examples — all before any model is loaded."""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from lftrain.data.examples import Examples
from lftrain.errors import DataError
from lftrain.tasks.labels import LabelSet

log = logging.getLogger("lftrain")


@dataclass
class PreparedData:
    train: Examples
    eval: Examples | None
    test: Examples | None
    labels: list[str]
    stats: dict = field(default_factory=dict)
    unlabeled: Examples | None = None  # data.unlabeled: text only, de-duplicated against the labelled splits


def read_examples(path: str, data_cfg, task, *, with_labels: bool = True, stats: dict | None = None) -> Examples:
    drop = None
    configured = getattr(task.config, "labels", None)
    if with_labels and configured and data_cfg.unknown_labels == "drop":
        known = LabelSet([str(x) for x in configured])
        drop = lambda raw: known.lookup(raw) is None  # noqa: E731
    ex = task.read(path, data_cfg, with_labels=with_labels, drop_label=drop, stats=stats)
    if ex.dropped:
        if stats is not None:
            stats[f"{path}:unknown_labels_dropped"] = ex.dropped
        log.info("%s: dropped %d rows with labels outside task.labels: %s", path, sum(ex.dropped.values()),
                 ex.dropped)
    return ex


def _dedupe(ex: Examples, task, stats: dict) -> Examples:
    seen: dict[tuple, int] = {}
    keep = []
    labels = ex.fields.get("label")  # tasks without labels (causal-lm-sft) put everything in dedupe_key
    for i in range(len(ex)):
        key = (*task.dedupe_key(ex, i), labels[i] if labels else None)
        if key not in seen:
            seen[key] = i
            keep.append(i)
    dropped = len(ex) - len(keep)
    stats[f"{ex.name}:duplicates_dropped"] = dropped
    if dropped:
        log.info("%s: dropped %d exact duplicate rows (data.duplicates: drop)", ex.name, dropped)
    out = ex.subset(keep)
    texts = Counter(task.dedupe_key(out, i) for i in range(len(out)))
    conflicts = sum(1 for c in texts.values() if c > 1)
    if conflicts:
        stats[f"{ex.name}:conflicting_labels"] = conflicts
        log.warning("%s: %d texts appear with different labels; kept all (see `lft data check`)", ex.name, conflicts)
    return out


def _filter_labels(ex: Examples | None, task, policy: str, stats: dict) -> Examples | None:
    if ex is None or task.labels is None:
        return ex
    unknown_idx = [i for i, raw in enumerate(ex.fields["label"]) if task.labels.lookup(raw) is None]
    if not unknown_idx:
        return ex
    if policy == "error":
        i = unknown_idx[0]
        task.labels.index(ex.fields["label"][i], ex, i, getattr(task.config, "label", None))  # raises, naming it
    bad = set(unknown_idx)
    known = [i for i in range(len(ex)) if i not in bad]
    unknown = Counter(ex.fields["label"][i] for i in unknown_idx)
    stats[f"{ex.name}:unknown_labels_dropped"] = dict(unknown)
    log.info("%s: dropped %d rows with labels outside task.labels: %s", ex.name, len(ex) - len(known), dict(unknown))
    return ex.subset(known)


def stratified_split(ex: Examples, fraction: float, seed: int, name: str, rest_name: str,
                     task) -> tuple[Examples, Examples]:
    """Hold out `fraction` of `ex`, stratified by label where every class has at least 2 examples."""
    from sklearn.model_selection import train_test_split

    y = [task.labels.lookup(v) for v in ex.fields["label"]] if task.labels is not None else None
    idx = np.arange(len(ex))
    counts = Counter(y)
    stratify = y if y and min(counts.values()) >= 2 and round(fraction * len(ex)) >= len(counts) else None
    if stratify is None and y is not None:
        log.warning("%s: a class has fewer than 2 examples; the %s split is random, not stratified", ex.name, name)
    try:
        rest, held = train_test_split(idx, test_size=fraction, random_state=seed, stratify=stratify)
    except ValueError as exc:
        raise DataError(f"cannot hold out {fraction:.0%} of {len(ex)} rows for {name}: {exc}", file=ex.name) from None
    return ex.subset(sorted(rest), rest_name), ex.subset(sorted(held), name)


def prepare_data(recipe, task) -> PreparedData:
    """Read, validate, de-duplicate, label and split the recipe's data. Raises DataError on any bad row."""
    cfg = recipe.data
    stats: dict = {}
    train = read_examples(cfg.train, cfg, task, stats=stats)
    train.name = "train"
    evals = read_examples(cfg.eval, cfg, task, stats=stats) if cfg.eval else None
    test = read_examples(cfg.test, cfg, task, stats=stats) if cfg.test else None
    if cfg.duplicates == "drop":
        train = _dedupe(train, task, stats)
    task.fit_labels(train)
    train = _filter_labels(train, task, cfg.unknown_labels, stats)
    evals = _filter_labels(evals, task, cfg.unknown_labels, stats)
    test = _filter_labels(test, task, cfg.unknown_labels, stats)
    if test is None and cfg.test_fraction > 0:
        train, test = stratified_split(train, cfg.test_fraction, cfg.split_seed, "test", "train", task)
    if evals is None and cfg.eval_fraction > 0:
        # The eval share is of the whole pool, so eval_fraction means the same with or without a test file.
        share = cfg.eval_fraction / (1.0 - (cfg.test_fraction if not cfg.test else 0.0))
        train, evals = stratified_split(train, share, cfg.split_seed + 1, "eval", "train", task)
    if not len(train):
        raise DataError("no training rows left after validation and splitting", file=cfg.train)
    stats.update({"train_rows": len(train), "eval_rows": len(evals) if evals else 0,
                  "test_rows": len(test) if test else 0})
    unlabeled = read_unlabeled(cfg, task, [train, evals, test], stats)
    names = task.labels.names if task.labels is not None else []  # generative tasks have no classes
    return PreparedData(train, evals, test, names, stats, unlabeled)


# ---- data.unlabeled: raw rows for methods that learn from them ------------------------------------------------
# Validated like labelled rows (a bad row names file, line and column) but with no label column. Duplicates are
# dropped, and so is any row also in train, eval or test: a test text labelled by a teacher would leak the
# teacher's view of the test set into the student.

def read_unlabeled(data_cfg, task, labelled: list[Examples | None], stats: dict) -> Examples | None:
    """The recipe's unlabelled rows, validated and de-duplicated against themselves and `labelled`."""
    if not data_cfg.unlabeled:
        return None
    ex = read_examples(data_cfg.unlabeled, data_cfg, task, with_labels=False)
    ex.name = "unlabeled"
    in_labelled = {task.dedupe_key(split, i) for split in labelled if split is not None for i in range(len(split))}
    seen: set[tuple] = set()
    keep, overlap, dupes = [], 0, 0
    for i in range(len(ex)):
        key = task.dedupe_key(ex, i)
        if key in in_labelled:
            overlap += 1
        elif key in seen:
            dupes += 1
        else:
            seen.add(key)
            keep.append(i)
    out = ex.subset(keep)
    if not len(out):
        raise DataError("no unlabelled rows left after dropping duplicates and texts of the labelled splits",
                        file=data_cfg.unlabeled)
    stats.update({"unlabeled_rows": len(out), "unlabeled:overlap_dropped": overlap,
                  "unlabeled:duplicates_dropped": dupes})
    if overlap or dupes:
        log.info("%s: dropped %d texts also in train/eval/test and %d duplicates; %d unlabelled rows left",
                 data_cfg.unlabeled, overlap, dupes, len(out))
    return out

