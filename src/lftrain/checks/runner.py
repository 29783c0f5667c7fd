"""Run every data check on a recipe's data, as training would see it, and decide what blocks training.

Two views of the data are checked:
- the files as given (`train`, `eval`, `test`; rows with labels outside `task.labels` dropped as training
  does): exact duplicates, conflicting labels and PII are facts about files a person edits;
- the splits training uses (after de-duplication and any automatic stratified split): leakage, near-duplicates,
  balance, truncation, noise and contamination are about what the model learns from and is scored on.
Every reported row names its file and data row (and line for text formats).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from lftrain.checks import contamination as contamination_mod
from lftrain.checks import duplicates as dup
from lftrain.checks import near, noise, pii, stats
from lftrain.checks.report import CheckReport, CheckResult
from lftrain.checks.text import is_text, normalised_texts
from lftrain.data.paths import resolve_path
from lftrain.extras import available, install_hint

log = logging.getLogger("lftrain")


def _timed(results: dict[str, CheckResult], fn, *args, **kwargs) -> CheckResult:
    t0 = time.perf_counter()
    r = fn(*args, **kwargs)
    r.seconds = round(time.perf_counter() - t0, 3)
    results[r.name] = r
    log.debug("data check %s: %.2fs", r.name, r.seconds)
    return r


def read_files(cfg, task) -> dict:
    """The labelled files of the recipe's data section `cfg` as given (no de-duplication, no split), unknown
    labels dropped."""
    from lftrain.data.prepare import read_role

    files = {}
    for role in ("train", "eval", "test"):
        spec = getattr(cfg, role)
        if spec:
            ex, _ = read_role(spec, cfg, task, role)
            known = [i for i, v in enumerate(ex.fields["label"]) if task.labels.lookup(v) is not None]
            files[role] = ex.subset(known, role) if len(known) < len(ex) else ex
            files[role].name = role
    return files


def source_info(data, files: dict) -> dict[str, Any]:
    from lftrain.data.sources import expand
    from lftrain.files import sha256_file
    from lftrain.reports.licences import package_licence

    out = {}
    for role, ex in files.items():
        sources = expand(getattr(data, role), role)
        info: dict[str, Any] = {"path": ", ".join(dict.fromkeys(s.origin for s in sources)), "rows": len(ex)}
        resolved = [resolve_path(s.path.split("#", 1)[0]) for s in sources]
        resolved = [p for p in resolved if p.is_file()]
        if len(resolved) == 1:
            p = resolved[0]
            info.update({"resolved": str(p), "sha256": sha256_file(p, cached=True), "bytes": p.stat().st_size})
        elif resolved:
            info["files"] = [{"resolved": str(p), "sha256": sha256_file(p, cached=True), "bytes": p.stat().st_size}
                             for p in resolved]
        hub = [s.hub for s in sources if s.hub]
        if hub:
            from lftrain.reports.licences import model_licence_metadata

            info["hub"] = hub[0]
            card = model_licence_metadata(Path(hub[0]["folder"])).get("model_card")  # the data set card's front matter
            if card:
                info["card_licence"] = card
        packages = {s.origin[4:].split("/", 1)[0] for s in sources if s.origin.startswith("pkg:")}
        for pkg in sorted(packages):
            licence = package_licence(pkg)
            if licence:
                info["package_licence"] = licence
        out[role] = info
    return out


def _tokenizer(model):
    """The tokenizer of the base model (the recipe's model section) for exact token lengths; None (word counts)
    if it cannot load."""
    from lftrain.models.loading import load_tokenizer, vet_model_dir

    try:
        source = vet_model_dir(model.path, allow_pickle=model.allow_pickle, trust_remote_code=model.trust_remote_code,
                               revision=model.revision)
        return source, load_tokenizer(source, model.trust_remote_code)
    except Exception as exc:  # lengths in words are still useful; say why tokens were not possible
        log.warning("data checks: lengths in words, not tokens (tokenizer did not load: %s)", exc)
        return None, None


def _benchmarks(data, task) -> tuple[dict, dict]:
    from lftrain.data.prepare import read_examples

    targets = {}
    for path in data.checks.benchmarks:
        ex = read_examples(path, data, task, with_labels=False)
        ex.name = Path(path.split("#", 1)[0]).name
        targets[ex.name] = ex
    return targets, {k: normalised_texts(v) for k, v in targets.items()}


def run_checks(recipe, task=None, prepared=None, *, load_tokenizer: bool = True) -> CheckReport:
    """Every data check on `recipe`'s data. `prepared` (from prepare_data) avoids reading the data twice."""
    from lftrain.progress import activity

    with activity("data checks"):
        return _run_checks(recipe, task, prepared, load_tokenizer=load_tokenizer)


def _run_checks(recipe, task, prepared, *, load_tokenizer: bool) -> CheckReport:
    from lftrain.data.prepare import prepare_data
    from lftrain.tasks.base import build_task

    t0 = time.perf_counter()
    cfg = recipe.data.checks
    task = task or build_task(recipe.task)
    prepared = prepared or prepare_data(recipe, task)  # validates every row; fits task.labels
    log.debug("data checks: data prepared in %.2fs", time.perf_counter() - t0)
    splits = {k: v for k, v in (("train", prepared.train), ("eval", prepared.eval), ("test", prepared.test))
              if v is not None}
    for role, ex in splits.items():
        ex.name = role
    # the files as given (duplicates inside them); a streamed training set: its held-out splits and a sample
    files = read_files(recipe.data, task) if prepared.stream is None else splits
    split_norms = {k: normalised_texts(v) for k, v in splits.items()}
    file_norms = {k: normalised_texts(v) for k, v in files.items()}
    text = is_text(prepared.train)  # images, audio: checks on content hashes only (no n-grams, tokens or PII)
    source, tokenizer = _tokenizer(recipe.model) if load_tokenizer and text else (None, None)

    results: dict[str, CheckResult] = {}
    _timed(results, dup.duplicates, files, file_norms)
    minhash = text and available("datasketch")
    if minhash:
        t_near = time.perf_counter()
        pairs = near.near_pairs(splits, split_norms, cfg.near_threshold)
        _timed(results, near.near_duplicates, splits, pairs).seconds += round(time.perf_counter() - t_near, 3)
    elif text:  # the core install: say what was not checked and how to have it
        for name in ("near_duplicates", "near_leakage"):
            results[name] = CheckResult(name, 0, f"not run: needs datasketch ({install_hint('datasketch')})",
                                        flagged=False)
    _timed(results, dup.leakage, splits, split_norms, cfg.leakage_tolerance)
    if minhash:
        _timed(results, near.near_leakage, splits, pairs)
    _timed(results, dup.conflicts, files, file_norms)
    _timed(results, stats.imbalance, splits, cfg.imbalance_ratio)
    if text:
        _timed(results, stats.truncation, splits, tokenizer, getattr(recipe.task, "max_length", None),
               cfg.truncation_share)
    if text and cfg.noise != "off":
        _timed(results, noise.noise, splits, method=cfg.noise, folds=cfg.noise_folds,
               model_dir=source.path if source else None, max_length=getattr(recipe.task, "max_length", 128))
    if text:
        bench, bench_norms = _benchmarks(recipe.data, task)
        targets = {**{k: v for k, v in splits.items() if k != "train"}, **bench}
        _timed(results, contamination_mod.contamination, splits, split_norms, targets,
               {**{k: v for k, v in split_norms.items() if k != "train"}, **bench_norms}, cfg.ngram)
        _timed(results, pii.pii, files)

    sources = source_info(recipe.data, files)
    if prepared.stream is not None:  # the checks saw a sample of the streamed training rows: say how many of all
        sources["train"].update(rows=prepared.stats["train_rows"], checked_rows=len(prepared.train))
    licences = _licences(recipe, sources, source)
    results["licence"] = licences.pop("_result")
    blocking = [name for name, r in results.items() if r.flagged and name in cfg.block]
    return CheckReport(results, blocking, sources, licences, seconds=time.perf_counter() - t0)


def _licences(recipe, sources: dict, source) -> dict[str, Any]:
    from lftrain.models.loading import resolve_model_dir
    from lftrain.reports.licences import check_licences, model_licence_metadata

    try:
        model_dir = source.path if source else resolve_model_dir(recipe.model.path)
    except Exception:  # a missing model is reported by training itself; licences still get checked
        model_dir = Path(recipe.model.path)
    meta = model_licence_metadata(model_dir, recipe.model.path)
    lic = check_licences(recipe, sources, meta)
    bad = [r for r in lic["sources"] if r["verdict"] == "refuse"]
    warn = [r for r in lic["sources"] if r["verdict"] == "warn"]
    if bad:
        summary = "; ".join(f"{r['source']}: {r['reason']}" for r in bad)
    else:
        summary = f"{len(warn)} warnings for {lic['intended_use']} use" + (
            ": " + "; ".join(r["reason"] for r in warn[:2]) if warn else "")
    lic["_result"] = CheckResult("licence", len(bad), summary, flagged=bool(bad),
                                 examples=[{"source": r["source"], "verdict": r["verdict"], "reason": r["reason"]}
                                           for r in bad + warn], details={"warnings": len(warn)})
    return lic
