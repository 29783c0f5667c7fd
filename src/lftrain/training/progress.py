"""Progress: a live bar on a terminal, plain log lines otherwise (CI logs, files, pipes)."""

from __future__ import annotations

import logging
import sys
import time

log = logging.getLogger("lftrain")


def _eta(seconds: float) -> str:
    seconds = int(max(0, seconds))
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s"


class Progress:
    def __init__(self, total_steps: int, start_step: int, enabled_bar: bool | None = None) -> None:
        self.total, self.start_step = total_steps, start_step
        self.t0 = time.perf_counter()
        self.bar = None
        use_bar = sys.stderr.isatty() if enabled_bar is None else enabled_bar
        if use_bar:
            from rich.progress import BarColumn, TextColumn, TimeRemainingColumn
            from rich.progress import Progress as RichProgress

            self.bar = RichProgress(TextColumn("[bold]train"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                                    TextColumn("{task.fields[info]}"), TimeRemainingColumn(), transient=False)
            self.task_id = self.bar.add_task("train", total=total_steps, completed=start_step, info="")
            self.bar.start()

    def update(self, step: int, epoch: float, loss: float, lr: float, samples_per_s: float, log_line: bool) -> None:
        done = step - self.start_step
        eta = (time.perf_counter() - self.t0) / max(done, 1) * (self.total - step)
        info = f"epoch {epoch:.2f} loss {loss:.4f} lr {lr:.2e} {samples_per_s:.1f} samples/s"
        if self.bar is not None:
            self.bar.update(self.task_id, completed=step, info=info)
        elif log_line:
            log.info("step %d/%d | %s | ETA %s", step, self.total, info, _eta(eta))

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
