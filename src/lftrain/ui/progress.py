"""Live progress of a run from its own files, without Gradio: metrics.jsonl read as it grows, run.json's status.

The UI never asks the training process anything: whatever trains the run directory (the UI's subprocess, an
`lft train` in a terminal, a resumed run), its progress is what these files say."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def run_status(run_dir: Path) -> str | None:
    """run.json's status (running / finished / failed / ...), or None when the run has not started."""
    try:
        return json.loads((Path(run_dir) / "run.json").read_text()).get("status")
    except (OSError, ValueError):
        return None


def run_info(run_dir: Path) -> dict[str, Any]:
    try:
        return json.loads((Path(run_dir) / "run.json").read_text())
    except (OSError, ValueError):
        return {}


class MetricsTail:
    """Reads the complete lines appended to metrics.jsonl since the last call.

    A line still being written (no newline yet) waits for the next call; a file that shrank (a new run in the
    same place) is read again from the start."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.offset = 0
        self.restarted = False  # set when the file shrank: what was read before belongs to another run

    def read_new(self) -> list[dict[str, Any]]:
        try:
            size = self.path.stat().st_size
        except OSError:
            return []
        if size < self.offset:
            self.offset, self.restarted = 0, True
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            chunk = f.read(size - self.offset)
        end = chunk.rfind(b"\n") + 1
        self.offset += end
        records = []
        for line in chunk[:end].splitlines():
            try:
                records.append(json.loads(line))
            except ValueError:
                continue  # not a metrics line: skip it rather than stop following the run
        return records


@dataclass
class Progress:
    """What the Train page shows: status, step of total, the loss curve and evaluations so far."""

    status: str | None = None
    step: int = 0
    total_steps: int | None = None
    epoch: float | None = None
    loss: float | None = None
    losses: list[tuple[int, float]] = field(default_factory=list)
    evals: list[dict[str, Any]] = field(default_factory=list)
    test: dict[str, Any] = field(default_factory=dict)

    def add(self, record: dict[str, Any]) -> None:
        event = record.get("event")
        if event == "train" and isinstance(record.get("loss"), (int, float)):
            self.step, self.loss = int(record["step"]), float(record["loss"])
            self.epoch = record.get("epoch")
            # a resumed run logs again from its checkpoint's step: drop the curve's points past it
            self.losses = [p for p in self.losses if p[0] < self.step] + [(self.step, self.loss)]
        elif event == "eval" and record.get("final"):
            self.test = {k: v for k, v in record.items() if _number(v) and k != "step"}
        elif event == "eval":
            self.evals.append(record)


class RunWatcher:
    """Progress of one run directory, updated incrementally on each `poll()`."""

    def __init__(self, run_dir: str | Path) -> None:
        self.run_dir = Path(run_dir)
        self.tail = MetricsTail(self.run_dir / "metrics.jsonl")
        self.progress = Progress()

    def poll(self) -> Progress:
        records = self.tail.read_new()
        if self.tail.restarted:
            self.tail.restarted, self.progress = False, Progress()
        for record in records:
            self.progress.add(record)
        info = run_info(self.run_dir)
        self.progress.status = info.get("status")
        self.progress.total_steps = info.get("total_steps") or self.progress.total_steps
        return self.progress


def _fmt(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def progress_markdown(p: Progress, job_state: str | None = None) -> str:
    """The progress as a few lines of Markdown."""
    status = p.status or job_state or "not started"
    total = f" / {p.total_steps}" if p.total_steps else ""
    lines = [f"**status:** {status}" + (f" (process: {job_state})" if job_state and p.status else ""),
             f"**step:** {p.step}{total}" + (f" ({100 * p.step / p.total_steps:.0f}%)" if p.total_steps else "")]
    if p.loss is not None:
        lines.append(f"**loss:** {p.loss:.4f}" + (f" at epoch {p.epoch:.2f}" if p.epoch is not None else ""))
    if p.evals:
        last = p.evals[-1]
        shown = ", ".join(f"{k} {_fmt(v)}" for k, v in last.items()
                          if k not in ("event", "split", "step", "epoch") and _number(v))
        lines.append(f"**last evaluation** (step {last.get('step')}): {shown}")
    if p.test:
        lines.append("**test:** " + ", ".join(f"{k} {_fmt(v)}" for k, v in p.test.items()))
    return "  \n".join(lines)


def loss_points(p: Progress) -> dict[str, list]:
    """The loss curve as columns (step, loss) for a line plot."""
    return {"step": [s for s, _ in p.losses], "loss": [v for _, v in p.losses]}
