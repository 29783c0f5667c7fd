"""Recipe loading: strict keys with suggestions, typed fields, line numbers, overrides, safe YAML."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from lftrain.config import dump_recipe, load_recipe
from lftrain.errors import EXIT_INPUT, RecipeError

ROOT = Path(__file__).resolve().parents[2]

BASE = """\
model:
  path: some/model
data:
  train: train.csv
train:
  epochs: 2
"""


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "r.yaml"
    p.write_text(text)
    return p


def test_minimal_recipe_fills_defaults_and_output_dir(tmp_path):
    r = load_recipe(write(tmp_path, BASE))
    assert r.task.type == "text-classification"
    assert r.adaptation.type == "full" and r.method.type == "supervised"
    assert r.train.epochs == 2 and r.train.batch_size == 32
    assert r.output.dir == str(Path("runs") / "r")


def test_unknown_key_names_key_line_and_nearest(tmp_path):
    p = write(tmp_path, BASE + "  lerning_rate: 0.1\n")
    with pytest.raises(RecipeError) as e:
        load_recipe(p)
    msg = str(e.value)
    assert "unknown key 'train.lerning_rate'" in msg
    assert f"{p}:7" in msg  # the line of the bad key
    assert "did you mean 'lr'?" in msg
    assert e.value.exit_code == EXIT_INPUT


def test_alias_from_other_tools_is_suggested(tmp_path):
    with pytest.raises(RecipeError, match="did you mean 'lr'"):
        load_recipe(write(tmp_path, BASE + "  learning_rate: 0.1\n"))


def test_unknown_section_suggests_section(tmp_path):
    with pytest.raises(RecipeError, match="unknown key 'trian'.*did you mean 'train'"):
        load_recipe(write(tmp_path, BASE + "trian: {}\n"))


def test_wrong_type_names_path_and_expected_type(tmp_path):
    with pytest.raises(RecipeError) as e:
        load_recipe(write(tmp_path, BASE.replace("epochs: 2", "epochs: many")))
    assert re.search(r"train\.epochs: .*valid number.*'many'", str(e.value))
    assert ":6:" in str(e.value)


def test_unknown_task_type_lists_choices(tmp_path):
    with pytest.raises(RecipeError, match="text-classification"):
        load_recipe(write(tmp_path, BASE + "task: {type: text-clasification}\n"))


def test_missing_required_key(tmp_path):
    with pytest.raises(RecipeError, match="missing required key 'model.path'"):
        load_recipe(write(tmp_path, "model: {}\ndata: {train: x.csv}\n"))


def test_python_tags_are_refused_not_executed(tmp_path):
    canary = tmp_path / "canary"
    p = write(tmp_path, BASE + f"name: !!python/object/apply:os.system ['touch {canary}']\n")
    with pytest.raises(RecipeError, match="not valid YAML"):
        load_recipe(p)
    assert not canary.exists()


def test_overrides_parse_values_as_yaml(tmp_path):
    r = load_recipe(write(tmp_path, BASE), ["train.lr=1e-4", "train.epochs=1", "task.labels=[a, b]",
                                            "output.dir=elsewhere"])
    assert r.train.lr == pytest.approx(1e-4) and r.train.epochs == 1
    assert r.task.labels == ["a", "b"] and r.output.dir == "elsewhere"


def test_bad_override_is_an_input_error(tmp_path):
    with pytest.raises(RecipeError, match="expected key.sub=value"):
        load_recipe(write(tmp_path, BASE), ["train.lr"])
    with pytest.raises(RecipeError, match="unknown key 'train.nope'"):
        load_recipe(write(tmp_path, BASE), ["train.nope=3"])


def test_micro_batch_must_divide_batch(tmp_path):
    with pytest.raises(RecipeError, match="multiple of micro_batch_size"):
        load_recipe(write(tmp_path, BASE), ["train.batch_size=32", "train.micro_batch_size=5"])


def test_resolved_recipe_round_trips(tmp_path):
    r = load_recipe(write(tmp_path, BASE), ["train.lr=3e-5"])
    again = load_recipe(write(tmp_path, dump_recipe(r)))
    assert again == r


@pytest.mark.parametrize("recipe", sorted((ROOT / "recipes").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_recipe_validates(recipe):
    load_recipe(recipe)


def test_recipe_reference_is_generated_from_the_schema():
    from lftrain.config.reference import recipe_reference

    readme = (ROOT / "docs" / "recipes.md").read_text()
    start, end = "<!-- recipe-reference:start -->", "<!-- recipe-reference:end -->"
    block = readme.split(start, 1)[1].split(end, 1)[0].strip()
    assert block == recipe_reference().strip(), "docs/recipes.md's recipe reference is stale: run `python -m " \
        "lftrain.config.reference --write docs/recipes.md`"
