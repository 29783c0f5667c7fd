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
from lftrain.data.checks.preflight import preflight as data_preflight
from lftrain.data.checks.preflight import record as record_data_checks
from lftrain.data.paths import resolve_path
from lftrain.data.prepare import prepare_data
from lftrain.errors import InputError
from lftrain.evaluation.evidence import RunOutputs, read_ood, write_evidence
from lftrain.evaluation.metrics import format_table, headline
from lftrain.models.loading import model_files, vet_model_dir
from lftrain.tasks import build_task
from lftrain.training import allocator, distributed
from lftrain.training.rundir import RunDir, marked_failed_on_error, open_run

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
    for role in ("train", "eval", "test", "unlabeled"):
        value = getattr(recipe.data, role)
        if value:
            p = resolve_path(value.split("#", 1)[0])
            if p.is_file():
                files[role] = p
    return files


def train_run(recipe, *, new_run: bool = False, allow_recipe_change: bool = False, on_eval=None) -> TrainResult:
    from lftrain.data.curriculum import check as check_curriculum
    from lftrain.data.curriculum import plan_curriculum
    from lftrain.data.token_cache import encode_cached
    from lftrain.evaluation.inference import infer_logits
    from lftrain.methods import build_method
    from lftrain.methods.prepare import prepare_method_data
    from lftrain.models.adaptation import build_adaptation
    from lftrain.models.fast_dropout import describe as describe_dropout
    from lftrain.models.fast_dropout import install_fast_dropout, register_attention, set_dropout_rate
    from lftrain.models.forward_scope import install_short_paths
    from lftrain.models.loading import load_tokenizer, offline
    from lftrain.models.student import drop_layers
    from lftrain.reports.manifest import build_manifest, write_json
    from lftrain.training.checkpoint import TrainState, clean_temporary, load_weights, resume_latest
    from lftrain.training.determinism import determinism_info
    from lftrain.training.frozen_cache import FrozenPrefixCache, cache_dtype
    from lftrain.training.frozen_cache import plan as plan_cache
    from lftrain.training.loop import FitContext, fit, plan_steps, release_training_memory
    from lftrain.training.optim import build_optimizer, build_scheduler
    from lftrain.training.precision import pick_device, resolve_precision
    from lftrain.training.sparse_grads import SparseEmbeddingGrads

    offline()
    task = build_task(recipe.task)
    data = prepare_data(recipe, task)  # every row validated before any model loads
    checks = data_preflight(recipe, task, data)  # data.checks: one table; a blocking check stops here (exit 2)
    ood = read_ood(recipe, task)  # eval.ood, validated now too
    method = build_method(recipe.method, task)  # vets the method's own inputs (a teacher) before any model loads
    check_curriculum(recipe, data)  # train.curriculum: its column's values, its scorer's path
    source = vet_model_dir(recipe.model.path, allow_pickle=recipe.model.allow_pickle,
                           trust_remote_code=recipe.model.trust_remote_code)
    if recipe.output.dir is None:
        raise InputError("output.dir is not set (and the recipe has no file name to derive it from)")
    dctx = distributed.init(recipe.train.strategy)  # None unless launched on several processes (torchrun)
    main = dctx is None or dctx.main  # only rank 0 writes the run directory

    def opener():
        return open_run(recipe.output.dir, dump_recipe(recipe), new_run=new_run,
                        allow_recipe_change=allow_recipe_change, inputs=_data_files(recipe))
    run, resuming = opener() if dctx is None else distributed.open_run_shared(dctx, opener)
    log.info("run directory: %s%s", run.path, " (resuming)" if resuming else "")
    with marked_failed_on_error(run):
        cfg = recipe.train
        threads = set_threads(cfg.threads or (dctx.threads_per_process() if dctx else None))
        device = pick_device()
        precision, why = resolve_precision(cfg.precision, device)
        log.info("precision: %s (%s); %d threads; device %s; memory allocator %s", precision, why, threads, device,
                 allocator.describe())
        log.info("data: %d train, %d eval, %d test rows", data.stats["train_rows"], data.stats["eval_rows"],
                 data.stats["test_rows"])

        # The task's input processor: a tokenizer for text, an image/audio processor for other inputs.
        tokenizer = (task.load_processor(source) if hasattr(task, "load_processor")
                     else load_tokenizer(source, recipe.model.trust_remote_code))
        if hasattr(task, "prepare_tokenizer"):
            task.prepare_tokenizer(tokenizer)  # causal-lm-sft: the chat template and a pad token
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
        if recipe.model.init == "random":  # the same architecture from scratch (a baseline for pre-training)
            from lftrain.models.loading import reinitialise

            log.info("model.init: random: %d modules re-initialised", reinitialise(model))
        model = drop_layers(model, recipe.model.keep_layers)  # a shallower student (model.keep_layers)
        model = build_adaptation(recipe.adaptation).apply(model)  # may wrap it (adapters)
        if recipe.model.dropout is not None:
            log.info("dropout set to %g in %d modules (model.dropout)", recipe.model.dropout,
                     set_dropout_rate(model, recipe.model.dropout))
        if cfg.fast_dropout:
            install_fast_dropout(model)
        dropout = describe_dropout(cfg.fast_dropout, device, cfg.compile)  # builds the kernel now, not in step 1
        log.info("dropout: %s", dropout)
        for line in install_short_paths(model, first_token_only=cfg.first_token_only, unpad=cfg.unpad,
                                        checkpointing=cfg.gradient_checkpointing):
            log.info("%s", line)
        model.to(device)
        if precision == "bf16":
            from lftrain.models.adapter_bf16 import bf16_frozen_base

            bf16_frozen_base(model)  # adapter runs: frozen base weights cast once, not every step
        if cfg.gradient_checkpointing:
            distributed.gradient_checkpointing(model)
        if cfg.compile:
            model.compile()  # in place: parameter names (and so checkpoints) stay as they are
        sparse = SparseEmbeddingGrads(model) if cfg.sparse_embedding_grads and dctx is None else None
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        train_enc, fit_task = prepare_method_data(method, model, enc["train"], data=data, recipe=recipe,
                                                  tokenizer=tokenizer, source=source, precision=precision,
                                                  device=device)

        if dctx is not None:  # before the optimiser: FSDP replaces the parameters with their shards
            distributed.wrap(model, dctx, device)
            log.info("%s", distributed.describe_batch(cfg, dctx.world))
        total_steps, steps_per_epoch = plan_steps(len(fit_task.lengths(train_enc)), cfg)
        curriculum = plan_curriculum(recipe, data, train_enc, fit_task.lengths(train_enc), total_steps=total_steps,
                                     steps_per_epoch=steps_per_epoch, precision=precision, device=device)
        optimizer = build_optimizer(model, cfg)
        scheduler = build_scheduler(optimizer, cfg, total_steps)

        manifest = build_manifest(seed=cfg.seed, threads=threads, precision=precision, precision_reason=why,
                                  device=str(device), data_files=_data_files(recipe), model_dir=source.path,
                                  model_files=model_files(source.path),
                                  extra={"data_stats": data.stats, "labels": data.labels,
                                         "trainable_parameters": sum(p.numel() for p in model.parameters()
                                                                     if p.requires_grad),
                                         "total_steps": total_steps,
                                         "allocator": allocator.in_use(),
                                         "dropout_kernel": dropout,
                                         "determinism": determinism_info(seed=cfg.seed, threads=threads,
                                                                         precision=precision, device=str(device),
                                                                         num_workers=cfg.num_workers),
                                         **({"distributed": dctx.describe()} if dctx else {}),
                                         **({"licences": checks.licences} if checks else {})})
        if main:
            write_json(run.path / "manifest.json", manifest)
            record_data_checks(run.path, recipe, checks)  # data_card.md/.json, data_check.json

        state = TrainState()
        if resuming:
            if main:
                clean_temporary(run.checkpoints)
            if dctx is not None:
                dctx.barrier()  # every rank picks its checkpoint after rank 0 has tidied up
            ckpt, state = resume_latest(run.checkpoints, model, optimizer, scheduler)  # newest verified + loadable
            if ckpt is not None:
                log.info("resumed from %s (step %d of %d)", ckpt.name, state.step, total_steps)
            if main:
                _trim_metrics(run, state.step)

        generative = getattr(task, "generative", False)  # scored on generated text, not on class logits

        def evaluate() -> dict:
            if hasattr(method, "before_eval"):
                method.before_eval(model)  # contrastive-few-shot refits its head on the current encoder
            if generative:
                return task.eval_metrics(model, enc["eval"], batch_size=cfg.eval_batch_size, precision=precision,
                                         device=device, pad_id=pad_id)
            infer = infer_logits if dctx is None else dctx.infer_logits  # distributed: sharded, then gathered
            logits = infer(model, task, enc["eval"], batch_size=cfg.eval_batch_size, precision=precision,
                           device=device, pad_id=pad_id)
            return headline(task.metrics(logits, enc["eval"]["labels"]))

        prefix_cache = None
        k, why = plan_cache(model, enabled=cfg.cache_frozen and dctx is None,
                            augments_input=getattr(task, "augments_input", False))
        if k >= 0 and "offsets" not in train_enc:  # images, audio: the cache stores token sequences
            k, why = -1, "not supported for this task's inputs (they are not token sequences)"
        if k >= 0:
            prefix_cache = FrozenPrefixCache(model, k)
            t0 = time.perf_counter()
            prefix_cache.build(task, train_enc, batch_size=cfg.eval_batch_size, precision=precision,
                               device=device, pad_id=pad_id, spill_dir=run.path / "cache",
                               dtype=cache_dtype(cfg.cache_precision, precision))
            log.info("frozen-prefix cache on: %s (built in %.1fs)", why, time.perf_counter() - t0)
        elif any(not p.requires_grad for p in model.parameters()):
            log.info("frozen-prefix cache off: %s", why)

        ctx = FitContext(model=model, method=method, task=fit_task, train_data=train_enc, optimizer=optimizer,
                         scheduler=scheduler, cfg=cfg, run=run, device=device, precision=precision, pad_id=pad_id,
                         evaluate=evaluate if "eval" in enc else None, total_steps=total_steps,
                         steps_per_epoch=steps_per_epoch, sparse=sparse if sparse and sparse.active else None,
                         prefix_cache=prefix_cache, on_eval=on_eval, dist=dctx, curriculum=curriculum)
        run.set_status("running", step=state.step, total_steps=total_steps)
        state = fit(ctx, state)
        release_training_memory(ctx)

        if cfg.keep_best and state.best_step is not None and state.best_step != state.step:
            best = run.checkpoints / f"step-{state.best_step:08d}"
            load_weights(best, model)
            log.info("final model = best checkpoint (step %d, %s %.4f)", state.best_step, cfg.metric, state.best_metric)
        if dctx is not None:  # from here on rank 0 alone saves, evaluates and reports, with the whole model
            model = distributed.plain_model(dctx, model, lambda: build_adaptation(recipe.adaptation).apply(
                drop_layers(task.load_model(source, trust_remote_code=recipe.model.trust_remote_code,
                                            attention=attention), recipe.model.keep_layers)))
            if not dctx.main:
                return TrainResult(run.path, run.model_dir, {}, state.step, state.train_seconds, 0.0, resuming)
        if hasattr(method, "finish"):
            method.finish(model)  # drop training-only parts (distill's projection) before saving
        _save_model(model, tokenizer, run.model_dir)

        def infer(e: dict) -> np.ndarray:
            return infer_logits(model, task, e, batch_size=cfg.eval_batch_size, precision=precision, device=device,
                                pad_id=pad_id)

        if generative:
            results = _generative_results(task, model, tokenizer, enc, data, recipe, source, run, state.step,
                                          precision, device)
        else:
            results, split_logits = _classification_results(task, infer, enc, data, recipe, run, state.step)
        sps = state.samples_seen / max(state.train_seconds, 1e-9)
        run.log_metrics({"event": "train_end", "step": state.step, "train_runtime": state.train_seconds,
                         "train_samples": state.samples_seen, "train_samples_per_second": sps,
                         "best_step": state.best_step, "stopped_early": state.stopped_early})
        if not generative:  # logit-based evidence; generative tasks report in _generative_results
            write_evidence(RunOutputs(  # calibration, intervals, OOD, latency, fail_if, report.html, model_card.md
                run.path, recipe, task, model, tokenizer, enc, {"eval": data.eval, "test": data.test}, infer,
                precision, split_logits, ood))
        run.set_status("finished", step=state.step, state=asdict(state),
                       results={k: headline(v) for k, v in results.items()})
        log.info("model: %s", run.model_dir)
        return TrainResult(run.path, run.model_dir, results, state.step, state.train_seconds, sps, resuming)


def _save_model(model, tokenizer, out: Path) -> None:
    """Write the final model, loadable without lftrain: a plain Hugging Face directory (safetensors), or for
    adapter runs peft's adapter format naming the base model (see lftrain.models.trained)."""
    from lftrain.models.trained import save_trained_model

    save_trained_model(model, tokenizer, out)


def _classification_results(task, infer, enc, data, recipe, run, step) -> tuple[dict, dict]:
    """Final metrics of each split in eval.splits (logged and printed), and the logits they came from."""
    results, logits = {}, {}
    for split in recipe.eval.splits:
        if split in enc:
            logits[split] = infer(enc[split])
            results[split] = task.metrics(logits[split], enc[split]["labels"])
            run.log_metrics({"event": "eval", "split": split, "step": step, "final": True, **results[split]})
            print(format_table(results[split], data.labels, f"{split} metrics ({run.path})"), flush=True)
    return results, logits


def _generative_results(task, model, tokenizer, enc, data, recipe, source, run, step, precision, device) -> dict:
    """Final evaluation of a generative task (loss, generation scores, base comparison, forgetting check):
    logged to metrics.jsonl and printed."""
    from lftrain.evaluation.generation import format_report

    def load_base():  # the model before fine-tuning, for the base-vs-tuned comparison of full fine-tuning
        return task.load_model(source, trust_remote_code=recipe.model.trust_remote_code, attention="eager").to(device)

    results = task.final_evaluation(model=model, tokenizer=tokenizer, enc=enc, data=data, recipe=recipe,
                                    load_base=load_base, precision=precision, device=device)
    for split, res in results.items():
        run.log_metrics({"event": "eval", "split": split, "step": step, "final": True, **res})
    print(format_report(results, f"final evaluation ({run.path})"), flush=True)
    return results
