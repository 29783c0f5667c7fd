"""Two workers on one PostgreSQL study (a real server started here on loopback) share the trials: every trial
is run by exactly one worker, once, and together they run exactly the study's budget."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna
import pytest

from tests.conftest import write_recipe
from tests.tuning.conftest import tune_recipe

PG_BIN = Path("/usr/lib/postgresql/15/bin")


def _as_postgres(cmd: list[str]) -> list[str]:
    # initdb and postgres refuse to run as root; CI and containers often are root. setpriv execs the command
    # itself (no parent in between), so signals sent to the process reach postgres.
    if os.geteuid() != 0:
        return cmd
    return ["setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups", "--reset-env", *cmd]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def postgres_url():
    if not (PG_BIN / "postgres").is_file():
        pytest.skip(f"PostgreSQL server binaries not found in {PG_BIN} (Debian package postgresql, "
                    "listed in .ci/system-packages.txt)")
    root = Path(tempfile.mkdtemp(prefix="lft-pg-"))
    data = root / "data"
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
    subprocess.run(_as_postgres([str(PG_BIN / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust",
                                 "--no-sync"]), check=True, capture_output=True)
    port = _free_port()
    server = subprocess.Popen(_as_postgres([str(PG_BIN / "postgres"), "-D", str(data), "-p", str(port),
                                            "-c", "listen_addresses=127.0.0.1", "-k", str(root), "-c", "fsync=off"]),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(300):
            ready = subprocess.run([str(PG_BIN / "pg_isready"), "-h", "127.0.0.1", "-p", str(port)],
                                   capture_output=True)
            if ready.returncode == 0:
                break
            time.sleep(0.1)
        else:
            pytest.fail("the PostgreSQL server did not start")
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        server.send_signal(signal.SIGINT)  # "fast" shutdown: does not wait for clients to disconnect
        server.wait(timeout=30)
        shutil.rmtree(root, ignore_errors=True)


def _study(url: str):
    return optuna.load_study(study_name="shared", storage=url.replace("postgresql:", "postgresql+psycopg2:"))


@pytest.mark.slow  # ~35 s (a server and two worker processes): `make test-slow`; not in CI (.ci/run: the demo only)
def test_two_workers_share_one_study(tiny_bert, tmp_path, postgres_url):
    trials = 4
    recipe = tune_recipe(tmp_path, tiny_bert, rows=120, trials=trials, storage=postgres_url, pruner="none",
                         study_name="shared")
    path = write_recipe(tmp_path / "tune.yaml", recipe)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    # Two "machines": each worker has its own study directory; only the database is shared.
    dirs = {w: tmp_path / f"worker-{w}" for w in ("a", "b")}
    procs = {w: subprocess.Popen([sys.executable, "-m", "lftrain", "tune", str(path), f"tune.dir={d}"],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
             for w, d in dirs.items()}
    outs = {w: p.communicate(timeout=300) for w, p in procs.items()}
    for w, p in procs.items():
        assert p.returncode == 0, outs[w][1][-3000:]

    ran = {w: sorted(int(p.name.split("-")[1]) for p in (d / "trials").iterdir()) if (d / "trials").is_dir() else []
           for w, d in dirs.items()}
    assert ran["a"] and ran["b"], f"both workers should have run trials: {ran}"
    assert not set(ran["a"]) & set(ran["b"]), f"a trial ran on both workers: {ran}"
    for w, d in dirs.items():
        for n in ran[w]:
            run = d / "trials" / f"trial-{n:04d}"
            status = json.loads((run / "run.json").read_text())
            assert status["status"] == "finished"
            assert "resum" not in outs[w][1].split(f"trial {n}:")[1].split("trial ")[0]  # trained once, from scratch

    study = _study(postgres_url)
    complete = [t for t in study.trials if t.state.name == "COMPLETE"]
    assert sorted(t.number for t in complete) == sorted(ran["a"] + ran["b"])
    assert len(complete) == trials  # the budget exactly: no worker ran an extra trial
    others = [t for t in study.trials if t.state.name != "COMPLETE"]
    assert all(t.user_attrs.get("surplus") for t in others)  # only trials a worker yielded without training
