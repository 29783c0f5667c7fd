"""Evidence from a real `lft train`: evidence.json, stored temperature, predict, report, compare, fail_if."""

from __future__ import annotations

import json

import numpy as np
import pytest

import lftrain.api as api
from lftrain.cli import main as lft
from lftrain.evaluation.gate import EXIT_GATE
from tests.conftest import write_csv

# `lft` in-process (the same argument parsing and dispatch as the console script) where a subprocess would
# only add interpreter start-up time; `lft train` itself runs as a real subprocess in conftest.py.


def test_run_writes_evidence(evidence_runs):
    run, proc = evidence_runs["a"]
    assert proc.returncode == 0, proc.stderr
    ev = json.loads((run / "evidence.json").read_text())
    test = ev["splits"]["test"]
    for name in ("accuracy", "macro_f1", "weighted_f1", "nll", "brier", "ece"):
        ci = test["intervals"][name]
        assert ci["low"] <= ci["value"] <= ci["high"], name
    assert {"ece", "ece_mass", "brier", "nll"} <= set(test["calibration"]["after"])
    t = json.loads((run / "model" / "calibration.json").read_text())
    assert t["temperature"] == ev["temperature"]["temperature"] and t["nll_after"] <= t["nll_before"]
    assert set(ev["ood"]["scores"]) == {"msp", "energy"} and ev["ood"]["n"] == 18
    assert ev["ood"]["data"].endswith("ood.csv [kind=ood]")  # eval.ood_filter applied and recorded
    assert ev["latency"]["latency_p50_ms"] > 0 and ev["latency"]["throughput_per_s"] > 0
    assert ev["gate"]["passed"]
    saved = np.load(run / "evidence" / "test.npz", allow_pickle=False)
    assert saved["logits"].shape == (32, 2) and saved["labels"].shape == (32,)
    assert "test evidence (95% bootstrap intervals" in proc.stdout and "latency: p50" in proc.stdout


def test_fail_if_exits_4_and_keeps_the_model(evidence_runs):
    run, proc = evidence_runs["b"]
    assert proc.returncode == EXIT_GATE, proc.stderr
    assert "eval.fail_if not met: accuracy" in proc.stderr and "ece" not in proc.stderr.split("not met:")[1]
    assert (run / "model" / "model.safetensors").is_file()
    assert json.loads((run / "run.json").read_text())["status"] == "finished"


def test_predict_applies_the_stored_temperature(evidence_runs):
    run, _ = evidence_runs["a"]
    data = write_csv(evidence_runs["work"] / "new.csv", [{"text": "a great and lovely film"},
                                                         {"text": "dull boring plot"}])
    t = json.loads((run / "model" / "calibration.json").read_text())["temperature"]
    calibrated = api.predict(run, data)
    raw = api.predict(run, data, temperature=False)
    for c, r in zip(calibrated, raw):
        assert c["label"] == r["label"]
        lc, lr = (np.log(np.array(list(x["probs"].values()))) for x in (c, r))
        # log-probabilities differ by a constant factor 1/T once centred: softmax(z / T)
        np.testing.assert_allclose(lc - lc.mean(), (lr - lr.mean()) / t, atol=2e-3)
    out = evidence_runs["work"] / "p.jsonl"
    assert lft(["predict", str(run), "--input", str(data), "--output", str(out), "--no-temperature"]) == 0
    assert [json.loads(x)["probs"] for x in out.read_text().splitlines()] == [r["probs"] for r in raw]


def test_report_regenerates_from_saved_files(evidence_runs):
    run, _ = evidence_runs["a"]
    (run / "report.html").unlink()
    (run / "model_card.md").unlink()
    assert lft(["report", str(run)]) == 0
    page = (run / "report.html").read_text()
    assert page.count("<img") >= 5 and "http://" not in page and "https://" not in page and "<script" not in page
    card = (run / "model_card.md").read_text()
    import yaml

    meta = yaml.safe_load(card.split("---")[1])
    assert {"license", "base_model", "datasets", "metrics", "model-index"} <= set(meta)
    from huggingface_hub import ModelCard  # the Hub's own parser reads the model-index back

    results = {r.metric_type: r.metric_value for r in ModelCard.load(run / "model_card.md").data.eval_results}
    test = json.loads((run / "evidence.json").read_text())["splits"]["test"]["metrics"]
    assert results["accuracy"] == pytest.approx(test["accuracy"], abs=1e-6) and "macro_f1" in results
    assert "## Evaluation results" in card and "## Limitations" in card and "95% bootstrap" in card


def test_compare_same_test_data(evidence_runs, tmp_path, capsys):
    a, b = evidence_runs["a"][0], evidence_runs["b"][0]
    result = api.compare(a, b, samples=200, output=tmp_path / "cmp.json")
    acc = result["metrics"]["accuracy"]
    assert acc["low"] <= acc["diff"] <= acc["high"]
    assert acc["verdict"] in ("better", "worse", "no significant change")
    assert set(result["per_class_f1"]) == {"neg", "pos"}
    same = api.compare(a, a, samples=50)
    assert all(m["verdict"] == "no significant change" and m["diff"] == 0 for m in same["metrics"].values())
    capsys.readouterr()
    assert lft(["compare", str(a), str(b), "--samples", "100"]) == 0
    out = capsys.readouterr().out
    assert "verdict" in out and "per-class F1" in out


def test_compare_refuses_different_test_data(evidence_runs, tmp_path, capsys):
    import shutil

    a = evidence_runs["a"][0]
    other = tmp_path / "other"
    shutil.copytree(a, other, ignore=shutil.ignore_patterns("model", "checkpoints"))
    saved = dict(np.load(other / "evidence" / "test.npz"))
    np.savez(other / "evidence" / "test.npz", logits=saved["logits"][:-1], labels=saved["labels"][:-1])
    assert lft(["compare", str(a), str(other)]) == 2
    assert "different test data" in capsys.readouterr().err


def test_bad_fail_if_is_an_input_error(evidence_runs, tmp_path, capsys):
    assert lft(["train", str(evidence_runs["work"] / "a.yaml"), "eval.fail_if={accuracy: 0.5}",
                f"output.dir={tmp_path / 'x'}"]) == 2
    assert "fail_if.accuracy" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()  # refused before anything was written


@pytest.mark.parametrize("missing", ["evidence"])
def test_report_of_a_run_without_evidence(evidence_runs, tmp_path, missing):
    """Runs of other tasks (or older runs) have no evidence: the report shows the curves and logged metrics."""
    import shutil

    src = evidence_runs["a"][0]
    bare = tmp_path / "bare"
    shutil.copytree(src, bare, ignore=shutil.ignore_patterns("model", "checkpoints", "evidence*"))
    html, card = api.report(bare)
    page = html.read_text()
    assert "Training curves" in page and "accuracy" in page and "Calibration" not in page
    assert card.read_text().startswith("---\n")
