"""GGUF checkpoints (llama.cpp's format) as trainable Hugging Face model folders, converted once and cached.

A GGUF file stores quantised weights (Q4_1, Q8_0, ...). Training needs float weights, so loading
dequantises every tensor (transformers + the `gguf` package do this) into a float32
`*ForCausalLM`, which is then saved as a plain safetensors folder under
`<cache>/gguf/<sha256 of the file>/`. Later runs read that folder in under a second instead of
dequantising again (~25 s for SmolLM2-135M). The key is the file's content hash, so a changed file
is converted again and a renamed one is not.

Refused up front, before anything heavy runs: tensor types no dequantiser exists for (the model could
not be turned into float weights, so it could not be trained), and architectures transformers cannot
build from GGUF.
"""

from __future__ import annotations

import logging
from pathlib import Path

from lftrain.errors import ModelLoadError

log = logging.getLogger("lftrain")
FLOAT_TYPES = ("F32", "F16", "BF16", "F64")
MARKER = "lftrain-gguf.json"  # written last: a folder without it is an unfinished conversion


def find_gguf(path: Path) -> Path | None:
    """`path` itself if it is a .gguf file; the single .gguf inside a folder without config.json; else None."""
    if path.is_file() and path.suffix.lower() == ".gguf":
        return path
    if path.is_dir() and not (path / "config.json").is_file():
        files = sorted(path.glob("*.gguf"))
        if len(files) > 1:
            raise ModelLoadError(f"{path}: holds {len(files)} GGUF files ({', '.join(f.name for f in files)}); "
                                 "name one in model.path")
        return files[0] if files else None
    return None


def trainable_types() -> set[str]:
    """GGUF tensor types that can be dequantised to float (and so trained)."""
    from gguf import quants

    return set(FLOAT_TYPES) | {t.name for t in getattr(quants, "_type_traits", {})}


def inspect_gguf(file: Path) -> dict:
    """Architecture and tensor-type counts of a GGUF file; raises ModelLoadError if it cannot be trained."""
    from collections import Counter

    from lftrain.extras import need

    GGUFReader = need("gguf", "reading a GGUF model file").GGUFReader
    from transformers.modeling_gguf_pytorch_utils import GGUF_SUPPORTED_ARCHITECTURES

    try:
        reader = GGUFReader(str(file))
    except Exception as exc:  # the reader raises ValueError/struct errors for a damaged file
        raise ModelLoadError(f"{file}: not a readable GGUF file ({exc})") from None
    arch_field = reader.fields.get("general.architecture")
    arch = bytes(arch_field.parts[-1]).decode() if arch_field else "unknown"
    types = Counter(t.tensor_type.name for t in reader.tensors)
    if arch not in GGUF_SUPPORTED_ARCHITECTURES:
        raise ModelLoadError(f"{file}: GGUF architecture '{arch}' cannot be converted to a transformers model "
                             f"(supported: {', '.join(sorted(GGUF_SUPPORTED_ARCHITECTURES))})")
    bad = sorted(set(types) - trainable_types())
    if bad:
        raise ModelLoadError(f"{file}: tensors quantised as {', '.join(bad)} cannot be dequantised to float "
                             "weights, so this model cannot be trained; use a GGUF file quantised as F32/F16/BF16, "
                             "Q8_0, Q4_0/Q4_1/Q5_x or a k-quant")
    return {"architecture": arch, "tensor_types": dict(types)}


def converted_dir(file: Path, cache_dir: str | None = None) -> Path:
    """The cached Hugging Face folder for `file`, converting it first if needed. Safe against concurrent
    conversions and kills: the folder is built under a temporary name and renamed when complete."""
    from lftrain.data.token_cache import cache_root
    from lftrain.files import build_once, sha256_file

    digest = sha256_file(file, cached=True)
    out = cache_root(cache_dir) / "gguf" / digest[:32]
    if (out / MARKER).is_file():
        return out
    info = inspect_gguf(file)
    log.info("converting %s (%s; %s) to a float Hugging Face model in %s, once", file.name, info["architecture"],
             ", ".join(f"{n}×{t}" for t, n in info["tensor_types"].items()), out)

    def build(tmp: Path) -> dict:
        _convert(file, tmp)
        return {"source": str(file), "sha256": digest, **info}

    return build_once(out, MARKER, build)


def _convert(file: Path, out: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kwargs = {"gguf_file": file.name, "local_files_only": True}
    try:
        tokenizer = AutoTokenizer.from_pretrained(file.parent, **kwargs)
        model = AutoModelForCausalLM.from_pretrained(file.parent, dtype=torch.float32, **kwargs)
    except (OSError, ValueError, KeyError) as exc:
        raise ModelLoadError(f"{file}: cannot convert the GGUF file: {exc}") from None
    # The dequantised model still carries the GGUF quantiser, and save_pretrained refuses a quantised model:
    # its weights are plain float tensors now, so drop the marks.
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
