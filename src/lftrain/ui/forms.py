"""The Model & recipe page's logic, without Gradio: form values -> a normal recipe dict, validated by the same
schema `lft train` uses, written as YAML beside the run directory it will create."""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import yaml

from lftrain.errors import LftError
from lftrain.models.adaptation import ADAPTATIONS as ADAPTATION_REGISTRY
from lftrain.tasks import TASKS

# What the form can describe, as the tasks and adaptations declare it (`ui_form`): tasks whose rows are one text
# column (+ optional pair) and one label column; the others start from a recipe template and edit the YAML.
TASK_TYPES = tuple(TASKS.names(lambda c: c.ui_form))
ADAPTATIONS = tuple(ADAPTATION_REGISTRY.names(lambda c: c.ui_form))
BUILTIN = "built-in defaults"

HELP = {
    "run_name": "Name of the run: the run directory is RUNS/NAME and the recipe RUNS/NAME.yaml. A finished run "
                "is never overwritten; an unfinished one with this name is resumed.",
    "data_file": "Training data: a CSV/TSV/JSONL/Parquet file (a path on this machine, or upload one). Without "
                 "eval/test files, stratified 10% eval and 20% test splits are held out (seeded).",
    "eval_file": "Optional separate evaluation file (used for model selection during training).",
    "test_file": "Optional separate test file (the final scores in the report).",
    "model": "The pre-trained model to start from: a local Hugging Face model directory, a Hub id "
             "(org/name, read from the local Hugging Face cache when offline) or pkg:NAME.",
    "template": "A recipe from recipes/ to start from (its training settings are kept; its data and labels are "
                "replaced by yours), or the built-in defaults.",
    "task_type": "What the model predicts: one label per text (classification), several labels per text "
                 "(multi-label), or a number (regression).",
    "text": "The column holding the input text.",
    "label": "The column holding the answer: a class name, a list of labels (multi-label) or a number.",
    "adaptation": "Which parameters learn: full (all of them; best quality), freeze (the bottom layers stay as "
                  "they are; faster), lora (small low-rank adapters; the base model stays frozen and the run "
                  "saves only the adapter — use a ~10x higher learning rate).",
    "freeze_layers": "freeze: how many bottom layers stay frozen.",
    "lora_r": "lora: rank of the adapters (8 is a good start; higher = more capacity).",
    "epochs": "Passes over the training data.",
    "lr": "Learning rate: 5e-5 is a good start for full fine-tuning, 5e-4 for LoRA.",
    "batch_size": "Examples per optimiser step (the effective batch; split into micro-batches if needed).",
    "max_length": "Texts are cut to this many tokens.",
}


@dataclass
class FormValues:
    """What the form holds, in the order the UI passes its components."""

    run_name: str = "my-run"
    data_file: str = ""
    eval_file: str = ""
    test_file: str = ""
    model: str = ""
    template: str = BUILTIN
    task_type: str = TASKS.default or TASK_TYPES[0]
    text: str = "text"
    label: str = "label"
    adaptation: str = ADAPTATION_REGISTRY.default or ADAPTATIONS[0]
    freeze_layers: int = 4
    lora_r: int = 8
    epochs: float = 3.0
    lr: float = 5e-5
    batch_size: int = 32
    max_length: int = 128

    def __post_init__(self) -> None:
        for f in fields(self):  # an emptied field in the page arrives as None: read it as the default
            if getattr(self, f.name) is None:
                setattr(self, f.name, f.default)
            elif f.type == "str":
                setattr(self, f.name, str(getattr(self, f.name)))

    @classmethod
    def names(cls) -> list[str]:
        return [f.name for f in fields(cls)]


def template_dirs() -> list[Path]:
    """recipes/ in the working directory, then the one beside this source tree (a git checkout)."""
    here = Path(__file__).resolve().parents[3] / "recipes"
    return list(dict.fromkeys(p for p in (Path("recipes").resolve(), here) if p.is_dir()))


def templates() -> dict[str, Path | None]:
    """Template name -> recipe file (None: the built-in defaults)."""
    found: dict[str, Path | None] = {BUILTIN: None}
    for folder in template_dirs():
        for path in sorted(folder.glob("*.yaml")):
            found.setdefault(path.stem, path)
    return found


def template_recipe(name: str) -> dict[str, Any]:
    """The template's recipe as a mapping ({} for the built-in defaults or an unknown name)."""
    path = templates().get(name)
    if path is None:
        return {}
    return yaml.safe_load(path.read_text(encoding="utf-8")) or {}


def form_from_template(name: str, current: FormValues) -> FormValues:
    """The form with the template's model, task and training settings filled in (data and run name kept)."""
    t = template_recipe(name) if name != BUILTIN else {}
    task, train, adapt = t.get("task", {}), t.get("train", {}), t.get("adaptation", {})
    new = FormValues(run_name=current.run_name, data_file=current.data_file, eval_file=current.eval_file,
                     test_file=current.test_file, template=name, model=str(t.get("model", {}).get("path", "")))
    if task.get("type") in TASK_TYPES:
        new.task_type = task["type"]
    new.text, new.label = current.text, current.label  # the columns are the data's, not the template's
    if "max_length" in task:
        new.max_length = task["max_length"]
    if adapt.get("type") in ADAPTATIONS:
        new.adaptation = adapt["type"]
        field = ADAPTATION_REGISTRY.get(new.adaptation).ui_field
        if field is not None:
            setattr(new, field[0], adapt.get(field[1], getattr(new, field[0])))
    for key in ("epochs", "lr", "batch_size"):
        if key in train:
            setattr(new, key, train[key])
    suggested = ADAPTATION_REGISTRY.get(new.adaptation).ui_lr
    if suggested is not None and "lr" not in train:
        new.lr = suggested
    return new


def _local(path: str) -> str:
    """An existing local path made absolute (the recipe then works from any directory); anything else as given."""
    path = path.strip()
    return str(Path(path).expanduser().resolve()) if path and Path(path).expanduser().exists() else path


def _adaptation(form: FormValues, template: dict) -> dict[str, Any]:
    """The adaptation section: the template's when it is of the chosen type, with the form's field put in."""
    kept = template.get("adaptation", {})
    out = {**(kept if kept.get("type") == form.adaptation else {}), "type": form.adaptation}
    field = ADAPTATION_REGISTRY.get(form.adaptation).ui_field
    if field is not None:
        out[field[1]] = int(getattr(form, field[0]))
    return out


def build_recipe(form: FormValues, runs_dir: str | Path, template: dict | None = None) -> dict[str, Any]:
    """A recipe mapping from the form: the template's settings, with the form's fields and data put in.

    From the template only what does not depend on its data is kept: its data files, label names and OOD
    data are dropped (the split fractions and seed stay)."""
    t = copy.deepcopy(template or {})
    t.pop("tune", None)
    t.pop("stages", None)
    task = {k: v for k, v in t.get("task", {}).items() if k not in ("labels", "text_pair", "type")}
    task.update(type=form.task_type, text=form.text.strip(), label=form.label.strip(),
                max_length=int(form.max_length))
    old_data = t.get("data", {})
    data = {k: old_data[k] for k in ("eval_fraction", "test_fraction", "split_seed") if k in old_data}
    data["train"] = _local(form.data_file)
    for role, value in (("eval", form.eval_file), ("test", form.test_file)):
        if value and value.strip():
            data[role] = _local(value)
    evaluation = {k: v for k, v in t.get("eval", {}).items() if k not in ("ood", "ood_filter")}
    train = {**t.get("train", {}), "epochs": float(form.epochs), "lr": float(form.lr),
             "batch_size": int(form.batch_size)}
    recipe = {"name": form.run_name.strip(), "model": {**t.get("model", {}), "path": _local(form.model)},
              "task": task, "data": data, "adaptation": _adaptation(form, t),
              **({"method": t["method"]} if "method" in t else {}), "train": train,
              **({"eval": evaluation} if evaluation else {}),
              "output": {**t.get("output", {}), "dir": str(Path(runs_dir).resolve() / form.run_name.strip())}}
    return recipe


_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def form_errors(form: FormValues) -> list[str]:
    """What the schema cannot see: the form's own fields left empty or unusable."""
    errors = []
    if not _NAME.match(form.run_name.strip()):
        errors.append("run name: letters, digits, '-', '_' and '.' only (it names a directory)")
    if not form.data_file.strip():
        errors.append("data: choose a training file on the Data page")
    if not form.model.strip():
        errors.append("model: give a local model directory or a Hub id on the Model & recipe page")
    return errors


def validate(recipe: dict[str, Any]) -> str | None:
    """None if `lft train` would accept the recipe, else the schema's message (key, nearest valid key)."""
    from lftrain.config import load_recipe

    try:
        load_recipe(data=copy.deepcopy(recipe))
    except LftError as exc:
        return str(exc)
    return None


def recipe_yaml(recipe: dict[str, Any]) -> str:
    return yaml.safe_dump(recipe, sort_keys=False, allow_unicode=True)


def recipe_path(runs_dir: str | Path, name: str) -> Path:
    return Path(runs_dir).resolve() / f"{name}.yaml"


def finished_run(runs_dir: str | Path, name: str) -> bool:
    from lftrain.ui.progress import run_status

    return run_status(Path(runs_dir) / name) == "finished"


def prepare(form: FormValues, runs_dir: str | Path) -> tuple[dict | None, list[str]]:
    """(recipe, []) ready to train, or (recipe or None, errors) to show: form, schema and run-directory checks."""
    errors = form_errors(form)
    if errors:
        return None, errors
    recipe = build_recipe(form, runs_dir, template_recipe(form.template))
    problem = validate(recipe)
    if problem:
        return recipe, [problem]
    if finished_run(runs_dir, form.run_name.strip()):
        return recipe, [f"run '{form.run_name.strip()}' has finished already and is never overwritten: "
                        "choose another run name"]
    return recipe, []


def write_recipe(recipe: dict[str, Any], runs_dir: str | Path) -> Path:
    path = recipe_path(runs_dir, recipe["name"])
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(recipe_yaml(recipe), encoding="utf-8")
    return path
