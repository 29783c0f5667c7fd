"""train.precision and train.device: what `auto` picks on each kind of hardware (no GPU needed to check the choice),
and fp16's gradient scaler, which is exercised on the CPU and resumes exactly."""

from __future__ import annotations

import json

import pytest
import torch

from lftrain.errors import InputError
from lftrain.models import precision as pr
from tests.conftest import run_lft, tiny_recipe, toy_rows, write_csv, write_recipe


@pytest.fixture
def gpu(monkeypatch):
    """A pretend CUDA device of a given kind: what resolution reads of it."""
    def make(bf16: bool, count: int = 1):
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16)
        monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "A100" if bf16 else "Tesla T4")
    return make


def test_auto_precision_per_device(gpu, monkeypatch):
    cuda = torch.device("cuda")
    gpu(bf16=True)
    assert pr.resolve_precision("auto", cuda)[0] == "bf16"
    gpu(bf16=False)
    precision, why = pr.resolve_precision("auto", cuda)
    assert precision == "fp16" and "T4" in why and "gradient scaler" in why
    with pytest.raises(InputError, match="Tesla T4 has no bf16"):
        pr.resolve_precision("bf16", cuda)
    assert pr.resolve_precision("fp32", cuda)[0] == "fp32"
    monkeypatch.setattr(pr, "cpu_bf16_fast", lambda: None)
    assert pr.resolve_precision("auto", torch.device("cpu"))[0] == "fp32"
    monkeypatch.setattr(pr, "cpu_bf16_fast", lambda: "amx_bf16")
    assert pr.resolve_precision("auto", torch.device("cpu")) == ("bf16", "CPU has amx_bf16")


def test_device_choice(gpu, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert pr.pick_device("auto") == torch.device("cpu")
    with pytest.raises(InputError, match="torch sees no GPU"):
        pr.pick_device("cuda")
    gpu(bf16=True, count=2)
    assert pr.pick_device("auto") == torch.device("cuda") and pr.pick_device("cuda:1") == torch.device("cuda:1")
    with pytest.raises(InputError, match=r"sees 2 GPU\(s\)"):
        pr.pick_device("cuda:2")
    cpu = torch.device("cpu")
    assert pr.grad_scaler("fp16", cpu) is not None and pr.grad_scaler("bf16", cpu) is None


def test_a_bad_device_string_is_a_recipe_error():
    from lftrain.config import load_recipe
    from lftrain.errors import RecipeError

    with pytest.raises(RecipeError, match="train.device"):
        load_recipe(data={"model": {"path": "m"}, "data": {"train": "t.csv"}, "train": {"device": "gpu0"}})


def _losses(run):
    return [r for r in (json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines())
            if r["event"] == "train"]


def test_fp16_trains_with_a_loss_scale_that_checkpoints_carry(tiny_bert, tmp_path):
    """fp16 autocast runs on the CPU too, so the scaler's whole path is exercised here: the scale is logged at every
    step and saved in each checkpoint's state."""
    train = write_csv(tmp_path / "train.csv", toy_rows(80))
    recipe = tiny_recipe(tiny_bert, train, tmp_path / "run", max_steps=8, precision="fp16", save_every=4)
    proc = run_lft("train", str(write_recipe(tmp_path / "r.yaml", recipe)))
    assert proc.returncode == 0, proc.stderr
    assert "precision: fp16 (set in the recipe)" in proc.stderr
    lines = _losses(tmp_path / "run")
    assert len(lines) == 8 and all(r["loss_scale"] > 0 for r in lines)
    state = json.loads((tmp_path / "run" / "checkpoints" / "step-00000008" / "state.json").read_text())
    assert state["loss_scale"]["scale"] == lines[-1]["loss_scale"]


def test_the_loss_scale_resumes_exactly(tiny_bert_nodrop, tmp_path):
    """Two steps, a checkpoint, two more; against: the checkpoint loaded into a twin whose scaler takes the saved
    state, then the same two steps. Bitwise the same weights and the same scale (a fresh scaler would differ)."""
    import numpy as np

    from lftrain.training import checkpoint as ck
    from lftrain.training.loop import _checkpoint, _train_step
    from tests.unit.test_training import _ctx, _setup

    recipe, task, tok, data, model = _setup(tiny_bert_nodrop, 32)
    ctx = _ctx(recipe, task, data, model, tok)
    ctx.precision, ctx.scaler = "fp16", torch.amp.GradScaler("cpu", init_scale=2.0**10, growth_interval=1)
    ctx.run = type("Run", (), {"checkpoints": tmp_path / "ck", "log_metrics": lambda self, r: None})()
    ctx.cfg = recipe.train.model_copy(update={"keep_checkpoints": 2})
    state = ck.TrainState()
    for step in (1, 2):
        _train_step(ctx, np.arange(16), 16)
        state.step = step
    _checkpoint(ctx, state)
    for _ in (3, 4):
        _train_step(ctx, np.arange(16, 32), 16)
    twin = _setup(tiny_bert_nodrop, 32)[4]
    tctx = _ctx(recipe, task, data, twin, tok)
    tctx.precision, tctx.scaler = "fp16", torch.amp.GradScaler("cpu", init_scale=2.0**10, growth_interval=1)
    saved = ck.load_checkpoint(tmp_path / "ck" / "step-00000002", twin, tctx.optimizer, tctx.scheduler)
    assert saved.loss_scale["scale"] == 2.0**12  # grown once per finite step
    tctx.scaler.load_state_dict(saved.loss_scale)
    for _ in (3, 4):
        _train_step(tctx, np.arange(16, 32), 16)
    assert tctx.scaler.get_scale() == ctx.scaler.get_scale() == 2.0**14
    for a, b in zip(model.parameters(), twin.parameters()):
        assert torch.equal(a, b)
