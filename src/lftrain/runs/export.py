"""Export a finished run's model as a plain Hugging Face model directory (safetensors + tokenizer + id2label).

Full and freeze runs already save that format, so their model/ is copied. Adapter runs (lora, dora, ia3)
are merged into their base model's weights (`merge_and_unload`), which gives one ordinary model that
runs without peft and as fast as the base model; merging must be asked for (`merge=True`), since the
exported model no longer holds the adapter separately. A causal-LM run can instead be written as one GGUF
file for llama.cpp / Ollama (`format="gguf"`, models/gguf_export.py); adapters are always merged for that.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

from lftrain.errors import InputError

log = logging.getLogger("lftrain")


def export_model(run: str | Path, output: str | Path, *, merge: bool = False, quantize: str | None = None,
                 format: str = "hf", gguf_type: str | None = None) -> Path:
    """Write the model of `run` (a run directory or its model/) to `output`, which must not hold files yet.

    `quantize="int8"`: dynamic int8 quantisation of the linear layers; `format="onnx"`: an ONNX model
    (quantised by onnxruntime when int8). Both are checked against the torch model (see models/compress.py).
    `format="gguf"` (causal-LM runs): one llama.cpp file, `gguf_type` "f16" (default) or "q8_0", checked on
    read-back (see models/gguf_export.py)."""
    from lftrain.models.trained import is_adapter_dir, resolve_run

    if quantize not in (None, "int8"):
        raise InputError(f"--quantize {quantize}: only 'int8' is supported")
    if format not in ("hf", "onnx", "gguf"):
        raise InputError(f"--format {format}: choose 'hf' (Hugging Face directory), 'onnx' or 'gguf'")
    _check_gguf_args(format, quantize, gguf_type)

    run_dir, model_dir = resolve_run(run)
    if format == "gguf":
        _require_causal_lm(run_dir)
    out = Path(output)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise InputError(f"--output {out}: exists and is not an empty directory; choose a new directory "
                         "(an export never overwrites files)")
    tmp = out.with_name(f".{out.name}.tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    if is_adapter_dir(model_dir):
        if not merge and format != "gguf":  # a GGUF file can only hold merged weights: no need to ask
            raise InputError(f"{run_dir} holds an adapter (peft format), not a full model; add --merge "
                             "(merge=True) to fold it into the base model's weights")
        _merge_adapter(run_dir, model_dir, tmp)
    else:
        if merge:
            log.info("%s holds a full model: nothing to merge, copying it", run_dir)
        shutil.copytree(model_dir, tmp)
    if format == "gguf":
        from lftrain.models.gguf_export import convert_folder

        convert_folder(tmp, gguf_type or "f16", source=model_dir, name=run_dir.name)
    elif quantize or format != "hf":
        _compress(tmp, quantize=quantize, format=format, source=model_dir)
    if out.exists():
        out.rmdir()  # empty, checked above
    out.parent.mkdir(parents=True, exist_ok=True)
    os.replace(tmp, out)
    log.info("exported %s to %s", model_dir, out)
    return out


def _check_gguf_args(format: str, quantize: str | None, gguf_type: str | None) -> None:
    from lftrain.models.gguf_export import GGUF_TYPES

    if gguf_type is not None and format != "gguf":
        raise InputError(f"--gguf-type {gguf_type}: only with --format gguf")
    if gguf_type not in (None, *GGUF_TYPES):
        raise InputError(f"--gguf-type {gguf_type}: choose one of {', '.join(GGUF_TYPES)}")
    if format == "gguf" and quantize:
        raise InputError("--quantize int8 is for classifiers; a GGUF export is quantised with --gguf-type q8_0")


def _require_causal_lm(run_dir: Path) -> None:
    """Refuse a GGUF export of a run that is not a chat model's, before anything is loaded or merged."""
    from lftrain.runs.chat import run_task

    task = run_task(run_dir)
    if not task.chat:
        raise InputError(f"--format gguf: {run_dir} is a {task.type_name} run; GGUF export "
                         "(llama.cpp, Ollama) is for language models (export classifiers with --format hf or onnx)")


def _merge_adapter(run_dir: Path, model_dir: Path, dest: Path) -> None:
    from lftrain.config.loader import load_recipe
    from lftrain.models.trained import load_trained_model
    from lftrain.tasks import build_task

    recipe = load_recipe(run_dir / "recipe.yaml")
    task = build_task(recipe.task)
    # A quantized (QLoRA) base is dequantized first: the adapter merges into the weights it trained against.
    trained = load_trained_model(model_dir, task, base_fallback=recipe.model.path, dequantized=True)
    merged = trained.model.merge_and_unload()  # the base model class (e.g. BertForSequenceClassification)
    merged.config.name_or_path = ""  # the export stands alone; don't point at the base directory
    merged.save_pretrained(dest, safe_serialization=True)
    trained.tokenizer.save_pretrained(dest)
    for kept in ("calibration.json", "thresholds.json"):  # what the task decides with, beside the weights
        if (model_dir / kept).is_file():
            shutil.copy2(model_dir / kept, dest / kept)


def _compress(model_dir: Path, *, quantize: str | None, format: str, source: Path) -> None:
    """Turn the plain model just written to `model_dir` into the asked-for format, checked against torch."""
    import json

    from lftrain.models import compress
    from lftrain.models.loading import ModelSource, load_tokenizer

    architectures = json.loads((model_dir / "config.json").read_text()).get("architectures") or []
    if not any(a.endswith("ForSequenceClassification") for a in architectures):
        raise InputError(f"--quantize / --format onnx: supported for sequence classifiers; {model_dir} holds "
                         f"{', '.join(architectures) or 'another model'} (export it without them)")
    tokenizer = load_tokenizer(ModelSource(path=model_dir, safetensors=True, config={}), False)
    if format == "onnx":
        check = compress.write_onnx(model_dir, tokenizer, int8=quantize == "int8")
    else:
        check = compress.write_int8_torch(model_dir, tokenizer)
    files = {p.name: p.stat().st_size for p in model_dir.iterdir() if p.is_file()}
    compress.write_info(model_dir, {"source": str(source), "format": format, "quantize": quantize,
                                    "check": check, "file_bytes": files})
