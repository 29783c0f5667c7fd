"""One training run, start to finish: recipe -> validated data -> model -> fit() -> saved model and metrics.

Order matters: everything that can be wrong with the user's input (recipe, data rows, model directory
safety) is checked before the model is loaded, so a typo costs seconds, not a training run.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lftrain.config import dump_recipe
from lftrain.data.paths import resolve_path
from lftrain.data.prepare import prepare_data
from lftrain.errors import InputError
from lftrain.evaluation.metrics import format_table, headline
from lftrain.models.loading import model_files, vet_model_dir
from lftrain.tasks import build_task
from lftrain.training.rundir import RunDir, open_run

log = logging.getLogger("lftrain")


@dataclass
class TrainResult:
    run_dir: Path
    model_dir: Path
    metrics: dict[str, dict[str, Any]]  # split -> metrics
    steps: int
    train_seconds: float
    samples_per_second: float
    resumed: bool


def available_threads() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def set_threads(n: int | None) -> int:
    import torch

    threads = n or available_threads()
    torch.set_num_threads(threads)
    return threads


def _seed_everything(seed: int) -> None:
    import random

    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _trim_metrics(run: RunDir, step: int) -> None:
    """Drop metric lines written after the checkpoint we resume from: they will be written again."""
    kept = [r for r in run.read_metrics() if r.get("step", 0) <= step and r.get("event") in ("train", "eval")]
    run.metrics_file.write_text("".join(json.dumps(r) + "\n" for r in kept))


def _data_files(recipe) -> dict[str, Path]:
    files = {}
    for role in ("train", "eval", "test"):
        value = getattr(recipe.data, role)
        if value:
            p = resolve_path(value.split("#", 1)[0])
            if p.is_file():
                files[role] = p
    return files


def train_run(recipe, *, new_run: bool = False, allow_recipe_change: bool = False) -> TrainResult:
    from lftrain.data.token_cache import encode_cached
    from lftrain.evaluation.inference import infer_logits
    from lftrain.methods import build_method
    from lftrain.models.adaptation import build_adaptation
    from lftrain.models.fast_dropout import install_fast_dropout, register_attention, set_dropout_rate
    from lftrain.models.loading import load_tokenizer, offline
    from lftrain.reports.manifest import build_manifest, write_json
    from lftrain.training.checkpoint import TrainState, clean_temporary, latest_good, load_checkpoint, load_weights
    from lftrain.training.frozen_cache import FrozenPrefixCache
    from lftrain.training.frozen_cache import plan as plan_cache
    from lftrain.training.loop import FitContext, fit, plan_steps
    from lftrain.training.optim import build_optimizer, build_scheduler
    from lftrain.training.precision import pick_device, resolve_precision
    from lftrain.training.sparse_grads import SparseEmbeddingGrads

    offline()
    task = build_task(recipe.task)
    data = prepare_data(recipe, task)  # every row validated before any model loads
    source = vet_model_dir(recipe.model.path, allow_pickle=recipe.model.allow_pickle,
                           trust_remote_code=recipe.model.trust_remote_code)
    if recipe.output.dir is None:
        raise InputError("output.dir is not set (and the recipe has no file name to derive it from)")
    run, resuming = open_run(recipe.output.dir, dump_recipe(recipe), new_run=new_run,
                             allow_recipe_change=allow_recipe_change)
    log.info("run directory: %s%s", run.path, " (resuming)" if resuming else "")
    try:
        cfg = recipe.train
        threads = set_threads(cfg.threads)
        device = pick_device()
        precision, why = resolve_precision(cfg.precision, device)
        log.info("precision: %s (%s); %d threads; device %s", precision, why, threads, device)
        log.info("data: %d train, %d eval, %d test rows", data.stats["train_rows"], data.stats["eval_rows"],
                 data.stats["test_rows"])

        tokenizer = load_tokenizer(source, recipe.model.trust_remote_code)
        t0 = time.perf_counter()
        cache_stats: dict = {}
        enc = {name: encode_cached(task, tokenizer, ex, model_dir=source.path, cache_dir=recipe.data.cache_dir,
                                   stats=cache_stats)
               for name, ex in (("train", data.train), ("eval", data.eval), ("test", data.test)) if ex is not None}
        log.info("tokenised in %.1fs (cache: %d hit, %d miss)", time.perf_counter() - t0,
                 cache_stats.get("cache_hits", 0), cache_stats.get("cache_misses", 0))

        _seed_everything(cfg.seed)  # before loading: the new head's initialisation depends on it
        attention = recipe.model.attention
        if attention == "auto":
            attention = register_attention() if cfg.fast_dropout else "eager"
        model = task.load_model(source, trust_remote_code=recipe.model.trust_remote_code, attention=attention)
        model = build_adaptation(recipe.adaptation).apply(model)  # may wrap it (adapters)
        if recipe.model.dropout is not None:
            log.info("dropout set to %g in %d modules (model.dropout)", recipe.model.dropout,
                     set_dropout_rate(model, recipe.model.dropout))
        if cfg.fast_dropout:
            install_fast_dropout(model)
        model.to(device)
        if cfg.compile:
            model.compile()  # in place: parameter names (and so checkpoints) stay as they are
        sparse = SparseEmbeddingGrads(model) if cfg.sparse_embedding_grads else None
        method = build_method(recipe.method, task)
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0

        total_steps, steps_per_epoch = plan_steps(len(data.train), cfg)
        optimizer = build_optimizer(model, cfg)
        scheduler = build_scheduler(optimizer, cfg, total_steps)

        manifest = build_manifest(seed=cfg.seed, threads=threads, precision=precision, precision_reason=why,
                                  device=str(device), data_files=_data_files(recipe), model_dir=source.path,
                                  model_files=model_files(source.path),
                                  extra={"data_stats": data.stats, "labels": data.labels,
                                         "trainable_parameters": sum(p.numel() for p in model.parameters()
                                                                     if p.requires_grad),
                                         "total_steps": total_steps})
        write_json(run.path / "manifest.json", manifest)

        state = TrainState()
        if resuming:
            clean_temporary(run.checkpoints)
            ckpt = latest_good(run.checkpoints)
            if ckpt is not None:
                state = load_checkpoint(ckpt, model, optimizer, scheduler)
                log.info("resumed from %s (step %d of %d)", ckpt.name, state.step, total_steps)
            _trim_metrics(run, state.step)

        def evaluate() -> dict:
            logits = infer_logits(model, task, enc["eval"], batch_size=cfg.eval_batch_size, precision=precision,
                                  device=device, pad_id=pad_id)
            return headline(task.metrics(logits, enc["eval"]["labels"]))

        prefix_cache = None
        k, why = plan_cache(model, enabled=cfg.cache_frozen, augments_input=getattr(task, "augments_input", False))
        if k >= 0:
            prefix_cache = FrozenPrefixCache(model, k)
            t0 = time.perf_counter()
            prefix_cache.build(task, enc["train"], batch_size=cfg.eval_batch_size, precision=precision,
                               device=device, pad_id=pad_id, spill_dir=run.path / "cache")
            log.info("frozen-prefix cache on: %s (built in %.1fs)", why, time.perf_counter() - t0)
        elif any(not p.requires_grad for p in model.parameters()):
            log.info("frozen-prefix cache off: %s", why)

        ctx = FitContext(model=model, method=method, task=task, train_data=enc["train"], optimizer=optimizer,
                         scheduler=scheduler, cfg=cfg, run=run, device=device, precision=precision, pad_id=pad_id,
                         evaluate=evaluate if "eval" in enc else None, total_steps=total_steps,
                         steps_per_epoch=steps_per_epoch, sparse=sparse if sparse and sparse.active else None,
                         prefix_cache=prefix_cache)
        run.set_status("running", step=state.step, total_steps=total_steps)
        state = fit(ctx, state)

        if cfg.keep_best and state.best_step is not None and state.best_step != state.step:
            best = run.checkpoints / f"step-{state.best_step:08d}"
            load_weights(best, model)
            log.info("final model = best checkpoint (step %d, %s %.4f)", state.best_step, cfg.metric, state.best_metric)
        _save_model(model, tokenizer, run.model_dir)

        results: dict[str, dict[str, Any]] = {}
        for split in recipe.eval.splits:
            if split in enc:
                logits = infer_logits(model, task, enc[split], batch_size=cfg.eval_batch_size, precision=precision,
                                      device=device, pad_id=pad_id)
                results[split] = task.metrics(logits, enc[split]["labels"])
                run.log_metrics({"event": "eval", "split": split, "step": state.step, "final": True,
                                 **results[split]})
                print(format_table(results[split], data.labels, f"{split} metrics ({run.path})"), flush=True)
        sps = state.samples_seen / max(state.train_seconds, 1e-9)
        run.log_metrics({"event": "train_end", "step": state.step, "train_runtime": state.train_seconds,
                         "train_samples": state.samples_seen, "train_samples_per_second": sps,
                         "best_step": state.best_step, "stopped_early": state.stopped_early})
        run.set_status("finished", step=state.step, state=asdict(state),
                       results={k: headline(v) for k, v in results.items()})
        log.info("model: %s", run.model_dir)
        return TrainResult(run.path, run.model_dir, results, state.step, state.train_seconds, sps, resuming)
    except BaseException as exc:
        if not isinstance(exc, KeyboardInterrupt):
            run.set_status("failed", error=f"{type(exc).__name__}: {exc}"[:2000])
        raise
    finally:
        run.unlock()


def _save_model(model, tokenizer, out: Path) -> None:
    """Write the final model, loadable without lftrain: a plain Hugging Face directory (safetensors), or for
    adapter runs peft's adapter format naming the base model (see lftrain.models.trained)."""
    from lftrain.models.trained import save_trained_model

    save_trained_model(model, tokenizer, out)
