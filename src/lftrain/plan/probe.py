"""The model a recipe would train, without its weights: a skeleton on the meta device, the activations one
micro-batch saves for backward (counted on fake tensors), and a short timed probe of one real layer.

The skeleton is the task's model class built from config.json alone (`from_config` under the meta device: no
weight is read or even allocated), made shallower, adapted and checkpointed exactly as the run would make it,
through the run's own functions. For the count, each parameter is swapped for a fake tensor on the run's device
type (torch's FakeTensorMode: shapes, dtypes and devices, no data), so the forward takes the same code path as
the real one, autocast included; autograd's saved-tensor hook then sees every tensor the backward would keep,
and sums each distinct storage that is not a parameter (training/memory.py's ActivationCap counts real tensors
the same way). A unit test checks that the fake count equals the real one on a tiny model.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from lftrain.models.loading import DTYPES

if TYPE_CHECKING:
    from lftrain.config.schema import Recipe
    from lftrain.models.loading import ModelSource
    from lftrain.tasks.base import Task

log = logging.getLogger("lftrain")


@dataclass(frozen=True)
class Shape:
    """The longest micro-batch a recipe trains on: `rows` sequences of `length` tokens."""

    rows: int
    length: int

    @property
    def tokens(self) -> int:
        return self.rows * self.length


@dataclass(frozen=True)
class Activations:
    """What one micro-batch's forward keeps for backward (bytes), and the logits it returns."""

    saved: int  # every distinct non-parameter storage autograd saved (with checkpointing: outside the blocks)
    largest: int  # the largest single saved storage
    logits_numel: int
    logits_bytes: int  # per element, in the dtype the model returns them
    exact: bool  # counted on fake tensors (else the analytic decoder formula)


# ---- the skeleton ------------------------------------------------------------------------------------------

def auto_class(task: Task):
    """The transformers auto class the task's `load_model` uses, as the task declares it (for the skeleton; never
    loaded from weights)."""
    import transformers

    return getattr(transformers, task.auto_model)


def label_count(task_cfg: Any) -> int:
    """How many outputs a classifier head has: the recipe's `task.labels` when it lists them, else 2."""
    labels = getattr(task_cfg, "labels", None)
    return len(labels) if isinstance(labels, (list, tuple, dict)) and labels else 2


@contextlib.contextmanager
def _quiet():
    """Building the skeleton runs the adaptation, which logs what it adapts: the run will say so itself."""
    logger = logging.getLogger("lftrain")
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)


def skeleton(recipe: Recipe, task: Task, source: ModelSource, *, dtype: str, attention: str,
             layers: int | None = None, device: str = "meta") -> nn.Module:
    """The recipe's model without its weights: on `device` (meta: nothing allocated), its parameters in `dtype`,
    made shallower (`model.keep_layers`, or only `layers` blocks), adapted, and checkpointed as the run does."""
    from transformers import AutoConfig

    from lftrain.models.adaptation import build_adaptation
    from lftrain.models.quantized import master_weights
    from lftrain.models.student import drop_layers
    from lftrain.training.distributed import gradient_checkpointing

    config = AutoConfig.from_pretrained(source.path, local_files_only=True,
                                        trust_remote_code=recipe.model.trust_remote_code)
    if layers is not None:
        config.num_hidden_layers = layers
    auto = auto_class(task)
    extra = {"num_labels": label_count(recipe.task)} if auto.__name__.endswith("Classification") else {}
    for key, value in extra.items():
        setattr(config, key, value)
    with _quiet(), torch.device(device):
        model = auto.from_config(config, attn_implementation=attention, dtype=getattr(torch, DTYPES[dtype]),
                                 trust_remote_code=recipe.model.trust_remote_code)
        if layers is None:
            model = drop_layers(model, recipe.model.keep_layers)
        model = build_adaptation(recipe.adaptation).apply(model)
        master_weights(model)  # what trains is fp32 whatever the base's dtype, as in the run
        if recipe.train.gradient_checkpointing:
            gradient_checkpointing(model)
    model.train()
    return model


def layer_count(model: nn.Module) -> int:
    from lftrain.models.layers import find_layers

    stack = find_layers(model)
    return len(stack.layers) if stack is not None else 1


# ---- a micro-batch of the recipe's longest shape -----------------------------------------------------------

def longest_shape(recipe: Recipe) -> Shape:
    """`train.micro_batch_size` (or the batch) rows of `task.max_length` tokens. Packed SFT rows are
    `task.pack_length` long and hold as many whole examples as fit, so a micro-batch of full-length examples
    needs ceil(micro × max_length / pack_length) of them (one row when they all fit in it)."""
    cfg = recipe.task
    micro = recipe.train.micro_batch_size or recipe.train.batch_size
    length = int(getattr(cfg, "max_length", None) or 128)
    if getattr(cfg, "packing", False):
        pack = int(getattr(cfg, "pack_length", None) or length)
        per_row = max(1, pack // length)
        return Shape(math.ceil(micro / per_row), pack)
    return Shape(micro, length)


def _inputs(model: nn.Module, shape: Shape, device: str) -> dict[str, torch.Tensor]:
    """Model inputs of `shape`: token ids, positions (as packed SFT rows pass them) or an attention mask."""
    ids = torch.zeros((shape.rows, shape.length), dtype=torch.long, device=device)
    inputs: dict[str, Any] = {"input_ids": ids}
    if "position_ids" in _forward_args(model):
        inputs["position_ids"] = torch.arange(shape.length, device=device).expand(shape.rows, -1)
        inputs["use_cache"] = False
    else:
        inputs["attention_mask"] = torch.ones_like(ids)
    return inputs


def _forward_args(model: nn.Module) -> set[str]:
    import inspect

    from lftrain.models.layers import unwrap

    return set(inspect.signature(unwrap(model).forward).parameters)


# ---- counting what the backward keeps ---------------------------------------------------------------------

def _to_fake(model: nn.Module, mode, device: str) -> None:
    """Swap every parameter and buffer for a fake tensor of the same shape and dtype on `device` (tied weights
    stay tied). peft cannot build its layers under FakeTensorMode itself, hence the swap after building."""
    memo: dict[int, nn.Parameter] = {}
    for module in model.modules():
        for name, p in list(module._parameters.items()):
            if p is not None:
                if id(p) not in memo:
                    with mode:
                        fake = torch.empty(p.shape, dtype=p.dtype, device=device)
                    memo[id(p)] = nn.Parameter(fake, requires_grad=p.requires_grad)
                module._parameters[name] = memo[id(p)]
        for name, b in list(module._buffers.items()):
            if b is not None:
                with mode:
                    module._buffers[name] = torch.empty(b.shape, dtype=b.dtype, device=device)


def _autocast(precision: str, device: str):
    if precision in ("bf16", "fp16"):
        return torch.autocast(device, dtype=torch.bfloat16 if precision == "bf16" else torch.float16)
    return contextlib.nullcontext()


def count_saved(model: nn.Module, inputs: dict[str, Any], precision: str, device: str) -> Activations:
    """Run one forward under autograd's saved-tensor hook and sum each distinct non-parameter storage.
    `model` and `inputs` may be real or fake tensors; the count is the same."""
    params = {p.untyped_storage()._cdata for p in model.parameters()}
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        key = storage._cdata
        if key not in params and key not in seen:
            seen[key] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), _autocast(precision, device):
        out = model(**inputs)
    logits = out.logits if hasattr(out, "logits") else out[0]
    return Activations(sum(seen.values()), max(seen.values(), default=0), logits.numel(),
                       logits.element_size(), exact=True)


def fake_activations(model: nn.Module, shape: Shape, precision: str, device: str) -> Activations:
    """count_saved on fake tensors: the skeleton's parameters swapped for fakes on `device` (cpu or cuda)."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    mode = FakeTensorMode(allow_non_fake_inputs=True)
    _to_fake(model, mode, device)
    with mode:
        return count_saved(model, _inputs(model, shape, device), precision, device)


def analytic_activations(config: Any, shape: Shape, compute_bytes: int, checkpointing: bool) -> Activations:
    """When the fake forward fails (an operator without a fake kernel): Korthikanti et al. (2022)'s count for a
    transformer block, s·b·h·(34 + 5·a·s/h) bytes at 16 bits (a: heads), scaled to the compute dtype; with
    checkpointing only each block's input (2·s·b·h) is kept. The logits are b·s·vocab."""
    h = int(getattr(config, "hidden_size", 768))
    heads = int(getattr(config, "num_attention_heads", 12))
    n = int(getattr(config, "num_hidden_layers", 12))
    vocab = int(getattr(config, "vocab_size", 2))
    s, b = shape.length, shape.rows
    per_layer = s * b * h * (34 + 5 * heads * s / h) * compute_bytes / 2
    saved = n * s * b * h * compute_bytes if checkpointing else n * per_layer
    return Activations(int(saved), int(b * heads * s * s * compute_bytes), b * s * vocab, compute_bytes, exact=False)


# ---- a short timed probe ------------------------------------------------------------------------------------

def time_step(recipe: Recipe, task: Task, source: ModelSource, *, dtype: str, attention: str, precision: str,
              shape: Shape, tokens_per_step: int, budget_s: float = 5.0) -> float | None:
    """Seconds per optimiser step, from one real block (random weights, the model's sizes, adapted as the run
    adapts it) timed forward and backward at a short token count on the CPU, scaled by tokens and layers. The
    embeddings and head are split off by their share of the FLOPs. None when the probe cannot run."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(source.path, local_files_only=True,
                                        trust_remote_code=recipe.model.trust_remote_code)
    n_layers = int(getattr(config, "num_hidden_layers", 1) or 1)
    probe_len = min(shape.length, 128)
    try:
        model = skeleton(recipe, task, source, dtype=dtype, attention=attention, layers=1, device="cpu")
    except Exception as exc:  # noqa: BLE001  (an estimate only: the plan goes on without it)
        log.debug("memory plan: step-time probe skipped (%s)", exc)
        return None
    inputs = _inputs(model, Shape(1, probe_len), "cpu")
    seconds: list[float] = []
    deadline = time.perf_counter() + budget_s
    while len(seconds) < 8 and time.perf_counter() < deadline:
        start = time.perf_counter()
        with _autocast(precision, "cpu"):
            out = model(**inputs)
        out.logits.float().sum().backward()
        model.zero_grad(set_to_none=True)
        seconds.append(time.perf_counter() - start)
    log.debug("memory plan: step-time probe at %d tokens: %s s", probe_len, [round(t, 3) for t in seconds])
    probe = min(seconds[2:] or seconds)  # the first calls pay one-off costs (allocation, kernel choice)
    layer, head = _flops_per_token(config, probe_len), 2 * config.hidden_size * getattr(config, "vocab_size", 0)
    run_layer = _flops_per_token(config, shape.length)
    per_token = probe / probe_len
    scale = (n_layers * run_layer + head) / (layer + head)
    return per_token * scale * tokens_per_step


def _flops_per_token(config: Any, length: int) -> float:
    """Forward FLOPs of one block per token: 2 per weight (attention and MLP projections) plus the attention
    scores and their weighted sum (4·length·hidden)."""
    h = config.hidden_size
    inter = getattr(config, "intermediate_size", 4 * h)
    heads = config.num_attention_heads
    kv = getattr(config, "num_key_value_heads", heads) or heads
    head_dim = getattr(config, "head_dim", None) or h // heads
    attn = h * heads * head_dim * 2 + h * kv * head_dim * 2
    mlp = 3 * h * inter if getattr(config, "hidden_act", "") in ("silu", "swiglu") else 2 * h * inter
    return 2 * (attn + mlp) + 4 * length * h
