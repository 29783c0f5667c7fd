"""Scenarios 2-4: a kill during a save, a full disk, a corrupted file — the previous checkpoint always survives."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess

import pytest

from lftrain.training.checkpoint import clean_temporary, resume_latest, save_checkpoint, verify
from tests.conftest import write_recipe
from tests.reliability import child
from tests.reliability.conftest import _mp, assert_same_run, complete_checkpoints, lft, recipe

FILES = ["model.safetensors", "optimizer.pt", "rng.pt", "scheduler.json", "state.json", "MANIFEST.json"]
POINTS = [{"after": f} for f in FILES] + [{"mid": "model.safetensors"}, {"mid": "optimizer.pt"}]


@pytest.mark.parametrize("point", POINTS, ids=lambda p: f"{next(iter(p))}-{next(iter(p.values()))}")
def test_kill_during_save_keeps_the_previous_checkpoint(tmp_path, point):
    root = tmp_path / "checkpoints"
    model, opt, sched, state = child.tiny_objects()
    save_checkpoint(root, model, opt, sched, state)  # step-3, complete
    p = _mp().Process(target=child.save_with_fault, args=(str(root), 4, {"kill_save": 1, **point}))
    p.start()
    p.join(60)
    assert p.exitcode == -signal.SIGKILL
    assert (root / ".tmp-step-00000004").is_dir() and not (root / "step-00000004").exists()
    clean_temporary(root)
    assert not [q for q in root.iterdir() if q.name.startswith(".tmp-")], "leftover temporary directory"
    # only a save killed after its manifest (complete, not yet renamed) counts; it is promoted, not lost
    expected = "step-00000004" if point == {"after": "MANIFEST.json"} else "step-00000003"
    assert complete_checkpoints(tmp_path) == sorted({"step-00000003", expected})
    fresh = child.tiny_objects(seed=1)
    path, restored = resume_latest(root, *fresh[:3])
    assert path.name == expected and restored.step == int(expected[-8:])


def test_kill_mid_file_during_a_real_run_then_resume(lab):
    ref = lab.reference()
    killed = lab.run("save-kill", faults={"kill_save": 3, "mid": "optimizer.pt"})  # 3rd save: step 12
    assert killed.code == -signal.SIGKILL, killed.log
    assert (lab.root / "save-kill" / "checkpoints" / ".tmp-step-00000012").is_dir()
    resumed = lab.run("save-kill")
    assert resumed.code == 0, resumed.log
    assert "removing unfinished checkpoint" in resumed.log and "resumed from step-00000010" in resumed.log
    assert not list((lab.root / "save-kill" / "checkpoints").glob(".tmp-*"))
    assert_same_run(ref, lab.root / "save-kill")


def _mount_tmpfs(path, size: int) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                          capture_output=True).returncode == 0


def test_disk_full_during_save(lab, tmp_path):
    """A size-limited tmpfs (needs root; otherwise ENOSPC is simulated by failing the 3rd save's first write)."""
    ref = lab.reference()
    ckpt_bytes = sum(f.stat().st_size for f in (ref / "checkpoints").iterdir() for f in f.iterdir()) // \
        len(list((ref / "checkpoints").iterdir()))
    disk = tmp_path / "disk"
    mounted = _mount_tmpfs(disk, int(2.5 * ckpt_bytes) + 96 * 1024)
    try:
        out = disk / "run"
        r = write_recipe(tmp_path / "full.yaml", recipe(lab.model, lab.train, out, cache=lab.cache))
        res = lft("train", r, log=tmp_path / "full.log", faults=None if mounted else {"enospc_save": 3})
        assert res.code == 5, res.log  # EXIT_TRAINING
        assert "no space left on the device while saving the checkpoint of step" in res.log
        failed_step = int(res.log.split("checkpoint of step ")[1].split(" ")[0])
        kept = complete_checkpoints(out)
        assert len(kept) >= 2, kept  # keep_checkpoints: 2 — nothing was rotated away
        assert all(verify(out / "checkpoints" / k) is None for k in kept)
        assert max(int(k[-8:]) for k in kept) < failed_step
        assert not list((out / "checkpoints").glob(".tmp-*"))
        assert json.loads((out / "run.json").read_text())["status"] == "failed"
        if mounted:  # make room, resume, and the run ends as if nothing happened
            subprocess.run(["mount", "-o", "remount,size=64m", str(disk)], check=True)
        res = lft("train", r, log=tmp_path / "full.log")
        assert res.code == 0, res.log
        assert_same_run(ref, out)
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(disk)], check=False)


def _flip_bit(path):
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x10
    path.write_bytes(bytes(data))


def test_corrupted_checkpoint_falls_back_with_a_warning(lab):
    ref = lab.reference()
    killed = lab.run("corrupt", faults={"kill_step": 27})  # checkpoints at 18, 20, 24 (and the best)
    assert killed.code == -signal.SIGKILL
    newest = lab.root / "corrupt" / "checkpoints" / "step-00000024"
    _flip_bit(newest / "optimizer.pt")
    assert verify(newest) == "optimizer.pt does not match its checksum (truncated or corrupted)"
    resumed = lab.run("corrupt")
    assert resumed.code == 0, resumed.log
    assert "step-00000024 is unusable: optimizer.pt does not match its checksum" in resumed.log
    assert "resumed from step-00000020" in resumed.log
    assert_same_run(ref, lab.root / "corrupt")


def test_truncated_file_is_named(tmp_path):
    root = tmp_path / "checkpoints"
    model, opt, sched, state = child.tiny_objects()
    first = save_checkpoint(root, model, opt, sched, state)
    state.step = 4
    second = save_checkpoint(root, model, opt, sched, state)
    f = second / "model.safetensors"
    f.write_bytes(f.read_bytes()[:100])
    assert verify(second) == "model.safetensors does not match its checksum (truncated or corrupted)"
    (first / "rng.pt").unlink()
    assert verify(first) == "rng.pt is missing"
    shutil.rmtree(first)
    with pytest.raises(Exception, match="no checkpoint could be loaded"):
        # a manifest forged to match the truncated file: it verifies, fails to load, and nothing older exists
        mf = json.loads((second / "MANIFEST.json").read_text())
        from lftrain.files import sha256_file

        mf["files"]["model.safetensors"] = sha256_file(f)
        (second / "MANIFEST.json").write_text(json.dumps(mf))
        resume_latest(root, *child.tiny_objects(seed=1)[:3])
