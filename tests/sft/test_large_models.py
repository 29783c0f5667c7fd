"""What makes large decoders fit: the dtype rule, the chunked loss, 8-bit optimiser states, lean checkpoints."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch

from lftrain.models.loading import resolve_loading
from tests.conftest import run_lft, write_recipe
from tests.sft.conftest import sentiment_rows, write_jsonl


@pytest.mark.parametrize(("setting", "precision", "frozen", "expected"), [
    ("auto", "bf16", True, "bf16"),  # a frozen base computed in bf16 is stored in bf16
    ("auto", "fp32", True, "fp32"),
    ("auto", "bf16", False, "fp32"),  # full fine-tuning keeps fp32 master weights
    ("fp16", "fp32", False, "fp16"),  # an explicit dtype wins
])
def test_the_dtype_rule(setting, precision, frozen, expected):
    assert resolve_loading(setting, precision, frozen_base=frozen).dtype == expected


@pytest.mark.parametrize("weight_trains", [False, True])
def test_chunked_cross_entropy_equals_the_plain_loss_and_its_gradients(weight_trains):
    from lftrain.models.chunked_loss import loss_sum

    torch.manual_seed(0)
    head = torch.nn.Linear(16, 50, bias=False)
    head.weight.requires_grad_(weight_trains)
    hidden = torch.randn(3, 7, 16, requires_grad=True)
    labels = torch.randint(0, 50, (3, 7))
    labels[0, :3] = -100
    plain = torch.nn.functional.cross_entropy(head(hidden).reshape(-1, 50), labels.reshape(-1), reduction="sum")
    plain.backward()
    want_h, want_w = hidden.grad.clone(), head.weight.grad.clone() if weight_trains else None
    hidden.grad, head.weight.grad = None, None
    chunked = loss_sum(hidden, head, labels, chunk=4)  # 21 tokens in chunks of 4: a ragged last chunk
    (2 * chunked).backward()
    assert chunked.item() == pytest.approx(plain.item(), rel=1e-6)
    torch.testing.assert_close(hidden.grad, 2 * want_h, rtol=1e-5, atol=1e-6)
    if weight_trains:
        torch.testing.assert_close(head.weight.grad, 2 * want_w, rtol=1e-5, atol=1e-6)
    else:
        assert head.weight.grad is None


def test_adamw8bit_keeps_one_byte_moments_and_learns():
    pytest.importorskip("bitsandbytes")
    from lftrain.training.optim import build_optimizer

    torch.manual_seed(0)
    model = torch.nn.Linear(128, 64)
    cfg = SimpleNamespace(lr=1e-2, weight_decay=0.0, layer_lr_decay=None, optimizer="adamw8bit")
    opt = build_optimizer(model, cfg)
    x, y = torch.randn(256, 128), torch.randn(256, 64)
    first = None
    for _ in range(30):
        loss = torch.nn.functional.mse_loss(model(x), y)
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.8 * first
    state = opt.state[model.weight]
    assert state["state1"].dtype == torch.uint8 and state["state2"].dtype == torch.uint8


def test_a_bf16_base_trains_fp32_adapters_and_checkpoints_only_them(tiny_llama, tmp_path):
    """model.dtype auto under bf16: the frozen base is loaded in bf16, the adapter trains in fp32, and the
    checkpoint holds the adapter alone (the base is read again from the model on resume)."""
    from safetensors.torch import load_file

    out = tmp_path / "run"
    data = write_jsonl(tmp_path / "train.jsonl", sentiment_rows(48))
    recipe = {"model": {"path": str(tiny_llama)}, "task": {"type": "causal-lm-sft", "max_length": 64,
                                                          "generation": {"max_prompts": 0}},
              "data": {"train": str(data), "test_fraction": 0.2, "cache_dir": str(tmp_path / "cache")},
              "adaptation": {"type": "lora", "r": 4},
              "train": {"max_steps": 3, "batch_size": 8, "threads": 1, "precision": "bf16", "log_every": 1},
              "output": {"dir": str(out)}}
    proc = run_lft("train", str(write_recipe(tmp_path / "r.yaml", recipe)))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "weights: bf16 (frozen base, computed in bf16" in proc.stderr
    assert json.loads((out / "model" / "base_loading.json").read_text())["dtype"] == "bf16"
    ckpt = sorted((out / "checkpoints").glob("step-*"))[-1]
    tensors = load_file(ckpt / "model.safetensors")
    assert tensors and all("lora_" in k for k in tensors)
    assert {t.dtype for t in tensors.values()} == {torch.float32}


def test_lft_train_refuses_a_recipe_that_will_not_fit_before_any_weight_loads(tiny_llama, tmp_path):
    out = tmp_path / "run"
    data = write_jsonl(tmp_path / "train.jsonl", sentiment_rows(16))
    recipe = {"model": {"path": str(tiny_llama)}, "task": {"type": "causal-lm-sft", "max_length": 64},
              "data": {"train": str(data), "test_fraction": 0.2},
              "train": {"max_steps": 1, "threads": 1, "precision": "fp32", "memory_limit_mb": 50},
              "output": {"dir": str(out)}}
    proc = run_lft("train", str(write_recipe(tmp_path / "r.yaml", recipe)))
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "does not fit" in proc.stderr and "50 MB" in proc.stderr
    assert not out.exists()  # refused before the run directory, let alone the weights
