"""The process side of the reliability suite: run `lft` in a forked child, optionally with a fault.

The forkserver imports this module once (torch, transformers and lftrain with it), so each child starts in
milliseconds instead of the ~8 s an interpreter needs to import them; every child is still a separate OS
process that exits, or is killed by a real signal, on its own. Faults are injected by wrapping lftrain
functions inside the child only (never in the code under test):

  kill_step=K        SIGKILL at the start of optimiser step K (before its forward pass)
  kill_eval=K        SIGKILL on entering the K-th evaluation during training
  kill_save=K        SIGKILL during the K-th checkpoint save: `after` a named file, or `mid` (half written)
  term_step=K        SIGTERM to itself at the start of step K (a real signal through the real handler)
  enospc_save=K      the K-th save fails with ENOSPC (only where no size-limited tmpfs can be mounted)
  own_group          start a new process group (so a test can signal the trainer and its workers together)
"""

from __future__ import annotations

import errno
import os
import signal
import sys

import torch  # noqa: F401  (imported here so the forkserver preloads it)
import transformers  # noqa: F401
from transformers import BertForSequenceClassification  # noqa: F401

import lftrain.cli
import lftrain.evaluation.inference
import lftrain.orchestrator.run  # noqa: F401
import lftrain.training.checkpoint
import lftrain.training.loop

# What a run imports lazily (data validation, metrics, the data-check and evidence plugins): imported once here.
for _name in ("pandas", "scipy", "sklearn.model_selection", "sklearn.metrics", "pyarrow.parquet", "rich",
              "lftrain.api", "lftrain.config.schema", "lftrain.data.prepare", "lftrain.data.token_cache",
              "lftrain.methods", "lftrain.models.adaptation", "lftrain.accel.dropout", "lftrain.models.trained",
              "lftrain.training.optim", "lftrain.evaluation.metrics", "lftrain.reports.manifest"):
    try:
        __import__(_name)
    except ImportError:
        pass
lftrain.cli.build_parser()  # imports the subcommand plugins


def _die(sig: int = signal.SIGKILL) -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os.kill(os.getpid(), sig)


def _install(faults: dict) -> None:
    loop = lftrain.training.loop
    if "kill_step" in faults or "term_step" in faults:
        orig_step = loop._train_step

        def train_step(ctx, batch_idx, micro, prepared=None, state=None):
            nxt = state.step + 1 if state is not None else None
            if nxt == faults.get("kill_step"):
                _die()
            if nxt == faults.get("term_step") and not faults.get("_termed"):
                faults["_termed"] = True
                _die(signal.SIGTERM)  # handled: the step below still runs to the end
            return orig_step(ctx, batch_idx, micro, prepared, state)

        loop._train_step = train_step
    if "kill_eval" in faults:
        orig_eval, calls = loop._evaluate, [0]

        def evaluate(ctx, state):
            calls[0] += 1
            if calls[0] == faults["kill_eval"]:
                inner = ctx.evaluate

                def dying():  # in the middle of the evaluation: after the model ran on the eval data
                    inner()
                    _die()
                ctx.evaluate = dying
            return orig_eval(ctx, state)

        loop._evaluate = evaluate
    if "kill_save" in faults or "enospc_save" in faults:
        _install_save_faults(faults)


class _HalfFile:
    """A file object that SIGKILLs the process once half of `size` bytes are written."""

    def __init__(self, f, limit: int) -> None:
        self.f, self.limit, self.written = f, limit, 0

    def write(self, data) -> int:
        data = memoryview(data).cast("B")
        if self.written + len(data) >= self.limit:
            self.f.write(data[: max(0, self.limit - self.written)])
            self.f.flush()
            os.fsync(self.f.fileno())
            _die()
        self.written += len(data)
        return self.f.write(data)

    def __getattr__(self, name):
        return getattr(self.f, name)


def _install_save_faults(faults: dict) -> None:
    ck = lftrain.training.checkpoint
    orig_write, saves = ck._write, [0]

    def write(path, produce):
        if path.name == "model.safetensors":
            saves[0] += 1
        if saves[0] == faults.get("enospc_save"):
            raise OSError(errno.ENOSPC, "No space left on device (simulated)", str(path))
        if saves[0] != faults.get("kill_save"):
            return orig_write(path, produce)
        if path.name == faults.get("mid"):
            import io

            buf = io.BytesIO()
            produce(buf)
            return orig_write(path, lambda f: _HalfFile(f, len(buf.getvalue()) // 2).write(buf.getvalue()))
        orig_write(path, produce)
        if path.name == faults.get("after"):
            _die()

    ck._write = write


def main(argv: list[str], log_path: str, faults: dict | None = None) -> None:
    """Forkserver target: run `lft ARGV` with stdout/stderr in `log_path`; exit with its exit code."""
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    if faults and faults.get("own_group"):
        os.setsid()  # a process group of its own (with its data-loader workers), to be signalled as a whole
    _install(dict(faults or {}))
    code = 1
    try:
        code = lftrain.cli.main(argv)
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def tiny_objects(seed: int = 0):
    """A small model, AdamW and a schedule, a few steps in: enough state to make checkpoints of."""

    from lftrain.training.checkpoint import TrainState

    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.Tanh(), torch.nn.Linear(64, 2))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0 - s / 100)
    for _ in range(3):
        model(torch.randn(4, 64)).sum().backward()
        opt.step()
        sched.step()
        opt.zero_grad()
    return model, opt, sched, TrainState(step=3)


def save_with_fault(root: str, step: int, faults: dict) -> None:
    """Forkserver target: save checkpoint `step` of tiny_objects() with a save fault installed."""
    from pathlib import Path

    model, opt, sched, state = tiny_objects()
    state.step = step
    _install_save_faults(dict(faults))
    lftrain.training.checkpoint.save_checkpoint(Path(root), model, opt, sched, state)
    os._exit(0)
