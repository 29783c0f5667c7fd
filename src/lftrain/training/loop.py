"""fit(): the one training loop every task, adaptation and method runs through.

Read top to bottom: for each optimiser step, its examples are split into micro-batches; each
micro-batch's summed loss is divided by the number of loss units (examples, tokens) in the *whole*
step, so accumulation gives the same gradient as one big batch; then clip, step, schedule, log,
and — when due — evaluate, checkpoint and decide on early stopping. Logging and checkpointing are
plain calls, not callbacks.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from lftrain.accel import StepHooks
from lftrain.accel.allocator import release_free_memory
from lftrain.data.batching import epoch_batches, micro_batches
from lftrain.models.precision import autocast
from lftrain.progress import Progress
from lftrain.training.checkpoint import TrainState, rotate, save_checkpoint
from lftrain.training.distributed import DistContext
from lftrain.training.faults import maybe_kill
from lftrain.training.memory import ActivationCap, with_backoff
from lftrain.training.nonfinite import finite_or_handle
from lftrain.training.prefetch import step_inputs
from lftrain.training.signals import PreemptionWatch

if TYPE_CHECKING:
    from lftrain.config.schema import TrainConfig
    from lftrain.methods.base import Method
    from lftrain.tasks.base import Batches
    from lftrain.training.curriculum import CurriculumPlan
    from lftrain.training.privacy import PoissonSampler
    from lftrain.training.rundir import RunDir

log = logging.getLogger("lftrain")


@dataclass
class FitContext:
    """Everything fit() needs, built by the orchestrator (orchestrator/run.py)."""

    model: torch.nn.Module
    method: Method  # batch -> {"loss_sum": ...}
    task: Batches
    train_data: dict[str, np.ndarray]
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    cfg: TrainConfig
    run: RunDir
    device: torch.device
    precision: str
    pad_id: int
    evaluate: Callable[[], dict[str, Any]] | None  # returns eval metrics, or None when there is no eval data
    higher_is_better: bool  # cfg.metric's direction, as the task and method declare it
    total_steps: int
    steps_per_epoch: int
    hooks: StepHooks = field(default_factory=StepHooks)  # the speed levers' per-step hooks (lftrain.accel)
    cap: ActivationCap | None = None  # train.memory_cap_mb (training/memory.py); set by fit()
    dist: DistContext | None = None  # set when launched on several processes (training/distributed.py)
    on_eval: Callable[[int, dict], bool] | None = None  # (step, eval metrics) -> stop now? (a tuning trial's pruner)
    curriculum: CurriculumPlan | None = None  # train.curriculum (training/curriculum.py): drawing each step
    scaler: torch.amp.GradScaler | None = None  # fp16: loss scaling (models/precision.py)
    sampler: PoissonSampler | None = None  # train.privacy: Poisson-sampled batches (training/privacy.py)


def plan_steps(n_examples: int, cfg) -> tuple[int, int]:
    steps_per_epoch = math.ceil(n_examples / cfg.batch_size)
    total = cfg.max_steps or math.ceil(cfg.epochs * steps_per_epoch)
    return total, steps_per_epoch


def _better(value: float, best: float | None, higher_is_better: bool) -> bool:
    if best is None:
        return True
    return value > best if higher_is_better else value < best


def _train_step(ctx: FitContext, batch_idx: np.ndarray, micro: int, prepared: list | None = None,
                state: TrainState | None = None) -> tuple[float, int]:
    """Forward/backward over the micro-batches of one step, then the optimiser update. Returns (loss sum, units).
    `prepared`: the micro-batches already collated by data-loader workers (training/prefetch.py)."""
    d = ctx.dist  # distributed: this rank's shard of the step, padded to as many micro-batches as every rank
    micros, weights = d.step_plan(batch_idx, micro) if d else (micro_batches(batch_idx, micro), None)
    batches = [b for _, b in prepared] if prepared is not None and not d else \
        [ctx.task.collate(ctx.train_data, mb, ctx.pad_id) for mb in micros]
    # normaliser of the whole step (over all ranks), known before any forward
    units = sum(ctx.task.loss_units(b) for i, b in enumerate(batches) if not weights or weights[i])
    units = int(d.global_sum(units)) if d else units
    loss_total = 0.0
    model = d.forward_model if d else ctx.model
    assert model is not None  # distributed.wrap() set the forward model before training
    for i, (mb, batch) in enumerate(zip(micros, batches)):
        batch = {k: v.to(ctx.device) for k, v in batch.items()}
        with d.grad_sync(last=i == len(micros) - 1) if d else contextlib.nullcontext():
            with autocast(ctx.precision, ctx.device), ctx.hooks.forward(mb, batch), \
                    ctx.cap.watch() if ctx.cap else contextlib.nullcontext():
                out = ctx.method(model, batch)
            loss = (out["loss_sum"] * weights[i] if weights is not None else out["loss_sum"]) / units
            (ctx.scaler.scale(loss) if ctx.scaler else loss).backward()
        loss_total += float(out["loss_sum"].detach()) if weights is None or weights[i] else 0.0
    loss_total = d.global_sum(loss_total) if d else loss_total
    params: list[torch.Tensor] = [p for p in ctx.model.parameters() if p.grad is not None]
    ctx.hooks.before_update()
    if ctx.scaler:
        ctx.scaler.unscale_(ctx.optimizer)  # clipping sees the true gradients
    norm = None
    if ctx.cfg.max_grad_norm is not None:
        norm = float((d.clip_grad_norm if d else ctx.hooks.clip_grad_norm)(params, ctx.cfg.max_grad_norm))
    # fp16: an infinite norm is an overflow the scaler handles (it skips the update and halves the scale)
    checked_norm = None if ctx.scaler else norm
    if state is not None and not finite_or_handle(loss_total, checked_norm, step=state.step + 1,
                                                  policy=ctx.cfg.nonfinite, run=ctx.run,
                                                  state=state):  # skipped: no update from this step
        ctx.optimizer.zero_grad(set_to_none=True)
        ctx.scheduler.step()
        return loss_total, units
    ctx.hooks.before_step()
    if ctx.scaler:
        ctx.scaler.step(ctx.optimizer)
        ctx.scaler.update()
    else:
        ctx.optimizer.step()
    ctx.scheduler.step()
    ctx.optimizer.zero_grad(set_to_none=True)
    ctx.hooks.after_step()
    return loss_total, units


def _checkpoint(ctx: FitContext, state: TrainState) -> None:
    if ctx.scaler is not None:
        state.loss_scale = ctx.scaler.state_dict()
    if ctx.dist is not None:  # rank 0 writes (DDP), or every rank its shard (FSDP)
        from lftrain.training.checkpoint import save_distributed

        protect = {state.best_step} if state.best_step is not None else set()
        return save_distributed(ctx.dist, ctx.run.checkpoints, ctx.model, ctx.optimizer, ctx.scheduler, state,
                                    ctx.cfg.keep_checkpoints, protect)
    save_checkpoint(ctx.run.checkpoints, ctx.model, ctx.optimizer, ctx.scheduler, state)
    rotate(ctx.run.checkpoints, ctx.cfg.keep_checkpoints, {state.best_step} if state.best_step is not None else set())


def _evaluate(ctx: FitContext, state: TrainState) -> bool:
    """Evaluate, record, update best and patience. Returns True when early stopping says stop."""
    assert ctx.evaluate is not None  # fit() evaluates only when there is an eval split
    metrics = ctx.evaluate()
    value = metrics.get(ctx.cfg.metric)
    if value is None:
        from lftrain.errors import InputError

        raise InputError(f"train.metric '{ctx.cfg.metric}' is not computed (available: {', '.join(metrics)})")
    record = {"event": "eval", "split": "eval", "step": state.step, "epoch": state.step / ctx.steps_per_epoch,
              **metrics}
    ctx.run.log_metrics(record)
    log.info("eval at step %d: %s", state.step,
             "  ".join(f"{k} {v:.4f}" for k, v in metrics.items() if isinstance(v, float)))
    if _better(value, state.best_metric, ctx.higher_is_better):
        state.best_metric, state.best_step, state.evals_without_improvement = value, state.step, 0
    else:
        state.evals_without_improvement += 1
    if ctx.on_eval is not None and ctx.on_eval(state.step, metrics) and state.step < ctx.total_steps:
        state.stopped_early = True  # the caller stops the run (a pruned trial); it still ends like any other
    patience = ctx.cfg.early_stopping_patience
    return patience is not None and state.evals_without_improvement >= patience


class _Window:
    """Loss and throughput since the last log line (evaluation and saving time excluded)."""

    def __init__(self) -> None:
        self.loss, self.units, self.samples, self.seconds = 0.0, 0, 0, 0.0

    def add(self, loss: float, units: int, samples: int, seconds: float) -> None:
        self.loss, self.units = self.loss + loss, self.units + units
        self.samples, self.seconds = self.samples + samples, self.seconds + seconds


def _log_train(ctx: FitContext, state: TrainState, w: _Window, progress: Progress) -> None:
    lr = float(ctx.scheduler.get_last_lr()[0])  # a float: the groups' lr are (build_optimizer)
    loss, sps, epoch = w.loss / max(w.units, 1), w.samples / max(w.seconds, 1e-9), state.step / ctx.steps_per_epoch
    ctx.run.log_metrics({"event": "train", "step": state.step, "epoch": epoch, "loss": loss, "lr": lr,
                         "samples_per_second": sps,
                         **({"loss_scale": ctx.scaler.get_scale()} if ctx.scaler is not None else {})})
    progress.update(state.step, epoch, loss, lr, sps, log_line=True)


def release_training_memory(ctx: FitContext) -> None:
    """After the last checkpoint: free what only training needs (optimizer moments, gradients, the levers'
    buffers and caches), so the final evaluation does not stack its memory on top of them."""
    ctx.optimizer.zero_grad(set_to_none=True)
    ctx.optimizer.state.clear()
    ctx.hooks.release()
    release_free_memory()  # tcmalloc keeps freed pages: the final evaluation would otherwise add to them


def fit(ctx: FitContext, state: TrainState) -> TrainState:
    """Train from `state` (fresh or restored from a checkpoint) to the end; returns the final state."""
    cfg = ctx.cfg
    micro = state.micro_batch_size or cfg.micro_batch_size or cfg.batch_size
    state.micro_batch_size = micro
    ctx.cap = ActivationCap(ctx.model, cfg.memory_cap_mb) if cfg.memory_cap_mb else None
    if cfg.log_samples:
        ctx.run.trim_samples(state.step)
    preempt = PreemptionWatch().install()  # SIGTERM: finish the step, checkpoint, exit 143 (training/signals.py)
    lengths = ctx.task.lengths(ctx.train_data)
    progress = Progress(ctx.total_steps, state.step, enabled_bar=False if ctx.dist and not ctx.dist.main else None)
    window = _Window()
    ctx.model.train()
    try:
        while state.step < ctx.total_steps and not state.stopped_early:
            batches = ctx.sampler.batches(state.epoch) if ctx.sampler is not None else epoch_batches(
                lengths, cfg.batch_size, cfg.seed, state.epoch, cfg.group_by_length, curriculum=ctx.curriculum)
            inputs = step_inputs(ctx.task, ctx.train_data, batches[state.batch_in_epoch:], micro, ctx.pad_id,
                                 cfg.num_workers if ctx.dist is None else -1)
            # a step's time includes fetching (collating) its batch, as the peer's train_runtime does;
            # evaluation and checkpoints after it are not training time
            t0 = time.perf_counter()
            for batch_idx, (prepared_micro, prepared) in zip(batches[state.batch_in_epoch:], inputs):
                if ctx.dist is not None:
                    ctx.dist.seed_step(cfg.seed, state.step)
                # out of memory (or over train.memory_cap_mb): retried at half the micro-batch (training/memory.py)
                # (the workers' micro-batches are used only while their size is the one being tried)
                (loss_sum, units), micro = with_backoff(
                    lambda m, b=batch_idx, pm=prepared_micro, p=prepared: _train_step(
                        ctx, b, m, p if pm == m else None, state),
                    micro, optimizer=ctx.optimizer, batch_size=cfg.batch_size, step=state.step + 1)
                state.micro_batch_size = micro
                if cfg.log_samples:
                    ctx.run.log_samples(state.step + 1, batch_idx)
                seconds = time.perf_counter() - t0
                state.step += 1
                state.batch_in_epoch += 1
                state.samples_seen += len(batch_idx)
                state.train_seconds += seconds
                window.add(loss_sum, units, len(batch_idx), seconds)
                epoch_done = state.batch_in_epoch == len(batches)
                if epoch_done:  # roll over before any checkpoint, so a resume starts the next epoch
                    state.epoch, state.batch_in_epoch = state.epoch + 1, 0
                last = state.step >= ctx.total_steps
                if state.step % cfg.log_every == 0 or last:
                    _log_train(ctx, state, window, progress)
                    window = _Window()
                maybe_kill(state.step)  # test-only: LFT_TEST_KILL_AT_STEP (training/faults.py)
                periodic_eval = cfg.eval_every is not None and state.step % cfg.eval_every == 0
                if ctx.evaluate is not None and (periodic_eval or (cfg.eval_every is None and epoch_done) or last):
                    stop = _evaluate(ctx, state)
                    if stop and not last:
                        state.stopped_early = True
                        log.info("early stopping: %s did not improve for %d evaluations (best %.4f at step %d)",
                                 cfg.metric, state.evals_without_improvement, state.best_metric, state.best_step)
                    _checkpoint(ctx, state)
                elif last or (cfg.save_every is not None and state.step % cfg.save_every == 0) or preempt.requested:
                    _checkpoint(ctx, state)
                if preempt.requested and not last:
                    preempt.stop(state.step)
                if last or state.stopped_early or epoch_done:
                    break
                t0 = time.perf_counter()
    finally:
        preempt.restore()
        progress.close()
    return state
