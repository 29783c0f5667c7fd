"""The real CLI, end to end, on a tiny model: golden losses, evaluate, predict, run-directory rules."""

from __future__ import annotations

import json

import numpy as np
import pytest

from lftrain.errors import EXIT_INPUT, EXIT_RUN_STATE
from tests.conftest import run_lft, tiny_recipe, toy_rows, write_csv, write_recipe

# Per-step training losses of the tiny recipe (fp32, 1 thread, seed 0). They change only when the
# maths of a step changes; if a deliberate change moves them, update them in the same commit and say why.
# Moved at stop 19, twice, by changes of the random stream (dropout masks are drawn per element): by
# train.first_token_only (the last layer draws masks for the [CLS] row only; with it off the previous values
# come back within 1e-4), then by task.pad_to_multiple_of: 8 (wider batches; with 1, the values of the first
# change come back: 0.685409, 0.716959, 0.692464, ...). Moved at stop 22 by dropout drawn as the gaps between
# drops (models/fast_dropout.py: the same distribution from a different random stream; with GAPS_MAX_RATE = 0
# the former masks run and the previous values, 0.692152, 0.711678, 0.696341, ..., come back).
# Stop 26 added the compiled dropout kernel (src/lftrain/kernels: the mask hashed from each element's index), a
# third random stream; the PyTorch path (no C compiler, or LFT_KERNELS=off) keeps the gaps' values. The run's
# manifest says which path ran, and the test compares with that path's values.
# Moved at stop 27 on the compiled path only: with the kernels, batches with no padding rows to skip take the
# packed path too (models/unpad.py, PACK_FULL_GRIDS): their dropout masks are hashed over the packed rows'
# element indices instead of the grid's (with PACK_FULL_GRIDS = False the previous values, 0.688941, 0.71653, ...,
# come back).
GOLDEN_LOSSES = {
    "compiled": [0.688947, 0.716299, 0.69033, 0.697478, 0.696498, 0.69931, 0.678655, 0.714009],
    "torch": [0.689217, 0.712147, 0.691507, 0.685668, 0.704233, 0.70846, 0.667192, 0.716959],
}


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
    proc = run_lft("train", str(recipe))
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
    assert "unpadded layers: on" in proc.stderr


def test_golden_losses(trained):
    losses = train_losses(trained[2])
    assert len(losses) == 42  # 3 epochs x ceil(112 / 8) steps, one log line per step
    path = json.loads((trained[2] / "manifest.json").read_text())["dropout_kernel"].split()[0]
    if GOLDEN_LOSSES[path] is None:
        pytest.fail(f"set GOLDEN_LOSSES[{path!r}] = {[round(x, 6) for x in losses[:8]]}")
    np.testing.assert_allclose(losses[:8], GOLDEN_LOSSES[path], rtol=1e-4)


def test_golden_losses_of_the_pytorch_dropout_path(tiny_bert, tmp_path):
    # The path runs where there is no C compiler: its values must hold there, so they are checked here too.
    train = write_csv(tmp_path / "train.csv", toy_rows(160))
    recipe = write_recipe(tmp_path / "recipe.yaml", tiny_recipe(tiny_bert, train, tmp_path / "run", epochs=3))
    proc = run_lft("train", str(recipe), env={"LFT_KERNELS": "off"})
    assert proc.returncode == 0, proc.stderr
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["dropout_kernel"] == "torch (LFT_KERNELS=off)"
    np.testing.assert_allclose(train_losses(tmp_path / "run")[:8], GOLDEN_LOSSES["torch"], rtol=1e-4)


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
