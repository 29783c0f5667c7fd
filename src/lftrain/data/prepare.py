"""From recipe paths to validated train/eval/test examples — all before any model is loaded."""

from __future__ import annotations

import hashlib
import json
import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lftrain.data.examples import Examples
from lftrain.data.labels import LabelSet
from lftrain.data.sources import Source, expand
from lftrain.errors import DataError

log = logging.getLogger("lftrain")


@dataclass
class PreparedData:
    train: Examples
    eval: Examples | None
    test: Examples | None
    labels: list[str]
    stats: dict = field(default_factory=dict)
    unlabeled: Examples | None = None  # data.unlabeled: text only, de-duplicated against the labelled splits
    sources: dict[str, list[Source]] = field(default_factory=dict)  # role -> the files its rows came from
    stream: Any = None  # data.streaming: the training rows on disk (data/stream.py); `train` is then a sample


def read_role(spec, data_cfg, task, role: str, *, with_labels: bool = True,
              stats: dict | None = None) -> tuple[Examples, list[Source]]:
    """Every source of a data role (files, globs, Hub data sets; data/sources.py), validated, in order, as one."""
    sources = expand(spec, role)
    parts = [read_examples(s.path, data_cfg, task, with_labels=with_labels, stats=stats, columns=s.columns)
             for s in sources]
    return (parts[0] if len(parts) == 1 else Examples.concat(role, parts)), sources


def read_examples(path: str, data_cfg, task, *, with_labels: bool = True, stats: dict | None = None,
                  columns: dict[str, str] | None = None) -> Examples:
    drop = None
    configured = getattr(task.config, "labels", None)
    if with_labels and configured and data_cfg.unknown_labels == "drop":
        known = task.label_set_class([str(x) for x in configured])
        drop = lambda raw: known.lookup(raw) is None  # noqa: E731
    ex = task.read(path, data_cfg, with_labels=with_labels, drop_label=drop, stats=stats, columns=columns)
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

    y = [task.labels.lookup(v) for v in ex.fields["label"]] \
        if task.labels is not None and task.labels.stratifies else None
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


def prepare_data(recipe, task, processor=None) -> PreparedData:
    """Read, validate, de-duplicate, label and split the recipe's data. Raises DataError on any bad row.
    `processor()` gives the tokenizer, which a streamed training set (`data.streaming`) is tokenised with here."""
    cfg = recipe.data
    task.keep_columns = tuple(dict.fromkeys(s.column for s in recipe.eval.slices))  # read along for eval.slices
    if cfg.streaming:
        return _prepare_streamed(recipe, task, processor)
    stats: dict = {}
    train, sources = read_role(cfg.train, cfg, task, "train", stats=stats)
    train.name = "train"
    roles = {"train": sources}
    evals, test = None, None
    if cfg.eval:
        evals, roles["eval"] = read_role(cfg.eval, cfg, task, "eval", stats=stats)
    if cfg.test:
        test, roles["test"] = read_role(cfg.test, cfg, task, "test", stats=stats)
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
        raise DataError("no training rows left after validation and splitting", file=sources[0].origin)
    train = mix(train, sources, cfg.split_seed, stats)
    stats.update({"train_rows": len(train), "eval_rows": len(evals) if evals else 0,
                  "test_rows": len(test) if test else 0})
    unlabeled = read_unlabeled(cfg, task, [train, evals, test], stats, roles)
    names = task.labels.names if task.labels is not None else []  # generative tasks have no classes
    return PreparedData(train, evals, test, names, stats, unlabeled, roles)


def mix(train: Examples, sources: list[Source], seed: int, stats: dict) -> Examples:
    """The training mix: each source's rows taken `weight` times (0.5: a seeded half; 2: every row twice), after
    de-duplication and splitting, so held-out rows never come from a copy."""
    weights = {s.path: s.weight for s in sources}
    if all(w == 1.0 for w in weights.values()):
        return train
    rng = np.random.default_rng(seed)
    rows_of: dict[str, list[int]] = {}
    for i, (file, _, _) in enumerate(train.where):
        rows_of.setdefault(file, []).append(i)
    keep: list[int] = []
    for file, rows in rows_of.items():
        weight = weights.get(file, 1.0)
        part = sorted(rng.choice(rows, round((weight % 1) * len(rows)), replace=False).tolist())
        taken = rows * int(weight) + part
        keep += taken
        stats[f"{file}:mix"] = {"rows": len(rows), "weight": weight, "taken": len(taken)}
        log.info("%s: weight %g: %d of its %d training rows in the mix", file, weight, len(taken), len(rows))
    return train.subset(keep)


# ---- data.unlabeled: raw rows for methods that learn from them ------------------------------------------------
# Validated like labelled rows (a bad row names file, line and column) but with no label column. Duplicates are
# dropped, and so is any row also in train, eval or test: a test text labelled by a teacher would leak the
# teacher's view of the test set into the student.

def read_unlabeled(data_cfg, task, labelled: list[Examples | None], stats: dict,
                   roles: dict | None = None) -> Examples | None:
    """The recipe's unlabelled rows, validated and de-duplicated against themselves and `labelled`."""
    if not data_cfg.unlabeled:
        return None
    ex, sources = read_role(data_cfg.unlabeled, data_cfg, task, "unlabeled", with_labels=False)
    if roles is not None:
        roles["unlabeled"] = sources
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
                        file=", ".join(s.origin for s in sources))
    stats.update({"unlabeled_rows": len(out), "unlabeled:overlap_dropped": overlap,
                  "unlabeled:duplicates_dropped": dupes})
    if overlap or dupes:
        log.info("data.unlabeled: dropped %d texts also in train/eval/test and %d duplicates; %d rows left",
                 overlap, dupes, len(out))
    return out


# ---- data.streaming: training rows that do not fit in memory (data/stream.py) --------------------------------

def _prepare_streamed(recipe, task, processor) -> PreparedData:
    from lftrain.data import stream

    cfg, stats = recipe.data, {}
    sources = expand(cfg.train, "train")
    roles: dict[str, list[Source]] = {"train": sources}
    given = {}
    for role in ("eval", "test"):
        if getattr(cfg, role):
            given[role], roles[role] = read_role(getattr(cfg, role), cfg, task, role, stats=stats)
    names = task.config.labels or stream.labels_of(sources, cfg, task)
    task.labels = LabelSet.from_config_or_data(names, [])
    tokenizer = processor() if processor is not None else task.recipe_processor(recipe.model)
    folder = _store_folder(recipe.data, task, sources, tokenizer)
    shares = {"eval_share": 0.0 if cfg.eval else cfg.eval_fraction,
              "test_share": 0.0 if cfg.test else cfg.test_fraction}
    if (folder / "store.json").is_file():
        streamed = stream.load(folder)
        log.info("training data: the token store of an earlier run (%s)", folder)
    else:
        streamed = stream.build(sources, cfg, task, tokenizer, folder, seed=cfg.split_seed, **shares)
    evals = _filter_labels(given.get("eval") or streamed.eval, task, cfg.unknown_labels, stats)
    test = _filter_labels(given.get("test") or streamed.test, task, cfg.unknown_labels, stats)
    stats.update(streamed.stats)
    stats.update({"eval_rows": len(evals) if evals else 0, "test_rows": len(test) if test else 0})
    log.info("training data streamed: %d rows, %d tokens on disk (%s); %d eval, %d test rows", stats["train_rows"],
             stats["train_tokens"], folder, stats["eval_rows"], stats["test_rows"])
    return PreparedData(streamed.sample, evals, test, task.labels.names, stats, None, roles, streamed)


def _store_folder(cfg, task, sources: list[Source], tokenizer) -> Path:
    """Where the token store of these files, this task and tokenizer and these split settings (`cfg`: the data
    section) is cached."""
    from lftrain.data.paths import resolve_path
    from lftrain.data.token_cache import cache_root
    from lftrain.files import sha256_file

    files = [(s.path, sha256_file(resolve_path(s.path), cached=True), s.columns) for s in sources]
    key = json.dumps({"files": files, "task": task.config.model_dump(mode="json"), "labels": task.labels.names,
                      "tokenizer": tokenizer.name_or_path, "vocab": len(tokenizer), "eval": cfg.eval_fraction,
                      "test": cfg.test_fraction, "given": [bool(cfg.eval), bool(cfg.test)], "seed": cfg.split_seed,
                      "normalize": cfg.normalize_whitespace, "unknown": cfg.unknown_labels, "version": 1},
                     sort_keys=True, default=str)
    return cache_root(cfg.cache_dir) / "stream" / hashlib.sha256(key.encode()).hexdigest()[:32]
