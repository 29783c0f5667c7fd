"""A language-model run (`method: mlm`): the same run directory, checkpoints, resume and `fit()` as every run,
with a language-model class instead of the task's, and token-level evaluation instead of class metrics.

It mirrors training/run.py's order: every input is validated before the model loads.
"""

from __future__ import annotations

import logging
from dataclasses import asdict

log = logging.getLogger("lftrain")


def run_lm(recipe, *, new_run: bool = False, allow_recipe_change: bool = False, on_eval=None):
    from lftrain.config import dump_recipe
    from lftrain.data.prepare import prepare_data
    from lftrain.data.token_cache import encode_cached
    from lftrain.errors import InputError
    from lftrain.methods import build_method
    from lftrain.methods.mlm import LMView, carry_over_base_weights, lm_metrics, lm_texts, load_lm, wants_causal
    from lftrain.models.adaptation import build_adaptation
    from lftrain.models.loading import load_tokenizer, offline, vet_model_dir
    from lftrain.reports.manifest import build_manifest, write_json
    from lftrain.tasks import build_task
    from lftrain.training.checkpoint import TrainState, clean_temporary, load_weights, resume_latest
    from lftrain.training.loop import FitContext, fit, plan_steps, release_training_memory
    from lftrain.training.optim import build_optimizer, build_scheduler
    from lftrain.training.precision import pick_device, resolve_precision
    from lftrain.training.run import TrainResult, _data_files, _seed_everything, _trim_metrics, set_threads
    from lftrain.training.rundir import marked_failed_on_error, open_run

    offline()
    task = build_task(recipe.task)
    if not hasattr(task, "collate") or getattr(task, "generative", False):
        raise InputError(f"method mlm: task '{recipe.task.type}' is not supported (use a text-classification "
                         "recipe; its texts, labelled and unlabelled, are the language-model data)")
    data = prepare_data(recipe, task)
    method = build_method(recipe.method, task)
    texts = lm_texts(data, method.config.include_labelled)
    source = vet_model_dir(recipe.model.path, allow_pickle=recipe.model.allow_pickle,
                           trust_remote_code=recipe.model.trust_remote_code)
    causal = wants_causal(method.config.objective, source)
    if recipe.output.dir is None:
        raise InputError("output.dir is not set")
    run, resuming = open_run(recipe.output.dir, dump_recipe(recipe), new_run=new_run,
                             allow_recipe_change=allow_recipe_change, inputs=_data_files(recipe))
    with marked_failed_on_error(run):
        cfg = recipe.train
        threads = set_threads(cfg.threads)
        device = pick_device()
        precision, why = resolve_precision(cfg.precision, device)
        tokenizer = load_tokenizer(source, recipe.model.trust_remote_code)
        if causal and tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        if not causal and tokenizer.mask_token_id is None:
            raise InputError(f"{source.path}: the tokenizer has no mask token; set method.objective: causal")
        enc = encode_cached(task, tokenizer, texts, model_dir=source.path, cache_dir=recipe.data.cache_dir)
        eval_enc = encode_cached(task, tokenizer, data.eval, model_dir=source.path,
                                 cache_dir=recipe.data.cache_dir) if data.eval is not None else None
        log.info("%s-LM on %d texts (%d labelled, %d unlabelled), eval on %d", "causal" if causal else "masked",
                 len(texts), len(data.train) if method.config.include_labelled else 0,
                 len(data.unlabeled) if data.unlabeled is not None else 0, len(data.eval) if data.eval else 0)

        _seed_everything(cfg.seed)
        model = load_lm(source, causal=causal, trust_remote_code=recipe.model.trust_remote_code, attention="eager")
        model = build_adaptation(recipe.adaptation).apply(model)
        if recipe.model.dropout is not None:
            from lftrain.models.fast_dropout import set_dropout_rate

            set_dropout_rate(model, recipe.model.dropout)
        model.to(device)
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        view = LMView(task, causal=causal, probability=method.config.mask_probability,
                      mask_id=tokenizer.mask_token_id, vocab_size=model.get_output_embeddings().weight.shape[0],
                      special_ids=list(tokenizer.all_special_ids), seed=cfg.seed)
        method.task = view  # the method's forward and loss go through the language-model view
        total_steps, steps_per_epoch = plan_steps(len(texts), cfg)
        optimizer = build_optimizer(model, cfg)
        scheduler = build_scheduler(optimizer, cfg, total_steps)
        write_json(run.path / "manifest.json", build_manifest(
            seed=cfg.seed, threads=threads, precision=precision, precision_reason=why, device=str(device),
            data_files=_data_files(recipe), model_dir=source.path, model_files=[],
            extra={"data_stats": data.stats, "objective": "causal-lm" if causal else "masked-lm",
                   "lm_texts": len(texts), "total_steps": total_steps}))
        state = TrainState()
        if resuming:
            clean_temporary(run.checkpoints)
            ckpt, state = resume_latest(run.checkpoints, model, optimizer, scheduler)
            if ckpt is not None:
                log.info("resumed from %s (step %d of %d)", ckpt.name, state.step, total_steps)
            _trim_metrics(run, state.step)

        def evaluate() -> dict:
            return lm_metrics(model, view, eval_enc, batch_size=cfg.eval_batch_size, precision=precision,
                              device=device, pad_id=pad_id)

        metric = cfg.metric if cfg.metric in ("loss", "perplexity", "accuracy") else "loss"
        ctx = FitContext(model=model, method=method, task=view, train_data=enc, optimizer=optimizer,
                         scheduler=scheduler, cfg=cfg.model_copy(update={"metric": metric, "curriculum": None}),
                         run=run, device=device, precision=precision, pad_id=pad_id,
                         evaluate=evaluate if eval_enc is not None else None, total_steps=total_steps,
                         steps_per_epoch=steps_per_epoch, on_eval=on_eval)
        run.set_status("running", step=state.step, total_steps=total_steps)
        state = fit(ctx, state)
        release_training_memory(ctx)
        if cfg.keep_best and state.best_step is not None and state.best_step != state.step:
            load_weights(run.checkpoints / f"step-{state.best_step:08d}", model)
            log.info("final model = best checkpoint (step %d, eval %s %.4f)", state.best_step, metric,
                     state.best_metric)
        from lftrain.models.trained import save_trained_model

        save_trained_model(model, tokenizer, run.model_dir)
        added = carry_over_base_weights(run.model_dir, source, model)
        if added:
            log.info("carried over %d base-model tensors the LM class lacks (%s)", len(added), ", ".join(added))
        results = {}
        if eval_enc is not None:
            results["eval"] = evaluate()
            run.log_metrics({"event": "eval", "split": "eval", "step": state.step, "final": True, **results["eval"]})
            print(f"language-model eval ({run.path}): " + "  ".join(
                f"{k} {v:.4f}" for k, v in results["eval"].items() if k != "tokens"), flush=True)
        sps = state.samples_seen / max(state.train_seconds, 1e-9)
        run.log_metrics({"event": "train_end", "step": state.step, "train_runtime": state.train_seconds,
                         "train_samples": state.samples_seen, "train_samples_per_second": sps,
                         "best_step": state.best_step})
        run.set_status("finished", step=state.step, state=asdict(state), results=results)
        return TrainResult(run.path, run.model_dir, results, state.step, state.train_seconds, sps, resuming)
