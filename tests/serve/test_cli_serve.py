"""`lft serve` as users start it: a real uvicorn server on loopback, answering until it is stopped."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_lft_serve_answers_and_stops_on_sigint(cls_run):
    import httpx

    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "lftrain", "serve", str(cls_run), "--port", str(port),
                             "--max-batch", "4", "--log-level", "warning"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                assert proc.poll() is None, proc.stdout.read()
                time.sleep(0.2)
        answer = httpx.post(f"{url}/predict", json={"inputs": ["a very good film"]}, timeout=10).json()
        assert answer["predictions"][0]["label"] in ("neg", "pos")
        assert httpx.get(f"{url}/metadata", timeout=5).json()["limits"]["max_batch"] == 4
    finally:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out


def test_lft_serve_on_a_missing_run_is_an_input_error(tmp_path, capsys):
    from lftrain.cli import build_parser, main

    assert main(["serve", str(tmp_path / "nope")]) == 2
    assert "nope" in capsys.readouterr().err
    assert main(["serve", str(tmp_path), "--max-batch", "0"]) == 2  # limits are checked before loading
    assert "max_batch must be at least 1" in capsys.readouterr().err
    serve = build_parser()._subparsers._group_actions[0].choices["serve"].format_help()
    assert "--max-batch" in serve and "/v1/chat/completions" in serve


def test_without_the_serve_extra_lft_serve_names_the_install(cls_run):
    from tests.inputs.test_core_install import lft_without_extras

    proc = lft_without_extras("serve", str(cls_run))
    assert proc.returncode == 2, proc.stderr
    assert "pip install 'lftrain[serve]'" in proc.stderr
