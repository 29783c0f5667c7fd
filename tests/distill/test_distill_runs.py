"""Distillation end to end on tiny models: teacher run -> student with unlabelled text -> int8 / ONNX export."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import lftrain.api as api
from lftrain.errors import DataError, InputError
from lftrain.runs.loaded import LoadedRun
from tests.conftest import make_tokenizer, run_lft, tiny_recipe, toy_rows, write_csv, write_recipe


@pytest.fixture(scope="module")
def teacher(tmp_path_factory, tiny_bert_nodrop):
    root = tmp_path_factory.mktemp("distill")
    data = write_csv(root / "train.csv", toy_rows(160, seed=1))
    result = api.train(tiny_recipe(tiny_bert_nodrop, data, root / "teacher", epochs=3))
    return root, data, result


def _unlabelled(root, n: int = 80, extra: list[str] = ()):
    texts = [r["text"] for r in toy_rows(n, seed=7)] + list(extra)
    return write_csv(root / "unlabelled.csv", [{"text": t} for t in texts])


def _wide_student(root):
    """A 2-layer student of width 24 (teacher: 32): hidden-state matching needs the learned projection."""
    from transformers import BertConfig, BertModel

    d = root / "student-base"
    tok = make_tokenizer(d)
    torch.manual_seed(3)
    BertModel(BertConfig(vocab_size=len(tok), hidden_size=24, num_hidden_layers=2, num_attention_heads=4,
                         intermediate_size=48, max_position_embeddings=64, hidden_dropout_prob=0.0,
                         attention_probs_dropout_prob=0.0)).save_pretrained(d)
    return d


def _distill_recipe(root, data, teacher_run, model, out, **method):
    r = tiny_recipe(model, data, out, epochs=2)
    r["data"]["unlabeled"] = str(_unlabelled(root))
    r["method"] = {"type": "distill", "teacher": str(teacher_run), "temperature": 2.0, "alpha": 0.5, **method}
    return r


def test_cached_teacher_logits_equal_fresh_ones(teacher, tmp_path):
    from lftrain.config import load_recipe
    from lftrain.data.prepare import prepare_data
    from lftrain.methods.teacher import find_teacher, teacher_outputs
    from lftrain.tasks import build_task

    root, data, result = teacher
    r = tiny_recipe(result.model_dir, data, tmp_path / "unused")
    r["data"]["unlabeled"] = str(_unlabelled(root))
    r["data"]["cache_dir"] = str(tmp_path / "cache")
    recipe = load_recipe(data=r)
    task = build_task(recipe.task)
    prepared = prepare_data(recipe, task)
    parts = [prepared.train, prepared.unlabeled]
    ref = find_teacher(str(result.run_dir))
    stats: dict = {}
    first = teacher_outputs(ref, recipe, parts, layers=[0, 1], precision="fp32", device=torch.device("cpu"),
                            cache_dir=recipe.data.cache_dir, stats=stats)
    assert stats["teacher_cache"] == "miss"
    again = teacher_outputs(ref, recipe, parts, layers=[0, 1], precision="fp32", device=torch.device("cpu"),
                            cache_dir=recipe.data.cache_dir, stats=stats)
    assert stats["teacher_cache"] == "hit"
    # Fresh: the finished teacher through the public inference path, row by row order preserved.
    tm = LoadedRun(result.run_dir)
    fresh = np.concatenate([tm.logits(p)[0] for p in parts])
    assert first["logits"].shape == (len(prepared.train) + len(prepared.unlabeled), 2)
    np.testing.assert_allclose(again["logits"], first["logits"], rtol=0, atol=0)
    np.testing.assert_allclose(first["logits"], fresh, rtol=1e-5, atol=1e-5)
    assert first["hidden"].shape == (len(first["logits"]), 2, 32)


def test_distill_with_unlabelled_text_and_hidden_projection(teacher, tmp_path):
    root, data, result = teacher
    r = _distill_recipe(root, data, result.run_dir, _wide_student(tmp_path), tmp_path / "student",
                        hidden_weight=1.0)
    student = api.train(r)
    assert student.metrics["test"]["accuracy"] >= 0.0
    manifest = json.loads((student.run_dir / "manifest.json").read_text())
    assert manifest["data_stats"]["unlabeled_rows"] == 80
    assert "unlabeled" in json.dumps(manifest["data_files"] if "data_files" in manifest else manifest)
    from safetensors import safe_open

    with safe_open(str(student.model_dir / "model.safetensors"), "pt") as f:
        assert not [k for k in f.keys() if "distill" in k]  # the projection trained but is not shipped
    # 120 labelled train rows (160 minus 20% test, 10% eval) + 80 unlabelled, batch 8, 2 epochs -> 50 steps
    assert student.steps == 2 * int(np.ceil((len_train(student) + 80) / 8))


def len_train(result) -> int:
    return json.loads((result.run_dir / "manifest.json").read_text())["data_stats"]["train_rows"]


def test_unlabelled_rows_overlapping_labelled_splits_are_dropped(teacher, tmp_path):
    from lftrain.config import load_recipe
    from lftrain.data.prepare import prepare_data
    from lftrain.tasks import build_task

    root, data, result = teacher
    r = tiny_recipe(result.model_dir, data, tmp_path / "x")
    labelled_text = toy_rows(160, seed=1)[0]["text"]
    r["data"]["unlabeled"] = str(_unlabelled(tmp_path, 10, extra=[labelled_text, toy_rows(10, seed=7)[0]["text"]]))
    prepared = prepare_data(load_recipe(data=r), build_task(load_recipe(data=r).task))
    assert len(prepared.unlabeled) == 10
    assert prepared.stats["unlabeled:overlap_dropped"] == 1 and prepared.stats["unlabeled:duplicates_dropped"] == 1


def test_bad_inputs_fail_before_any_model_loads(teacher, tmp_path, monkeypatch):
    root, data, result = teacher
    import lftrain.tasks.text_classification as tc

    def no_load(*a, **k):
        raise AssertionError("a model was loaded before the input error")

    monkeypatch.setattr(tc.TextClassification, "load_model", no_load)
    r = _distill_recipe(root, data, tmp_path / "nope", result.model_dir, tmp_path / "s1")
    with pytest.raises(InputError, match="method.teacher: .*nope does not exist"):
        api.train(r)
    r = _distill_recipe(root, data, result.run_dir, result.model_dir, tmp_path / "s2")
    r["task"]["labels"] = ["pos", "neg"]  # the teacher's order is neg, pos
    with pytest.raises(InputError, match="differ from this recipe"):
        api.train(r)
    r = _distill_recipe(root, data, result.run_dir, result.model_dir, tmp_path / "s3")
    bad = write_csv(tmp_path / "bad.csv", [{"text": "good film", "src": "a"}, {"text": " ", "src": "b"}])
    r["data"]["unlabeled"] = str(bad)
    with pytest.raises(DataError, match=r"bad.csv.*row 2.*column 'text'"):
        api.train(r)


@pytest.mark.slow  # ~40 s: CLI distill then three exports (`make test-slow`; not in CI: .ci/run runs the demo only)
def test_cli_distill_into_dropped_layers_then_int8_and_onnx(teacher, tmp_path):
    from lftrain.models.compress import load_exported

    root, data, result = teacher
    # Student initialised from the teacher itself, one of its two layers kept.
    r = _distill_recipe(root, data, result.run_dir, result.model_dir, tmp_path / "student")
    r["model"]["keep_layers"] = "every_other"
    recipe = write_recipe(tmp_path / "distill.yaml", r)
    p = run_lft("train", str(recipe))
    assert p.returncode == 0, p.stderr[-3000:]
    assert "kept layers [1] of 2" in p.stderr and "80 unlabelled rows" in p.stderr
    cfg = json.loads((tmp_path / "student" / "model" / "config.json").read_text())
    assert cfg["num_hidden_layers"] == 1

    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tmp_path / "student" / "model")
    inputs = dict(tok(["good film", "a very dull and tedious plot with an awful cast"], padding=True,
                      return_tensors="pt"))
    fp32 = load_exported(tmp_path / "student" / "model")
    with torch.no_grad():
        ref = torch.softmax(fp32(**inputs).logits, -1)
    # One export through the CLI, the others through the API (each ONNX export costs ~10 s of tracing).
    p = run_lft("export", str(tmp_path / "student"), "--output", str(tmp_path / "onnx8"), "--format", "onnx",
                "--quantize", "int8")
    assert p.returncode == 0, p.stderr[-3000:]
    api.export(tmp_path / "student", tmp_path / "int8", quantize="int8")
    api.export(tmp_path / "student", tmp_path / "onnx", format="onnx")
    for name, tol in (("onnx8", 0.05), ("int8", 0.05), ("onnx", 1e-4)):
        out = tmp_path / name
        info = json.loads((out / "export.json").read_text())
        assert not (out / "model.safetensors").exists()
        with torch.no_grad():
            got = torch.softmax(load_exported(out)(**inputs).logits, -1)
        assert (got - ref).abs().max().item() <= tol, (name, info)
    with pytest.raises(InputError, match="not an empty directory"):
        api.export(tmp_path / "student", tmp_path / "int8", quantize="int8")
