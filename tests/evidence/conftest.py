"""Two real `lft train` runs on the tiny model, shared by the evidence tests: A (with OOD data, slices by a
column and by text length, and a passing gate) and B (another seed, same test split, with a gate it fails)."""

from __future__ import annotations

import pytest

from tests.conftest import run_lft, tiny_recipe, toy_rows, write_csv, write_recipe

OOD_TEXTS = ["abc def", "xyz", "q w e r t y", "lorem ipsum dolor", "zzz zzz", "k l m n o p"]


@pytest.fixture(scope="session")
def evidence_runs(tiny_bert, tmp_path_factory):
    work = tmp_path_factory.mktemp("evidence")
    rows = [{**r, "source": ("web", "mail", "forum")[i % 3]} for i, r in enumerate(toy_rows(160))]
    train = write_csv(work / "train.csv", rows)
    # eval.ood_filter keeps the 18 `ood` rows; the in-domain-looking `other` rows must not be scored
    ood = write_csv(work / "ood.csv", [{"text": t, "kind": "ood"} for t in OOD_TEXTS * 3]
                    + [{"text": r["text"], "kind": "other"} for r in toy_rows(7, seed=9)])
    runs = {}
    b_only = {"report": False, "latency": False}  # B only needs what compare and the gate read: keep it quick
    a_only = {"ood": str(ood), "ood_filter": {"kind": "ood"}, "slice_min_rows": 5,
              "slices": ["source", {"column": "text", "by": "words", "bins": [6, 9]}]}
    for name, seed, gate in (("a", 0, {"accuracy": "< 0.5", "slice_worst_accuracy": "< 0"}),
                             ("b", 1, {"accuracy": "< 0.99", "ece": "> 0.9"})):
        recipe = tiny_recipe(tiny_bert, train, work / name, epochs=2, seed=seed)
        recipe["eval"] = {"fail_if": gate, "bootstrap_samples": 200, "calibration_bins": 10,
                          **(a_only if name == "a" else b_only)}
        path = write_recipe(work / f"{name}.yaml", recipe)
        runs[name] = (work / name, run_lft("train", str(path)))
    runs["work"] = work
    return runs
