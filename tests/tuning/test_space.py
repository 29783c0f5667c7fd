"""Search spaces: parsing, the values a trial gets, and errors that name the key before any model loads."""

from __future__ import annotations

import optuna
import pytest
from hypothesis import given, settings
from hypothesis import strategies as hs

from lftrain import api
from lftrain.cli import main
from lftrain.config import load_recipe
from lftrain.config.loader import apply_overrides
from lftrain.config.tune import ParamSpace
from lftrain.errors import InputError, RecipeError
from lftrain.tuning.space import decode, override, suggest
from tests.conftest import write_recipe
from tests.tuning.conftest import tune_recipe


@pytest.fixture
def recipe(tmp_path, tiny_bert):
    return tune_recipe(tmp_path, tiny_bert)


def test_every_kind_parses_and_samples_inside_its_space(recipe):
    recipe["tune"]["space"] = {
        "train.lr": {"log_uniform": [1.0e-5, 1.0e-3]},
        "train.warmup_ratio": {"uniform": [0.0, 0.2], "step": 0.05},
        "train.batch_size": {"int": [8, 32], "step": 8},
        "train.eval_batch_size": {"log_int": [16, 128]},
        "train.scheduler": {"choice": ["linear", "cosine"]},
        "model.dropout": {"choice": [None, 0.1]},
        "adaptation": {"choice": [{"type": "full"}, {"type": "lora", "r": 4}]},
    }
    space = load_recipe(data=recipe).tune.space
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(20):
        trial = study.ask()
        values = {k: suggest(trial, k, s) for k, s in space.items()}
        assert 1e-5 <= values["train.lr"] <= 1e-3
        assert values["train.warmup_ratio"] / 0.05 == pytest.approx(round(values["train.warmup_ratio"] / 0.05))
        assert values["train.batch_size"] in (8, 16, 24, 32)
        assert 16 <= values["train.eval_batch_size"] <= 128
        assert values["adaptation"] in ({"type": "full"}, {"type": "lora", "r": 4})  # mappings travel as JSON
        assert decode(space["adaptation"], trial.params["adaptation"]) == values["adaptation"]
        overrides = [override(k, v) for k, v in values.items()]
        resolved = load_recipe(data={**recipe, "tune": None}, overrides=overrides)  # every combination is valid
        assert resolved.train.lr == values["train.lr"] and resolved.adaptation.type == values["adaptation"]["type"]
        study.tell(trial, 0.5)


@pytest.mark.parametrize(("spec", "message"), [
    ({"uniform": [1.0, 0.1]}, "low < high"),
    ({"log_uniform": [0.0, 1.0]}, "> 0 on a log scale"),
    ({"uniform": [0, 1], "choice": [1]}, "exactly one of"),
    ({}, "exactly one of"),
    ({"log_uniform": [1e-5, 1e-3], "step": 1e-5}, "step applies to uniform and int only"),
    ({"choice": []}, "at least one value"),
    ({"normal": [0, 1]}, "unknown key 'tune.space.train.lr.normal'"),
])
def test_bad_spaces_name_the_key(recipe, spec, message):
    recipe["tune"]["space"] = {"train.lr": spec}
    with pytest.raises(RecipeError, match="tune.space.train.lr") as err:
        load_recipe(data=recipe)
    assert message in str(err.value)


@pytest.mark.parametrize(("name", "spec", "message"), [
    ("train.lerning_rate", {"log_uniform": [1e-5, 1e-3]}, "did you mean 'lr'"),
    ("train.lr", {"uniform": [0.0, 1e-3]}, "the value 0.0 makes the recipe invalid"),
    ("adaptation.r", {"choice": [4, 8]}, "unknown key 'adaptation.r'"),  # the recipe's adaptation is `full`
    ("output.dir", {"choice": ["a", "b"]}, "cannot be searched"),
])
def test_space_checked_against_the_recipe_before_training(recipe, name, spec, message, monkeypatch):
    monkeypatch.setattr(api, "train", lambda *a, **k: pytest.fail("no trial may start"))
    recipe["tune"]["space"] = {name: spec}
    with pytest.raises(InputError, match=message) as err:
        api.tune(recipe)
    assert f"tune.space.{name}" in str(err.value)


def test_no_tune_section_or_no_eval_data(recipe, tmp_path):
    del recipe["tune"]
    with pytest.raises(InputError, match="no tune: section"):
        api.tune(recipe)
    path = write_recipe(tmp_path / "r.yaml", recipe)
    assert main(["tune", str(path)]) == 2  # the CLI: exit code 2, "your input is wrong"
    recipe["tune"] = {"space": {"train.lr": {"log_uniform": [1e-5, 1e-3]}}}
    recipe["data"]["eval_fraction"] = 0.0
    with pytest.raises(InputError, match="needs evaluation data"):
        api.tune(recipe)


def test_search_file_gives_the_tune_section(recipe, tmp_path, monkeypatch):
    from lftrain.tuning.search import load_tune_recipe

    del recipe["tune"]
    path = write_recipe(tmp_path / "r.yaml", recipe)
    search = tmp_path / "search.yaml"
    search.write_text("tune:\n  trials: 5\n  space:\n    train.lr: {log_uniform: [1.0e-5, 1.0e-3]}\n")
    resolved, _ = load_tune_recipe(path, ["tune.trials=7"], search)
    assert resolved.tune.trials == 7 and resolved.tune.space["train.lr"].log_uniform == [1e-5, 1e-3]
    search.write_text("space:\n  train.lr: {log_uniform: [1.0e-5, 1.0e-3]}\ntrails: 5\n")
    with pytest.raises(RecipeError, match=r"search.yaml:3: unknown key 'trails'; did you mean 'trials'"):
        load_tune_recipe(path, [], search)


@settings(max_examples=200, deadline=None)
@given(hs.one_of(hs.floats(allow_nan=False, allow_infinity=False), hs.integers(), hs.booleans(), hs.none(),
                 hs.text(max_size=20), hs.lists(hs.text(alphabet="abcdefghij_", min_size=1, max_size=8))))
def test_override_round_trips_every_value(value):
    assert apply_overrides({}, [override("a.b", value)])["a"]["b"] == value


def test_param_space_kind_and_values():
    spec = ParamSpace.model_validate({"int": [4, 16], "step": 4})
    assert spec.kind == "int" and spec.values == [4, 16]
