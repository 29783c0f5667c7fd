"""`lft` re-executes itself on tcmalloc or jemalloc (accel/allocator.py): when, how, what the run records,
and the release of freed memory after training."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from lftrain.accel import allocator
from tests.conftest import tiny_recipe, toy_rows, write_csv, write_recipe


def test_no_reexec_when_told_system(monkeypatch):
    monkeypatch.setenv(allocator.ENV, "system")
    assert allocator.reexec_command(["train", "r.yaml"]) is None


def test_reexec_command_preloads_the_library_and_keeps_the_arguments(monkeypatch):
    monkeypatch.setenv(allocator.ENV, "auto")
    monkeypatch.setenv("LD_PRELOAD", "libmine.so")
    monkeypatch.setattr(allocator, "find", lambda name: "libjemalloc.so.2")
    monkeypatch.setattr(allocator, "in_use", lambda: "system")
    args, env = allocator.reexec_command(["train", "r.yaml", "train.lr=1e-4"])
    assert args == [sys.executable, "-m", "lftrain", "train", "r.yaml", "train.lr=1e-4"]
    assert env["LD_PRELOAD"] == "libjemalloc.so.2 libmine.so"  # the user's own preload is kept
    monkeypatch.setattr(allocator, "in_use", lambda: "jemalloc")  # already on it: nothing to do
    assert allocator.reexec_command(["train"]) is None


def test_the_reexecuted_process_restores_the_users_environment(monkeypatch):
    monkeypatch.setattr(sys, "argv", ["/x/python", "-m"])
    monkeypatch.setenv(allocator._ARGV0, "/venv/bin/lft")
    monkeypatch.setenv(allocator._PRELOAD_BEFORE, "")
    monkeypatch.setenv("LD_PRELOAD", "libjemalloc.so.2")
    allocator.ensure(["train"])  # must return, not exec again
    assert sys.argv[0] == "/venv/bin/lft"
    assert "LD_PRELOAD" not in os.environ and allocator._ARGV0 not in os.environ


def test_unknown_choice_falls_back_to_auto(monkeypatch):
    monkeypatch.setenv(allocator.ENV, "mimalloc")
    assert allocator.choice() == "auto"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="LD_PRELOAD is Linux's")
def test_lft_train_runs_on_the_allocator_it_reports(tiny_bert, tmp_path):
    """The real command, with and without the allocator: the manifest and the log name the allocator the
    process really ran on (read from its own memory map), and the command as the user typed it."""
    train = write_csv(tmp_path / "train.csv", toy_rows(64))
    lft = os.path.join(os.path.dirname(sys.executable), "lft")
    expected = {"auto": "tcmalloc" if allocator.find("tcmalloc") else
                ("jemalloc" if allocator.find("jemalloc") else "system"), "system": "system"}
    for choice, want in expected.items():
        run = tmp_path / f"run-{choice}"
        recipe = write_recipe(tmp_path / f"{choice}.yaml", tiny_recipe(tiny_bert, train, run, epochs=1))
        env = {**os.environ, allocator.ENV: choice, "OMP_NUM_THREADS": "1"}
        env.pop("LD_PRELOAD", None)
        proc = subprocess.run([lft, "train", str(recipe)], capture_output=True, text=True, env=env, timeout=300)
        assert proc.returncode == 0, proc.stderr
        manifest = json.loads((run / "manifest.json").read_text())
        assert manifest["allocator"] == want
        assert manifest["command"][0] == lft  # the command as typed, not `python -m lftrain`
        assert f"memory allocator {want}" in proc.stderr


def test_the_command_restarts_before_importing_torch():
    """`lft` re-executes at the top of main(); everything imported before that is paid twice. `import lftrain`
    used to import torch (~1.2 s: `lft --help` took 3.5 s with the re-execution, 0.3 s after this was fixed)."""
    code = "import sys, lftrain.cli; print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


_RELEASE = """
import re
from pathlib import Path
from lftrain.accel import allocator
def rss(): return int(re.search(r"VmRSS:\\s+(\\d+)", Path("/proc/self/status").read_text()).group(1)) // 1024
start = rss()
blocks = [bytearray(b"x" * (4 << 20)) for _ in range(50)]
del blocks
before = rss()
print(allocator.release_free_memory(), start, before, rss())
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="LD_PRELOAD is Linux's")
@pytest.mark.parametrize("name", ["tcmalloc", "jemalloc", "system"])
def test_release_free_memory_returns_freed_pages(name):
    """200 MB allocated and freed: after the release the process is back within 50 MB of where it started, on
    every allocator. tcmalloc alone keeps the pages until asked (the peak of a freeze run came at its final
    evaluation until training released them), so there the release itself must give them back."""
    library = allocator.find(name)
    if name != "system" and library is None:
        pytest.skip(f"{name} is not installed")
    env = {**os.environ, "LD_PRELOAD": library or ""}
    out = subprocess.run([sys.executable, "-c", _RELEASE], capture_output=True, text=True, env=env, check=True)
    used, start, before, after = out.stdout.split()
    assert used == name
    assert int(after) - int(start) < 50, out.stdout
    if name == "tcmalloc":
        assert int(before) - int(start) > 150, out.stdout  # kept until the release
