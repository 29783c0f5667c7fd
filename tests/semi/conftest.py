"""Shared pieces of the semi-supervised tests: toy labelled + unlabelled files and a fast recipe."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import tiny_recipe, toy_rows, write_csv


def fast_recipe(model: Path, train: Path, out: Path, **train_overrides) -> dict:
    """tiny_recipe without the evidence extras (bootstrap, latency, report): stages multiply their cost."""
    recipe = tiny_recipe(model, train, out, **train_overrides)
    recipe["eval"] = {"bootstrap_samples": 0, "latency": False, "report": False, "temperature_scaling": False}
    return recipe


@pytest.fixture
def semi_files(tmp_path) -> tuple[Path, Path]:
    """(labelled CSV of 40 rows, unlabelled CSV of 60 other rows that keep their true label column)."""
    labelled = write_csv(tmp_path / "labelled.csv", toy_rows(40, seed=1))
    pool = write_csv(tmp_path / "pool.csv", toy_rows(60, seed=2))
    return labelled, pool
