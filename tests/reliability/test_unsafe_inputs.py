"""Scenario 10: unsafe inputs are refused without executing anything."""

from __future__ import annotations

import json
import logging
import os
import shutil
import stat
import zipfile

import pytest
import torch

from lftrain.config import load_recipe
from lftrain.data.readers import read_table
from lftrain.errors import DataError, ModelLoadError, RecipeError
from lftrain.files import sha256_file
from lftrain.models.loading import vet_model_dir
from lftrain.training.checkpoint import MANIFEST, resume_latest, save_checkpoint
from tests.conftest import write_recipe
from tests.reliability import child
from tests.reliability.conftest import lft, recipe


class _Canary:
    def __init__(self, path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))  # unpickling would create the file


def test_pickle_model_weights_never_execute(lab, tmp_path):
    model = tmp_path / "pickled"
    shutil.copytree(lab.model, model)
    (model / "model.safetensors").unlink()
    canary = tmp_path / "canary-model"
    torch.save({"x": _Canary(canary)}, model / "pytorch_model.bin")
    r = recipe(model, lab.train, tmp_path / "run", cache=lab.cache)
    refused = lft("train", write_recipe(tmp_path / "p.yaml", r), log=tmp_path / "p.log")
    assert refused.code == 2 and "only pickle weights" in refused.log, refused.log
    r["model"]["allow_pickle"] = True  # allowed: read with weights_only=True, which refuses the payload
    res = lft("train", write_recipe(tmp_path / "p2.yaml", r), "--new-run", log=tmp_path / "p2.log")
    assert res.code != 0
    assert not canary.exists()


def test_pickle_payload_in_a_checkpoint_is_refused_and_resume_falls_back(tmp_path, caplog):
    root = tmp_path / "checkpoints"
    model, opt, sched, state = child.tiny_objects()
    save_checkpoint(root, model, opt, sched, state)
    state.step = 4
    newest = save_checkpoint(root, model, opt, sched, state)
    canary = tmp_path / "canary-ckpt"
    torch.save({"state": {}, "param_groups": [], "evil": _Canary(canary)}, newest / "optimizer.pt")
    mf = json.loads((newest / MANIFEST).read_text())  # the attacker also rewrites the manifest
    mf["files"]["optimizer.pt"] = sha256_file(newest / "optimizer.pt")
    (newest / MANIFEST).write_text(json.dumps(mf))
    with caplog.at_level(logging.WARNING, logger="lftrain"):
        path, restored = resume_latest(root, *child.tiny_objects(seed=1)[:3])
    assert path.name == "step-00000003" and restored.step == 3
    assert "step-00000004 is unusable: cannot be loaded (UnpicklingError" in caplog.text
    assert not canary.exists()


def test_remote_code_refused_unless_trusted_then_hashes_logged(lab, tmp_path, caplog):
    d = tmp_path / "remote"
    shutil.copytree(lab.model, d)
    cfg = json.loads((d / "config.json").read_text())
    cfg["auto_map"] = {"AutoModel": "modeling_evil.EvilModel"}
    (d / "config.json").write_text(json.dumps(cfg))
    canary = tmp_path / "canary-code"
    (d / "modeling_evil.py").write_text(f"open({str(canary)!r}, 'w')\n")
    with pytest.raises(ModelLoadError, match="ships Python code.*trust_remote_code: true"):
        vet_model_dir(str(d), allow_pickle=False, trust_remote_code=False)
    with caplog.at_level(logging.WARNING, logger="lftrain"):
        vet_model_dir(str(d), allow_pickle=False, trust_remote_code=True)
    assert f"will run modeling_evil.py (sha256 {sha256_file(d / 'modeling_evil.py')})" in caplog.text
    assert not canary.exists()  # vetting reads; it never imports


@pytest.mark.parametrize("tag", [
    "!!python/object/apply:os.system ['touch {canary}']",
    "!!python/object/new:subprocess.Popen [['touch', '{canary}']]",
    "!!python/name:os.system",
])
def test_yaml_python_tags_are_refused(tmp_path, tag):
    canary = tmp_path / "canary-yaml"
    f = tmp_path / "evil.yaml"
    f.write_text(f"model:\n  path: {tag.format(canary=canary)}\ndata:\n  train: x.csv\n")
    with pytest.raises(RecipeError, match="evil.yaml: line 2"):
        load_recipe(f)
    assert not canary.exists()


def _zip(path, name: str, data: bytes = b"text,label\na,pos\n", link: bool = False):
    with zipfile.ZipFile(path, "w") as zf:
        info = zipfile.ZipInfo(name)
        if link:
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(info, data)
    return path


@pytest.mark.parametrize(("member", "link"), [("../../escape.csv", False), ("/tmp/abs.csv", False),
                                              ("a/../../b.csv", False), ("link.csv", True)])
def test_archive_members_escaping_the_target_are_refused(tmp_path, member, link):
    z = _zip(tmp_path / "data.csv.zip", member, b"/etc/passwd" if link else b"text,label\na,pos\n", link)
    before = set(os.listdir(tmp_path.parent))
    with pytest.raises(DataError, match="unsafe archive member"):
        read_table(str(z))
    assert set(os.listdir(tmp_path.parent)) == before  # nothing extracted anywhere


def test_a_plain_archive_still_reads(tmp_path):
    z = _zip(tmp_path / "data.csv.zip", "data.csv")
    assert read_table(str(z)).rows == [{"text": "a", "label": "pos"}]
