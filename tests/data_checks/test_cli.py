"""The real CLI: `lft data check` / `lft data fix`, and `lft train` stopping on a blocking check before any model
loads, then training on the fixed data with the data card in the run directory."""

from __future__ import annotations

import json

from tests.conftest import run_lft, write_recipe
from tests.data_checks.planted import PLANTED, recipe, write_planted


def test_cli_check_fix_and_train(tmp_path, tiny_bert):
    train, test = write_planted(tmp_path)
    rec = recipe(train, test, tmp_path / "run", model=str(tmp_path / "no-such-model"), noise="off")
    path = write_recipe(tmp_path / "r.yaml", rec)

    check = run_lft("data", "check", str(path), "--output", str(tmp_path / "check"))
    assert check.returncode == 2, check.stderr
    assert "leakage" in check.stdout and "BLOCK" in check.stdout

    # Blocking check: exit 2 naming the leaked row, before the (missing) model is even looked at.
    train_run = run_lft("train", str(path))
    assert train_run.returncode == 2
    error = train_run.stderr[train_run.stderr.index("lft: error:"):]
    assert error.startswith("lft: error: data checks block training (leakage)"), error
    assert f"'row': {PLANTED['leaked_test']}" in train_run.stderr

    fixed = run_lft("data", "fix", str(path), "--output", str(tmp_path / "fixed"))
    assert fixed.returncode == 0, fixed.stderr
    removed = [json.loads(x) for x in (tmp_path / "fixed" / "removed.jsonl").read_text().splitlines()]
    assert {r["check"] for r in removed} == {"duplicates", "leakage", "near_duplicates"}

    # The fixed recipe trains (with a real model), and the run directory holds the data card.
    import yaml

    fixed_recipe = yaml.safe_load((tmp_path / "fixed" / "recipe.yaml").read_text())
    fixed_recipe["model"]["path"] = str(tiny_bert)
    fixed_recipe["eval"] = {"report": False, "latency": False, "bootstrap_samples": 0}
    fpath = write_recipe(tmp_path / "fixed.yaml", fixed_recipe)
    trained = run_lft("train", str(fpath), "train.max_steps=2")
    assert trained.returncode == 0, trained.stderr[-3000:]
    run = tmp_path / "run"
    card = json.loads((run / "data_card.json").read_text())
    assert card["results"]["leakage"]["count"] == 0 and (run / "data_card.md").is_file()
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["licences"]["sources"][-1]["licence"] == "apache-2.0"
