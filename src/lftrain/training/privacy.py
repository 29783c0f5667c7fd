"""Differentially private training (`train.privacy`): DP-SGD through Opacus, inside the one loop.

    vet_recipe  the recipe as it will run under privacy (speed levers off, fp32, no global clipping), or an
                InputError (exit 2) for what this cannot train privately
    vet_data    δ below 1/n, no repeated training rows, a batch no larger than the data
    attach      per-example gradients (Opacus's GradSampleModule hooks on the model), the noisy optimiser
                (Opacus's DPOptimizer), Poisson sampling, the noise multiplier for the target ε
    record      the ε the run's steps spent (Opacus's accountant) into manifest.json, before the report is written

The accountant's analysis (the sampled Gaussian mechanism) assumes what this module provides: every step takes each
training row independently with probability q = batch_size / n (Poisson sampling, so batch sizes vary and a step
may be empty: it still adds noise), each row's gradient is clipped to `max_grad_norm`, and Gaussian noise of
standard deviation `noise_multiplier * max_grad_norm` is added to their sum before it is divided by the *expected*
batch size. The accountant's history is a pure function of the step count (one noise multiplier and sample rate for
the whole run), and the step count is in every checkpoint: a resumed run reports the ε of all its steps.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from lftrain.errors import InputError
from lftrain.methods import METHODS
from lftrain.tasks import TASKS

if TYPE_CHECKING:
    import torch
    from torch import nn

    from lftrain.config.schema import TrainConfig
    from lftrain.training.checkpoint import TrainState
    from lftrain.training.rundir import RunDir

log = logging.getLogger("lftrain")

_SAMPLER_STREAM = 0x5D9  # keeps the Poisson draws apart from the shuffle's random stream


# ---- the recipe and the data -------------------------------------------------------------------------------

def _private(registry) -> list[str]:
    """The registered tasks or methods that declare `private_training`."""
    return [name for name, cls in registry.items() if cls.private_training]


def _refusals(recipe) -> list[str]:
    """What train.privacy cannot run with, each with the key to change."""
    cfg, out = recipe.train, []
    if not TASKS.get(recipe.task.type).private_training:
        out.append(f"task.type {recipe.task.type} (supported: {', '.join(_private(TASKS))}: one label and one loss "
                   "term per row, so a row is what the guarantee protects)")
    if not METHODS.get(recipe.method.type).private_training:
        out.append(f"method {recipe.method.type} (supported: {', '.join(_private(METHODS))}; other methods read data "
                   "outside the clipped per-example gradients: unlabelled text, a teacher, pairs)")
    if cfg.precision in ("bf16", "fp16"):
        out.append(f"train.precision {cfg.precision} (per-example gradients are computed in fp32: use fp32 or auto)")
    if recipe.data.streaming:
        out.append("data.streaming (Poisson sampling draws from every training row each step)")
    if cfg.curriculum is not None:
        out.append("train.curriculum (it picks rows by a score of the data; the accountant assumes uniform sampling)")
    if cfg.gradient_checkpointing:
        out.append("train.gradient_checkpointing (recomputed forwards would record each layer's inputs twice)")
    if cfg.compile:
        out.append("train.compile (Opacus's per-example hooks are not compiled)")
    if cfg.nonfinite == "skip":
        out.append("train.nonfinite: skip (skipping a step because of one row's loss depends on that row; use stop)")
    sources = recipe.data.train if isinstance(recipe.data.train, list) else [recipe.data.train]
    if any(getattr(src, "weight", 1.0) > 1.0 for src in sources):
        out.append("data.train weight above 1 (repeated rows would be sampled more often than the accountant assumes)")
    if recipe.stages:
        out.append("stages (each stage would spend its own budget; run them as separate private runs)")
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        out.append("several processes (torchrun / --nproc): private training runs in one process")
    return out


def vet_recipe(recipe):
    """The recipe as it runs under train.privacy (or unchanged without it). InputError lists every conflict."""
    if recipe.train.privacy is None:
        return recipe
    from lftrain.extras import need

    need("opacus", "train.privacy")
    refused = _refusals(recipe)
    if refused:
        raise InputError("train.privacy cannot be used with: " + "; ".join(refused) + " (see docs/privacy.md)")
    cfg = recipe.train
    update = {"accel": "off", "max_grad_norm": None, "precision": "fp32"}
    changed = {k: v for k, v in update.items() if getattr(cfg, k) != v}
    if changed:
        log.info("train.privacy: %s (the speed levers change how gradients are computed and per-example gradients "
                 "need the plain model in fp32; each example's gradient is clipped at privacy.max_grad_norm %g "
                 "instead of the batch's)", ", ".join(f"train.{k} set to {v}" for k, v in changed.items()),
                 cfg.privacy.max_grad_norm)
    return recipe.model_copy(update={"train": cfg.model_copy(update=update)})


def default_delta(n: int) -> float:
    """The largest power of ten below 1/n."""
    return 10.0 ** -(math.floor(math.log10(n)) + 1)


def vet_data(train: TrainConfig, data) -> None:
    """Checks that need the training rows: δ < 1/n, each row once, q = batch_size / n at most 1."""
    cfg = train.privacy
    if cfg is None:
        return
    n = len(data.train)
    if cfg.delta is not None and cfg.delta >= 1.0 / n:
        raise InputError(f"train.privacy.delta {cfg.delta:g} must be below 1/n = {1.0 / n:.3g} ({n} training rows): "
                         f"a larger δ allows leaking whole rows (leave it out for {default_delta(n):g})")
    if "rare_class_repeats" in data.stats:
        raise InputError("train.privacy: task.imbalance repeats the rows of rare classes, so a row could be sampled "
                         "more often than the accountant assumes; set task.imbalance: off")
    if train.batch_size > n:
        raise InputError(f"train.privacy: train.batch_size {train.batch_size} is larger than the {n} training "
                         "rows (the sample rate batch_size / n must be at most 1)")


# ---- sampling -----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class PoissonSampler:
    """Each step takes every row independently with probability `rate` (Opacus's UniformWithReplacementSampler).
    An epoch's batches are a pure function of (seed, epoch), like the shuffled ones: a resumed run draws the same."""

    n: int
    rate: float
    seed: int
    steps_per_epoch: int

    def batches(self, epoch: int) -> list[np.ndarray]:
        rng = np.random.default_rng([self.seed, epoch, _SAMPLER_STREAM])
        return [np.flatnonzero(rng.random(self.n) < self.rate) for _ in range(self.steps_per_epoch)]


# ---- the model and the optimiser ----------------------------------------------------------------------------

def unsupported_layers(model) -> list[str]:
    """'name (Type)' of every module holding trainable weights that Opacus has no per-example gradient for, or that
    keeps buffers (BatchNorm's running statistics would leak outside the noise)."""
    from opacus import GradSampleModule
    from opacus.utils.module_utils import trainable_modules

    return [f"{name or 'the model'} ({type(m).__name__})" for name, m in trainable_modules(model)
            if type(m) not in GradSampleModule.GRAD_SAMPLERS or any(True for _ in m.buffers(recurse=False))]


def make_private(model, optimizer, *, noise_multiplier: float, max_grad_norm: float, expected_batch_size: int):
    """(detach, noisy optimiser). The hooks live on `model`'s own layers, so the loop keeps calling (and
    checkpointing) the plain model; `detach()` removes them."""
    from opacus import GradSampleModule

    bad = unsupported_layers(model)
    if bad:
        shown = ", ".join(bad[:6]) + (f" and {len(bad) - 6} more" if len(bad) > 6 else "")
        raise InputError(f"train.privacy: Opacus computes no per-example gradient for these trainable layers: {shown}. "
                         "Freeze them, or use adaptation full / lora / freeze on a model of Linear, Embedding and "
                         "LayerNorm layers (docs/privacy.md)")
    handles = _per_example_lookups(model)
    gsm = GradSampleModule(model, batch_first=True, loss_reduction="sum", strict=True)
    # Opacus's backward hooks also sit on the first layer, whose inputs (token ids) need no gradient: torch warns
    warnings.filterwarnings("ignore", message="Full backward hook is firing when gradients are computed with "
                            "respect to module outputs", category=UserWarning)

    def detach() -> None:
        gsm.remove_hooks()
        for h in handles:
            h.remove()
    return detach, _noisy_optimizer_class()(optimizer, noise_multiplier=noise_multiplier, max_grad_norm=max_grad_norm,
                                         expected_batch_size=expected_batch_size, loss_reduction="mean")


def _per_example_lookups(model) -> list:
    """BERT-family models look up their position embeddings with one row of ids shared by the whole batch
    ([1, length]), so Opacus would see one example holding the batch's summed gradient. Trainable embeddings given
    such a row get it repeated for each example instead: the same output, a gradient per example."""
    import torch

    batch = [0]

    def note_batch(_module, args, kwargs):
        first = next((v for v in (*args, *kwargs.values()) if isinstance(v, torch.Tensor)), None)
        batch[0] = 0 if first is None else int(first.shape[0])

    def expand(_module, args):
        ids = args[0]
        if ids.dim() >= 1 and ids.shape[0] == 1 and batch[0] > 1:
            return (ids.expand(batch[0], *ids.shape[1:]), *args[1:])
        return None

    return [model.register_forward_pre_hook(note_batch, with_kwargs=True)] + [
        m.register_forward_pre_hook(expand) for m in model.modules()
        if isinstance(m, torch.nn.Embedding) and m.weight.requires_grad]


def _noisy_optimizer_class():
    from opacus.optimizers import DPOptimizer

    class StepDPOptimizer(DPOptimizer):
        """Opacus's DPOptimizer for fit()'s step. fit() backpropagates the step's summed loss divided by its row
        count, over one or more micro-batches; Opacus expects per-example gradients of a summed loss, one batch per
        step. So before clipping, each step's per-example gradients are joined and multiplied by their count."""

        def pre_step(self, closure=None):
            _per_example_gradients(self)
            return super().pre_step(closure)

        # DPOptimizer skips Optimizer.__init__, so step hooks (the out-of-memory back-off's) go to the wrapped
        # optimizer: they fire when the update itself starts, after clipping and noise, which touch no weight
        def register_step_pre_hook(self, hook):
            return self.original_optimizer.register_step_pre_hook(hook)

        def register_step_post_hook(self, hook):
            return self.original_optimizer.register_step_post_hook(hook)

    return StepDPOptimizer


def _per_example_gradients(opt) -> None:
    used = [p for p in opt.params if p.grad_sample is not None]
    rows = len(opt._get_flat_grad_sample(used[0])) if used else 0  # 0: an empty Poisson batch, a step of noise alone
    for p in opt.params:
        if p.grad_sample is None:  # a weight the forward did not use (a pooler under mean pooling): zero per row
            p.grad_sample = p.new_zeros((rows, *p.shape))
            continue
        g = opt._get_flat_grad_sample(p)  # micro-batches joined (a new tensor), or the one batch's (ours to scale)
        p.grad_sample = g.mul_(len(g))


@contextlib.contextmanager
def _quiet_accountant():
    """Opacus's RDP analysis warns when its best order is the largest it tries (small budgets, few steps): the bound
    is then looser, never wrong, and the user can do nothing about it."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Optimal order is the largest alpha", category=UserWarning)
        yield


# ---- the run --------------------------------------------------------------------------------------------------

@dataclass
class PrivateTraining:
    """What attach() set up, and the accounting of it."""

    accountant: str
    epsilon: float  # the target
    delta: float
    max_grad_norm: float
    noise_multiplier: float
    sample_rate: float
    expected_batch_size: int
    planned_steps: int
    sampler: PoissonSampler
    detach: Any = None  # removes the per-example hooks

    def spent(self, steps: int) -> float:
        """ε after `steps` steps, from Opacus's accountant."""
        from opacus.accountants import create_accountant

        if steps == 0:
            return 0.0
        acc = create_accountant(mechanism=self.accountant)
        acc.history = [(self.noise_multiplier, self.sample_rate, steps)]
        with _quiet_accountant():
            return float(acc.get_epsilon(delta=self.delta))

    def manifest(self) -> dict[str, Any]:
        from importlib import metadata

        return {"target_epsilon": self.epsilon, "delta": self.delta, "max_grad_norm": self.max_grad_norm,
                "noise_multiplier": self.noise_multiplier, "sample_rate": self.sample_rate,
                "expected_batch_size": self.expected_batch_size, "planned_steps": self.planned_steps,
                "accountant": self.accountant, "sampling": "poisson", "training_rows": self.sampler.n,
                "library": f"opacus {metadata.version('opacus')}", "secure_mode": False,
                "covers": "each training row; the eval split (checkpoint selection) and the test split are not "
                          "protected"}


def attach(cfg: TrainConfig, model: nn.Module, optimizer: torch.optim.Optimizer, n: int, total_steps: int,
           steps_per_epoch: int, *, distributed: bool,
           precision: str) -> tuple[PrivateTraining | None, torch.optim.Optimizer]:
    """Under train.privacy: hooks on `model`, the optimiser made noisy (returned in place of `optimizer`), the noise
    multiplier for the target ε over the run's planned steps on `n` rows. Called after the optimiser and schedule
    exist, before the manifest is written. Without train.privacy: (None, `optimizer`)."""
    if cfg.privacy is None:
        return None, optimizer
    from opacus.accountants.utils import get_noise_multiplier

    if distributed:
        raise InputError("train.privacy: private training runs in one process (no --nproc / torchrun)")
    if precision != "fp32":
        raise InputError(f"train.privacy: per-example gradients need fp32 (precision resolved to {precision})")
    pc, rate = cfg.privacy, cfg.batch_size / n
    delta = pc.delta if pc.delta is not None else default_delta(n)
    try:
        with _quiet_accountant():
            sigma = get_noise_multiplier(target_epsilon=pc.epsilon, target_delta=delta, sample_rate=rate,
                                         steps=total_steps, accountant=pc.accountant)
    except ValueError as exc:  # Opacus: "The privacy budget is too low."
        raise InputError(f"train.privacy: no noise level reaches ε {pc.epsilon:g} at δ {delta:g} over "
                         f"{total_steps} steps at sample rate {rate:.4g} ({exc}); raise epsilon or train for fewer "
                         "steps") from None
    detach, optimizer = make_private(model, optimizer, noise_multiplier=sigma, max_grad_norm=pc.max_grad_norm,
                                     expected_batch_size=cfg.batch_size)
    _warn_memory(model, cfg.batch_size)
    private = PrivateTraining(pc.accountant, pc.epsilon, delta, pc.max_grad_norm, sigma, rate, cfg.batch_size,
                              total_steps, PoissonSampler(n, rate, cfg.seed, steps_per_epoch), detach)
    log.info("train.privacy: ε %g, δ %g over %d steps: noise multiplier %.4f at sample rate %.5f (Poisson, expected "
             "batch %d of %d rows); each example's gradient clipped at %g; accountant %s", pc.epsilon, delta,
             total_steps, sigma, rate, cfg.batch_size, n, pc.max_grad_norm, pc.accountant)
    return private, optimizer


def _warn_memory(model, batch_size: int) -> None:
    """Opacus keeps one gradient per example for every trainable weight: a token-embedding matrix alone costs
    vocabulary x width floats per example (3 GB at batch 64 for MiniLM's 30k x 384)."""
    per_example = sum(p.numel() for p in model.parameters() if p.requires_grad) * 4
    if per_example * batch_size > 2 * 2**30:
        log.warning("train.privacy: per-example gradients need ~%.1f GB per step (%.0f MB per example x batch %d); "
                    "adaptation: {type: freeze} (embeddings frozen) or lora needs far less (docs/privacy.md)",
                    per_example * batch_size / 2**30, per_example / 2**20, batch_size)


def record(private: PrivateTraining | None, run: RunDir, state: TrainState) -> None:
    """The ε spent by the steps taken (all of them, across resumes) into manifest.json; the hooks come off, so the
    final evaluation and the saved model are the plain model."""
    if private is None:
        return
    from lftrain.files import write_json_atomic

    spent = private.spent(state.step)
    path = run.path / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["privacy"] = {**manifest.get("privacy", {}), "epsilon_spent": spent, "steps": state.step}
    write_json_atomic(path, manifest)
    run.log_metrics({"event": "privacy", "step": state.step, "epsilon": spent, "delta": private.delta,
                       "noise_multiplier": private.noise_multiplier, "sample_rate": private.sample_rate})
    log.info("train.privacy: (ε %.4f, δ %g) spent over %d steps (target ε %g)", spent, private.delta, state.step,
             private.epsilon)
    private.detach()
