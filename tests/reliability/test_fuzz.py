"""Scenario 12: fuzzing the recipe loader and the data readers: only the documented error types escape."""

from __future__ import annotations

import string

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lftrain.config import load_recipe
from lftrain.data.readers import read_table
from lftrain.errors import LftError
from lftrain.tasks import build_task

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

_scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True), st.text(max_size=12))
_keys = st.sampled_from(["model", "data", "task", "train", "eval", "output", "path", "train", "type", "lr",
                         "batch_size", "epochs", "text", "label", "labels", "adaptation", "method", "r", "x"])
_trees = st.recursive(_scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                         st.dictionaries(_keys, inner, max_size=5)), max_leaves=25)


def _only_documented(fn, *args, **kwargs):
    try:
        fn(*args, **kwargs)
    except LftError:
        pass  # RecipeError, DataError, InputError...: documented, with a message for people


@FUZZ
@given(text=st.text(alphabet=string.printable + "äé€\x00", max_size=300))
def test_recipe_text(tmp_path, text):
    f = tmp_path / "r.yaml"
    f.write_text(text, encoding="utf-8")
    _only_documented(load_recipe, f)


@FUZZ
@given(tree=st.dictionaries(_keys, _trees, max_size=6),
       overrides=st.lists(st.text(alphabet=string.ascii_lowercase + ".=[]{}:, 0123456789", max_size=20), max_size=3))
def test_recipe_structures_and_overrides(tmp_path, tree, overrides):
    f = tmp_path / "r.yaml"
    f.write_text(yaml.safe_dump(tree))
    _only_documented(load_recipe, f, overrides)


@FUZZ
@given(raw=st.binary(max_size=400), suffix=st.sampled_from([".csv", ".tsv", ".jsonl", ".parquet", ".csv.gz",
                                                            ".csv.zip", ".csv.bz2"]),
       encoding=st.sampled_from(["utf-8", "latin-1", "nope"]))
def test_reader_bytes(tmp_path, raw, suffix, encoding):
    f = tmp_path / f"d{suffix}"
    f.write_bytes(raw)
    _only_documented(read_table, str(f), "auto", encoding)


_cells = st.one_of(st.text(max_size=10), st.integers(), st.floats(), st.none(), st.booleans(),
                   st.lists(st.integers(), max_size=2))


@FUZZ
@given(rows=st.lists(st.dictionaries(st.sampled_from(["text", "label", "other"]), _cells, max_size=3), max_size=8))
def test_jsonl_rows_through_validation(tmp_path, rows):
    import json

    f = tmp_path / "d.jsonl"
    f.write_text("".join(json.dumps(r) + "\n" for r in rows))
    task = build_task(load_recipe(data={"model": {"path": "m"}, "data": {"train": str(f)}}).task)

    def read_and_validate():
        table = read_table(str(f))
        ex = task.extract(table, normalize=True)
        task.fit_labels(ex)
    _only_documented(read_and_validate)
