"""Training runs started by the UI: `lft train RECIPE` in a subprocess, so the page stays responsive and the run
is an ordinary one (`lft train RUNS/NAME.yaml` in a terminal resumes or inspects it just the same)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

# `lft train`'s exit codes (docs/training.md#exit-codes), as the Train page says them
EXIT_MEANING = {0: "finished", 1: "a bug in lftrain: see the log", 2: "the input is wrong: see the log",
                3: "the run directory forbids it: see the log", 4: "finished, but failed its eval.fail_if gate",
                5: "training could not go on: see the log", 130: "interrupted; Start resumes",
                143: "stopped after a checkpoint; Start resumes", -15: "stopped; Start resumes"}


class TrainingJob:
    """One `lft train` process; its output goes to RUNS/NAME.log."""

    def __init__(self, recipe: Path, log: Path) -> None:
        self.recipe, self.log = Path(recipe), Path(log)
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        with open(self.log, "ab") as out:
            # its own session: a Ctrl-C in the UI's terminal does not kill the training, Stop does it cleanly
            self.process = subprocess.Popen([sys.executable, "-m", "lftrain", "train", str(self.recipe)],
                                            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                            env=env, start_new_session=True)

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def state(self) -> str:
        if self.process is None:
            return "not started"
        code = self.process.poll()
        if code is None:
            return "running"
        return f"exited with code {code}" + (f" ({EXIT_MEANING[code]})" if code in EXIT_MEANING else "")

    def stop(self) -> None:
        """SIGTERM: `lft train` writes a checkpoint and exits with 143; starting it again resumes."""
        if self.running:
            self.process.send_signal(signal.SIGTERM)


class Jobs:
    """The UI's training processes, by run name (one at a time per run)."""

    def __init__(self, runs_dir: Path) -> None:
        self.runs_dir = Path(runs_dir)
        self.jobs: dict[str, TrainingJob] = {}

    def log_path(self, name: str) -> Path:
        return self.runs_dir.resolve() / f"{name}.log"

    def start(self, name: str, recipe: Path) -> TrainingJob:
        job = self.jobs.get(name)
        if job is not None and job.running:
            return job
        job = TrainingJob(recipe, self.log_path(name))
        job.start()
        self.jobs[name] = job
        return job

    def get(self, name: str) -> TrainingJob | None:
        return self.jobs.get(name)

    def stop_all(self) -> None:
        for job in self.jobs.values():
            job.stop()


def log_tail(path: Path, lines: int = 40) -> str:
    """The last lines of a training log (progress bars' carriage returns folded away)."""
    try:
        with open(path, "rb") as f:  # bytes: keep the \r of progress bars; only the end of a long log
            f.seek(max(0, f.seek(0, os.SEEK_END) - 65536))
            text = f.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
    kept = [line.rstrip("\r").rsplit("\r", 1)[-1] for line in text.rstrip("\n").split("\n")]
    return "\n".join(kept[-lines:])
