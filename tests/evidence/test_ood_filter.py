"""`eval.ood_filter`: OOD rows taken out of a file that also holds other rows (no model is loaded)."""

from __future__ import annotations

import pytest

from lftrain.config import load_recipe
from lftrain.errors import DataError
from lftrain.evaluation.evidence import read_ood
from lftrain.tasks import build_task
from tests.conftest import tiny_recipe, toy_rows, write_csv

ROWS = [{"category": "fresh", "text": "a review"}, {"category": "plot", "text": "a plot summary"},
        {"category": "plot", "text": ""}, {"category": "rotten", "text": "another review"},
        {"category": "plot", "text": "a second plot summary"}]


def _read(tmp_path, **eval_cfg):
    train = write_csv(tmp_path / "train.csv", toy_rows(20))
    data = tiny_recipe(tmp_path / "no-model", train, tmp_path / "run")
    data["eval"] = eval_cfg
    recipe = load_recipe(data=data)
    return read_ood(recipe, build_task(recipe.task))


def test_filter_keeps_matching_rows_and_skips_empty_text(tmp_path, caplog):
    ood = write_csv(tmp_path / "corpus.csv", ROWS)
    ex = _read(tmp_path, ood=str(ood), ood_filter={"category": "plot"})
    assert ex.fields["text"] == ["a plot summary", "a second plot summary"]
    assert [w[1] for w in ex.where] == [2, 5]  # data rows of the file, for people to find them
    assert "skipped 1 OOD rows with empty text (rows 3)" in caplog.text


def test_without_filter_every_row_is_ood(tmp_path):
    ood = write_csv(tmp_path / "corpus.csv", [r for r in ROWS if r["text"]])
    assert len(_read(tmp_path, ood=str(ood))) == 4


@pytest.mark.parametrize("where, message", [({"genre": "plot"}, "eval.ood_filter names column 'genre'"),
                                            ({"category": "trailer"}, "no rows match eval.ood_filter")])
def test_bad_filter_names_the_file_and_field(tmp_path, where, message):
    ood = write_csv(tmp_path / "corpus.csv", ROWS)
    with pytest.raises(DataError, match=message) as exc:
        _read(tmp_path, ood=str(ood), ood_filter=where)
    assert "corpus.csv" in str(exc.value)
