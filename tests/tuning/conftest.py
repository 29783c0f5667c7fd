"""Tiny tuning recipes: the tiny BERT of tests/conftest.py on toy sentiment data, a few steps per trial."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import tiny_recipe, toy_rows, write_csv


def _quiet_eval() -> dict:
    """Switch off the final-evaluation extras a trial does not need (when this tree has them): faster trials."""
    from lftrain.config.schema import EvalConfig

    wanted = {"latency": False, "bootstrap_samples": 0, "report": False, "temperature_scaling": False}
    return {k: v for k, v in wanted.items() if k in EvalConfig.model_fields}


def tune_recipe(tmp: Path, model: Path, *, rows: int = 120, space: dict | None = None, **tune) -> dict:
    train = write_csv(tmp / "train.csv", toy_rows(rows))
    recipe = tiny_recipe(model, train, tmp / "runs" / "toy", epochs=1, batch_size=8, eval_every=2, log_every=2)
    recipe["data"]["eval_fraction"] = 0.2
    recipe["eval"] = _quiet_eval()
    recipe["tune"] = {"space": space or {"train.lr": {"log_uniform": [1.0e-7, 1.0e-2]}}, "trials": 3,
                      "study_name": "toy", **tune}
    return recipe
