"""Experiment tracking (`train.report_to`): every metrics.jsonl line, the recipe's values, and at the end the run's
files, mirrored to TensorBoard and/or MLflow. metrics.jsonl stays the record; trackers are views of it.

A tracker is a class registered by name with `TRACKERS.register("name")`: constructed with (recipe, run,
resuming), it gets `log(record)` for each metrics line and `close(status, files)` once. Rank 0 alone tracks.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lftrain.extras import need
from lftrain.registry import Registry

if TYPE_CHECKING:
    from lftrain.config.schema import TrainConfig

log = logging.getLogger("lftrain")
TRACKERS: Registry[type[Tracker]] = Registry("tracker")
STATE = "tracking.json"  # in the run directory: which tracker run a resumed run continues
# Files of a finished run sent as artifacts (those that exist).
ARTIFACTS = ("recipe.yaml", "manifest.json", "metrics.jsonl", "evidence.json", "report.html", "model_card.md",
             "data_card.md", "run.json")
# (tracking URI, experiment id, run id) of the MLflow run that runs started inside `parent_run` nest under.
_PARENT: contextvars.ContextVar[tuple[str, str, str] | None] = contextvars.ContextVar("lft_mlflow_parent",
                                                                                     default=None)


def scalars(record: dict[str, Any]) -> tuple[str, int | None, dict[str, float]]:
    """A metrics line as (section, step, {name: value}): the numbers in it, nested dicts flattened with '/'.
    The section is the split of a final evaluation, else the event (`train`, `eval`, ...)."""
    section = record["split"] if record.get("final") else record.get("event", "train")
    values: dict[str, float] = {}

    def walk(d: dict, prefix: str) -> None:
        for k, v in d.items():
            if isinstance(v, dict):
                walk(v, f"{prefix}{k}/")
            elif isinstance(v, (int, float)) and not isinstance(v, bool) and k not in ("step", "final"):
                values[f"{prefix}{k}"] = float(v)
    walk(record, "")
    return section, record.get("step"), values


def flat_params(d: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """The recipe as dotted keys -> strings (the form hyperparameter tables take)."""
    out: dict[str, str] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(flat_params(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = json.dumps(v) if isinstance(v, (list, bool)) or v is None else str(v)
    return out


class Tracker:
    requires: str | None = None  # the optional module it needs (lftrain/extras.py names its pip install)

    def __init__(self, recipe, run, resuming: bool) -> None:
        self.recipe, self.run = recipe, run

    def log(self, record: dict[str, Any]) -> None:
        raise NotImplementedError

    def close(self, status: str, files: list[Path]) -> None:
        """The run ended (`finished` or `failed`); `files` are its artifacts."""


@TRACKERS.register("tensorboard")
class TensorBoardTracker(Tracker):
    """Event files in <run>/tensorboard: `tensorboard --logdir runs/` shows every run side by side."""

    requires = "tensorboard"

    def __init__(self, recipe, run, resuming: bool) -> None:
        super().__init__(recipe, run, resuming)
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(run.path / "tensorboard"))
        if not resuming:
            self.writer.add_text("recipe", "```yaml\n" + run.recipe_file.read_text() + "\n```")

    def log(self, record: dict[str, Any]) -> None:
        section, step, values = scalars(record)
        for name, value in values.items():
            self.writer.add_scalar(f"{section}/{name}", value, step)
        self.writer.flush()

    def close(self, status: str, files: list[Path]) -> None:
        manifest = self.run.path / "manifest.json"
        if status == "finished" and manifest.is_file():
            self.writer.add_text("manifest", "```json\n" + manifest.read_text() + "\n```")
        self.writer.close()


@TRACKERS.register("mlflow")
class MLflowTracker(Tracker):
    """One MLflow run per lftrain run (a resumed run continues it). Store: `train.tracking_uri`, else
    $MLFLOW_TRACKING_URI, else a SQLite file beside the run directory (runs/mlflow.db: `mlflow ui
    --backend-store-uri sqlite:///runs/mlflow.db`). Runs started by `lft tune` nest under the study's run."""

    requires = "mlflow"

    def __init__(self, recipe, run, resuming: bool) -> None:
        super().__init__(recipe, run, resuming)
        from mlflow import MlflowClient

        saved = _read_state(run.path).get("mlflow") if resuming else None
        parent = _PARENT.get()
        uri = saved["uri"] if saved else parent[0] if parent else mlflow_uri(recipe.train, run.path.parent)
        self.client = MlflowClient(tracking_uri=uri)
        if saved:
            self.run_id = saved["run_id"]
            self.client.update_run(self.run_id, status="RUNNING")
            return
        experiment = parent[1] if parent else experiment_id(self.client, recipe.train, uri, run.path.parent)
        tags = {"mlflow.parentRunId": parent[2]} if parent else {}
        self.run_id = self.client.create_run(experiment, run_name=run.path.name, tags=tags).info.run_id
        _write_state(run.path, {"mlflow": {"uri": uri, "run_id": self.run_id}})
        params = flat_params(recipe.model_dump(mode="json"))
        _log_params(self.client, self.run_id, params)

    def log(self, record: dict[str, Any]) -> None:
        from mlflow.entities import Metric

        section, step, values = scalars(record)
        stamp = _now_ms()
        metrics = [Metric(f"{section}/{k}", v, stamp, step or 0) for k, v in values.items()]
        for i in range(0, len(metrics), 1000):  # MLflow takes at most 1000 metrics per batch
            self.client.log_batch(self.run_id, metrics=metrics[i:i + 1000])

    def close(self, status: str, files: list[Path]) -> None:
        for f in files:
            self.client.log_artifact(self.run_id, str(f))
        self.client.set_terminated(self.run_id, status="FINISHED" if status == "finished" else "FAILED")


def mlflow_uri(train: TrainConfig, root: Path) -> str:
    import os

    return train.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or \
        f"sqlite:///{(root / 'mlflow.db').resolve()}"


def experiment_id(client, train: TrainConfig, uri: str, root: Path) -> str:
    """The experiment's id, created on first use; with the default local store its artifacts go beside the runs
    (runs/mlartifacts), not into the current directory."""
    import os

    name = train.experiment or os.environ.get("MLFLOW_EXPERIMENT_NAME") or "lftrain"
    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    local = uri.startswith("sqlite:///") and not train.tracking_uri and "MLFLOW_TRACKING_URI" not in os.environ
    return client.create_experiment(name, artifact_location=(root / "mlartifacts").resolve().as_uri() if local
                                    else None)


@contextlib.contextmanager
def parent_run(recipe, root: Path, name: str):
    """Runs trained inside this block nest under one MLflow run (a tuning study and its trials); a no-op unless
    the recipe reports to MLflow. The parent run is reused when the same study resumes."""
    if "mlflow" not in recipe.train.report_to:
        yield
        return
    need("mlflow", "train.report_to: mlflow")
    from mlflow import MlflowClient

    saved = _read_state(root).get("mlflow")
    uri = saved["uri"] if saved else mlflow_uri(recipe.train, root)
    client = MlflowClient(tracking_uri=uri)
    if saved:
        experiment, run_id = saved["experiment"], saved["run_id"]
        client.update_run(run_id, status="RUNNING")
    else:
        experiment = experiment_id(client, recipe.train, uri, root)
        run_id = client.create_run(experiment, run_name=name).info.run_id
        _write_state(root, {"mlflow": {"uri": uri, "experiment": experiment, "run_id": run_id}})
    token = _PARENT.set((uri, experiment, run_id))
    try:
        yield
    finally:
        _PARENT.reset(token)
        client.set_terminated(run_id)


def check_trackers(train: TrainConfig) -> None:
    """Unknown tracker names and missing packages fail here, before any data or model is read."""
    for name in train.report_to:
        cls = TRACKERS.get(name)
        if cls.requires:
            need(cls.requires, f"train.report_to: {name}")


def open_trackers(recipe, run, resuming: bool) -> list[Tracker]:
    """The trackers the recipe names, started."""
    check_trackers(recipe.train)
    trackers = [TRACKERS.get(name)(recipe, run, resuming) for name in recipe.train.report_to]
    if trackers:
        log.info("tracking: %s", ", ".join(recipe.train.report_to))
    return trackers


def call_each(trackers: list[Tracker], method: str, *args) -> list[Tracker]:
    """Call `method` on each tracker; one that fails (a tracking server gone, a full disk) is dropped with a
    warning: the run and its metrics.jsonl go on. Returns the trackers still working."""
    working = []
    for t in trackers:
        try:
            getattr(t, method)(*args)
            working.append(t)
        except Exception as exc:  # noqa: BLE001 - tracking must never stop training
            log.warning("tracking: %s stopped (%s: %s); metrics.jsonl keeps the record", type(t).__name__,
                        type(exc).__name__, exc)
    return working


def run_files(run_path: Path) -> list[Path]:
    return [run_path / name for name in ARTIFACTS if (run_path / name).is_file()]


def _log_params(client, run_id: str, params: dict[str, str]) -> None:
    from mlflow.entities import Param

    items = [Param(k, v[:6000]) for k, v in sorted(params.items())]  # MLflow's limit on a value's length
    for i in range(0, len(items), 100):  # and on params per batch
        client.log_batch(run_id, params=items[i:i + 100])


def _now_ms() -> int:
    import time

    return int(time.time() * 1000)


def _read_state(folder: Path) -> dict:
    f = folder / STATE
    return json.loads(f.read_text()) if f.is_file() else {}


def _write_state(folder: Path, data: dict) -> None:
    (folder / STATE).write_text(json.dumps({**_read_state(folder), **data}, indent=1))
