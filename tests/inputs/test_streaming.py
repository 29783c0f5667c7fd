"""data.streaming: training rows read a chunk at a time into an on-disk token store, held-out rows by hash."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pytest

from lftrain.config import load_recipe
from lftrain.data import stream
from lftrain.data.prepare import prepare_data
from lftrain.errors import DataError, InputError
from lftrain.models.loading import load_tokenizer, vet_model_dir
from lftrain.tasks import build_task
from tests.conftest import run_lft, tiny_recipe, toy_rows, write_csv, write_recipe


def _recipe(model, train, tmp_path, **data):
    return load_recipe(data={"model": {"path": str(model)}, "data": {"train": train, "streaming": True,
                                                                      "cache_dir": str(tmp_path / "cache"), **data},
                             "task": {"max_length": 32}})


def _prepare(model, train, tmp_path, **data):
    recipe = _recipe(model, train, tmp_path, **data)
    task = build_task(recipe.task)
    tokenizer = load_tokenizer(vet_model_dir(str(model), allow_pickle=False, trust_remote_code=False), False)
    return prepare_data(recipe, task, lambda: tokenizer), task, tokenizer


def test_disk_array_reads_slices_without_mapping(tmp_path):
    values = np.arange(1000, dtype=np.int32)
    values.tofile(tmp_path / "x.bin")
    array = stream.DiskArray(tmp_path / "x.bin", "int32", 1000)
    assert np.array_equal(array[10:20], values[10:20]) and len(array[999:1000]) == 1 and len(array[5:5]) == 0
    import pickle

    assert np.array_equal(pickle.loads(pickle.dumps(array))[0:3], values[:3])  # a worker reopens the file


def test_the_store_holds_the_rows_an_in_memory_read_would_encode(tiny_bert, tmp_path, monkeypatch):
    monkeypatch.setattr(stream, "CHUNK_ROWS", 7)  # many chunks, and a short last one
    rows = toy_rows(120)
    rows += rows[:10]  # exact duplicates: dropped
    path = write_csv(tmp_path / "train.csv", rows)
    data, task, tok = _prepare(tiny_bert, str(path), tmp_path, eval_fraction=0.1, test_fraction=0.2)
    enc = data.stream.encoded
    unique = list(dict.fromkeys(r["text"] for r in rows))  # in order of first appearance
    held = set(data.eval.fields["text"]) | set(data.test.fields["text"])
    train_texts = [t for t in unique if t not in held]
    assert data.stats["train_rows"] == len(train_texts) == len(enc["labels"])
    assert data.stats["train_rows"] + len(data.eval) + len(data.test) == len(unique)
    assert data.stats["train:duplicates_dropped"] >= 1
    ids = tok(train_texts, truncation=True, max_length=32)["input_ids"]
    for i in (0, 5, len(ids) - 1):  # row i of the store is the i-th kept training row, tokenised
        s, e = enc["offsets"][i], enc["offsets"][i + 1]
        assert enc["input_ids"][int(s):int(e)].tolist() == ids[i]
    assert 0 < len(data.test) < 0.35 * 120 and 0 < len(data.eval) < 0.2 * 120  # the shares, by hash
    assert not set(train_texts) & held  # no text on both sides


def test_a_second_run_reads_the_cached_store(tiny_bert, tmp_path):
    path = write_csv(tmp_path / "train.csv", toy_rows(60))
    first, _, _ = _prepare(tiny_bert, str(path), tmp_path)
    second, _, _ = _prepare(tiny_bert, str(path), tmp_path)
    assert first.stats["store"] == second.stats["store"]
    assert np.array_equal(first.stream.encoded["labels"], second.stream.encoded["labels"])
    assert second.test.fields["text"] == first.test.fields["text"]


def test_jsonl_gz_streams_and_a_bad_row_names_its_line(tiny_bert, tmp_path, monkeypatch):
    monkeypatch.setattr(stream, "CHUNK_ROWS", 5)
    lines = [json.dumps(r) for r in toy_rows(30)]
    lines[23] = json.dumps({"text": "", "label": "pos"})
    with gzip.open(tmp_path / "train.jsonl.gz", "wt") as f:
        f.write("\n".join(lines) + "\n")
    with pytest.raises(DataError, match="empty text") as err:
        _prepare(tiny_bert, str(tmp_path / "train.jsonl.gz"), tmp_path)
    assert err.value.line == 24 and err.value.row == 24


def test_what_cannot_stream_is_refused_before_any_model_loads(tiny_bert, tmp_path):
    from lftrain.orchestrator.run import prepare_inputs

    path = write_csv(tmp_path / "train.csv", toy_rows(30))
    recipe = _recipe(tiny_bert, str(path), tmp_path, unlabeled=str(path))
    with pytest.raises(InputError, match="data.streaming: data.unlabeled needs every training row in memory"):
        prepare_inputs(recipe.model_copy(update={"output": recipe.output.model_copy(update={"dir": "x"})}))
    (tmp_path / "arr.json").write_text(json.dumps(toy_rows(5)))
    with pytest.raises(DataError, match="a JSON array cannot be streamed"):
        _prepare(tiny_bert, str(tmp_path / "arr.json"), tmp_path)


def test_a_streamed_run_trains_and_resumes_on_the_same_batches(tiny_bert, tmp_path):
    path = write_csv(tmp_path / "train.csv", toy_rows(200))
    recipe = tiny_recipe(tiny_bert, path, tmp_path / "run", epochs=2, save_every=10)
    recipe["data"].update(streaming=True)
    proc = run_lft("train", str(write_recipe(tmp_path / "r.yaml", recipe)))
    assert proc.returncode == 0, proc.stderr
    assert "training data streamed" in proc.stderr and "frozen-prefix" not in proc.stderr
    metrics = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    test = [m for m in metrics if m.get("split") == "test" and m.get("final")][-1]
    assert test["accuracy"] >= 0.9 and test["n"] > 0
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["data_stats"]["train_rows"] + test["n"] + manifest["data_stats"]["eval_rows"] <= 200
