"""Curriculum: competence pacing values, ranking, deterministic/resumable draws, and a run through fit()."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from lftrain import api
from lftrain.config.curriculum import CurriculumConfig
from lftrain.data.batching import epoch_batches
from lftrain.errors import DataError
from lftrain.training.curriculum import CurriculumPlan, competence, rank
from tests.conftest import toy_rows, write_csv
from tests.semi.conftest import fast_recipe


def test_competence_pacing_formulas():
    t = np.array([0, 25, 50, 100, 200])
    root = competence(t, 100, CurriculumConfig(pacing="root", start=0.2, duration=1.0))
    assert root == pytest.approx([0.2, math.sqrt(0.25 * 0.96 + 0.04), math.sqrt(0.5 * 0.96 + 0.04), 1.0, 1.0])
    lin = competence(t, 100, CurriculumConfig(pacing="linear", start=0.2, duration=0.5))  # full at step 50
    assert lin == pytest.approx([0.2, 0.6, 1.0, 1.0, 1.0])
    step = competence(np.array([0, 24, 25, 49, 50, 99, 100]), 100, CurriculumConfig(pacing="step", start=0.2,
                                                                                    duration=1.0, steps=4))
    assert step == pytest.approx([0.2, 0.2, 0.4, 0.4, 0.6, 0.8, 1.0])
    assert np.all(np.diff(competence(np.arange(300), 300, CurriculumConfig())) >= 0)  # never decreasing


def test_rank_orders():
    difficulty = np.array([5.0, 1.0, 3.0, 2.0, 4.0])
    assert rank(difficulty, "easy-first", 0).tolist() == [1, 3, 2, 4, 0]
    assert rank(difficulty, "hard-first", 0).tolist() == [0, 4, 2, 3, 1]
    r = rank(difficulty, "random", 0)
    assert sorted(r.tolist()) == [0, 1, 2, 3, 4] and r.tolist() == rank(difficulty, "random", 0).tolist()


def test_draws_come_from_the_easy_pool_and_depend_only_on_seed_and_step():
    n, batch = 100, 8
    cfg = CurriculumConfig(pacing="linear", start=0.2, duration=1.0)
    difficulty = np.arange(n, dtype=float)[::-1]  # row 99 easiest
    plan = CurriculumPlan(rank(difficulty, "easy-first", 3), cfg, total_steps=40, steps_per_epoch=10,
                          batch_size=batch, seed=3)
    first = plan.batch_at(0)
    assert len(first) == batch and set(first) <= set(range(80, 100))  # the easiest 20%
    assert len(set(plan.batch_at(39)) - set(range(0, 100))) == 0
    # an epoch is the steps' draws in order, so a resume at any batch of any epoch sees the same batches
    epoch2 = epoch_batches(np.ones(n), batch, 3, 2, curriculum=plan)
    assert [b.tolist() for b in epoch2] == [plan.batch_at(20 + j).tolist() for j in range(10)]
    again = CurriculumPlan(rank(difficulty, "easy-first", 3), cfg, 40, 10, batch, 3)
    assert [b.tolist() for b in again.batches(2)] == [b.tolist() for b in epoch2]


def test_length_curriculum_run_starts_on_short_texts(tiny_bert, tmp_path):
    rows = toy_rows(60, seed=3, filler_words=(0, 12))
    train = write_csv(tmp_path / "train.csv", rows)
    out = tmp_path / "cur"
    recipe = fast_recipe(tiny_bert, train, out, epochs=2, log_samples=True,
                         curriculum={"difficulty": "length", "pacing": "root", "start": 0.25})
    api.train(recipe)
    steps = [json.loads(x) for x in (out / "samples.jsonl").read_text().splitlines()]
    assert steps and len(steps[0]["examples"]) == 8
    from lftrain.config import load_recipe
    from lftrain.data.prepare import prepare_data
    from lftrain.tasks import build_task

    r = load_recipe(out / "recipe.yaml")
    data = prepare_data(r, build_task(r.task))
    words = np.array([len(t.split()) for t in data.train.fields["text"]])
    cut = np.sort(words)[int(np.ceil(0.25 * len(words))) - 1]
    assert all(words[i] <= cut for i in steps[0]["examples"])  # step 1 drew from the shortest quarter only
    assert np.mean([words[i] for s in steps[-3:] for i in s["examples"]]) > np.mean(words[steps[0]["examples"]])


def test_column_difficulty_names_a_bad_row(tiny_bert, tmp_path):
    rows = [{**r, "hard": str(i % 5)} for i, r in enumerate(toy_rows(40))]
    rows[7]["hard"] = "very"
    train = write_csv(tmp_path / "train.csv", rows)
    recipe = fast_recipe(tiny_bert, train, tmp_path / "col", max_steps=1,
                         curriculum={"difficulty": "column", "column": "hard"})
    recipe["data"].update(test_fraction=0.0, eval_fraction=0.0)  # every row in train, the bad one included
    with pytest.raises(DataError, match=r"row 8.*column 'hard'.*not a number|line 9.*row 8.*'hard'") as info:
        api.train(recipe)
    assert "very" in str(info.value)
