"""`lft compare RUN --base`: the run against a linear probe on its frozen base model (tiny BERT, real run A)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import yaml

import lftrain.api as api
from lftrain.cli import main as lft
from lftrain.errors import InputError
from tests.conftest import toy_rows, write_csv


def test_compare_with_base_probe(evidence_runs, tmp_path, capsys):
    run = evidence_runs["a"][0]
    result = api.compare(run, base=True, samples=200, output=tmp_path / "base.json")
    saved = np.load(run / "evidence" / "test.npz")
    manifest = json.loads((run / "manifest.json").read_text())
    assert result["n"] == len(saved["labels"]) == manifest["data_stats"]["test_rows"]
    assert result["base"]["train_rows"] == manifest["data_stats"]["train_rows"]
    recipe = yaml.safe_load((run / "recipe.yaml").read_text())
    assert "linear probe" in result["run_a"] and result["base"]["model"] == recipe["model"]["path"]
    acc = result["metrics"]["accuracy"]
    # B is the run's own saved accuracy; A is the probe's, which on the toy data (label words embedded by the
    # random encoder) must beat chance: a probe that ignored its features would not
    assert acc["b"] == api_accuracy(saved)
    assert acc["a"] > 0.6
    assert acc["low"] <= acc["diff"] <= acc["high"] and acc["verdict"] in ("better", "worse", "no significant change")
    assert set(result["per_class_f1"]) == {"neg", "pos"}
    assert json.loads((tmp_path / "base.json").read_text())["base"]["train_rows"] == result["base"]["train_rows"]
    capsys.readouterr()
    assert lft(["compare", str(run), "--base", "--samples", "50"]) == 0
    out = capsys.readouterr().out
    assert "linear probe on frozen" in out and "per-class F1" in out


def api_accuracy(saved) -> float:
    return float((saved["logits"].argmax(-1) == saved["labels"]).mean())


def test_compare_base_argument_errors(evidence_runs, capsys):
    a, b = evidence_runs["a"][0], evidence_runs["b"][0]
    assert lft(["compare", str(a), str(b), "--base"]) == 2
    assert lft(["compare", str(a)]) == 2
    assert "base" in capsys.readouterr().err
    try:
        api.compare(a)
    except InputError as exc:
        assert "base=True" in str(exc)
    else:
        raise AssertionError("one run without base=True must be an InputError")


def test_compare_base_refuses_changed_data(evidence_runs, tmp_path, capsys):
    """The probe rebuilds the splits from recipe.yaml: if the data changed since, the pairing is void."""
    run = tmp_path / "run"
    shutil.copytree(evidence_runs["a"][0], run, ignore=shutil.ignore_patterns("checkpoints"))
    recipe = yaml.safe_load((run / "recipe.yaml").read_text())
    other = [{**r, "source": "web"} for r in toy_rows(100, seed=3)]  # run A slices by `source`
    recipe["data"]["train"] = str(write_csv(tmp_path / "other.csv", other))
    (run / "recipe.yaml").write_text(yaml.safe_dump(recipe, sort_keys=False))
    assert lft(["compare", str(run), "--base"]) == 2
    assert "data changed since training" in capsys.readouterr().err
