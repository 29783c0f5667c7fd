"""The decoder architectures GGUF export writes (Llama, Phi-3), as llama.cpp names and computes them.

Each `Arch` says what differs from the common case (`gguf_export.py` writes the rest):
- `permute_qk`: llama.cpp's `llama` architecture rotates adjacent pairs of each head's vector, Hugging Face the
  two halves; the q/k rows are reordered per head. Phi-3 uses the halves in llama.cpp too (NEOX rope type).
- `norm_shift`: for architectures whose RMSNorm multiplies by (1 + weight) (Gemma; not yet written).
- `hyperparameters`: the architecture's own metadata (Phi-3's original context and sliding window).
- `refuse`: what the architecture's llama.cpp graph cannot compute, so the file would run a different model.
RoPE scaling is carried for every architecture: linear and YaRN as metadata, Llama 3's as the `rope_freqs`
tensor of per-frequency divisors (as llama.cpp's converter writes it), Phi-3's LongRoPE as its two factor
tensors. Other rope types are refused.
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
    norm_shift: float = 0.0
    hyperparameters: Callable[[Any, Any], None] = lambda w, config: None
    refuse: Callable[[Any], dict[str, bool]] = field(default=lambda config: {})


def head_dim(config) -> int:
    return getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads


def rope_parameters(config, layer_type: str = "full_attention") -> dict:
    """The rope settings (theta and scaling) of `layer_type` layers, across transformers' two spellings."""
    rope = getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {}
    rope = rope.get(layer_type, rope) if isinstance(rope.get(layer_type), dict) else rope
    theta = rope.get("rope_theta", getattr(config, "rope_theta", 10000.0))
    return {**rope, "rope_theta": float(theta), "rope_type": rope.get("rope_type") or rope.get("type") or "default"}


def _original_context(config) -> int:
    rope = rope_parameters(config)
    return int(rope.get("original_max_position_embeddings") or
               getattr(config, "original_max_position_embeddings", None) or config.max_position_embeddings)


def _phi3(w, config) -> None:
    w.add_rope_scaling_orig_ctx_len(_original_context(config))
    w.add_sliding_window(int(config.sliding_window or 0))  # llama.cpp computes Phi-3 without it either way


def _no_bias(config) -> dict[str, bool]:
    return {"attention_bias": bool(getattr(config, "attention_bias", False)),
            "mlp_bias": bool(getattr(config, "mlp_bias", False))}


# Qwen2/3, Mistral and Gemma 2/3 are not written yet: their files did not yet read back to the same model
# (Qwen's pre-tokenizer name and head size, Mistral's SentencePiece read-back, Gemma's logits); see docs/models.md.
ARCHS = {
    "llama": Arch("LLAMA", ("LlamaForCausalLM",), permute_qk=True, refuse=_no_bias),
    "phi3": Arch("PHI3", ("Phi3ForCausalLM",), hyperparameters=_phi3),
}
ROPE_TYPES = ("default", "linear", "yarn", "llama3", "longrope")


def arch_of(config, where) -> Arch:
    """The export's description of `config`'s architecture, or InputError naming what cannot be written."""
    archs = config.architectures or [config.model_type]
    arch = ARCHS.get(config.model_type)
    if arch is None or not set(arch.classes) & set(archs):
        names = ", ".join(c for a in ARCHS.values() for c in a.classes)
        raise InputError(f"--format gguf: supported for the causal LMs {names}; {where} holds {', '.join(archs)}")
    rope = rope_parameters(config)
    bad = [what for what, flag in {**arch.refuse(config),
                                   f"rope type {rope['rope_type']!r}": rope["rope_type"] not in ROPE_TYPES,
                                   "LongRoPE outside Phi-3": rope["rope_type"] == "longrope" and arch.gguf != "PHI3",
                                   }.items() if flag]
    if bad:
        raise InputError(f"--format gguf: {where} uses {', '.join(bad)}, which llama.cpp's {arch.gguf.lower()} "
                         "architecture does not compute")
    return arch


def add_rope(w, config) -> list[tuple[str, np.ndarray]]:
    """Write the rope metadata; returns the rope tensors the scaling needs (name, float32 array)."""
    import gguf

    rope = rope_parameters(config)
    dims = int(head_dim(config) * rope.get("partial_rotary_factor", getattr(config, "partial_rotary_factor", 1.0)))
    w.add_rope_dimension_count(dims)
    w.add_rope_freq_base(rope["rope_theta"])
    kind, factor = rope["rope_type"], rope.get("factor")
    if kind == "linear":
        w.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        w.add_rope_scaling_factor(float(factor))
    elif kind == "yarn":
        w.add_rope_scaling_type(gguf.RopeScalingType.YARN)
        w.add_rope_scaling_factor(float(factor))
        w.add_rope_scaling_orig_ctx_len(int(rope["original_max_position_embeddings"]))
        for key, add in (("attention_factor", w.add_rope_scaling_yarn_attn_factor),
                         ("beta_fast", w.add_rope_scaling_yarn_beta_fast),
                         ("beta_slow", w.add_rope_scaling_yarn_beta_slow)):
            if rope.get(key) is not None:
                add(float(rope[key]))
    elif kind == "llama3":
        return [(gguf.TENSOR_NAMES[gguf.MODEL_TENSOR.ROPE_FREQS] + ".weight", llama3_rope_divisors(rope, dims))]
    elif kind == "longrope":
        return _longrope(w, config, rope, dims)
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


def _longrope(w, config, rope: dict, dims: int) -> list[tuple[str, np.ndarray]]:
    import gguf

    original = _original_context(config)  # written with Phi-3's other metadata (_phi3)
    scale = config.max_position_embeddings / original
    attn = rope.get("attention_factor") or (1.0 if scale <= 1 else math.sqrt(1 + math.log(scale) / math.log(original)))
    w.add_rope_scaling_attn_factors(float(attn))
    names = gguf.TENSOR_NAMES
    return [(names[gguf.MODEL_TENSOR.ROPE_FACTORS_LONG] + ".weight", np.asarray(rope["long_factor"], np.float32)),
            (names[gguf.MODEL_TENSOR.ROPE_FACTORS_SHORT] + ".weight", np.asarray(rope["short_factor"], np.float32))]
