"""Smaller and faster deployable models: dynamic int8 quantisation and ONNX, each checked against torch.

Formats written by `lft export --quantize int8` / `--format onnx` (beside config.json and the tokenizer):
- `model_int8.pt`: the state dict of `torch.ao.quantization.quantize_dynamic(model, {nn.Linear}, qint8)`:
  int8 weights with a scale per tensor, activations quantised on the fly. Read back with
  `torch.load(weights_only=True)` (plain tensors and tuples; no code) by `load_exported`.
- `model.onnx`: torch's exporter (`torch.onnx.export(dynamo=True)`, onnxscript), dynamic batch and length;
  with int8, onnxruntime's `quantize_dynamic` rewrites it (int8 weights, dynamically quantised activations).

Every export is run on probe sentences and compared with the fp32 torch model before it is kept; the
measured differences go into `export.json`. Tolerances: fp32 ONNX within 1e-3 in logits; int8 (torch or
ONNX) within 0.1 in class probabilities. Quantisation error stays below that (MiniLM student, per-channel
int8: 0.034 on the probes); a broken export (inputs swapped, weights lost) gives unrelated outputs.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from lftrain.errors import LftError

log = logging.getLogger("lftrain")
INT8_WEIGHTS, ONNX_FILE, EXPORT_INFO = "model_int8.pt", "model.onnx", "export.json"
FP32_LOGIT_ATOL, INT8_PROB_ATOL = 1e-3, 0.1
PROBES = ["A good film.", "The plot was dull, the acting weak and the ending far too long for what it was.",
          "Brilliant!", "It is neither charming nor moving, but the cast tries hard and the score is lovely.",
          "I did not like it at all", "What a tedious, clumsy, awful movie; I almost left before the end.",
          "fine", "An uneven but often funny story about a family, a dog and a very old car."]


class ExportCheckError(LftError):
    """An exported model disagrees with the torch model beyond the stated tolerance (a bug: please report it)."""


def _load_fp32(model_dir: Path) -> nn.Module:
    from transformers import AutoModelForSequenceClassification

    import lftrain.models.pooled  # noqa: F401  (registers the mean-pooled classifier, task.pooling: mean)

    return AutoModelForSequenceClassification.from_pretrained(model_dir, local_files_only=True,
                                                              use_safetensors=True, attn_implementation="eager",
                                                              dtype=torch.float32).eval()


def quantize_int8(model: nn.Module) -> nn.Module:
    """Dynamic int8 quantisation of every nn.Linear: int8 weights with a scale per output channel, activations
    quantised per batch. Per-channel, because one scale per tensor cost MiniLM 1.7 accuracy points on
    Rotten Tomatoes where per-channel cost 0.2 (docs/distillation.md)."""
    from torch.ao.quantization import per_channel_dynamic_qconfig

    return torch.ao.quantization.quantize_dynamic(model, {nn.Linear: per_channel_dynamic_qconfig}, dtype=torch.qint8)


def probe_inputs(tokenizer) -> dict[str, torch.Tensor]:
    return dict(tokenizer(PROBES, padding=True, truncation=True, max_length=128, return_tensors="pt"))


def _compare(reference: np.ndarray, other: np.ndarray) -> dict[str, float]:
    def softmax(x: np.ndarray) -> np.ndarray:
        e = np.exp(x - x.max(-1, keepdims=True))
        return e / e.sum(-1, keepdims=True)

    return {"max_abs_logit_diff": float(np.abs(reference - other).max()),
            "max_abs_prob_diff": float(np.abs(softmax(reference) - softmax(other)).max()),
            "argmax_agreement": float((reference.argmax(-1) == other.argmax(-1)).mean())}


def _check(diff: dict[str, float], *, int8: bool, what: str) -> dict[str, Any]:
    key, tol = ("max_abs_prob_diff", INT8_PROB_ATOL) if int8 else ("max_abs_logit_diff", FP32_LOGIT_ATOL)
    if diff[key] > tol:
        raise ExportCheckError(f"{what} disagrees with the torch model on the probe sentences: {key} "
                               f"{diff[key]:.3g} > {tol:g} ({diff})")
    log.info("%s matches torch: %s (tolerance %s ≤ %g)", what, diff, key, tol)
    return {**diff, "tolerance": {key: tol}, "probes": len(PROBES)}


def write_int8_torch(model_dir: Path, tokenizer) -> dict[str, Any]:
    """Replace model_dir's fp32 weights by torch dynamic-int8 ones; returns the check."""
    fp32 = _load_fp32(model_dir)
    inputs = probe_inputs(tokenizer)
    with torch.no_grad():
        reference = fp32(**inputs).logits.numpy()
    torch.save(quantize_int8(fp32).state_dict(), model_dir / INT8_WEIGHTS)
    (model_dir / "model.safetensors").unlink()
    reloaded = load_exported(model_dir)  # check what a user will load, not the object in memory
    with torch.no_grad():
        got = reloaded(**inputs).logits.numpy()
    return _check(_compare(reference, got), int8=True, what="int8 model")


def write_onnx(model_dir: Path, tokenizer, *, int8: bool) -> dict[str, Any]:
    """Export model_dir's model to model.onnx (int8: then quantised by onnxruntime); returns the check."""
    from lftrain.extras import need

    onnx, ort = need("onnx", "ONNX export"), need("onnxruntime", "ONNX export")
    need("onnxscript", "ONNX export")  # torch's exporter

    fp32 = _load_fp32(model_dir)
    inputs = probe_inputs(tokenizer)
    with torch.no_grad():
        reference = fp32(**inputs).logits.numpy()
    batch, seq = torch.export.Dim("batch"), torch.export.Dim("sequence")
    out = model_dir / ONNX_FILE
    program = torch.onnx.export(fp32, (), kwargs=inputs, dynamo=True, optimize=True, verbose=False,
                                dynamic_shapes={k: {0: batch, 1: seq} for k in inputs})
    program.save(str(out))
    if int8:
        from onnxruntime.quantization import QuantType, quantize_dynamic

        proto = onnx.load(str(out))
        # The exporter records the traced example's shapes for intermediate values; the quantiser's shape
        # inference then clashes with the dynamic ones, so let it infer them afresh.
        del proto.graph.value_info[:]
        fp32_file = model_dir / "model.fp32.onnx"
        onnx.save(proto, str(fp32_file))
        quantize_dynamic(str(fp32_file), str(out), weight_type=QuantType.QInt8, per_channel=True)
        fp32_file.unlink()
    (model_dir / "model.safetensors").unlink()
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    got = session.run(None, {k: v.numpy() for k, v in inputs.items()})[0]
    return _check(_compare(reference, got), int8=int8, what=f"ONNX{' int8' if int8 else ''} model")


def write_info(model_dir: Path, info: dict[str, Any]) -> None:
    (model_dir / EXPORT_INFO).write_text(json.dumps(info, indent=1))


class OnnxClassifier(nn.Module):
    """An ONNX export behind the torch call convention (`model(**inputs).logits`), for evaluation and timing."""

    def __init__(self, path: Path, threads: int | None = None) -> None:
        import onnxruntime as ort

        super().__init__()
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
        self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        self.names = [i.name for i in self.session.get_inputs()]
        self.anchor = nn.Parameter(torch.zeros(0), requires_grad=False)  # gives callers a device to read

    def forward(self, **inputs: torch.Tensor):
        from types import SimpleNamespace

        feed = {k: v.cpu().numpy() for k, v in inputs.items() if k in self.names}
        return SimpleNamespace(logits=torch.from_numpy(self.session.run(None, feed)[0]))


def load_exported(path: str | Path, threads: int | None = None) -> nn.Module:
    """A model written by `lft export` (plain, int8 or ONNX), ready for `model(**inputs).logits` on CPU."""
    from transformers import AutoConfig, AutoModelForSequenceClassification

    import lftrain.models.pooled  # noqa: F401  (registers the mean-pooled classifier, task.pooling: mean)

    path = Path(path)
    if (path / ONNX_FILE).is_file():
        return OnnxClassifier(path / ONNX_FILE, threads)
    if (path / INT8_WEIGHTS).is_file():
        config = AutoConfig.from_pretrained(path, local_files_only=True)
        skeleton = AutoModelForSequenceClassification.from_config(config, attn_implementation="eager")
        model = quantize_int8(skeleton.eval())
        model.load_state_dict(torch.load(path / INT8_WEIGHTS, weights_only=True))
        return model.eval()
    return _load_fp32(path)
