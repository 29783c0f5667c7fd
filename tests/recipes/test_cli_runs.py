"""The real CLI, end to end, on a tiny model: golden losses, evaluate, predict, run-directory rules."""

from __future__ import annotations

import json

import numpy as np
import pytest

from lftrain.errors import EXIT_INPUT, EXIT_RUN_STATE
from tests.conftest import run_lft, tiny_recipe, toy_rows, write_csv, write_recipe

# Every step's training loss of the tiny recipe (3 epochs, 42 steps, fp32, 1 thread, seed 0) on the default path.
# They change only when the maths of a step changes; a deliberate change updates them in the same commit, saying why.
# PORTABLE pins the CPU code paths (MKL's reproducible mode, ATen's non-vectorised kernels), so that the values are
# the same on every x86 machine, AVX2 or AVX-512 alike.
GOLDEN_LOSSES = [0.689217, 0.712147, 0.691507, 0.685668, 0.704233, 0.70846, 0.667192, 0.716959, 0.689342, 0.696202,
                 0.692392, 0.699717, 0.69262, 0.692892, 0.695616, 0.684611, 0.688818, 0.686114, 0.685658, 0.68388,
                 0.677138, 0.647784, 0.618214, 0.602271, 0.590146, 0.512653, 0.485126, 0.437945, 0.401846, 0.369214,
                 0.338248, 0.309265, 0.275978, 0.262203, 0.238065, 0.223516, 0.204918, 0.194783, 0.200051, 0.185572,
                 0.176311, 0.179439]
PORTABLE = {"MKL_CBWR": "COMPATIBLE", "ATEN_CPU_CAPABILITY": "default", "ONEDNN_MAX_CPU_ISA": "AVX2"}
TIMING = ("samples_per_second", "train_runtime", "train_samples_per_second")  # wall-clock, not results


def train_losses(run_dir) -> list[float]:
    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in lines if r["event"] == "train"]


@pytest.fixture(scope="module")
def trained(tiny_bert, tmp_path_factory):
    """One real `lft train` run shared by the tests of this module."""
    work = tmp_path_factory.mktemp("cli")
    train = write_csv(work / "train.csv", toy_rows(160))
    run = work / "run"
    recipe = write_recipe(work / "recipe.yaml", tiny_recipe(tiny_bert, train, run, epochs=3))
    proc = run_lft("train", str(recipe), env=PORTABLE)
    assert proc.returncode == 0, proc.stderr
    return work, recipe, run, proc


def test_run_directory_layout(trained):
    _, _, run, proc = trained
    for name in ("recipe.yaml", "manifest.json", "metrics.jsonl", "run.json", "model/config.json",
                 "model/model.safetensors", "model/tokenizer.json"):
        assert (run / name).is_file(), name
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["seed"] == 0 and manifest["threads"] == 1 and manifest["precision"] == "fp32"
    assert len(manifest["data"]["train"]["sha256"]) == 64
    assert "model.safetensors" in manifest["base_model"]["files"]
    assert json.loads((run / "run.json").read_text())["status"] == "finished"
    assert "test metrics" in proc.stdout and "confusion matrix" in proc.stdout
    assert "first-token-only last layer: on" in proc.stderr  # BERT classifier: the short last layer is in use
    assert manifest["accel"]["setting"] == "auto" and manifest["accel"]["dropout"] == "gaps"
    assert manifest["attention"] == "lft_eager"


def test_golden_losses(trained):
    losses = train_losses(trained[2])
    assert len(losses) == 42  # 3 epochs x ceil(112 / 8) steps, one log line per step
    np.testing.assert_allclose(losses, GOLDEN_LOSSES, rtol=1e-5, atol=1e-6)


def _results(run_dir) -> list[dict]:
    return [{k: v for k, v in json.loads(x).items() if k not in TIMING}
            for x in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_results_do_not_depend_on_a_c_compiler(trained, tmp_path):
    """The default path builds nothing: with no compiler on PATH a run gives bitwise the same metrics."""
    import shutil
    import sys
    from pathlib import Path

    bare = tmp_path / "bin"  # only the Python that runs lft: no cc, gcc or clang
    bare.mkdir()
    (bare / "python").symlink_to(sys.executable)
    assert all(shutil.which(cc, path=str(bare)) is None for cc in ("cc", "gcc", "clang", "c++"))
    work, recipe, run, _ = trained
    alone = tmp_path / "run"
    proc = run_lft("train", str(recipe), f"output.dir={alone}", env={**PORTABLE, "PATH": str(bare)})
    assert proc.returncode == 0, proc.stderr
    assert _results(alone) == _results(run)  # every loss and metric, to the last bit
    weights = "model/model.safetensors"
    assert Path(run / weights).read_bytes() == (alone / weights).read_bytes()


def test_accel_off_trains_the_plain_model(trained, tmp_path):
    """train.accel: off installs no lever: torch's dropout and SDPA, the same data order; it learns as well."""
    work, recipe, run, _ = trained
    plain = tmp_path / "plain"
    proc = run_lft("train", str(recipe), f"output.dir={plain}", "train.accel=off", env=PORTABLE)
    assert proc.returncode == 0, proc.stderr
    assert "accel: off" in proc.stderr and "first-token-only" not in proc.stderr
    manifest = json.loads((plain / "manifest.json").read_text())
    assert manifest["accel"] == {"setting": "off", "dropout": "torch", "levers": [
        "accel: off (train.accel: off): torch's operators throughout"]} and manifest["attention"] == "sdpa"
    losses = train_losses(plain)
    assert losses != GOLDEN_LOSSES and losses[-1] < 0.3  # another dropout stream, the same learning


def test_it_learns(trained):
    run = trained[2]
    records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    test = [r for r in records if r["event"] == "eval" and r["split"] == "test"][-1]
    assert test["accuracy"] >= 0.9, test
    assert set(test["per_class"]) == {"neg", "pos"} and len(test["confusion_matrix"]) == 2


def test_saved_model_loads_with_plain_transformers_and_agrees_with_predict(trained):
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    work, _, run, _ = trained
    rows = toy_rows(20, seed=5)
    inp = write_csv(work / "new.csv", [{"text": r["text"]} for r in rows])
    out = work / "preds.jsonl"
    proc = run_lft("predict", str(run), "--input", str(inp), "--output", str(out))
    assert proc.returncode == 0, proc.stderr
    preds = [json.loads(x) for x in out.read_text().splitlines()]
    assert [p["row"] for p in preds] == list(range(1, 21))  # input order, always
    assert all(abs(sum(p["probs"].values()) - 1) < 1e-4 for p in preds)

    model = AutoModelForSequenceClassification.from_pretrained(run / "model").eval()
    tok = AutoTokenizer.from_pretrained(run / "model")
    assert model.config.id2label == {0: "neg", 1: "pos"}
    with torch.no_grad():
        logits = model(**tok([r["text"] for r in rows], padding=True, return_tensors="pt")).logits
    plain = [model.config.id2label[int(i)] for i in logits.argmax(-1)]
    assert plain == [p["label"] for p in preds]


def test_evaluate_command(trained):
    work, _, run, _ = trained
    data = write_csv(work / "labelled.csv", toy_rows(40, seed=9))
    proc = run_lft("evaluate", str(run), "--data", str(data), "--output", str(work / "m.json"))
    assert proc.returncode == 0, proc.stderr
    metrics = json.loads((work / "m.json").read_text())
    assert metrics["n"] == 40 and metrics["accuracy"] >= 0.9 and "macro_f1" in metrics
    assert "confusion matrix" in proc.stdout


def test_finished_run_is_never_overwritten(trained):
    _, recipe, run, _ = trained
    before = (run / "model" / "model.safetensors").read_bytes()
    proc = run_lft("train", str(recipe))
    assert proc.returncode == EXIT_RUN_STATE
    assert "finished run" in proc.stderr and "--new-run" in proc.stderr
    assert (run / "model" / "model.safetensors").read_bytes() == before


def test_new_run_goes_beside_the_finished_one(trained):
    _, recipe, run, _ = trained
    proc = run_lft("train", str(recipe), "--new-run", "train.max_steps=2")
    assert proc.returncode == 0, proc.stderr
    assert "cache: 3 hit, 0 miss" in proc.stderr  # the same data is never tokenised twice
    assert (run.parent / "run-2" / "model" / "model.safetensors").is_file()


def test_bad_data_exits_with_input_code_before_loading_a_model(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("text,label\nfine,pos\n,neg\n")
    recipe = write_recipe(tmp_path / "r.yaml", tiny_recipe(tmp_path / "no-such-model", bad, tmp_path / "run"))
    proc = run_lft("train", str(recipe))
    assert proc.returncode == EXIT_INPUT
    assert "bad.csv, line 3, row 2, column 'text': empty text" in proc.stderr
    assert not (tmp_path / "run").exists()  # data is validated before anything is created or loaded


def test_bad_recipe_key_exits_with_input_code(tmp_path, tiny_bert):
    recipe = write_recipe(tmp_path / "r.yaml", {**tiny_recipe(tiny_bert, tmp_path / "x.csv", tmp_path / "run"),
                                                "trainn": {}})
    proc = run_lft("train", str(recipe))
    assert proc.returncode == EXIT_INPUT and "did you mean 'train'" in proc.stderr


def test_help_explains_every_command():
    for cmd in ([], ["train"], ["evaluate"], ["predict"]):
        proc = run_lft(*cmd, "--help")
        assert proc.returncode == 0 and "usage: lft" in proc.stdout
    assert "--new-run" in run_lft("train", "--help").stdout


def test_text_pairs_train_end_to_end(tiny_bert, tmp_path):
    rows = [{"premise": r["text"], "hypothesis": r["text"].split()[0], "label": r["label"]} for r in toy_rows(60)]
    train = write_csv(tmp_path / "pairs.csv", rows)
    recipe = tiny_recipe(tiny_bert, train, tmp_path / "run", max_steps=3)
    recipe["task"].update({"text": "premise", "text_pair": "hypothesis"})
    proc = run_lft("train", str(write_recipe(tmp_path / "r.yaml", recipe)))
    assert proc.returncode == 0, proc.stderr
    preds = tmp_path / "p.jsonl"
    assert run_lft("predict", str(tmp_path / "run"), "--input", str(train), "--output", str(preds)).returncode == 0
    assert len(preds.read_text().splitlines()) == 60


def test_early_stopping_keeps_the_best_checkpoint(tiny_bert, tmp_path):
    from safetensors.torch import load_file

    train = write_csv(tmp_path / "train.csv", toy_rows(200))
    # A learning rate this high makes evaluation loss get worse after the first evaluations.
    recipe = tiny_recipe(tiny_bert, train, tmp_path / "run", epochs=20, lr=0.5, eval_every=2,
                         early_stopping_patience=2, metric="loss", keep_checkpoints=1)
    proc = run_lft("train", str(write_recipe(tmp_path / "r.yaml", recipe)))
    assert proc.returncode == 0, proc.stderr
    status = json.loads((tmp_path / "run" / "run.json").read_text())["state"]
    assert status["stopped_early"] and status["step"] < 20 * 15
    best = tmp_path / "run" / "checkpoints" / f"step-{status['best_step']:08d}"
    assert best.is_dir()  # rotation (keep 1) never deletes the best checkpoint
    evals = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    eval_losses = {r["step"]: r["loss"] for r in evals if r["event"] == "eval" and r["split"] == "eval"}
    assert status["best_step"] == min(eval_losses, key=eval_losses.get)
    final, kept = load_file(tmp_path / "run" / "model" / "model.safetensors"), load_file(best / "model.safetensors")
    assert all((final[k] == kept[k]).all() for k in final)  # the final model is the best one, not the last
