"""The decoder architectures GGUF export writes, as llama.cpp names and computes them: Llama only so far.

Each `Arch` says what differs from the common case (`gguf_export.py` writes the rest):
- `permute_qk`: llama.cpp's `llama` architecture rotates adjacent pairs of each head's vector, Hugging Face the
  two halves; the q/k rows are reordered per head (architectures on llama.cpp's NEOX rope type would not be).
- `refuse`: what the architecture's llama.cpp graph cannot compute, so the file would run a different model.
Llama 3.1/3.2's RoPE scaling is carried as the `rope_freqs` tensor of per-frequency divisors (what llama.cpp's
converter writes); other rope types are refused. Tried and taken out again, for lack of a file llama.cpp and
transformers both read back as the same model: Phi-3 (llama.cpp refused our SentencePiece vocabulary), Qwen2/3,
Mistral, Gemma 2/3 (docs/models.md).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lftrain.errors import InputError


@dataclass(frozen=True)
class Arch:
    gguf: str  # gguf.MODEL_ARCH member
    classes: tuple[str, ...]  # the transformers causal-LM classes written as this architecture
    permute_qk: bool = False
    refuse: Callable[[Any], dict[str, bool]] = field(default=lambda config: {})


def head_dim(config) -> int:
    return getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads


def rope_parameters(config, layer_type: str = "full_attention") -> dict:
    """The rope settings (theta and scaling) of `layer_type` layers, across transformers' two spellings."""
    rope = getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {}
    rope = rope.get(layer_type, rope) if isinstance(rope.get(layer_type), dict) else rope
    theta = rope.get("rope_theta", getattr(config, "rope_theta", 10000.0))
    return {**rope, "rope_theta": float(theta), "rope_type": rope.get("rope_type") or rope.get("type") or "default"}


def _llama_refuse(config) -> dict[str, bool]:
    return {"attention_bias": bool(getattr(config, "attention_bias", False)),
            "mlp_bias": bool(getattr(config, "mlp_bias", False)),
            "head_dim != hidden_size / num_attention_heads":
                head_dim(config) * config.num_attention_heads != config.hidden_size}


ARCHS = {"llama": Arch("LLAMA", ("LlamaForCausalLM",), permute_qk=True, refuse=_llama_refuse)}
ROPE_TYPES = ("default", "llama3")


def arch_of(config, where) -> Arch:
    """The export's description of `config`'s architecture, or InputError naming what cannot be written."""
    archs = config.architectures or [config.model_type]
    arch = ARCHS.get(config.model_type)
    if arch is None or not set(arch.classes) & set(archs):
        names = ", ".join(c for a in ARCHS.values() for c in a.classes)
        raise InputError(f"--format gguf: supported for the causal LMs {names}; {where} holds {', '.join(archs)}")
    rope = rope_parameters(config)
    bad = [what for what, flag in {**arch.refuse(config),
                                   f"rope type {rope['rope_type']!r}": rope["rope_type"] not in ROPE_TYPES}.items()
           if flag]
    if bad:
        raise InputError(f"--format gguf: {where} uses {', '.join(bad)}, which llama.cpp's {arch.gguf.lower()} "
                         "architecture does not compute")
    return arch


def add_rope(w, config) -> list[tuple[str, np.ndarray]]:
    """Write the rope metadata; returns the rope tensors the scaling needs (name, float32 array)."""
    import gguf

    rope = rope_parameters(config)
    dims = head_dim(config)
    w.add_rope_dimension_count(dims)
    w.add_rope_freq_base(rope["rope_theta"])
    if rope["rope_type"] == "llama3":
        return [(gguf.TENSOR_NAMES[gguf.MODEL_TENSOR.ROPE_FREQS] + ".weight", llama3_rope_divisors(rope, dims))]
    return []


def llama3_rope_divisors(rope: dict, dims: int) -> np.ndarray:
    """Llama 3's frequency scaling as the factor each rope frequency is divided by: 1 for short wavelengths, `factor`
    for long ones, a smooth blend between (transformers' `_compute_llama3_parameters`, as divisors)."""
    freqs = 1.0 / rope["rope_theta"] ** (np.arange(0, dims, 2, dtype=np.float64) / dims)
    factor, low, high = rope["factor"], rope["low_freq_factor"], rope["high_freq_factor"]
    old = rope["original_max_position_embeddings"]
    wavelen = 2 * math.pi / freqs
    smooth = np.clip((old / wavelen - low) / (high - low), 0.0, 1.0)
    return (1.0 / ((1 - smooth) / factor + smooth)).astype(np.float32)
