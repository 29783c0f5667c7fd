"""The data checks find planted problems at the right rows, and stay quiet on clean data."""

from __future__ import annotations

import pytest

from lftrain import api
from tests.data_checks.planted import PLANTED, recipe, write_clean, write_planted


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    d = tmp_path_factory.mktemp("planted")
    train, test = write_planted(d)
    rec = recipe(train, test, d / "run")
    return rec, api.check_data(rec, output=d / "check", print_table=False), d


def _rows(result, split="train"):
    return {r["row"] for r in result.rows if r["split"] == split}


def test_exact_duplicate_found_after_normalisation(planted):
    _, report, _ = planted
    dup = report.results["duplicates"]
    assert _rows(dup) == {PLANTED["duplicate"]}
    assert dup.rows[0]["of"]["row"] == 3


def test_near_duplicate_found(planted):
    _, report, _ = planted
    near = report.results["near_duplicates"]
    pairs = {(e["a"]["row"], e["b"]["row"]) for e in near.examples}
    assert (5, PLANTED["near"]) in pairs or (PLANTED["near"], 5) in pairs


def test_conflicting_labels_found(planted):
    _, report, _ = planted
    assert report.results["conflicts"].count == 1
    assert _rows(report.results["conflicts"]) == {7, PLANTED["conflict"]}


def test_leaked_test_row_found_and_blocks(planted):
    _, report, _ = planted
    leak = report.results["leakage"]
    assert leak.count == 1
    assert leak.rows[0]["row"] == 9 and leak.rows[0]["of"]["row"] == PLANTED["leaked_test"]
    assert "leakage" in report.blocking
    # The 13-gram check sees the same copy from the contamination side.
    assert report.results["contamination"].details["test"]["contaminated"] >= 1


def test_flipped_labels_are_noise_suspects(planted):
    _, report, _ = planted
    suspects = [r["row"] for r in report.results["noise"].rows if r["split"] == "train"]
    assert set(PLANTED["flipped"]) <= set(suspects)
    assert len(suspects) <= 12  # found among a short list, not by flagging everything


def test_pii_found(planted):
    _, report, _ = planted
    pii = report.results["pii"]
    assert pii.details == {"email": 1, "phone": 1}
    assert _rows(pii) == {PLANTED["email"], PLANTED["phone"]}


def test_reports_written(planted):
    _, _, d = planted
    import csv
    import json

    card = (d / "check" / "data_card.md").read_text()
    assert "leakage" in card and "BLOCK" in card and "cc-by-4.0" in card
    full = json.loads((d / "check" / "data_check.json").read_text())
    assert full["blocking"] == ["leakage"] and full["sources"]["train"]["sha256"]
    with open(d / "check" / "noise_suspects.csv") as f:
        ranked = list(csv.DictReader(f))
    assert ranked[0]["rank"] == "1" and {"row", "label", "suggested", "p_label"} <= set(ranked[0])


def test_clean_data_stays_quiet(tmp_path):
    train, test = write_clean(tmp_path)
    report = api.check_data(recipe(train, test, tmp_path / "run"), output=tmp_path / "check", print_table=False)
    noisy = {name: r.summary for name, r in report.results.items() if r.count or r.flagged}
    assert noisy == {}
    assert report.ok and report.licences["verdict"] == "ok"


def test_fix_writes_clean_copy_and_log(planted, tmp_path):
    import hashlib
    import json

    rec, report, d = planted
    before = hashlib.sha256((d / "train.csv").read_bytes()).hexdigest()
    summary = api.fix_data(rec, tmp_path / "fixed", noise=True, conflicts=True)
    assert hashlib.sha256((d / "train.csv").read_bytes()).hexdigest() == before  # original untouched
    removed = [json.loads(x) for x in (tmp_path / "fixed" / "removed.jsonl").read_text().splitlines()]
    by_row = {r["row"]: r["check"] for r in removed if r["file"].endswith("train.csv")}
    assert by_row[PLANTED["duplicate"]] == "duplicates"
    assert by_row[9] == "leakage"
    assert by_row[PLANTED["near"]] == "near_duplicates"
    assert {7, PLANTED["conflict"]} <= set(by_row)
    assert set(PLANTED["flipped"]) <= set(by_row)
    assert summary["files"]["train"]["rows_out"] == summary["files"]["train"]["rows_in"] - len(by_row)
    again = api.check_data(str(tmp_path / "fixed" / "recipe.yaml"), output=tmp_path / "c2", print_table=False)
    assert again.ok and again.results["leakage"].count == 0 and again.results["duplicates"].count == 0
    with pytest.raises(Exception, match="never overwrites"):
        api.fix_data(rec, tmp_path / "fixed")
