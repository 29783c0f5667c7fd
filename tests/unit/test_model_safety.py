"""Model directories are vetted before anything is loaded: no pickle, no remote code, unless the recipe says so."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from lftrain.errors import EXIT_INPUT, ModelLoadError
from lftrain.models.loading import vet_model_dir


def test_safetensors_dir_passes(tiny_bert):
    src = vet_model_dir(str(tiny_bert), allow_pickle=False, trust_remote_code=False)
    assert src.safetensors and src.config["model_type"] == "bert"


def test_missing_dir_names_the_path(tmp_path):
    with pytest.raises(ModelLoadError, match=r"model directory not found: .*nowhere \(model.path\)") as e:
        vet_model_dir(str(tmp_path / "nowhere"), allow_pickle=False, trust_remote_code=False)
    assert e.value.exit_code == EXIT_INPUT


def test_missing_package_is_named():
    with pytest.raises(Exception, match="package 'no_such_pkg_xyz' is not installed"):
        vet_model_dir("pkg:no_such_pkg_xyz", allow_pickle=False, trust_remote_code=False)


def _pickle_only_copy(tiny_bert, tmp_path):
    from safetensors.torch import load_file

    d = tmp_path / "pickled"
    shutil.copytree(tiny_bert, d)
    state = load_file(d / "model.safetensors")
    (d / "model.safetensors").unlink()
    torch.save(state, d / "pytorch_model.bin")
    return d


def test_pickle_only_checkpoint_is_refused_unless_allowed(tiny_bert, tmp_path):
    d = _pickle_only_copy(tiny_bert, tmp_path)
    with pytest.raises(ModelLoadError, match="only pickle weights.*model.allow_pickle"):
        vet_model_dir(str(d), allow_pickle=False, trust_remote_code=False)
    assert not vet_model_dir(str(d), allow_pickle=True, trust_remote_code=False).safetensors


def test_allowed_pickle_is_loaded_with_weights_only(tiny_bert, tmp_path):
    """A pickle whose __reduce__ would write a canary file is rejected by weights_only loading."""
    from lftrain.config import load_recipe
    from lftrain.data.labels import LabelSet
    from lftrain.tasks import build_task

    d = _pickle_only_copy(tiny_bert, tmp_path)
    canary = tmp_path / "canary"

    class Payload:
        def __reduce__(self):
            return (open, (str(canary), "w"))

    torch.save({"evil": Payload()}, d / "pytorch_model.bin")
    recipe = load_recipe(data={"model": {"path": str(d), "allow_pickle": True}, "data": {"train": "x.csv"}})
    task = build_task(recipe.task)
    task.labels = LabelSet(["a", "b"])
    src = vet_model_dir(str(d), allow_pickle=True, trust_remote_code=False)
    with pytest.raises(Exception):  # noqa: B017  (transformers wraps the UnpicklingError in its own types)
        task.load_model(src, trust_remote_code=False, attention="eager")
    assert not canary.exists()


def test_remote_code_is_refused_unless_trusted(tiny_bert, tmp_path):
    d = tmp_path / "remote"
    shutil.copytree(tiny_bert, d)
    cfg = json.loads((d / "config.json").read_text())
    cfg["auto_map"] = {"AutoModel": "modeling_evil.EvilModel"}
    (d / "config.json").write_text(json.dumps(cfg))
    (d / "modeling_evil.py").write_text("raise SystemExit('remote code ran')\n")
    with pytest.raises(ModelLoadError, match="ships Python code.*trust_remote_code: true"):
        vet_model_dir(str(d), allow_pickle=False, trust_remote_code=False)
    assert vet_model_dir(str(d), allow_pickle=False, trust_remote_code=True).path == d
