"""The orchestrator: one training run, for every task and method, in named phases.

    prepare_inputs  recipe -> validated data, task, method, model directory  (nothing loaded: a typo costs seconds)
    open_session    run directory (new or resumed), processes, threads, device, precision
    build_model     processor, encoded splits, model, the method's training rows, speed levers (lftrain.accel)
    build_optimiser steps, curriculum, optimiser, schedule; manifest.json
    fit_model       resume, fit() (training/loop.py), the best checkpoint back
    finish          the saved model, the final evaluation and its evidence

Tasks and methods plug in through their contracts (tasks/base.py, methods/base.py); nothing here depends on which.
"""

from __future__ import annotations

import functools
import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lftrain.errors import InputError

if TYPE_CHECKING:
    import numpy as np
    import torch

    from lftrain.accel import StepHooks
    from lftrain.checks.report import CheckReport
    from lftrain.config.schema import Recipe
    from lftrain.data.examples import Examples
    from lftrain.data.prepare import PreparedData
    from lftrain.methods.base import Method
    from lftrain.models.loading import Loading, ModelSource
    from lftrain.plan import MemoryPlan
    from lftrain.tasks.base import Batches, Encoded, Task
    from lftrain.training.checkpoint import TrainState
    from lftrain.training.curriculum import CurriculumPlan
    from lftrain.training.distributed import DistContext
    from lftrain.training.loop import FitContext
    from lftrain.training.privacy import PrivateTraining
    from lftrain.training.rundir import RunDir

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


@dataclass
class Prepared:
    """What `prepare_inputs` checked: everything the user gave, before any model loads."""

    recipe: Recipe
    task: Task
    method: Method
    data: PreparedData
    checks: CheckReport | None  # the data-check report (None when no check ran)
    ood: Examples | None  # eval.ood examples (None when not set)
    source: ModelSource
    plan: MemoryPlan | None = None  # made before loading (None: train.memory_plan off, or several processes)


@dataclass
class Session:
    """What `open_session` opened: the run directory and the machine the run trains on."""

    p: Prepared
    run: RunDir
    resuming: bool
    dctx: DistContext | None  # None in a single process
    threads: int
    device: torch.device
    precision: str
    precision_reason: str
    accel_skip: frozenset[str] = frozenset()  # levers left out although they apply (benchmarks/ab_steps.py)

    @property
    def main(self) -> bool:
        return self.dctx is None or self.dctx.main  # only rank 0 writes the run directory


@dataclass
class Built:
    """What `build_model` built: the processor, the encoded splits and the model fit() trains."""

    tokenizer: Any  # the task's processor (a tokenizer, image processor, feature extractor...)
    enc: dict[str, Encoded]  # split -> encoded arrays
    model: torch.nn.Module
    attention: str
    pad_id: int
    train_enc: Encoded  # the rows fit() trains on (the method may add to the labelled ones)
    fit_task: Batches  # what fit() batches them with
    hooks: StepHooks  # the speed levers' per-step hooks


@dataclass
class Schedule:
    """What `build_optimiser` planned: the steps, their order and the optimiser that takes them."""

    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    total_steps: int
    steps_per_epoch: int
    curriculum: CurriculumPlan | None  # under train.curriculum
    privacy: PrivateTraining | None  # under train.privacy


def train_run(recipe: Recipe, *, new_run: bool = False, allow_recipe_change: bool = False, on_eval=None) -> TrainResult:
    """Train as the recipe says (see the module docstring). `on_eval(step, metrics) -> stop?` sees each evaluation."""
    from lftrain.training.rundir import marked_failed_on_error

    p = prepare_inputs(recipe)
    s = open_session(p, new_run=new_run, allow_recipe_change=allow_recipe_change)
    with marked_failed_on_error(s.run):
        b = build_model(s)
        o = build_optimiser(s, b)
        state = fit_model(s, b, o, on_eval)
        return finish(s, b, o, state)


# ---- phase 1: inputs ------------------------------------------------------------------------------------------

def prepare_inputs(recipe: Recipe) -> Prepared:
    """Validate every input (recipe, data rows, data checks, the method's own inputs, the model directory)."""
    from lftrain.checks.preflight import preflight
    from lftrain.data.prepare import prepare_data
    from lftrain.evaluation.evidence import read_ood
    from lftrain.evaluation.slices import check_slices
    from lftrain.methods import build_method
    from lftrain.models.loading import vet_model_dir
    from lftrain.tasks import build_task
    from lftrain.training.curriculum import check as check_curriculum
    from lftrain.training.privacy import vet_data, vet_recipe
    from lftrain.training.tracking import check_trackers

    recipe = vet_recipe(recipe)  # train.privacy: what it cannot train is refused here; the speed levers go off
    if recipe.output.dir is None:
        raise InputError("output.dir is not set (and the recipe has no file name to derive it from)")
    check_trackers(recipe.train)
    task = build_task(recipe.task)
    # the model is looked up after the data is read (bad rows are named first), unless the tokenizer is needed to
    # read it (a streamed set is tokenised here: the tokenizer is not the model)
    source = functools.cache(lambda: vet_model_dir(recipe.model.path, allow_pickle=recipe.model.allow_pickle,
                                                   trust_remote_code=recipe.model.trust_remote_code,
                                                   revision=recipe.model.revision))
    if recipe.data.streaming:
        _check_streamable(recipe, task)
    data = prepare_data(recipe, task, lambda: task.load_processor(source(), recipe.model.trust_remote_code))
    checks = preflight(recipe, task, data)  # data.checks: a blocking check stops here (exit 2)
    check_slices(recipe, data)
    if not recipe.data.streaming:  # after the checks, whose findings copies would be
        data.train = task.balance(data.train, recipe.data.split_seed, data.stats)
    ood = read_ood(recipe, task)
    method = build_method(recipe.method, task)  # vets the method's own inputs (a teacher) against the labels
    if data.unlabeled is not None and not method.uses_unlabeled:
        log.warning("data.unlabeled is set but method '%s' does not use unlabelled data; ignoring it",
                    recipe.method.type)
    check_curriculum(recipe, data)
    vet_data(recipe.train, data)
    plan = _plan_memory(recipe)  # train.memory_plan: exit 2 here, before any weight loads, when it would not fit
    return Prepared(recipe, task, method, data, checks, ood, source(), plan)


def _plan_memory(recipe: Recipe) -> MemoryPlan | None:
    import os

    from lftrain.plan import check

    if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # the plan is of one process holding the whole model
        log.info("memory plan: not made for a run on several processes")
        return None
    return check(recipe, recipe.train.memory_plan)


def _check_streamable(recipe: Recipe, task: Task) -> None:
    from lftrain.methods import METHODS

    what = []
    if not task.streams:
        what.append(f"task.type {recipe.task.type}")
    if not METHODS.get(recipe.method.type).streams:
        what.append(f"method {recipe.method.type}")
    if recipe.train.curriculum is not None:
        what.append("train.curriculum")
    if recipe.data.unlabeled:
        what.append("data.unlabeled")
    if what:
        raise InputError(f"data.streaming: {', '.join(what)} needs every training row in memory; streaming supports "
                         "supervised text classification (set data.streaming: false)")


# ---- phase 2: the run directory and the machine ----------------------------------------------------------------

def open_session(p: Prepared, *, new_run: bool, allow_recipe_change: bool) -> Session:
    from lftrain.accel import allocator
    from lftrain.config import dump_recipe
    from lftrain.models.precision import pick_device, resolve_precision, set_threads
    from lftrain.training import distributed
    from lftrain.training.rundir import open_run

    recipe, cfg = p.recipe, p.recipe.train
    dctx = distributed.init(cfg.strategy)  # None unless launched on several processes (torchrun)

    def opener():
        assert recipe.output.dir is not None  # prepare_inputs refused a recipe without one
        return open_run(recipe.output.dir, dump_recipe(recipe), new_run=new_run,
                        allow_recipe_change=allow_recipe_change, inputs=_data_files(p))
    run, resuming = opener() if dctx is None else distributed.open_run_shared(dctx, opener)
    log.info("run directory: %s%s", run.path, " (resuming)" if resuming else "")
    if dctx is None or dctx.main:
        from lftrain.training.tracking import open_trackers

        run.trackers = open_trackers(recipe, run, resuming)
    threads = set_threads(cfg.threads or (dctx.threads_per_process() if dctx else None))
    device = pick_device(cfg.device)
    precision, why = resolve_precision(cfg.precision, device)
    if precision == "fp16" and dctx is not None and dctx.fsdp:
        raise InputError("train.precision fp16 with train.strategy fsdp is not supported (FSDP shards need a sharded "
                         "gradient scaler); use bf16, or train.strategy ddp")
    log.info("precision: %s (%s); %d threads; device %s; memory allocator %s", precision, why, threads, device,
             allocator.describe())
    loading = _loading(p, precision)
    p.source = p.source.with_loading(loading)
    log.info("weights: %s (%s)", loading.dtype, loading.reason)
    stats = p.data.stats
    log.info("data: %d train, %d eval, %d test rows", stats["train_rows"], stats["eval_rows"], stats["test_rows"])
    return Session(p, run, resuming, dctx, threads, device, precision, why)


# ---- phase 3: the model ----------------------------------------------------------------------------------------

def build_model(s: Session) -> Built:
    """Processor, encoded splits, the adapted model on its device, the method's training rows, the speed levers."""
    from lftrain import accel
    from lftrain.training import distributed

    p, cfg = s.p, s.p.recipe.train
    tokenizer = p.task.load_processor(p.source, p.recipe.model.trust_remote_code)
    p.method.prepare_tokenizer(tokenizer, p.source)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    enc, encode = _encode_splits(p, tokenizer)
    _seed_everything(cfg.seed)  # before loading: the new head's initialisation depends on it
    attention = accel.attention(p.recipe.model.attention, s.device, cfg.accel)
    model = load_adapted_model(p, attention)
    if not p.source.quantize:  # bitsandbytes placed a quantized model on its device as it loaded
        model = model.to(s.device)
    train_enc, fit_task = p.method.prepare(model, enc["train"], data=p.data, recipe=p.recipe, encode=encode,
                                           precision=s.precision, device=s.device, tokenizer=tokenizer)
    prepare_model = getattr(fit_task, "prepare_model", None)  # optional: a task's (e.g. SFT's chunked loss)
    if prepare_model is not None:
        prepare_model(model, distributed=s.dctx is not None)
    hooks = accel.install(model, cfg.accel, accel.Run(
        s.device, s.precision, distributed=s.dctx is not None, compiled=cfg.compile,
        checkpointing=cfg.gradient_checkpointing, augments_input=fit_task.augments_input,
        token_inputs=p.task.token_inputs, streamed=p.data.stream is not None, spill_dir=s.run.path / "cache",
        task=fit_task, data=train_enc, batch_size=cfg.eval_batch_size, pad_id=pad_id), skip=s.accel_skip)
    if cfg.gradient_checkpointing:
        distributed.gradient_checkpointing(model)
    if cfg.compile:
        model.compile()  # in place: parameter names (and so checkpoints) stay as they are
    if s.dctx is not None:  # before the optimiser: FSDP replaces the parameters with their shards
        distributed.wrap(model, s.dctx, s.device)
        log.info("%s", distributed.describe_batch(cfg, s.dctx.world))
    return Built(tokenizer, enc, model, attention, pad_id, train_enc, fit_task, hooks)


def _encode_splits(p: Prepared, tokenizer) -> tuple[dict[str, Encoded], Callable[[Examples], Encoded]]:
    """The method's training rows and the eval/test splits encoded (token cache), and the encoder for more."""
    from lftrain.data.token_cache import encode_cached

    stats: dict[str, int] = {}

    def encode(examples: Examples) -> Encoded:
        return encode_cached(p.task, tokenizer, examples, model_dir=p.source.path,
                             cache_dir=p.recipe.data.cache_dir, stats=stats)

    t0 = time.perf_counter()
    train = None if p.data.stream is not None else p.method.training_examples(p.data)
    splits = (("train", train), ("eval", p.data.eval), ("test", p.data.test))
    enc = {name: encode(ex) for name, ex in splits if ex is not None}
    if p.data.stream is not None:
        enc["train"] = p.data.stream.encoded  # tokenised while the data was prepared, read from disk
    log.info("tokenised in %.1fs (cache: %d hit, %d miss)", time.perf_counter() - t0, stats.get("cache_hits", 0),
             stats.get("cache_misses", 0))
    return enc, encode


def _loading(p: Prepared, precision: str) -> Loading:
    """How this run loads its base model: `model.dtype` and `adaptation.quantize` for this precision."""
    from lftrain.models.loading import resolve_loading

    adaptation = p.recipe.adaptation
    return resolve_loading(p.recipe.model.dtype, precision, frozen_base=adaptation.type not in ("full", "freeze"),
                           quantize=getattr(adaptation, "quantize", None),
                           double_quant=getattr(adaptation, "double_quant", True), config=p.source.config)


def load_adapted_model(p: Prepared, attention: str) -> torch.nn.Module:
    """The method's model for the task, made as the recipe says: re-initialised, shallower, adapted, dropout set."""
    from lftrain.models.adaptation import build_adaptation
    from lftrain.models.layers import set_dropout_rate
    from lftrain.models.loading import reinitialise
    from lftrain.models.quantized import master_weights, paging_out_checkpoint, release_checkpoint_pages
    from lftrain.models.student import drop_layers

    recipe = p.recipe
    with paging_out_checkpoint(p.source):
        model = p.method.load_model(p.source, trust_remote_code=recipe.model.trust_remote_code, attention=attention)
    released = release_checkpoint_pages(model)
    if released:
        log.debug("released %d MB of checkpoint pages the converted weights no longer use", released)
    if recipe.model.init == "random":  # the same architecture from scratch (a baseline for pre-training)
        log.info("model.init: random: %d modules re-initialised", reinitialise(model))
    model = drop_layers(model, recipe.model.keep_layers)  # a shallower student (model.keep_layers)
    model = build_adaptation(recipe.adaptation).apply(model)  # may wrap it (adapters)
    cast = master_weights(model)  # what trains keeps fp32 master weights, whatever the base was loaded in
    if cast:
        log.info("%d trained tensors kept in fp32 (the base is %s)", cast, p.source.dtype)
    if recipe.model.dropout is not None:
        log.info("dropout set to %g in %d modules (model.dropout)", recipe.model.dropout,
                 set_dropout_rate(model, recipe.model.dropout))
    return model


# ---- phase 4: the optimiser -------------------------------------------------------------------------------------

def build_optimiser(s: Session, b: Built) -> Schedule:
    """Steps, curriculum, optimiser and schedule; the manifest and the data card."""
    from lftrain.checks.preflight import record as record_data_checks
    from lftrain.files import write_json_atomic
    from lftrain.training.curriculum import plan_curriculum
    from lftrain.training.loop import plan_steps
    from lftrain.training.optim import build_optimizer, build_scheduler
    from lftrain.training.privacy import attach

    p, cfg = s.p, s.p.recipe.train
    lengths = b.fit_task.lengths(b.train_enc)
    total_steps, steps_per_epoch = plan_steps(len(lengths), cfg)
    curriculum = None
    if p.method.training_examples(p.data) is p.data.train:
        curriculum = plan_curriculum(p.recipe, p.data, b.train_enc, lengths, total_steps=total_steps,
                                     steps_per_epoch=steps_per_epoch, precision=s.precision, device=s.device)
    elif cfg.curriculum is not None:
        log.warning("train.curriculum ranks the labelled rows; method %s trains on other rows: no curriculum",
                    p.recipe.method.type)
    optimizer = build_optimizer(b.model, cfg)
    scheduler = build_scheduler(optimizer, cfg, total_steps)
    # train.privacy: per-example gradients, the noisy optimiser (it replaces the plain one), Poisson sampling
    privacy, optimizer = attach(cfg, b.model, optimizer, len(lengths), total_steps, steps_per_epoch,
                                distributed=s.dctx is not None, precision=s.precision)
    o = Schedule(optimizer, scheduler, total_steps, steps_per_epoch, curriculum, privacy)
    if s.main:
        write_json_atomic(s.run.path / "manifest.json", _manifest(s, b, o))
        record_data_checks(s.run.path, p.recipe, p.checks)  # data_card.md/.json, data_check.json
    return o


def _manifest(s: Session, b: Built, o: Schedule) -> dict:
    from lftrain.accel import allocator
    from lftrain.models.loading import model_files
    from lftrain.reports.manifest import build_manifest
    from lftrain.training.determinism import determinism_info

    p, cfg = s.p, s.p.recipe.train
    extra = {"data_stats": p.data.stats, "labels": p.data.labels,
             "trainable_parameters": sum(x.numel() for x in b.model.parameters() if x.requires_grad),
             "total_steps": o.total_steps, "allocator": allocator.in_use(), "attention": b.attention,
             "data_sources": _source_origins(p),
             "accel": {"setting": cfg.accel, "dropout": b.hooks.dropout, "levers": b.hooks.lines},
             "determinism": determinism_info(seed=cfg.seed, threads=s.threads, precision=s.precision,
                                             device=str(s.device), num_workers=cfg.num_workers),
             **p.method.manifest()}
    if s.dctx is not None:
        extra["distributed"] = s.dctx.describe()
    if o.privacy is not None:
        extra["privacy"] = o.privacy.manifest()  # the ε spent is added when training ends
    if p.checks:
        extra["licences"] = p.checks.licences
    if p.plan is not None:  # what was predicted, beside what the run then measures (docs/large-models.md)
        extra["memory_plan"] = {"total_mb": p.plan.total_mb, "available_mb": p.plan.available_mb,
                                "components_mb": p.plan.components}
    return build_manifest(seed=cfg.seed, threads=s.threads, precision=s.precision, precision_reason=s.precision_reason,
                          device=str(s.device), data_files=_data_files(p), model_dir=p.source.path,
                          model_files=model_files(p.source.path), model_hub=p.source.hub, extra=extra)


# ---- phase 5: fit ------------------------------------------------------------------------------------------------

def fit_model(s: Session, b: Built, o: Schedule, on_eval=None) -> TrainState:
    """Resume (when the run directory has a checkpoint), fit, and put the best checkpoint's weights back."""
    from lftrain.training.checkpoint import load_weights
    from lftrain.training.loop import fit, release_training_memory

    cfg = s.p.recipe.train
    state = _resume(s, b, o)
    ctx = fit_context(s, b, o, on_eval)
    if ctx.scaler is not None and state.loss_scale:
        ctx.scaler.load_state_dict(state.loss_scale)  # the loss scale where the checkpoint left it
    s.run.set_status("running", step=state.step, total_steps=o.total_steps)
    state = fit(ctx, state)
    release_training_memory(ctx)
    if cfg.keep_best and state.best_step is not None and state.best_step != state.step:
        load_weights(s.run.checkpoints / f"step-{state.best_step:08d}", b.model)
        log.info("final model = best checkpoint (step %d, %s %.4f)", state.best_step, ctx.cfg.metric,
                 state.best_metric)
    return state


def fit_context(s: Session, b: Built, o: Schedule, on_eval=None) -> FitContext:
    """Everything fit() needs, from the session's phases."""
    from lftrain.models.precision import grad_scaler
    from lftrain.training.loop import FitContext

    cfg = s.p.recipe.train
    metric = s.p.method.selection_metric(s.p.task.selection_metric(cfg.metric, "metric" in cfg.model_fields_set))
    higher = type(s.p.method).higher_is_better(metric, type(s.p.task))
    return FitContext(model=b.model, method=s.p.method, task=b.fit_task, train_data=b.train_enc,
                      optimizer=o.optimizer, scheduler=o.scheduler, cfg=cfg.model_copy(update={"metric": metric}),
                      run=s.run, device=s.device, precision=s.precision, pad_id=b.pad_id, evaluate=_evaluator(s, b),
                      higher_is_better=higher, total_steps=o.total_steps, steps_per_epoch=o.steps_per_epoch,
                      hooks=b.hooks, on_eval=on_eval, dist=s.dctx, curriculum=o.curriculum,
                      scaler=grad_scaler(s.precision, s.device),
                      sampler=o.privacy.sampler if o.privacy is not None else None)


def _resume(s: Session, b: Built, o: Schedule) -> TrainState:
    from lftrain.training.checkpoint import TrainState, clean_temporary, resume_latest

    if not s.resuming:
        return TrainState()
    if s.main:
        clean_temporary(s.run.checkpoints)
    if s.dctx is not None:
        s.dctx.barrier()  # every rank picks its checkpoint after rank 0 has tidied up
    ckpt, state = resume_latest(s.run.checkpoints, b.model, o.optimizer, o.scheduler)  # newest verified + loadable
    if ckpt is not None:
        log.info("resumed from %s (step %d of %d)", ckpt.name, state.step, o.total_steps)
    if s.main:
        _trim_metrics(s.run, state.step)
    return state


def _evaluator(s: Session, b: Built) -> Callable[[], dict[str, Any]] | None:
    """The evaluation fit() runs on the eval split (None without one)."""
    if "eval" not in b.enc:
        return None
    cfg = s.p.recipe.train

    def evaluate() -> dict[str, Any]:
        s.p.method.before_eval(b.model)
        return s.p.method.evaluate(b.model, b.enc["eval"], infer=_inference(s, b, b.model, distributed=True),
                                   batch_size=cfg.eval_batch_size, precision=s.precision, device=s.device,
                                   pad_id=b.pad_id)
    return evaluate


def _inference(s: Session, b: Built, model: torch.nn.Module, *,
               distributed: bool) -> Callable[[Encoded], np.ndarray]:
    """encoded split -> `model`'s logits for every row, in order (sharded over the processes when asked)."""
    from lftrain.evaluation.inference import infer_logits

    infer = s.dctx.infer_logits if distributed and s.dctx is not None else infer_logits

    def run(encoded: Encoded) -> np.ndarray:
        return infer(model, s.p.task, encoded, batch_size=s.p.recipe.train.eval_batch_size,
                     precision=s.precision, device=s.device, pad_id=b.pad_id)
    return run


# ---- phase 6: finish ----------------------------------------------------------------------------------------------

def finish(s: Session, b: Built, o: Schedule, state: TrainState) -> TrainResult:
    """Save the final model, then evaluate it and write its evidence (rank 0 alone, with the whole model)."""
    from lftrain.evaluation.evidence import RunOutputs
    from lftrain.evaluation.metrics import headline
    from lftrain.reports.html import write_report
    from lftrain.training import distributed
    from lftrain.training.privacy import record as record_privacy

    p, model = s.p, b.model
    if s.dctx is not None:  # the whole model, on rank 0 (the sharded or replicated one goes)
        model = distributed.plain_model(s.dctx, model, lambda: load_adapted_model(p, b.attention))
        if not s.dctx.main:
            return TrainResult(s.run.path, s.run.model_dir, {}, state.step, state.train_seconds, 0.0, s.resuming)
    record_privacy(o.privacy, s.run, state)  # the ε spent, into manifest.json before the report and card read it
    p.method.finish(model)
    p.task.before_save(model)
    p.method.save(model, b.tokenizer, s.run.model_dir, p.source)
    sps = state.samples_seen / max(state.train_seconds, 1e-9)
    s.run.log_metrics({"event": "train_end", "step": state.step, "train_runtime": state.train_seconds,
                       "train_samples": state.samples_seen, "train_samples_per_second": sps,
                       "best_step": state.best_step, "stopped_early": state.stopped_early})
    out = RunOutputs(s.run.path, p.recipe, p.task, model, b.tokenizer, b.enc,
                     {"eval": p.data.eval, "test": p.data.test}, _inference(s, b, model, distributed=False),
                     s.precision, ood=p.ood, device=s.device, pad_id=b.pad_id, step=state.step,
                     log_metrics=s.run.log_metrics,
                     load_base=lambda: p.method.load_model(p.source, trust_remote_code=p.recipe.model.trust_remote_code,
                                                           attention="eager").to(s.device),
                     data=p.data)
    results = p.method.final_evaluation(out)
    if p.recipe.eval.report:  # from the evidence the task just wrote
        write_report(s.run.path)
    s.run.set_status("finished", step=state.step, state=asdict(state),
                     results={k: headline(v) for k, v in results.items()})
    log.info("model: %s", s.run.model_dir)
    return TrainResult(s.run.path, s.run.model_dir, results, state.step, state.train_seconds, sps, s.resuming)


# ---- helpers ------------------------------------------------------------------------------------------------------

def _seed_everything(seed: int) -> None:
    import random

    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _trim_metrics(run: RunDir, step: int) -> None:
    """Drop metric lines written after the checkpoint we resume from: they will be written again."""
    kept = [r for r in run.read_metrics() if r.get("step", 0) <= step and r.get("event") in ("train", "eval")]
    run.metrics_file.write_text("".join(json.dumps(r) + "\n" for r in kept))


def _source_origins(p: Prepared) -> dict[str, list[dict]]:
    """What the recipe named for each role, and for Hub data sets the commit read."""
    out: dict[str, list[dict]] = {}
    for role, sources in p.data.sources.items():
        for s in sources:
            entry = {"origin": s.origin, "weight": s.weight, **({"hub": s.hub} if s.hub else {})}
            if entry not in out.setdefault(role, []):
                out[role].append(entry)
    return out


def _data_files(p: Prepared) -> dict[str, Path]:
    """Every local data file the run read, by role (`train`, or `train[2]`... when a role has several)."""
    from lftrain.data.paths import resolve_path

    files = {}
    for role, sources in p.data.sources.items():
        paths = [resolve_path(s.path.split("#", 1)[0]) for s in sources]
        paths = [path for path in paths if path.is_file()]
        files.update({role if len(paths) == 1 else f"{role}[{i + 1}]": path for i, path in enumerate(paths)})
    return files
