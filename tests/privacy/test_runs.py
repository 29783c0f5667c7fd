"""Private runs through the real CLI on a tiny random BERT: the ε in manifest.json is Opacus's accountant's for the
run's steps and sample rate (recomputed here independently), Poisson batches vary, LoRA works, the report and the
model card carry ε, and what cannot be trained privately stops with exit 2 before training."""

from __future__ import annotations

import json
import math

import pytest
from opacus.accountants import PRVAccountant, RDPAccountant
from opacus.accountants.utils import get_noise_multiplier

from tests.conftest import run_lft, tiny_recipe, toy_rows, write_csv, write_recipe

EPSILON, DELTA, BATCH = 3.0, 1e-3, 8


def _recipe(tmp_path, model, name: str, *, privacy=None, adaptation=None, **train):
    data = tmp_path / "train.csv"
    if not data.exists():
        write_csv(data, toy_rows(200))
    r = tiny_recipe(model, data, tmp_path / name, batch_size=BATCH, log_samples=True, **train)
    r["train"]["privacy"] = privacy if privacy is not None else {"epsilon": EPSILON, "delta": DELTA}
    r["data"]["checks"] = {"run": False}
    if adaptation:
        r["adaptation"] = adaptation
    return write_recipe(tmp_path / f"{name}.yaml", r), tmp_path / name


def _lines(path):
    return [json.loads(x) for x in path.read_text().splitlines()]


def test_private_run_reports_the_accountants_epsilon(tiny_bert, tmp_path):
    recipe, run = _recipe(tmp_path, tiny_bert, "full")
    p = run_lft("train", str(recipe))
    assert p.returncode == 0, p.stderr[-3000:]
    m = json.loads((run / "manifest.json").read_text())
    priv, n = m["privacy"], m["data_stats"]["train_rows"]
    steps = m["total_steps"]
    assert priv["steps"] == steps == 2 * math.ceil(n / BATCH)
    assert priv["sample_rate"] == pytest.approx(BATCH / n) and priv["delta"] == DELTA
    # the noise multiplier is the one Opacus calibrates for the target over these steps and this sample rate
    sigma = get_noise_multiplier(target_epsilon=EPSILON, target_delta=DELTA, sample_rate=BATCH / n, steps=steps,
                                 accountant="prv")
    assert priv["noise_multiplier"] == pytest.approx(sigma, rel=1e-9)
    # the ε spent: an accountant stepped once per optimiser step, as Opacus's optimiser hook would
    acc = PRVAccountant()
    for _ in range(steps):
        acc.step(noise_multiplier=sigma, sample_rate=BATCH / n)
    eps = acc.get_epsilon(delta=DELTA)
    assert priv["epsilon_spent"] == pytest.approx(eps, rel=1e-6)
    assert EPSILON - 0.05 < priv["epsilon_spent"] <= EPSILON
    rdp = RDPAccountant()
    rdp.history = [(sigma, BATCH / n, steps)]
    assert rdp.get_epsilon(delta=DELTA) > priv["epsilon_spent"]  # PRV is the tighter accountant: not RDP's figure

    # Poisson sampling: the logged steps hold varying numbers of rows, drawn with probability BATCH / n each
    sizes = [len(r["examples"]) for r in _lines(run / "samples.jsonl")]
    assert len(sizes) == steps and len(set(sizes)) > 3
    assert abs(sum(sizes) / steps - BATCH) < 3.0
    resolved = (run / "recipe.yaml").read_text()
    assert "accel: 'off'" in resolved or "accel: off" in resolved
    assert "train.privacy: train.accel set to off" in p.stderr

    spent = f"{priv['epsilon_spent']:.2f}"
    card = (run / "model_card.md").read_text()
    assert "## Privacy" in card and f"ε = {spent}" in card and f"δ = {DELTA:g}" in card
    report = (run / "report.html").read_text()
    assert "Differential privacy" in report and f"{priv['epsilon_spent']:.4f} ({DELTA:g})" in report
    assert json.loads((run / "evidence.json").read_text())["privacy"]["epsilon_spent"] == priv["epsilon_spent"]
    assert any(r.get("event") == "privacy" and r["epsilon"] == priv["epsilon_spent"]
               for r in _lines(run / "metrics.jsonl"))


def test_lora_private_run_trains_the_adapter_and_reports_epsilon(tiny_bert, tmp_path):
    recipe, run = _recipe(tmp_path, tiny_bert, "lora", privacy={"epsilon": 8.0, "delta": DELTA, "accountant": "rdp"},
                          adaptation={"type": "lora", "r": 4})
    p = run_lft("train", str(recipe))
    assert p.returncode == 0, p.stderr[-3000:]
    m = json.loads((run / "manifest.json").read_text())
    assert m["trainable_parameters"] < 20_000  # the adapter and the head, not the encoder
    priv = m["privacy"]
    acc = RDPAccountant()
    acc.history = [(priv["noise_multiplier"], priv["sample_rate"], priv["steps"])]
    assert priv["accountant"] == "rdp" and priv["epsilon_spent"] == pytest.approx(acc.get_epsilon(DELTA), rel=1e-9)
    assert (run / "model" / "adapter_model.safetensors").is_file()


@pytest.mark.parametrize("change, message", [
    ({"adaptation": {"type": "ia3"}}, "no per-example gradient for these trainable layers"),
    ({"train": {"precision": "bf16"}}, "train.precision bf16"),
])
def test_what_cannot_be_trained_privately_stops_with_exit_2(tiny_bert, tmp_path, change, message):
    recipe, run = _recipe(tmp_path, tiny_bert, "refused")
    import yaml

    r = yaml.safe_load(recipe.read_text())
    for section, values in change.items():
        r[section] = {**r.get(section, {}), **values}
    write_recipe(recipe, r)
    p = run_lft("train", str(recipe))
    assert p.returncode == 2, p.stderr[-2000:]
    assert message in p.stderr
    assert not (run / "checkpoints").exists() or not any((run / "checkpoints").iterdir())
