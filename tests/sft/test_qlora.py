"""QLoRA through the real CLI on a tiny Llama: a 4-bit NF4 base (bitsandbytes) learns through LoRA, merges into
the dequantized weights, exports, reloads in plain transformers with the same greedy outputs, and resumes bitwise.
A GGUF export starts from the same merged folder as a LoRA run's (tests/sft/test_gguf_export.py)."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest
from safetensors.torch import load_file

from lftrain.training.faults import KILL_AT_STEP
from tests.conftest import run_lft, write_recipe
from tests.sft.conftest import make_tiny_llama, sentiment_rows, write_jsonl

pytest.importorskip("bitsandbytes")


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory) -> Path:
    """Width 64: bitsandbytes' CPU kernels quantize in blocks of 64 input features."""
    return make_tiny_llama(tmp_path_factory.mktemp("tiny-llama-64"), hidden=64)


def _recipe(model: Path, tmp: Path, out: Path, quantize: str = "nf4", **train) -> dict:
    data = write_jsonl(tmp / "train.jsonl", sentiment_rows(96))
    return {"model": {"path": str(model)},
            "task": {"type": "causal-lm-sft", "max_length": 64,
                     "generation": {"max_new_tokens": 3, "max_prompts": 8, "samples": 2}},
            "data": {"train": str(data), "test_fraction": 0.2, "eval_fraction": 0.1, "cache_dir": str(tmp / "cache")},
            "adaptation": {"type": "lora", "r": 8, "alpha": 16, "dropout": 0.0, "quantize": quantize,
                           "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                                              "down_proj"]},
            "train": {"epochs": 4, "lr": 2e-2, "batch_size": 8, "seed": 0, "threads": 1, "precision": "fp32",
                      "log_every": 1, **train},
            "output": {"dir": str(out)}}


def _train_losses(run: Path) -> list[float]:
    return [r["loss"] for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())
            if r.get("event") == "train"]


@pytest.fixture(scope="module")
def qlora_run(tiny_llama, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("qlora")
    out = tmp / "run"
    proc = run_lft("train", str(write_recipe(tmp / "r.yaml", _recipe(tiny_llama, tmp, out))))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, proc


def test_a_4bit_base_learns_through_its_adapter(qlora_run):
    run, proc = qlora_run
    assert "Linear weights nf4 (bitsandbytes)" in proc.stderr
    losses = _train_losses(run)
    # the base is frozen in 4 bits: only the adapter can do this (a 0.3 margin over 32 steps; seen: > 2)
    assert sum(losses[-4:]) / 4 < sum(losses[:4]) / 4 - 0.3, losses
    loading = json.loads((run / "model" / "base_loading.json").read_text())
    assert loading["quantize"] == "nf4"
    # the checkpoint holds what trains, not the 4-bit base
    ckpt = sorted((run / "checkpoints").glob("step-*"))[-1]
    names = load_file(ckpt / "model.safetensors").keys()
    assert names and all("lora_" in n for n in names), sorted(names)[:5]


def test_merged_export_reloads_in_transformers_with_the_same_greedy_outputs(qlora_run, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lftrain.runs.loaded import LoadedRun

    run, _ = qlora_run
    out = tmp_path / "merged"
    proc = run_lft("export", str(run), "--output", str(out), "--merge")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "quantization_config" not in json.loads((out / "config.json").read_text())
    plain = AutoModelForCausalLM.from_pretrained(out, local_files_only=True).eval()
    tok = AutoTokenizer.from_pretrained(out)
    loaded = LoadedRun(run)  # the run as lft generate / serve load it: the NF4 base and the adapter
    prompts = [tok.apply_chat_template([{"role": "user", "content": f"review: the film was {w}"}],
                                       add_generation_prompt=True, tokenize=False) for w in ("good", "awful", "bad")]
    for text in prompts:
        ids = tok(text, return_tensors="pt").input_ids
        with torch.no_grad():
            a = plain.generate(ids, max_new_tokens=4, do_sample=False)
            b = loaded.model.generate(ids, max_new_tokens=4, do_sample=False)
        assert a.tolist() == b.tolist()


def test_generate_on_a_qlora_run(qlora_run):
    run, _ = qlora_run
    proc = run_lft("generate", str(run), "--prompt", "review: the film was good")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip()


def test_killed_qlora_run_resumes_to_identical_adapter(tiny_llama, tmp_path):
    settings = {"save_every": 3, "max_steps": 8, "epochs": 1}
    ref, cut = tmp_path / "ref", tmp_path / "cut"
    assert run_lft("train", str(write_recipe(tmp_path / "a.yaml", _recipe(tiny_llama, tmp_path, ref, **settings)))
                   ).returncode == 0
    recipe = write_recipe(tmp_path / "b.yaml", _recipe(tiny_llama, tmp_path, cut, **settings))
    killed = run_lft("train", str(recipe), env={KILL_AT_STEP: "5"})
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    resumed = run_lft("train", str(recipe))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed from step-00000003" in resumed.stderr
    a = load_file(ref / "model" / "adapter_model.safetensors")
    b = load_file(cut / "model" / "adapter_model.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        assert (a[k] == b[k]).all(), f"{k} differs after kill + resume"
    assert _train_losses(ref) == _train_losses(cut)


def test_an_int8_base_trains(tiny_llama, tmp_path):
    out = tmp_path / "run"
    recipe = write_recipe(tmp_path / "r.yaml", _recipe(tiny_llama, tmp_path, out, quantize="int8", max_steps=4))
    proc = run_lft("train", str(recipe))
    assert proc.returncode == 0, proc.stderr[-3000:]
    losses = _train_losses(out)
    assert losses[-1] < losses[0], losses
