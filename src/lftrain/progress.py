"""Progress: a live bar on a terminal, plain log lines otherwise (CI logs, files, pipes). `track` and `activity`
show the waits outside training (evaluation, generation, prediction, data checks, export) on a terminal only."""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from collections.abc import Iterable, Iterator
from typing import TypeVar

log = logging.getLogger("lftrain")
T = TypeVar("T")
_live = [False]  # rich shows one live display at a time: inner waits (an evaluation during training) stay quiet


def _shown() -> bool:
    return sys.stderr.isatty() and not _live[0]


@contextlib.contextmanager
def _display(display):
    _live[0] = True
    display.start()
    try:
        yield display
    finally:
        display.stop()
        _live[0] = False


def track(items: Iterable[T], total: int, what: str) -> Iterator[T]:
    """`items`, with a transient bar (`what`, done/total, time left) on a terminal; nothing otherwise."""
    if not _shown() or total < 2:
        yield from items
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn
    from rich.progress import Progress as RichProgress

    bar = RichProgress(TextColumn(f"[bold]{what}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                       console=Console(stderr=True), transient=True)
    task = bar.add_task(what, total=total)
    with _display(bar):
        for item in items:
            yield item
            bar.advance(task)


@contextlib.contextmanager
def activity(what: str):
    """A transient spinner with the elapsed time around one long call on a terminal (an export, a model load)."""
    if not _shown():
        yield
        return
    from rich.console import Console
    from rich.progress import Progress as RichProgress
    from rich.progress import SpinnerColumn, TextColumn, TimeElapsedColumn

    spinner = RichProgress(SpinnerColumn(), TextColumn(what), TimeElapsedColumn(), console=Console(stderr=True),
                           transient=True)
    spinner.add_task(what, total=None)
    with _display(spinner):
        yield


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
            _live[0] = True

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
            _live[0] = False
