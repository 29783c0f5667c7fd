"""Speed behind one seam: everything lftrain changes about *how* a model computes, and nothing it learns.

`install()` applies the levers that fit a model and a run, logs one line per lever (on, or off and why), and
returns the small per-step hook object `fit()` calls. `train.accel: off` installs nothing: the plain Hugging Face
model trains with torch's own operators. Each lever is pure PyTorch and was measured to pay (docs/performance.md):

- dropout drawn as the gaps between drops (`dropout.py`), also on attention probabilities (`attention()`);
- the first-token-only last layer of BERT-family classifiers (`first_token.py`);
- the frozen-prefix cache: frozen, dropout-free bottom layers computed once (`frozen_cache.py`);
- sparse embedding gradients (`sparse_grads.py`);
- frozen base weights stored in bf16 in adapter runs under bf16 autocast (`adapter_bf16.py`);
- a frozen speech encoder's outputs computed once per clip (`encoder_cache.py`).

Batching (length groups, padding to a multiple of 8) lives in `data/`, fused AdamW in `training/optim.py`, and the
allocator choice (`allocator.py`) is made when the `lft` process starts, before any recipe is read.
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # this package is imported by the `lft` command before torch (allocator.py): keep it light
    import numpy as np
    import torch
    from torch import nn

    from lftrain.accel.encoder_cache import EncoderCache
    from lftrain.accel.frozen_cache import FrozenPrefixCache
    from lftrain.accel.sparse_grads import SparseEmbeddingGrads
    from lftrain.tasks.base import Batches

log = logging.getLogger("lftrain")
SETTINGS = ("auto", "off")


def attention(setting: str, device: torch.device, accel: str) -> str:
    """The attention implementation `model.attention` asks for. `auto`: SDPA on GPUs (flash / memory-efficient
    kernels); on the CPU lftrain's eager kernel with fast dropout when accel is on (it trained faster there than
    SDPA and eager attention), else SDPA, transformers' own default."""
    if setting != "auto":
        return setting
    if device.type == "cpu" and accel == "auto":
        from lftrain.accel.dropout import register_attention

        return register_attention()
    return "sdpa"


@dataclass
class StepHooks:
    """What fit() calls around each step. Without levers every hook is plain PyTorch."""

    lines: list[str] = field(default_factory=list)  # one per lever: on, or off and why (logged by install)
    dropout: str = "torch"  # which dropout the steps draw (the random streams differ); recorded in the manifest
    cache: FrozenPrefixCache | EncoderCache | None = None  # replayed around each training forward
    sparse: SparseEmbeddingGrads | None = None

    def forward(self, indices: np.ndarray, batch: dict[str, torch.Tensor]):
        """Context of one micro-batch's forward: the frozen prefix replayed from the cache when there is one."""
        return self.cache.replaying(indices, batch) if self.cache is not None else contextlib.nullcontext()

    def clip_grad_norm(self, params: list[torch.Tensor], max_norm: float) -> torch.Tensor:
        """Global-norm clipping that reads only the stored rows of sparse gradients."""
        from lftrain.accel.sparse_grads import clip_grad_norm

        return clip_grad_norm(params, max_norm)

    def before_update(self) -> None:
        """Gradients are complete (sparse ones coalesced: a token seen twice is one row)."""
        if self.sparse is not None:
            self.sparse.coalesce()

    def before_step(self) -> None:
        """The update goes ahead: sparse gradients into the dense buffers AdamW reads."""
        if self.sparse is not None:
            self.sparse.densify()

    def after_step(self) -> None:
        if self.sparse is not None:
            self.sparse.reset()

    def release(self) -> None:
        """Training is over: drop what only training needs (cache, gradient buffers)."""
        for part in (self.sparse, self.cache):
            if part is not None:
                part.release()


@dataclass
class Run:
    """What the levers need to know about the run (filled by the orchestrator)."""

    device: torch.device
    precision: str
    distributed: bool = False
    compiled: bool = False
    checkpointing: bool = False
    augments_input: bool = False  # the inputs change between epochs (augmentation, masking): nothing to cache
    token_inputs: bool = True  # the inputs are token sequences (the cache stores those)
    streamed: bool = False  # the training rows stream from disk (data.streaming)
    spill_dir: Path | None = None  # where a cache too large for memory is memory-mapped
    task: Batches | None = None  # what batches the encoded training rows: the cache is built from
    data: dict[str, np.ndarray] | None = None  # them, `batch_size` rows at a time
    batch_size: int = 64
    pad_id: int = 0


def install(model: nn.Module, setting: str, run: Run, *, skip: frozenset[str] = frozenset()) -> StepHooks:
    """Install the levers that apply to `model` (see the module docstring) and return the step hooks. `skip`
    leaves named levers out although they apply (benchmarks measure each one so)."""
    hooks = StepHooks()
    if setting == "off":
        hooks.lines.append("accel: off (train.accel: off): torch's operators throughout")
    else:
        for name, lever in LEVERS.items():
            if name in skip:
                hooks.lines.append(f"{name}: skipped")
            else:
                lever(model, run, hooks)
    return _logged(hooks)


def _logged(hooks: StepHooks) -> StepHooks:
    for line in hooks.lines:
        log.info("%s", line)
    return hooks


def install_for_inference(model: nn.Module, setting: str) -> None:
    """The levers that make inference cheaper (the first-token-only last layer): the same outputs for less work."""
    if setting != "off":
        from lftrain.accel.first_token import install_first_token_only

        install_first_token_only(model)


def _install_dropout(model: nn.Module, run: Run, hooks: StepHooks) -> None:
    from lftrain.accel.dropout import install_fast_dropout

    if run.device.type != "cpu" or run.compiled:
        hooks.lines.append("fast dropout: off (torch's dropout is fused on GPUs and under train.compile)")
        return
    n = install_fast_dropout(model)
    hooks.dropout = "gaps" if n else "torch"
    hooks.lines.append(f"fast dropout: on ({n} dropout modules draw the gaps between drops)" if n
                       else "fast dropout: off (the model has no dropout modules)")


def _install_first_token(model: nn.Module, run: Run, hooks: StepHooks) -> None:
    from lftrain.accel.first_token import install_first_token_only

    # transformers checkpoints a layer through its class's forward: a layer with its own would silently stop
    # being checkpointed.
    why = "train.gradient_checkpointing recomputes the layers" if run.checkpointing else install_first_token_only(model)
    if why is None:
        hooks.lines.append("first-token-only last layer: on (the head reads only the first token)")
    elif "head may read more" not in why:  # every non-BERT model would say so: only say what is surprising
        hooks.lines.append(f"first-token-only last layer: off ({why})")


def _install_sparse(model: nn.Module, run: Run, hooks: StepHooks) -> None:
    from lftrain.accel.sparse_grads import SparseEmbeddingGrads

    if run.distributed:  # DDP/FSDP reduce dense gradients
        return
    sparse = SparseEmbeddingGrads(model)
    if sparse.active:
        hooks.sparse = sparse
        hooks.lines.append(f"sparse embedding gradients: on ({len(sparse.embeddings)} embedding tables)")


def _install_bf16_base(model: nn.Module, run: Run, hooks: StepHooks) -> None:
    from lftrain.accel.adapter_bf16 import bf16_frozen_base

    if run.precision == "bf16":
        n = bf16_frozen_base(model)
        if n:
            hooks.lines.append(f"bf16 frozen base: on ({n} frozen adapter-base weights stored in bf16 once)")


def _install_cache(model: nn.Module, run: Run, hooks: StepHooks) -> None:
    import torch

    from lftrain.accel.frozen_cache import FrozenPrefixCache, plan

    if run.data is None or not any(not p.requires_grad for p in model.parameters()):
        return  # nothing is frozen: nothing to say
    if run.distributed:
        k, why = -1, "each process would cache its own shard; not supported with several processes"
    elif not run.token_inputs:
        k, why = -1, "not supported for this task's inputs (they are not token sequences)"
    elif run.streamed:
        k, why = -1, "the training rows stream from disk (data.streaming): it would hold every row's states"
    else:
        k, why = plan(model, augments_input=run.augments_input)
    if k < 0:
        hooks.lines.append(f"frozen-prefix cache: off ({why})")
        return
    hooks.cache = FrozenPrefixCache(model, k)
    t0 = time.perf_counter()
    hooks.cache.build(run.task, run.data, batch_size=run.batch_size, precision=run.precision, device=run.device,
                      pad_id=run.pad_id, spill_dir=run.spill_dir or Path("."),
                      dtype=torch.bfloat16 if run.precision == "bf16" else torch.float32)
    hooks.lines.append(f"frozen-prefix cache: on ({why}; built in {time.perf_counter() - t0:.1f}s)")


def _install_encoder_cache(model: nn.Module, run: Run, hooks: StepHooks) -> None:
    import torch

    from lftrain.accel.encoder_cache import EncoderCache, frozen_encoder

    if run.data is None or hooks.cache is not None or "input_features" not in run.data:
        return  # not a speech encoder-decoder's rows: nothing to say
    encoder, why = frozen_encoder(model, augments_input=run.augments_input)
    if encoder is not None and (run.distributed or run.streamed):
        encoder, why = None, "several processes or streamed rows"
    if encoder is None:
        hooks.lines.append(f"encoder cache: off ({why})")
        return
    cache = EncoderCache(encoder)
    t0 = time.perf_counter()
    cache.build(run.data, batch_size=run.batch_size, precision=run.precision, device=run.device,
                dtype=torch.bfloat16 if run.precision == "bf16" else torch.float32)
    hooks.cache = cache
    hooks.lines.append(f"encoder cache: on ({why}; {len(cache.states)} clips encoded once in "
                       f"{time.perf_counter() - t0:.1f}s)")


LEVERS = {"dropout": _install_dropout, "first_token": _install_first_token, "sparse_grads": _install_sparse,
          "bf16_base": _install_bf16_base, "frozen_cache": _install_cache, "encoder_cache": _install_encoder_cache}
