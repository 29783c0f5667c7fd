"""GGUF export of a causal-LM run: one file that llama.cpp, Ollama and LM Studio run (`lft export --format gguf`).

Written with the `gguf` package's writer from a plain Hugging Face folder (export.py merges adapters first):
- metadata: the hyperparameters llama.cpp reads for the architecture (gguf_archs.py: Llama; rope base and Llama
  3's scaling) and the tokenizer, so the file needs nothing beside it: byte-level BPE as `gpt2`
  (tokens, types, merges, the pre-tokenizer's name), bos/eos/pad/unk ids, whether BOS is added, the chat template;
- tensors under llama.cpp's names (`gguf.get_tensor_name_map`). Llama's q/k rows are reordered per head, because
  Hugging Face rotates the two halves of each head's vector and llama.cpp adjacent pairs (every attention score
  stays the same; tests/sft/test_gguf_export.py checks both conventions). A tied lm_head is not written: without
  an `output.weight`, llama.cpp uses the embedding (as SmolLM2's own files do).
- `f16`: matrices in float16, norms in float32. `q8_0`: matrices whose rows split into 32-value blocks as Q8_0
  (int8 with one float16 scale per block, ~8.5 bits a weight), others float16, norms float32.

The file is read back before it is kept (transformers dequantises it into a torch model and rebuilds the
tokenizer from the metadata): the tokenizer must encode the probe prompts to the same ids, and greedy
continuations and logits on the probe prompts are compared with the torch model (export.json).
"""

from __future__ import annotations

import json
import logging
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from lftrain.errors import InputError
from lftrain.models.gguf_archs import Arch, add_rope, arch_of

log = logging.getLogger("lftrain")
GGUF_TYPES = ("f16", "q8_0")
NEW_TOKENS = 12
PROBES = ["The weather today is", "Once upon a time, in a small village,", "review: the plot was very good",
          "What is the capital of France?", "hello world"]
# What the read-back must meet. max_rel_logit_diff: the largest logit difference on the probes, as a fraction
# of the spread (std) of the torch model's logits; argmax agreement: how often both pick the same next token on
# the torch model's continuations. Measured: float16 0.0013 (tiny test Llama) and 0.0055 (SmolLM2-135M, 30
# layers), agreement 1.0 on both; Q8_0 0.037 and 0.18, agreement 1.0 and 0.967. A broken export (q/k rows in the
# wrong order, a missing tensor) moves logits by about their whole spread and picks other tokens.
TOLERANCE = {"f16": {"max_rel_logit_diff": 0.03, "teacher_forced_argmax_agreement": 0.95},
             "q8_0": {"max_rel_logit_diff": 0.5, "teacher_forced_argmax_agreement": 0.9}}
# What llama.cpp calls the pre-tokenizers we can describe: its regexes match these Hugging Face pre-tokenizers.
_BYTE_LEVEL = {"type": "ByteLevel", "use_regex": True}


def gguf_file_name(gguf_type: str) -> str:
    return f"model-{gguf_type}.gguf"


def convert_folder(folder: Path, gguf_type: str, *, source: Path, name: str) -> Path:
    """Turn the Hugging Face model just written to `folder` into `folder/model-<type>.gguf`, checked against
    torch, with export.json and an Ollama Modelfile beside it; the Hugging Face files are then removed."""
    from lftrain.models.compress import write_info

    if gguf_type not in GGUF_TYPES:
        raise InputError(f"--gguf-type {gguf_type}: choose one of {', '.join(GGUF_TYPES)}")
    alone = folder / ".gguf"  # read back from a folder of its own: beside config.json, transformers would take
    alone.mkdir()             # the Hugging Face architecture name (mistral) over the file's (llama)
    written = alone / gguf_file_name(gguf_type)
    tensors = write_gguf(folder, written, gguf_type, name=name)
    check = check_gguf(folder, written, gguf_type)
    file = written.rename(folder / written.name)
    for p in folder.iterdir():  # the GGUF file holds weights, tokenizer and chat template
        if p != file:
            shutil.rmtree(p) if p.is_dir() else p.unlink()
    (folder / "Modelfile").write_text(f"FROM ./{file.name}\n")
    write_info(folder, {"source": str(source), "format": "gguf", "gguf_type": gguf_type, "file": file.name,
                        "file_bytes": file.stat().st_size, "tensor_types": tensors, "check": check})
    return file


# ---- writing --------------------------------------------------------------------------------------------

def write_gguf(model_dir: Path, dest: Path, gguf_type: str, *, name: str) -> dict[str, int]:
    """Write the causal LM in `model_dir` (a Hugging Face folder) to the GGUF file `dest`; returns the count of
    tensors per GGUF type."""
    from transformers import AutoConfig, AutoTokenizer

    from lftrain.extras import need

    gguf = need("gguf", "GGUF export")
    config = AutoConfig.from_pretrained(model_dir, local_files_only=True)
    arch = arch_of(config, model_dir)
    tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    writer = gguf.GGUFWriter(str(dest), gguf.MODEL_ARCH_NAMES[getattr(gguf.MODEL_ARCH, arch.gguf)])
    writer.add_type("model")
    writer.add_name(name)
    rope_tensors = _add_hyperparameters(writer, config, gguf_type)
    _add_tokenizer(writer, tokenizer, config.vocab_size)
    counts = _add_tensors(writer, model_dir, arch, config, gguf_type)
    for tensor_name, data in rope_tensors:
        writer.add_tensor(tensor_name, data)
        counts["F32"] += 1
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return dict(counts)


def _add_hyperparameters(w, config, gguf_type: str) -> list:
    import gguf

    w.add_context_length(config.max_position_embeddings)
    w.add_embedding_length(config.hidden_size)
    w.add_block_count(config.num_hidden_layers)
    w.add_feed_forward_length(config.intermediate_size)
    w.add_head_count(config.num_attention_heads)
    w.add_head_count_kv(config.num_key_value_heads or config.num_attention_heads)
    w.add_layer_norm_rms_eps(float(config.rms_norm_eps))
    w.add_vocab_size(config.vocab_size)
    w.add_file_type(gguf.LlamaFileType.MOSTLY_F16 if gguf_type == "f16" else gguf.LlamaFileType.MOSTLY_Q8_0)
    w.add_quantization_version(gguf.GGML_QUANT_VERSION)
    return add_rope(w, config)


def _add_tokenizer(w, tokenizer, vocab_size: int) -> None:
    spec = json.loads(tokenizer.backend_tokenizer.to_str())
    model = spec.get("model") or {}
    decoder = (spec.get("decoder") or {}).get("type")
    if model.get("type") != "BPE" or decoder != "ByteLevel":
        raise InputError(f"--format gguf: the tokenizer is {model.get('type')} with a {decoder} decoder; this "
                         "export writes byte-level BPE tokenizers (GPT-2 style, as SmolLM2 and Llama 3 use)")
    tokens, types = _vocab(tokenizer, vocab_size)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre(_pre_tokenizer_name(spec.get("pre_tokenizer")))
    w.add_token_merges([m if isinstance(m, str) else " ".join(m) for m in model.get("merges") or []])
    w.add_add_space_prefix(False)
    w.add_token_list(tokens)
    w.add_token_types(types)
    _add_special_tokens(w, tokenizer)
    if isinstance(tokenizer.chat_template, str):
        w.add_chat_template(tokenizer.chat_template)


def _pre_tokenizer_name(pre: dict | None) -> str:
    """llama.cpp's name for the way text is split before BPE (`tokenizer.ggml.pre`)."""
    steps = (pre or {}).get("pretokenizers") if (pre or {}).get("type") == "Sequence" else [pre or {}]
    shape = [{k: s.get(k) for k in ("type", "use_regex", "individual_digits") if k in s} for s in steps]
    if len(shape) == 1 and shape[0].items() >= _BYTE_LEVEL.items():
        return "gpt-2"  # GPT-2's regex, which ByteLevel(use_regex=True) applies (llama.cpp's name has the hyphen)
    if len(shape) == 2 and shape[0] == {"type": "Digits", "individual_digits": True} and \
            shape[1].items() >= _BYTE_LEVEL.items():
        return "smollm"  # each digit alone, then GPT-2's regex (SmolLM2's original tokenizer)
    if len(steps) == 2 and steps[0].get("type") == "Split" and _is_llama3_split(steps[0]):
        return "llama-bpe"
    raise InputError(f"--format gguf: the tokenizer's pre-tokenizer ({json.dumps(pre)[:200]}) has no llama.cpp "
                     "equivalent this export knows (gpt-2, smollm, llama-bpe)")


def _is_llama3_split(step: dict) -> bool:
    pattern = (step.get("pattern") or {}).get("Regex", "")
    return pattern.startswith("(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}")


def _vocab(tokenizer, vocab_size: int) -> tuple[list[str], list[int]]:
    """Tokens by id and llama.cpp's token types: added special tokens CONTROL, other added tokens USER_DEFINED;
    embedding rows beyond the tokenizer get `[PADi]` placeholders marked UNUSED (as llama.cpp's converter does)."""
    from gguf import TokenType

    added = tokenizer.added_tokens_decoder
    backend = tokenizer.backend_tokenizer
    tokens, types = [], []
    for i in range(vocab_size):
        token = backend.id_to_token(i)
        if token is None:
            tokens.append(f"[PAD{i}]")
            types.append(TokenType.UNUSED)
            continue
        tokens.append(token)
        types.append(TokenType.NORMAL if i not in added else
                     TokenType.CONTROL if added[i].special else TokenType.USER_DEFINED)
    extra = len(tokenizer) - vocab_size
    if extra > 0:
        raise InputError(f"--format gguf: the tokenizer has {extra} more tokens than the model's embedding rows")
    return tokens, types


def _add_special_tokens(w, tokenizer) -> None:
    for kind, tid in (("bos", tokenizer.bos_token_id), ("eos", tokenizer.eos_token_id),
                      ("pad", tokenizer.pad_token_id), ("unk", tokenizer.unk_token_id)):
        if tid is not None:
            getattr(w, f"add_{kind}_token_id")(tid)
    with_special = tokenizer("a")["input_ids"]
    plain = tokenizer("a", add_special_tokens=False)["input_ids"]
    # Whether the tokenizer itself puts BOS/EOS around a text (llama.cpp does the same when told to).
    w.add_add_bos_token(len(with_special) > len(plain) and with_special[0] == tokenizer.bos_token_id)
    w.add_add_eos_token(len(with_special) > len(plain) and with_special[-1] == tokenizer.eos_token_id)


def permute_rope(weight: np.ndarray, heads: int) -> np.ndarray:
    """Reorder a q/k projection's output rows from Hugging Face's rope layout (per head: the first half of the
    dimensions pairs with the second half) to llama.cpp's (adjacent dimensions pair up): row h*d + 2i + j of the
    result is row h*d + j*d/2 + i of `weight`."""
    d = weight.shape[0] // heads
    return weight.reshape(heads, 2, d // 2, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)


def _add_tensors(w, model_dir: Path, arch: Arch, config, gguf_type: str) -> Counter[str]:
    import gguf

    names = gguf.get_tensor_name_map(getattr(gguf.MODEL_ARCH, arch.gguf), config.num_hidden_layers)
    counts: Counter[str] = Counter()
    for hf_name, data in _weights(model_dir):
        if hf_name == "lm_head.weight" and config.tie_word_embeddings:
            continue  # llama.cpp falls back to token_embd.weight when output.weight is absent
        name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if name is None:
            raise InputError(f"--format gguf: no llama.cpp name for the tensor {hf_name} of {model_dir}")
        if arch.permute_qk and hf_name.endswith("self_attn.q_proj.weight"):
            data = permute_rope(data, config.num_attention_heads)
        elif arch.permute_qk and hf_name.endswith("self_attn.k_proj.weight"):
            data = permute_rope(data, config.num_key_value_heads or config.num_attention_heads)
        array, qtype = _encode(data, gguf_type)
        w.add_tensor(name, array, raw_dtype=qtype)
        counts[qtype.name if qtype is not None else str(array.dtype)] += 1
    return counts


def _weights(model_dir: Path):
    """(name, float32 array) for every tensor of the folder's safetensors files."""
    from safetensors import safe_open

    files = sorted(model_dir.glob("*.safetensors"))
    if not files:
        raise InputError(f"--format gguf: {model_dir} has no .safetensors weights")
    for f in files:
        with safe_open(f, framework="pt") as st:
            for key in st.keys():
                yield key, st.get_tensor(key).float().numpy()


def _encode(data: np.ndarray, gguf_type: str):
    """(array to write, its GGML type or None for plain float arrays). Norms stay float32, as llama.cpp keeps them."""
    import gguf

    if data.ndim == 1:
        return data.astype(np.float32), None
    if gguf_type == "q8_0" and data.shape[-1] % gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType.Q8_0][0] == 0:
        q8 = gguf.GGMLQuantizationType.Q8_0
        return gguf.quants.quantize(data.astype(np.float32), q8), q8
    return data.astype(np.float16), None


# ---- checking -------------------------------------------------------------------------------------------

def check_gguf(model_dir: Path, file: Path, gguf_type: str) -> dict[str, Any]:
    """Read `file` back and compare it with the torch model in `model_dir` on the probe prompts; raises
    ExportCheckError when they disagree beyond the tolerance of `gguf_type`."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lftrain.models.compress import ExportCheckError

    common = {"local_files_only": True, "dtype": torch.float32, "attn_implementation": "eager"}
    reference = AutoModelForCausalLM.from_pretrained(model_dir, **common).eval()
    restored = AutoModelForCausalLM.from_pretrained(file.parent, gguf_file=file.name, config=_read_config(file),
                                                    **common).eval()
    tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    restored_tok = AutoTokenizer.from_pretrained(file.parent, gguf_file=file.name, local_files_only=True)
    prompts = probe_prompts(tokenizer)
    ids = [tokenizer(p)["input_ids"] for p in prompts]
    result = _compare_models(reference, restored, ids)
    result["tokenizer_identical"] = all(restored_tok(p)["input_ids"] == i for p, i in zip(prompts, ids))
    # transformers does not give the rebuilt tokenizer the file's template: read it from the metadata
    result["chat_template_identical"] = _metadata(file, "tokenizer.chat_template") == tokenizer.chat_template
    result["tolerance"] = tol = TOLERANCE[gguf_type]
    failed = [k for k in ("tokenizer_identical", "chat_template_identical") if not result[k]]
    if result["max_rel_logit_diff"] > tol["max_rel_logit_diff"]:
        failed.append(f"max_rel_logit_diff {result['max_rel_logit_diff']:.3g} > {tol['max_rel_logit_diff']}")
    if result["teacher_forced_argmax_agreement"] < tol["teacher_forced_argmax_agreement"]:
        failed.append(f"teacher_forced_argmax_agreement {result['teacher_forced_argmax_agreement']:.3g} < "
                      f"{tol['teacher_forced_argmax_agreement']}")
    if failed:
        raise ExportCheckError(f"the GGUF file read back disagrees with the torch model: {', '.join(failed)} "
                               f"({result})")
    log.info("GGUF %s read back: %d/%d greedy continuations identical, logits within %.2g of their spread",
             gguf_type, result["greedy_identical"], result["prompts"], result["max_rel_logit_diff"])
    return result


def _read_config(file: Path):
    """The file's config as transformers reads it, except that a `llama` file whose name says Mistral stays Llama:
    transformers renames it `mistral` and then finds no weight map for that name (llama.cpp's own files too)."""
    from transformers import AutoConfig, LlamaConfig

    config = AutoConfig.from_pretrained(file.parent, gguf_file=file.name)
    if config.model_type == "mistral" and _metadata(file, "general.architecture") == "llama":
        config = LlamaConfig(**{k: v for k, v in config.to_dict().items() if k != "model_type"})
    return config


def _metadata(file: Path, key: str):
    from gguf import GGUFReader

    field = GGUFReader(str(file)).fields.get(key)
    return field.contents() if field is not None else None


def probe_prompts(tokenizer) -> list[str]:
    """The plain probe texts, and the same as one-turn conversations in the model's chat template."""
    prompts = list(PROBES)
    if isinstance(tokenizer.chat_template, str):
        prompts += [tokenizer.apply_chat_template([{"role": "user", "content": p}], tokenize=False,
                                                  add_generation_prompt=True) for p in PROBES]
    return prompts


def _compare_models(reference, restored, prompts: list[list[int]]) -> dict[str, Any]:
    """Greedy continuations of both models, and both models' logits on the torch model's continuation."""
    same, first_diff, abs_diff, rel_diff, agree, total = 0, [], 0.0, 0.0, 0, 0
    for ids in prompts:
        ref_tokens, back_tokens = greedy(reference, ids, NEW_TOKENS), greedy(restored, ids, NEW_TOKENS)
        same += ref_tokens == back_tokens
        first_diff.append(next((i for i, (a, b) in enumerate(zip(ref_tokens, back_tokens)) if a != b), None))
        a, b = _logits(reference, ids + ref_tokens, len(ids)), _logits(restored, ids + ref_tokens, len(ids))
        diff = float(np.abs(a - b).max())
        abs_diff, rel_diff = max(abs_diff, diff), max(rel_diff, diff / float(a.std()))
        agree += int((a.argmax(-1) == b.argmax(-1)).sum())
        total += len(a)
    return {"prompts": len(prompts), "new_tokens": NEW_TOKENS, "greedy_identical": same,
            "first_difference_at": first_diff, "max_abs_logit_diff": abs_diff, "max_rel_logit_diff": rel_diff,
            "teacher_forced_argmax_agreement": agree / total}


def greedy(model, ids: list[int], n: int) -> list[int]:
    """`n` greedy tokens after `ids` (no stopping at end-of-text: the comparison wants equal lengths)."""
    import torch

    with torch.no_grad():
        out = model.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                             max_new_tokens=n, min_new_tokens=n, do_sample=False, pad_token_id=0)
    return out[0, len(ids):].tolist()


def _logits(model, ids: list[int], start: int) -> np.ndarray:
    """Next-token logits at the positions that predict ids[start:]."""
    import torch

    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0, start - 1:-1].float().numpy()
