"""train.privacy's keys and values, and what it refuses before any model loads (exit 2)."""

from __future__ import annotations

import pytest

from lftrain.config import load_recipe
from lftrain.errors import InputError, RecipeError
from lftrain.training.privacy import default_delta, vet_data, vet_recipe


def _recipe(privacy, **sections):
    data = {"model": {"path": "m"}, "data": {"train": "x.csv"}, "train": {"privacy": privacy}}
    for key, value in sections.items():
        data[key] = {**data.get(key, {}), **value}
    return load_recipe(data=data)


def test_keys_and_defaults():
    cfg = _recipe({"epsilon": 3}).train.privacy
    assert (cfg.epsilon, cfg.delta, cfg.max_grad_norm, cfg.accountant) == (3.0, None, 1.0, "prv")
    assert _recipe(None).train.privacy is None


@pytest.mark.parametrize("privacy, message", [
    ({"epsilon": 3, "epsilom": 1}, "did you mean"),
    ({"epsilon": 3, "noise": 1.0}, "noise"),
    ({"delta": 1e-5}, "epsilon"),  # epsilon is required
    ({"epsilon": 0}, "greater than 0"),
    ({"epsilon": -1}, "greater than 0"),
    ({"epsilon": 3, "delta": 1.5}, "less than 1"),
    ({"epsilon": 3, "max_grad_norm": 0}, "greater than 0"),
    ({"epsilon": 3, "accountant": "gdp"}, "accountant"),
])
def test_bad_keys_and_values_are_rejected(privacy, message):
    with pytest.raises(RecipeError, match=message) as err:
        _recipe(privacy)
    assert err.value.exit_code == 2


def test_the_recipe_as_run_has_the_speed_levers_off_and_no_batch_clipping():
    recipe = _recipe({"epsilon": 3}, train={"accel": "auto", "max_grad_norm": 1.0, "precision": "auto"})
    run = vet_recipe(recipe)
    assert (run.train.accel, run.train.max_grad_norm, run.train.precision) == ("off", None, "fp32")
    assert recipe.train.accel == "auto"  # the caller's object is not changed
    plain = _recipe(None)
    assert vet_recipe(plain) is plain


@pytest.mark.parametrize("sections, message", [
    ({"method": {"type": "self-training"}}, "method self-training"),
    ({"task": {"type": "text-regression"}}, "task.type text-regression"),
    ({"train": {"precision": "bf16"}}, "train.precision bf16"),
    ({"train": {"gradient_checkpointing": True}}, "train.gradient_checkpointing"),
    ({"train": {"nonfinite": "skip"}}, "train.nonfinite: skip"),
    ({"train": {"compile": True}}, "train.compile"),
    ({"data": {"streaming": True}}, "data.streaming"),
    ({"data": {"train": {"path": "x.csv", "weight": 2}}}, "weight above 1"),
])
def test_unsupported_settings_are_refused_before_training(sections, message):
    recipe = _recipe({"epsilon": 3}, **sections)
    with pytest.raises(InputError, match="train.privacy cannot be used with") as err:
        vet_recipe(recipe)
    assert message in str(err.value) and err.value.exit_code == 2


def test_several_processes_are_refused(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(InputError, match="several processes"):
        vet_recipe(_recipe({"epsilon": 3}))


class _Data:
    def __init__(self, n, stats=None):
        self.train, self.stats = [None] * n, stats or {}


def test_data_checks_delta_repeats_and_batch():
    assert default_delta(9000) == pytest.approx(1e-4) and default_delta(100) == pytest.approx(1e-3)
    assert default_delta(99) == pytest.approx(1e-2) and default_delta(99) < 1 / 99
    vet_data(_recipe({"epsilon": 3, "delta": 1e-4}).train, _Data(9000))
    with pytest.raises(InputError, match="must be below 1/n"):
        vet_data(_recipe({"epsilon": 3, "delta": 1e-3}).train, _Data(9000))
    with pytest.raises(InputError, match="task.imbalance: off"):
        vet_data(_recipe({"epsilon": 3}).train, _Data(9000, {"rare_class_repeats": {"rows": 9000, "taken": 9500}}))
    with pytest.raises(InputError, match="larger than the 20 training rows"):
        vet_data(_recipe({"epsilon": 3}, train={"batch_size": 32}).train, _Data(20))
