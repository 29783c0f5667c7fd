"""A finished run's model on disk: how it is written and how it is read back for inference.

Two formats, one per kind of adaptation:
- full / freeze: a plain Hugging Face model directory (config.json with id2label, model.safetensors,
  tokenizer), loadable with `AutoModelForSequenceClassification.from_pretrained(run/model)`.
- lora / dora / ia3: peft's own adapter format (adapter_config.json + adapter_model.safetensors, the trained
  task head included), the tokenizer beside it, and `labels.json`. `adapter_config.json` names the base
  model by absolute path, so `PeftModel.from_pretrained(base, run/model)` works. There is deliberately no
  config.json: transformers would take the directory for a complete model and look for weights in it.

Reading is safetensors only and never runs code shipped with a model.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from lftrain.errors import InputError, ModelLoadError

log = logging.getLogger("lftrain")
ADAPTER_CONFIG, ADAPTER_WEIGHTS, LABELS = "adapter_config.json", "adapter_model.safetensors", "labels.json"


def is_adapter_model(model: nn.Module) -> bool:
    """A peft-wrapped model (which saves as an adapter), as opposed to a plain transformers model."""
    return hasattr(model, "peft_config") and hasattr(model, "get_base_model")


def is_adapter_dir(path: Path) -> bool:
    return (path / ADAPTER_CONFIG).is_file()


# ---- writing --------------------------------------------------------------------------------------------

def save_trained_model(model: nn.Module, tokenizer, out: Path, source=None) -> None:
    """Write `model` to `out` (replaced whole, via a temporary sibling, so a crash leaves the old one). An adapter
    records how its base was loaded (`source`: dtype, quantization) for inference to load it the same way."""
    from lftrain.models.quantized import write_loading

    tmp = out.with_name(f".{out.name}.tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    config = model.config
    impl = config._attn_implementation
    if impl not in ("eager", "sdpa"):
        config._attn_implementation = "eager"  # our kernel is a training detail; don't leak its name
    try:
        if is_adapter_model(model):
            # Embedding rows are never resized by lftrain: saving them would only copy the base model.
            model.save_pretrained(tmp, safe_serialization=True, save_embedding_layers=False)
            labels = {str(i): name for i, name in sorted(config.id2label.items())}
            (tmp / LABELS).write_text(json.dumps({"id2label": labels}, indent=1, ensure_ascii=False))
            write_loading(tmp, source)
        else:
            model.save_pretrained(tmp, safe_serialization=True)
    finally:
        config._attn_implementation = impl
    tokenizer.save_pretrained(tmp)
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)


# ---- reading --------------------------------------------------------------------------------------------

@dataclass
class TrainedModel:
    model: nn.Module  # in eval mode; a peft model for adapter runs
    tokenizer: Any
    labels: list[str]  # class names in index order
    base_dir: Path | None  # the base model an adapter sits on (None for a plain model directory)

    @property
    def is_adapter(self) -> bool:
        return self.base_dir is not None


def resolve_run(path: str | Path) -> tuple[Path, Path]:
    """(run directory, its model/ directory) from a run directory or its model/ directory."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such run directory")
    run_dir = path if (path / "recipe.yaml").is_file() else path.parent
    if not (run_dir / "recipe.yaml").is_file() or not (run_dir / "model").is_dir():
        raise InputError(f"{path}: not a finished lftrain run (expected recipe.yaml and model/)")
    return run_dir, run_dir / "model"


def load_trained_model(model_dir: Path, task, *, base_fallback: str | None = None,
                       dequantized: bool = False) -> TrainedModel:
    """Load a run's model/ for inference, whatever the adaptation; sets `task.labels` from the saved labels.

    `task` builds the model class (its `load_model`); `base_fallback` (the recipe's `model.path`) is where
    an adapter's base model is looked for when the path recorded in adapter_config.json no longer exists. An
    adapter's base loads as it trained (its dtype, quantized or not); `dequantized` then replaces quantized layers
    by plain ones with the same values (to merge the adapter into)."""
    from lftrain.models.loading import ModelSource, vet_model_dir

    if not is_adapter_dir(model_dir):
        source = vet_model_dir(str(model_dir), allow_pickle=False, trust_remote_code=False)
        id2label = source.config.get("id2label") or {}
        task.restore_labels([id2label[str(i)] for i in range(len(id2label))])
        task.after_load(model_dir)
        model = task.load_model(source, trust_remote_code=False, attention="eager")
        names = task.labels.names if task.labels is not None else []
        return TrainedModel(model.eval(), _processor(task, source), names, None)

    from lftrain.models.adaptation import require_peft

    require_peft()
    from peft import PeftModel

    if not (model_dir / ADAPTER_WEIGHTS).is_file():
        raise ModelLoadError(f"{model_dir}: no {ADAPTER_WEIGHTS} (lftrain loads adapters from safetensors only)")
    base = vet_model_dir(str(_adapter_base(model_dir, base_fallback)), allow_pickle=False, trust_remote_code=False)
    task.restore_labels(_adapter_labels(model_dir))
    task.after_load(model_dir)
    from lftrain.models.quantized import dequantize, paging_out_checkpoint, read_loading, release_checkpoint_pages

    base = read_loading(model_dir, base)
    with paging_out_checkpoint(base):
        model = task.load_model(base, trust_remote_code=False, attention="eager")
    release_checkpoint_pages(model)  # a quantized base holds copies: the file's pages are not needed
    if dequantized:
        model = dequantize(model)
    model = PeftModel.from_pretrained(model, str(model_dir), is_trainable=False)
    tokenizer = _processor(task, ModelSource(path=model_dir, safetensors=True, config=base.config))
    return TrainedModel(model.eval(), tokenizer, task.labels.names if task.labels is not None else [], base.path)


def _processor(task, source):
    """What prepares the inputs, saved beside the weights: the tokenizer, or the task's processor (images, audio)."""
    return task.load_processor(source)


def _adapter_base(model_dir: Path, fallback: str | None) -> Path:
    """The adapter's base model directory: as recorded at training time, else the recipe's model.path."""
    from lftrain.models.loading import resolve_model_dir

    recorded = json.loads((model_dir / ADAPTER_CONFIG).read_text()).get("base_model_name_or_path")
    if recorded and Path(recorded).is_dir():
        return Path(recorded)
    if fallback:
        try:
            return resolve_model_dir(fallback)
        except InputError:
            pass
    raise ModelLoadError(f"{model_dir}: the adapter's base model is not found (looked in {recorded!r}"
                         f"{f' and {fallback!r}' if fallback else ''}); put the base model back there, or set "
                         f"base_model_name_or_path in {model_dir / ADAPTER_CONFIG}")


def _adapter_labels(model_dir: Path) -> list[str]:
    f = model_dir / LABELS
    if not f.is_file():
        raise ModelLoadError(f"{model_dir}: no {LABELS} (the class names of this adapter's head)")
    id2label = json.loads(f.read_text())["id2label"]
    return [id2label[str(i)] for i in range(len(id2label))]
