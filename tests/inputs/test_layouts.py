"""Data file layouts: JSON arrays, several files, globs, weighted mixes and per-file column mappings."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from lftrain.config import load_recipe
from lftrain.data.prepare import prepare_data
from lftrain.data.readers import read_table
from lftrain.errors import DataError
from lftrain.tasks import build_task
from tests.conftest import run_lft, tiny_recipe, toy_rows, write_csv, write_recipe


def write_json_array(path, rows, *, indent=2):
    path.write_text(json.dumps(rows, indent=indent))
    return path


def test_a_json_array_reads_with_each_row_at_its_line(tmp_path):
    path = write_json_array(tmp_path / "alpaca.json", [{"instruction": "a", "output": "b"},
                                                       {"instruction": "c", "input": "d", "output": "e"}])
    table = read_table(str(path))
    assert table.rows[1] == {"instruction": "c", "input": "d", "output": "e"}
    assert table.columns == ["instruction", "output", "input"]
    assert table.row_numbers == [1, 2] and table.lines == [2, 6]  # where each object starts (indent 2)


@pytest.mark.parametrize(("text", "message", "line"), [
    ('[\n {"a": 1},\n {"a": 2,}\n]', "malformed JSON array", 3),
    ('[\n {"a": 1},\n 7\n]', "must be a JSON object", 3),
    ('[\n {"a": 1}\n {"a": 2}\n]', "expected ',' or ']'", 3),
    ("[]", "empty JSON array", None),
])
def test_a_bad_json_array_names_the_line(tmp_path, text, message, line):
    path = tmp_path / "bad.json"
    path.write_text(text)
    with pytest.raises(DataError, match=message) as err:
        read_table(str(path))
    assert err.value.line == line


def _prepared(tmp_path, data: dict):
    recipe = load_recipe(data={"model": {"path": "m"}, "data": {"eval_fraction": 0, "test_fraction": 0, **data}})
    task = build_task(recipe.task)
    return prepare_data(recipe, task)


def test_several_files_a_glob_and_a_column_mapping_read_as_one_set(tmp_path):
    (tmp_path / "parts").mkdir()
    for k in range(3):
        write_csv(tmp_path / "parts" / f"p{k}.csv", toy_rows(10, seed=k))
    renamed = [{"review": r["text"], "verdict": r["label"]} for r in toy_rows(10, seed=7)]
    write_json_array(tmp_path / "extra.json", renamed)
    data = _prepared(tmp_path, {"train": [str(tmp_path / "parts" / "p*.csv"),
                                          {"path": str(tmp_path / "extra.json"),
                                           "columns": {"text": "review", "label": "verdict"}}]})
    files = Counter(w[0] for w in data.train.where)
    assert sorted(files.values()) == [10, 10, 10, 10] and len(files) == 4
    assert set(data.train.fields["text"]) >= {r["review"] for r in renamed}
    assert [s.origin for s in data.sources["train"]][-1] == str(tmp_path / "extra.json")


def test_weights_mix_the_training_rows_after_deduplication(tmp_path):
    a = write_csv(tmp_path / "a.csv", toy_rows(40, seed=1))
    b = write_csv(tmp_path / "b.csv", toy_rows(40, seed=2))
    data = _prepared(tmp_path, {"train": [{"path": str(a), "weight": 2}, {"path": str(b), "weight": 0.25}]})
    per_file = Counter(w[0] for w in data.train.where)
    assert per_file[str(a)] == 80 and per_file[str(b)] == 10  # every row of a twice, a seeded quarter of b
    again = _prepared(tmp_path, {"train": [{"path": str(a), "weight": 2}, {"path": str(b), "weight": 0.25}]})
    assert again.train.fields["text"] == data.train.fields["text"]  # the draw is seeded (data.split_seed)
    with pytest.raises(DataError, match="weights mix training data"):
        _prepared(tmp_path, {"train": str(a), "test": {"path": str(b), "weight": 2}})


def test_a_glob_that_matches_nothing_names_the_pattern(tmp_path):
    with pytest.raises(DataError, match="no file matches") as err:
        _prepared(tmp_path, {"train": str(tmp_path / "nothing-*.csv")})
    assert "nothing-*.csv" in str(err.value)


def test_a_json_array_and_a_two_file_weighted_mix_train_end_to_end(tiny_bert, tmp_path):
    rows = toy_rows(60)
    array = write_json_array(tmp_path / "train.json", rows)
    other = write_csv(tmp_path / "more.csv", [{"body": r["text"], "label": r["label"]} for r in toy_rows(40, seed=3)])
    recipe = tiny_recipe(tiny_bert, array, tmp_path / "run", max_steps=3)
    recipe["data"]["train"] = [str(array), {"path": str(other), "weight": 0.5, "columns": {"text": "body"}}]
    proc = run_lft("train", str(write_recipe(tmp_path / "r.yaml", recipe)))
    assert proc.returncode == 0, proc.stderr
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert set(manifest["data"]) == {"train[1]", "train[2]"}  # both files hashed, resume checks both
    mix = manifest["data_stats"][f"{other}:mix"]
    assert mix["weight"] == 0.5 and mix["taken"] == round(mix["rows"] / 2)
