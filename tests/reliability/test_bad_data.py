"""Scenario 11: bad data fails before any model loads, naming file, line and column, with the input-error exit
code (2). "Before any model loads" is checked by the run directory: it is created only after validation."""

from __future__ import annotations

import json

import pytest

from lftrain import api
from lftrain.errors import EXIT_INPUT, DataError
from tests.conftest import toy_rows, write_csv, write_recipe
from tests.reliability.conftest import lft, recipe


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _parquet(path, table: dict):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table(table), path)
    return path


def _cases(d):
    rows = toy_rows(40)
    good = write_csv(d / "good.csv", rows)
    big = _jsonl(d / "big.jsonl", toy_rows(10_000))
    with open(big, "a") as f:
        f.write('{"text": "broken", "label": "pos"\n')
    mixed = _jsonl(d / "mixed.jsonl", rows[:5] + [{"text": 42, "label": "pos"}] + rows[5:])
    latin = d / "latin.csv"
    latin.write_bytes(b"text,label\ngood film,pos\ncaf\xe9 scene,neg\n")
    header = d / "header.csv"
    header.write_text("text,label\n")
    missing = write_csv(d / "missing.csv", rows[:3] + [{"text": "a film", "label": ""}] + rows[3:])
    train_pq = _parquet(d / "train.parquet", {"text": [r["text"] for r in rows], "label": [r["label"] for r in rows]})
    eval_pq = _parquet(d / "eval.parquet", {"text": list(range(10)), "label": ["pos"] * 10})  # text is int64
    (d / "empty.csv").write_bytes(b"")
    return {
        "empty file": ({"train": str(d / "empty.csv")}, {}, r"empty\.csv: the file is empty"),
        "header only": ({"train": str(header)}, {}, r"header\.csv: the file has a header but no rows"),
        "bad json at line 10001": ({"train": str(big)}, {}, r"big\.jsonl, line 10001: malformed JSON"),
        "mixed types": ({"train": str(mixed)}, {}, r"mixed\.jsonl, line 6, row 6, column 'text': expected text, "
                                                     r"found int 42"),
        "missing label": ({"train": str(missing)}, {}, r"missing\.csv, line 5, row 4, column 'label': missing label"),
        "unknown label": ({"train": str(good)}, {"labels": ["pos", "meh"]},
                          r"good\.csv, line 3, row 2, column 'label'.*'neg'"),
        "not utf-8": ({"train": str(latin)}, {}, r"latin\.csv, line 3, row 2, column 'text': byte 0xe9 is not valid "
                                                  r"utf-8"),
        "parquet schema": ({"train": str(train_pq), "eval": str(eval_pq)}, {},
                           r"eval\.parquet, row 1, column 'text': expected text, found int"),
    }


@pytest.mark.parametrize("case", ["empty file", "header only", "bad json at line 10001", "mixed types",
                                  "missing label", "unknown label", "not utf-8", "parquet schema"])
def test_bad_data_is_named_before_any_model_loads(lab, tmp_path, case):
    data, task, pattern = _cases(tmp_path)[case]
    r = recipe(lab.model, lab.train, tmp_path / "run", cache=lab.cache)
    r["data"].update(data)
    r["task"].update(task)
    with pytest.raises(DataError, match=pattern) as e:
        api.train(r)
    assert e.value.exit_code == EXIT_INPUT
    assert not (tmp_path / "run").exists()


def test_cli_exit_code_and_no_model_load(lab, tmp_path):
    r = recipe(tmp_path / "no-such-model", lab.train, tmp_path / "run", cache=lab.cache)
    r["data"]["train"] = str(_jsonl(tmp_path / "x.jsonl", toy_rows(5) + [{"text": "a", "label": None}]))
    res = lft("train", write_recipe(tmp_path / "bad.yaml", r), log=tmp_path / "bad.log")
    assert res.code == 2, res.log
    assert "x.jsonl, line 6, row 6, column 'label': missing label" in res.log
    assert "model directory not found" not in res.log and not (tmp_path / "run").exists()


@pytest.mark.parametrize("kind", ["image", "audio"])
def test_empty_media_folder_is_named_before_any_model_loads(tmp_path, kind):
    """A folder with no image/audio files: a data error naming the folder, exit code 2, no run directory (the
    model path does not even exist: validation comes first)."""
    folder = tmp_path / "clips" / "cat"
    folder.mkdir(parents=True)
    (folder / "notes.txt").write_text("not a picture or a sound")
    r = {"model": {"path": str(tmp_path / "no-such-model")}, "task": {"type": f"{kind}-classification"},
         "data": {"train": str(tmp_path / "clips")}, "output": {"dir": str(tmp_path / "run")}}
    with pytest.raises(DataError, match=rf"clips.*no {kind} files|no {kind} files.*clips") as e:
        api.train(r)
    assert e.value.exit_code == EXIT_INPUT
    assert not (tmp_path / "run").exists()
