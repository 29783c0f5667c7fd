"""Adaptations decide which parameters learn. Registered by short name (`adaptation.type`).

`full` trains everything; `freeze` trains everything except a layer range, the embeddings and/or
parameters named by patterns; `lora`, `dora` and `ia3` wrap the model with a `peft` adapter, so only the
adapter (and the task head) trains and the run saves the adapter in peft's own format.

Where the layers, embeddings and head of a model are is `models/layers.py`'s business.
"""

from __future__ import annotations

import logging
import re
from typing import ClassVar, Literal

from pydantic import Field, field_validator, model_validator
from torch import nn

from lftrain.config.base import Section
from lftrain.errors import InputError
from lftrain.models.layers import LAYER_PATHS, LayerStack, find_layers, stack_config, trainable_summary, unwrap
from lftrain.registry import Registry

log = logging.getLogger("lftrain")
ADAPTATIONS: Registry = Registry("adaptation", section="adaptation")


class Adaptation:
    """What every adaptation declares for the layers above (the web UI's form); `apply` is its work."""

    ui_form: ClassVar[bool] = False  # offered by the web UI's recipe form
    ui_field: ClassVar[tuple[str, str] | None] = None  # the form's field -> this section's key
    ui_lr: ClassVar[float | None] = None  # the learning rate the form suggests with it

# ---- the adaptations ------------------------------------------------------------------------------------

@ADAPTATIONS.register("full", default=True)
class FullFineTuning(Adaptation):
    """Every parameter of the model trains."""

    ui_form = True

    class Config(Section):
        type: Literal["full"] = "full"

    def __init__(self, config: Config) -> None:
        self.config = config

    def apply(self, model: nn.Module) -> nn.Module:
        _unfreeze_learnable(model)
        return model


def _unfreeze_learnable(model: nn.Module) -> None:
    """Let every parameter train except the fixed tables the architecture itself froze when the model was built
    (Whisper's sinusoidal positions): a freshly loaded model has requires_grad=False only on those."""
    fixed = getattr(model, "_lft_fixed_params", None)
    if fixed is None:
        fixed = {id(p) for p in model.parameters() if not p.requires_grad}
        model._lft_fixed_params = fixed
    for p in model.parameters():
        p.requires_grad_(id(p) not in fixed)


def _quiet_frozen_dropout(model: nn.Module) -> int:
    """Set p=0 on each dropout whose parent module has parameters and all of them frozen."""
    count = 0
    for module in model.modules():
        params = list(module.parameters())
        if params and not any(p.requires_grad for p in params):
            for child in module.children():
                if isinstance(child, nn.Dropout) and child.p > 0:
                    child.p = 0.0
                    count += 1
    return count


@ADAPTATIONS.register("freeze")
class Freeze(Adaptation):
    """Freeze the bottom layers, the embeddings and/or parameters by name; the rest and the task head train."""

    ui_form = True
    ui_field = ("freeze_layers", "bottom_layers")

    class Config(Section):
        type: Literal["freeze"] = "freeze"
        bottom_layers: int | None = Field(None, ge=0)
        """Freeze the bottom N blocks of the layer stack (`bottom_layers: 4` of a 6-layer model freezes
        layers 0-3; the top 2, the pooler/final norm and the task head train)."""
        top_layers: int | None = Field(None, ge=0)
        """Alternatively: train only the top N blocks (plus whatever sits above them and the task head);
        every block below is frozen. `top_layers: 0` trains the head alone (a linear probe)."""
        embeddings: bool = True
        """Freeze the embeddings too (everything below layer 0: token, position and type embeddings and
        their norm). Alone, `{type: freeze}` freezes only the embeddings."""
        patterns: list[str] = []
        """Also freeze every parameter whose name matches one of these regular expressions (`re.search`
        on names such as `bert.encoder.layer.3.attention.self.query.weight`). The task head always trains."""
        frozen_dropout: bool = False
        """Keep dropout active inside frozen modules. Off by default: frozen layers then compute the same
        output every epoch, which lets lftrain compute it once (`train.accel`'s frozen-prefix cache); their
        dropout would only perturb the inputs of the layers that learn."""

        @field_validator("patterns")
        @classmethod
        def _compiles(cls, patterns: list[str]) -> list[str]:
            for pattern in patterns:
                try:
                    re.compile(pattern)
                except re.error as exc:
                    raise ValueError(f"pattern {pattern!r} is not a valid regular expression ({exc})") from None
            return patterns

        @model_validator(mode="after")
        def _one_range(self) -> Freeze.Config:
            if self.bottom_layers is not None and self.top_layers is not None:
                raise ValueError("set either bottom_layers (freeze the bottom N) or top_layers (train the top N), "
                                 "not both")
            if self.bottom_layers is None and self.top_layers is None and not self.patterns and not self.embeddings:
                raise ValueError("nothing to freeze: set bottom_layers, top_layers or patterns (or use type: full)")
            return self

    def __init__(self, config: Config) -> None:
        self.config = config

    def apply(self, model: nn.Module) -> nn.Module:
        cfg = self.config
        _unfreeze_learnable(model)
        frozen: dict[int, nn.Parameter] = {}
        what: list[str] = []
        head = _head_parameters(model)
        if cfg.bottom_layers is not None or cfg.top_layers is not None or cfg.embeddings:
            stack = _require_layers(model, "bottom_layers" if cfg.bottom_layers is not None else
                                    "top_layers" if cfg.top_layers is not None else "embeddings")
            k = self._frozen_layer_count(model, stack)
            if cfg.embeddings:
                if head & {id(p) for p in stack.embeddings}:
                    raise InputError("adaptation.embeddings: the task head shares its weights with the input "
                                     "embeddings (tied weights) and the head always trains; set "
                                     "adaptation.embeddings: false")
                frozen.update((id(p), p) for p in stack.embeddings)
                what.append("embeddings")
            for layer in stack.layers[:k]:
                frozen.update((id(p), p) for p in layer.parameters())
            if k:
                span = "layer 0" if k == 1 else f"layers 0-{k - 1}"
                what.append(f"{span} of {len(stack.layers)} ({stack.path})")
        if cfg.patterns:
            matched = [p for p in _match_patterns(model, cfg.patterns) if id(p) not in head]
            frozen.update((id(p), p) for p in matched)
            what.append(f"{len(matched)} tensors matching patterns (the task head always trains)")
        for p in frozen.values():
            p.requires_grad_(False)
        if not cfg.frozen_dropout:
            what.append(f"dropout off in {_quiet_frozen_dropout(model)} frozen modules")
        log.info("freeze: %s; %s", ", ".join(what), trainable_summary(model))
        return model

    def _frozen_layer_count(self, model: nn.Module, stack: LayerStack) -> int:
        n, cfg = len(stack.layers), self.config
        for key in ("bottom_layers", "top_layers"):
            value = getattr(cfg, key)
            if value is not None and value > n:
                raise InputError(f"adaptation.{key} is {value}, but {type(unwrap(model)).__name__} has {n} layers "
                                 f"(base_model.{stack.path}); use at most {n}")
        if cfg.bottom_layers is not None:
            return cfg.bottom_layers
        if cfg.top_layers is not None:
            return n - cfg.top_layers
        return 0


class _LoraBase(Section):
    type: str  # narrowed to a Literal by each subclass; declared here so it comes first in the reference
    r: int = Field(8, gt=0)
    """Rank of the low-rank update."""
    alpha: float = Field(16, gt=0)
    """Scale of the update: it is multiplied by alpha / r."""
    dropout: float = Field(0.1, ge=0, lt=1)
    """Dropout on the adapter's input during training."""
    target_modules: list[str] | None = None
    """Layers to adapt, by name or dotted name suffix (`query`, `attention.output.dense`). Default: peft's
    choice for the model type (`query`, `value` for BERT-likes; `q_proj`, `v_proj` for Llama-likes)."""
    modules_to_save: list[str] = []
    """Further modules that train in full and are saved with the adapter. The task head (and any weight
    the base checkpoint lacks, such as a new pooler) always is."""
    quantize: Literal["nf4", "int8"] | None = None
    """Freeze the base model quantized (QLoRA): `nf4` stores its Linear weights in 4-bit NormalFloat blocks of 64,
    `int8` in 8 bits (LLM.int8()), through bitsandbytes (CPU and CUDA; the `quantize` extra). The adapters and the
    task head stay fp32. Null: the base keeps `model.dtype`. See docs/large-models.md."""
    double_quant: bool = True
    """`nf4` only: quantize the blocks' scales too (QLoRA's double quantization, ~0.4 bits per weight less)."""


@ADAPTATIONS.register("lora")
class Lora(Adaptation):
    """LoRA (peft): a trainable low-rank update beside each target layer; the base model stays frozen."""

    ui_form = True
    ui_field = ("lora_r", "r")
    ui_lr = 5e-4  # adapters want ~10x full fine-tuning's

    use_dora = False

    class Config(_LoraBase):
        type: Literal["lora"] = "lora"

    def __init__(self, config: _LoraBase) -> None:
        self.config = config

    def apply(self, model: nn.Module) -> nn.Module:
        require_peft()
        from peft import LoraConfig
        from peft.utils import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as DEFAULTS

        cfg = self.config
        targets = _targets(model, cfg.target_modules, DEFAULTS)
        peft_config = LoraConfig(task_type=_task_type(model), r=cfg.r, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout,
                                 target_modules=targets, modules_to_save=_modules_to_save(model, cfg.modules_to_save),
                                 use_dora=self.use_dora)
        return _wrap(model, peft_config, cfg.type, targets)


@ADAPTATIONS.register("dora")
class Dora(Lora):
    """DoRA (peft): LoRA on the direction of each weight plus a trainable magnitude per output."""

    ui_form = False  # the form offers LoRA; DoRA is a recipe key away

    use_dora = True

    class Config(_LoraBase):
        type: Literal["dora"] = "dora"


@ADAPTATIONS.register("ia3")
class IA3(Adaptation):
    """IA³ (peft): a trainable scale per channel of each target layer; fewest parameters of all."""

    class Config(Section):
        type: Literal["ia3"] = "ia3"
        target_modules: list[str] | None = None
        """Layers whose activations are rescaled. Default: peft's choice for the model type (`key`, `value`,
        `output.dense` for BERT-likes)."""
        feedforward_modules: list[str] | None = None
        """Which of `target_modules` are feed-forward layers (scaled on their input, not output). Default:
        peft's choice for the model type, kept to the names in `target_modules`."""
        modules_to_save: list[str] = []
        """Further modules that train in full and are saved with the adapter. The task head (and any weight
        the base checkpoint lacks) always is."""

        @model_validator(mode="after")
        def _feedforward_subset(self) -> IA3.Config:
            if self.feedforward_modules and self.target_modules:
                extra = sorted(set(self.feedforward_modules) - set(self.target_modules))
                if extra:
                    raise ValueError(f"feedforward_modules {extra} must also be in target_modules")
            return self

    def __init__(self, config: Config) -> None:
        self.config = config

    def apply(self, model: nn.Module) -> nn.Module:
        require_peft()
        from peft import IA3Config
        from peft.utils import TRANSFORMERS_MODELS_TO_IA3_FEEDFORWARD_MODULES_MAPPING as FEEDFORWARD
        from peft.utils import TRANSFORMERS_MODELS_TO_IA3_TARGET_MODULES_MAPPING as DEFAULTS

        cfg = self.config
        targets = _targets(model, cfg.target_modules, DEFAULTS)
        feedforward = cfg.feedforward_modules
        if feedforward is None:
            known = FEEDFORWARD.get(_model_type(model)) or []
            feedforward = known if isinstance(known, str) else [m for m in known if m in targets]
        peft_config = IA3Config(task_type=_task_type(model), target_modules=targets, feedforward_modules=feedforward,
                                modules_to_save=_modules_to_save(model, cfg.modules_to_save))
        return _wrap(model, peft_config, cfg.type, targets)


def build_adaptation(config: Section):
    return ADAPTATIONS.get(config.type)(config)


# ---- peft plumbing ------------------------------------------------------------------------------------

def require_peft() -> None:
    """Adapters need the `peft` package; say so as an input problem, not a crash."""
    try:
        import peft  # noqa: F401
    except ImportError:
        raise InputError("adapters (adaptation.type lora, dora, ia3) need the `peft` package: "
                         "pip install 'peft>=0.21'") from None


# peft's model classes per task: each knows its head (e.g. SEQ_CLS trains and saves `classifier`/`score`).
# Not QUESTION_ANS: peft 0.21's PeftModelForQuestionAnswering drops `token_type_ids` in forward, so a BERT would
# train without segment ids and its merged export (which gets them) would answer differently. The plain PeftModel
# passes every input through; the QA head is saved as a module (_HEADS).
_TASK_TYPES = {"ForSequenceClassification": "SEQ_CLS", "ForTokenClassification": "TOKEN_CLS",
               "ForCausalLM": "CAUSAL_LM"}
_PEFT_HEADS = ("classifier", "score")  # what peft adds to modules_to_save for SEQ_CLS/TOKEN_CLS
_HEADS = (*_PEFT_HEADS, "qa_outputs")  # task heads trained and saved whole beside the adapter


def _model_type(model: nn.Module) -> str | None:
    """The architecture of the base model: for a wrapper (task.pooling: mean) the encoder's, whose layers are
    the ones adapted."""
    return getattr(stack_config(model), "model_type", None) or None


def _task_type(model: nn.Module) -> str | None:
    name = type(unwrap(model)).__name__
    return next((t for suffix, t in _TASK_TYPES.items() if name.endswith(suffix)), None)


def _default_targets(model: nn.Module, mapping: dict) -> list[str] | str:
    model_type = _model_type(model)
    targets = mapping.get(model_type) or _OWN_DEFAULTS.get(model_type)
    if targets is None:
        raise InputError(f"adaptation.target_modules is not set and peft has no default for model type "
                         f"'{model_type}'; set it to the names of the layers to adapt. This model's "
                         f"{_layer_kinds(model)}: {', '.join(linear_names(model))}")
    return list(targets) if isinstance(targets, list) else targets


# Defaults for models peft does not know, by model type (lftrain's own model wrappers). EfficientNet-Lite: the
# pointwise (1x1) convolutions of every block, which hold most of its weights; depthwise and strided ones are
# left out (an adapter beside a padded, strided convolution would not line up with its output).
_OWN_DEFAULTS: dict[str, list[str]] = {"lftrain-efficientnet-lite": ["_expand_conv", "_project_conv"],
                                        "whisper": ["q_proj", "v_proj"]}  # peft 0.21 has none for Whisper


def _matches(name: str, target: str) -> bool:
    return name == target or name.endswith("." + target)  # peft's own rule for a list of target names


def _targets(model: nn.Module, configured: list[str] | None, defaults: dict) -> list[str]:
    """The recipe's target modules, or peft's defaults for the model type; checked against the model."""
    targets = configured or _default_targets(model, defaults)
    _check_targets(model, targets, "target_modules")
    return targets


def _check_targets(model: nn.Module, targets: list[str] | str, key: str) -> None:
    """Every target must name at least one module: peft only fails when none does, so a typo would
    silently adapt fewer layers than asked for."""
    if isinstance(targets, str):  # a regular expression (peft's default for a few models): peft checks it
        return
    names = [n for n, _ in unwrap(model).named_modules()]
    missing = [t for t in targets if not any(_matches(n, t) for n in names)]
    if missing:
        raise InputError(f"adaptation.{key}: no module named {', '.join(map(repr, missing))} in "
                         f"{type(unwrap(model)).__name__}. Its {_layer_kinds(model)}: "
                         f"{', '.join(linear_names(model))}")


def _adaptable(module: nn.Module) -> bool:
    """Layers a LoRA-family adapter can wrap: Linear, and dense (not depthwise) 2-D convolutions."""
    return isinstance(module, nn.Linear) or (isinstance(module, nn.Conv2d) and module.groups == 1)


def _layer_kinds(model: nn.Module) -> str:
    hf = unwrap(model)
    base = getattr(hf, "base_model", hf)
    convs = any(isinstance(m, nn.Conv2d) and m.groups == 1 for m in base.modules())
    return "Linear and convolution layers" if convs else "Linear layers"


def linear_names(model: nn.Module) -> list[str]:
    """Distinct last names of the layers below the task head an adapter can wrap (what `target_modules` usually
    lists): Linear layers, and dense convolutions in a convolutional network."""
    hf = unwrap(model)
    base = getattr(hf, "base_model", hf)
    return sorted({n.rsplit(".", 1)[-1] for n, m in base.named_modules() if _adaptable(m)})


def _newly_initialised_modules(model: nn.Module) -> list[str]:
    """Modules whose weights the base checkpoint did not have (a new head, a pooler the checkpoint lacks).

    They are random at load time, so an adapter is only reproducible if they are trained and saved with it.
    transformers marks each tensor it loaded from the checkpoint with `_is_hf_initialized`; when no tensor is
    marked (a model built in code, not loaded), nothing can be told apart and nothing is returned."""
    hf = unwrap(model)
    params = list(hf.named_parameters())
    if not any(getattr(p, "_is_hf_initialized", False) for _, p in params):
        return []
    owners = sorted({name.rsplit(".", 1)[0] for name, p in params if not getattr(p, "_is_hf_initialized", False)})
    kept: list[str] = []
    for owner in owners:  # sorted, so a parent comes before its children: keep the outermost only
        if owner.split(".")[0] in _PEFT_HEADS or any(owner.startswith(k + ".") for k in kept):
            continue  # the task head is saved whole (by peft for SEQ_CLS/TOKEN_CLS, else by _modules_to_save)
        kept.append(owner)
    return kept


def _modules_to_save(model: nn.Module, extra: list[str]) -> list[str] | None:
    names = list(dict.fromkeys([*extra, *_newly_initialised_modules(model)]))
    if _task_type(model) not in ("SEQ_CLS", "TOKEN_CLS"):  # peft adds classifier/score only for these
        names += [n for n, _ in unwrap(model).named_children() if n in _HEADS and n not in names]
    return names or None


def _wrap(model: nn.Module, peft_config, kind: str, targets: list[str] | str) -> nn.Module:
    from pathlib import Path

    from peft import get_peft_model

    try:
        wrapped = get_peft_model(model, peft_config)
    except ValueError as exc:  # e.g. a target that is not a layer type peft can adapt
        raise InputError(f"adaptation ({kind}): peft cannot adapt this model as configured: {exc}") from None
    base = getattr(model, "name_or_path", None)
    if base and Path(base).is_dir():  # the adapter names its base model; an absolute path survives a cwd change
        wrapped.peft_config["default"].base_model_name_or_path = str(Path(base).resolve())
    names = [n for n, _ in unwrap(wrapped).named_modules()]
    saved = [m for m in dict.fromkeys(wrapped.peft_config["default"].modules_to_save or [])
             if any(n.endswith(m) for n in names)]  # peft lists both `classifier` and `score`; name what exists
    log.info("%s: adapting %s; training in full: %s; %s", kind, targets if isinstance(targets, str) else
             ", ".join(targets), ", ".join(saved) or "nothing", trainable_summary(wrapped))
    return wrapped


def _require_layers(model: nn.Module, key: str) -> LayerStack:
    stack = find_layers(model)
    if stack is None:
        hf = unwrap(model)
        raise InputError(f"adaptation.{key}: cannot find the layer stack of {type(hf).__name__} (looked for "
                         f"{', '.join('base_model.' + p for p in LAYER_PATHS)}); freeze by name with "
                         "adaptation.patterns and set adaptation.embeddings: false")
    return stack


def _head_parameters(model: nn.Module) -> set[int]:
    """ids of the task head's parameters: those held by modules outside `base_model` (e.g. `classifier`),
    including weights tied to the embeddings (an LM head's decoder)."""
    hf = unwrap(model)
    base = getattr(hf, "base_model", hf)
    if base is hf:
        return set()
    inside = {id(m) for m in base.modules()}
    return {id(p) for m in hf.modules() if id(m) not in inside for p in m.parameters(recurse=False)}


def _match_patterns(model: nn.Module, patterns: list[str]) -> list[nn.Parameter]:
    named = list(unwrap(model).named_parameters())
    matched: dict[int, nn.Parameter] = {}
    for pattern in patterns:
        hits = [p for n, p in named if re.search(pattern, n)]
        if not hits:
            examples = ", ".join(n for n, _ in named[:3])
            raise InputError(f"adaptation.patterns: {pattern!r} matches no parameter (names look like {examples})")
        matched.update((id(p), p) for p in hits)
    return list(matched.values())
