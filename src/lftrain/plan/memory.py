"""The memory plan: the peak memory a recipe's training would take, by component, predicted before any weight
is loaded, and whether it fits the memory available (RAM on the CPU, the GPU's memory on a GPU).

Components (MB): `runtime` (this process as it is: Python, torch, transformers; on a GPU the CUDA context),
`weights` (every base parameter at its load dtype; bitsandbytes' blocks for a quantized base), `adapters` and
`heads` (what trains beside a frozen base, fp32), `gradients` (fp32, one per trained parameter), `optimizer`
(AdamW's two moments), `activations` (what one micro-batch of the longest shape saves for backward, counted on
the skeleton: probe.py), `logits` (returned, upcast to fp32 for the loss, and its gradient) and `workspace` (the
largest transients of the backward pass). Which parameters train, in which dtype, comes from the run's own
functions (resolve_loading, build_adaptation), applied to a weightless skeleton of the model.
"""

from __future__ import annotations

import copy
import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from lftrain.errors import InputError

if TYPE_CHECKING:
    import torch
    from torch import nn

    from lftrain.config.schema import Recipe
    from lftrain.models.loading import Loading, ModelSource

log = logging.getLogger("lftrain")
MB = 2**20
CUDA_CONTEXT_MB = 500.0  # the CUDA context and torch's kernels, allocated by the first CUDA call
# The backward's largest transients (a saved tensor's gradient beside the tensor itself, the attention
# scores' softmax gradient) against the largest saved tensor; calibrated on SmolLM2-135M runs (docs below).
WORKSPACE_FACTOR = 2.0
ORDER = ("runtime", "weights", "adapters", "heads", "gradients", "optimizer", "activations", "logits", "workspace",
         "loading")
_ADAPTER_NAMES = ("lora_", "ia3_", "magnitude")  # peft's adapter parameters (DoRA's magnitude vector too)


class MemoryPlanError(InputError):
    """The recipe is predicted not to fit the memory available; the message has the plan and what would fit."""


@dataclass
class MemoryPlan:
    """A predicted peak (MB by component), the memory available, and the changes that would make it fit."""

    components: dict[str, float]
    total_mb: float
    available_mb: float | None
    fits: bool | None  # None when the available memory is unknown
    step_seconds: float | None
    tokens_per_step: int
    device: str = "cpu"
    notes: list[str] = field(default_factory=list)
    suggestions: list[tuple[str, float]] = field(default_factory=list)  # (recipe change, predicted total MB)


# ---- what the recipe trains ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class RunShape:
    """What a recipe's run would be on this machine: its device, precision and loading, resolved as the run
    resolves them."""

    device: torch.device
    precision: str
    loading: Loading
    attention: str


def resolve_run(recipe: Recipe, source: ModelSource) -> RunShape:
    from lftrain import accel
    from lftrain.models.loading import resolve_loading
    from lftrain.models.precision import pick_device, resolve_precision

    device = pick_device(recipe.train.device)
    precision, _ = resolve_precision(recipe.train.precision, device)
    adaptation = recipe.adaptation
    peft_based = _peft_based(recipe)
    loading = resolve_loading(recipe.model.dtype, precision, frozen_base=peft_based,
                              quantize=getattr(adaptation, "quantize", None),
                              double_quant=getattr(adaptation, "double_quant", True), config=source.config)
    attention = accel.attention(recipe.model.attention, device, recipe.train.accel)
    return RunShape(device, precision, loading, attention)


def _peft_based(recipe: Recipe) -> bool:
    """The base is frozen and wrapped by an adapter (lora, dora, ia3); full and freeze train the model itself.
    Told from the adaptation's class, not its name: the peft adaptations build their config through peft."""
    from lftrain.models.adaptation import IA3, Lora, build_adaptation

    return isinstance(build_adaptation(recipe.adaptation), (Lora, IA3))


# ---- parameters: weights, adapters, heads, gradients, optimizer --------------------------------------------

def quantized_bytes(numel: int, out_features: int, quantize: str, double_quant: bool = True) -> float:
    """bitsandbytes' storage of one Linear weight: NF4 packs two weights a byte plus an absmax per block of 64
    (one byte when double-quantized, with an fp32 scale per 256 blocks; else fp32); LLM.int8() a byte per weight
    plus an fp32 scale per output row."""
    if quantize == "nf4":
        blocks = math.ceil(numel / 64)
        scales = blocks + 4 * math.ceil(blocks / 256) if double_quant else 4 * blocks
        return numel / 2 + scales
    return numel + 4 * out_features


def optimizer_bytes(numels: list[int], optimizer: str) -> float:
    """AdamW's moments: 8 bytes a parameter; bitsandbytes' 8-bit AdamW 2 bytes plus an fp32 scale per 256-block
    and moment, for tensors of 4096 elements or more (smaller ones keep fp32 moments)."""
    if optimizer != "adamw8bit":
        return 8.0 * sum(numels)
    return float(sum(2 * n + 8 * math.ceil(n / 256) if n >= 4096 else 8 * n for n in numels))


def _quantized_linears(model: nn.Module) -> dict[int, int]:
    """id(weight) -> out_features for every nn.Linear inside the block stack: what bitsandbytes quantizes
    (transformers keeps the output head and every module outside the blocks in their dtype)."""
    from torch import nn

    from lftrain.models.layers import find_layers

    stack = find_layers(model)
    if stack is None:
        return {}
    return {id(m.weight): m.out_features for layer in stack.layers for m in layer.modules()
            if isinstance(m, nn.Linear)}


def parameter_components(model: nn.Module, recipe: Recipe, loading: Loading, peft_based: bool,
                         quantized: dict[int, int]) -> tuple[dict[str, float], list[int]]:
    """Bytes of weights, adapters, heads, gradients and optimizer state of the adapted skeleton, and the
    element counts of the trained tensors. Tied weights count once."""
    parts = dict.fromkeys(("weights", "adapters", "heads"), 0.0)
    trained: list[int] = []
    seen: set[int] = set()
    for name, p in model.named_parameters(remove_duplicate=False):
        if id(p) in seen:
            continue
        seen.add(id(p))
        n = p.numel()
        if p.requires_grad:
            trained.append(n)
            if not peft_based:
                parts["weights"] += n * p.element_size()
            else:
                parts["adapters" if any(a in name for a in _ADAPTER_NAMES) else "heads"] += 4.0 * n
        elif loading.quantize and id(p) in quantized:
            parts["weights"] += quantized_bytes(n, quantized[id(p)], loading.quantize, loading.double_quant)
        else:
            parts["weights"] += n * p.element_size()
    parts["gradients"] = 4.0 * sum(trained)
    parts["optimizer"] = optimizer_bytes(trained, recipe.train.optimizer)
    return parts, trained


# ---- the whole plan -----------------------------------------------------------------------------------------

def _vet(recipe: Recipe) -> ModelSource:
    from lftrain.models.loading import vet_model_dir

    m = recipe.model
    return vet_model_dir(m.path, allow_pickle=m.allow_pickle, trust_remote_code=m.trust_remote_code,
                         revision=m.revision)


def _skeleton_dtype(run: RunShape) -> str:
    """The dtype the skeleton is built in: the load dtype; a quantized base computes in the run's precision."""
    return run.loading.compute if run.loading.quantize else run.loading.dtype


def predict(recipe: Recipe, *, available_mb: float | None = None, probe_time: bool = True,
            suggest: bool = True) -> MemoryPlan:
    """The predicted peak memory of training `recipe` by component, against `available_mb` (default:
    available_memory_mb). Reads config.json only: no weight is loaded. `probe_time`: also time one real block
    (a few seconds) for the seconds per optimiser step. `suggest`: also plan the changes that would fit."""
    from lftrain.plan import probe
    from lftrain.tasks import build_task

    source = _vet(recipe)
    run = resolve_run(recipe, source)
    peft_based = _peft_based(recipe)
    task = build_task(recipe.task)
    notes = [f"device {run.device.type}, precision {run.precision}, weights {run.loading.dtype} "
             f"({run.loading.reason})"]
    dtype = _skeleton_dtype(run)
    model = probe.skeleton(recipe, task, source, dtype=dtype, attention=run.attention)
    parts, _ = parameter_components(model, recipe, run.loading, peft_based,
                                    _quantized_linears(model) if run.loading.quantize else {})
    parts["runtime"] = runtime_bytes(run.device)  # torch, transformers (and peft) imported; the skeleton is tiny
    shape = probe.longest_shape(recipe)
    parts.update(_activation_components(recipe, task, source, run, shape, notes))
    extra = _loading_extra(source, run, parts)
    if extra > 0:
        parts["loading"] = extra
        notes.append("the peak is while loading: the converted weights beside the checkpoint pages being read")
    components = {k: parts[k] / MB for k in ORDER if k in parts}
    total = sum(components.values())
    available = available_memory_mb(recipe) if available_mb is None else available_mb
    tokens = recipe.train.batch_size * int(getattr(recipe.task, "max_length", None) or shape.length)
    seconds = None
    if probe_time:
        seconds = probe.time_step(recipe, task, source, dtype=dtype, attention=run.attention,
                                  precision=run.precision, shape=shape, tokens_per_step=tokens)
    plan = MemoryPlan(components, total, available, None if available is None else total <= available, seconds,
                      tokens, run.device.type, notes)
    if suggest and plan.fits is False:
        plan.suggestions = suggestions(recipe, available)
    return plan


def _loading_extra(source: ModelSource, run: RunShape, parts: dict[str, float]) -> float:
    """Bytes by which the loading peak exceeds the training peak. A checkpoint converted as it loads (quantized,
    or cast to another dtype) is read through a memory map whose pages stay resident beside the converted
    weights. On Linux lftrain pages them out as the load goes (`paging_out_checkpoint`), so the file's largest
    tensor is what is resident at once; elsewhere the whole file is, until the load ends. Measured: a 1.1B bf16
    checkpoint loaded as NF4, 3.0 GB at the peak before paging out, 1.2 GB after."""
    import sys

    from lftrain.models.loading import stored_dtype

    if not run.loading.quantize and stored_dtype(source.config) in (None, run.loading.dtype):
        return 0.0  # read without conversion: the pages are the weights themselves
    files = list(Path(source.path).glob("*.safetensors"))
    resident = max(map(_largest_tensor, files), default=0) if sys.platform.startswith("linux") else \
        sum(f.stat().st_size for f in files)
    loading = parts.get("runtime", 0.0) + resident + parts.get("weights", 0.0)
    return max(0.0, loading - sum(parts.values()))


def _largest_tensor(file: Path) -> int:
    """Bytes of the largest tensor in a safetensors file, from its header (8-byte length, then JSON)."""
    with open(file, "rb") as f:
        header = json.loads(f.read(int.from_bytes(f.read(8), "little")))
    return max((e["data_offsets"][1] - e["data_offsets"][0] for k, e in header.items() if k != "__metadata__"),
               default=0)


def _activation_components(recipe: Recipe, task, source: ModelSource, run: RunShape, shape,
                           notes: list[str]) -> dict[str, float]:
    """activations, logits and workspace (bytes) of one micro-batch of `shape`, counted on fake tensors."""
    from lftrain.plan import probe

    compute = 2 if run.precision in ("bf16", "fp16") else 4
    try:
        act = _counted(recipe, task, source, run, shape, run.attention)
    except Exception as first:  # noqa: BLE001  (data-dependent code cannot run on fake tensors)
        try:
            # lftrain's attention kernel draws dropout as gaps between drops, a data-dependent count; torch's
            # eager attention keeps a mask of about the same size instead (1 byte against ~0.8 an element)
            act = _counted(recipe, task, source, run, shape, "eager")
            notes.append(f"activations counted with eager attention ({run.attention} cannot run on fake tensors)")
        except Exception as exc:  # noqa: BLE001  (an operator without a fake kernel: the formula instead)
            from transformers import AutoConfig

            notes.append(f"activations from the analytic decoder formula (the fake forward failed: {exc or first})")
            config = AutoConfig.from_pretrained(source.path, local_files_only=True,
                                                trust_remote_code=recipe.model.trust_remote_code)
            act = probe.analytic_activations(config, shape, compute, recipe.train.gradient_checkpointing)
    notes.append(f"longest micro-batch: {shape.rows} × {shape.length} tokens")
    # The model returns logits in its compute dtype; the loss upcasts them to fp32 and keeps log-softmax (fp32)
    # for backward. The backward then holds, beside those, the gradient of the log-softmax output and of its
    # input (fp32 both) before casting it back: compute + 3 × 4 bytes an element at the peak.
    logits = act.logits_numel * (act.logits_bytes + 12) if act.logits_numel > 1000 else 0.0
    return {"activations": float(act.saved), "logits": float(logits),
            "workspace": WORKSPACE_FACTOR * act.largest}


def _counted(recipe: Recipe, task, source: ModelSource, run: RunShape, shape, attention: str):
    """The fake count of the recipe's skeleton. With checkpointing the backward recomputes one block at a
    time, whose activations are then held beside the checkpoints: one block's share of the plain count."""
    from lftrain.plan import probe

    device, dtype = run.device.type, _skeleton_dtype(run)
    model = probe.skeleton(recipe, task, source, dtype=dtype, attention=attention)
    act = probe.fake_activations(model, shape, run.precision, device)
    if not recipe.train.gradient_checkpointing:
        return act
    plain = recipe.model_copy(deep=True)
    plain.train.gradient_checkpointing = False
    full = probe.fake_activations(probe.skeleton(plain, task, source, dtype=dtype, attention=attention), shape,
                                  run.precision, device)
    n = probe.layer_count(model)
    return probe.Activations(act.saved + full.saved // n, max(act.largest, full.largest // n), act.logits_numel,
                             act.logits_bytes, exact=True)


def runtime_bytes(device: torch.device) -> float:
    """What the process holds before the model: this process's RSS now, or the CUDA context on a GPU."""
    if device.type == "cuda":
        return CUDA_CONTEXT_MB * MB
    import psutil

    return float(psutil.Process().memory_info().rss)


def available_memory_mb(recipe: Recipe) -> float | None:
    """train.memory_limit_mb; else on a GPU its free memory; else the RAM this process could grow into: what
    the system has available plus what the process holds, capped by the cgroup's limit when one is set."""
    if recipe.train.memory_limit_mb is not None:
        return float(recipe.train.memory_limit_mb)
    import psutil

    from lftrain.models.precision import pick_device

    device = pick_device(recipe.train.device)
    if device.type == "cuda":
        import torch

        free, _ = torch.cuda.mem_get_info(device)
        return free / MB
    rss = psutil.Process().memory_info().rss
    free = psutil.virtual_memory().available + rss
    limit = _cgroup_room()
    return (min(free, limit + rss) if limit is not None else free) / MB


def _cgroup_room() -> float | None:
    """Bytes the cgroup (v2, else v1) still allows: its limit less its usage; None without a limit."""
    for limit_file, usage_file in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                                   ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                                    "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        try:
            raw = Path(limit_file).read_text().strip()
            usage = int(Path(usage_file).read_text().strip())
        except (OSError, ValueError):
            continue
        if raw == "max" or int(raw) >= 2**60:
            return None
        return float(int(raw) - usage)
    return None


# ---- what would fit -----------------------------------------------------------------------------------------

def candidate_changes(recipe: Recipe) -> list[tuple[str, list[str]]]:
    """(the change as a recipe line, its overrides) for each change that could lower the peak."""
    out: list[tuple[str, list[str]]] = []
    peft_based = _peft_based(recipe)
    from lftrain.models.adaptation import FullFineTuning, build_adaptation

    if isinstance(build_adaptation(recipe.adaptation), FullFineTuning):
        out.append(("adaptation: {type: lora}", ["adaptation={type: lora}"]))
    if peft_based and "quantize" in type(recipe.adaptation).model_fields and not recipe.adaptation.quantize:
        out.append(("adaptation.quantize: nf4", ["adaptation.quantize=nf4"]))
    if not recipe.train.gradient_checkpointing:
        out.append(("train.gradient_checkpointing: true", ["train.gradient_checkpointing=true"]))
    micro = recipe.train.micro_batch_size or recipe.train.batch_size
    if micro > 1:
        out.append((f"train.micro_batch_size: {micro // 2}", [f"train.micro_batch_size={micro // 2}"]))
    length = getattr(recipe.task, "max_length", None)
    if length and length > 16:
        half = [f"task.max_length={length // 2}"]
        if getattr(recipe.task, "pack_length", None):
            half.append(f"task.pack_length={max(length // 2, recipe.task.pack_length // 2)}")
        out.append((f"task.max_length: {length // 2}", half))
    if not peft_based and recipe.train.optimizer != "adamw8bit":
        out.append(("train.optimizer: adamw8bit", ["train.optimizer=adamw8bit"]))
    return out


def _changed(recipe: Recipe, overrides: list[str]) -> Recipe:
    from lftrain.config.loader import load_recipe

    return load_recipe(data=copy.deepcopy(recipe.model_dump(mode="json")), overrides=overrides)


def _planned(recipe: Recipe, overrides: list[str], available: float | None) -> float | None:
    try:
        return predict(_changed(recipe, overrides), available_mb=available or 0.0, probe_time=False,
                       suggest=False).total_mb
    except InputError as exc:  # the change does not apply to this model or recipe
        log.debug("memory plan: %s not planned (%s)", overrides, exc)
        return None


def suggestions(recipe: Recipe, available: float | None) -> list[tuple[str, float]]:
    """Each candidate change planned on a copy of the recipe: those that fit (smallest peak first); if none fits
    alone, the best two together."""
    planned = [(text, ov, _planned(recipe, ov, available)) for text, ov in candidate_changes(recipe)]
    scored = sorted([(text, ov, mb) for text, ov, mb in planned if mb is not None], key=lambda t: t[2])
    fitting = [(text, mb) for text, _, mb in scored if available is None or mb <= available]
    if fitting or len(scored) < 2:
        return fitting
    (t1, o1, _), (t2, o2, _) = scored[:2]
    both = _planned(recipe, o1 + o2, available)
    return [(f"{t1} and {t2}", both)] if both is not None else []


def check(recipe: Recipe, mode: str) -> MemoryPlan | None:
    """`train.memory_plan`: log the plan; under `check` raise MemoryPlanError (exit 2) when it does not fit.
    `off`: nothing is planned."""
    from lftrain.plan.render import render

    if mode == "off":
        return None
    try:
        plan = predict(recipe, probe_time=False, suggest=mode == "check")
    except InputError as exc:  # the recipe's error is the run's to report, naming what to change
        log.warning("memory plan: not made (%s)", str(exc).splitlines()[0])
        return None
    except Exception as exc:  # noqa: BLE001  (a model the skeleton cannot stand for must still train)
        log.warning("memory plan: not made for this model (%s: %s); train.memory_plan: off skips it",
                    type(exc).__name__, str(exc).splitlines()[0] if str(exc) else "")
        return None
    text = render(plan)
    if plan.fits is False and mode == "check":
        raise MemoryPlanError(f"{text}\n(train.memory_plan: warn goes on anyway; train.memory_limit_mb sets the "
                              "memory the plan may use)")
    (log.warning if plan.fits is False else log.info)("%s", text)
    return plan
