"""The Optuna study behind a search: storage, sampler, pruner, the trial budget, and trials whose worker died.

A study lives in a database, so any number of `lft tune` processes (on one machine with SQLite, on many
with PostgreSQL) share it: each asks the database for its next trial, and the database numbers trials, so
no two workers ever get the same one. A worker that dies leaves its trial RUNNING; it is found dead either
at once (same machine: its worker lock is free) or by Optuna's heartbeat (another machine: no heartbeat
for GRACE_SECONDS), marked FAIL and queued again with the same values; the retry resumes its run directory.
"""

from __future__ import annotations

import fcntl
import logging
import os
import socket
import time
import warnings
from pathlib import Path

from lftrain.config.tune import TuneConfig
from lftrain.errors import InputError

log = logging.getLogger("lftrain")

HEARTBEAT_SECONDS = 30
GRACE_SECONDS = 300  # generous: on a loaded CPU a live worker may stall for a while between heartbeats
WORKER_ATTR = "lft_worker"  # user attr of a trial: "host:pid" of the process running it
INTERRUPTED_ATTR = "lft_interrupted"  # user attr of a trial stopped by Ctrl-C (Optuna marks it FAIL)


def quiet_optuna() -> None:
    """Optuna's experimental-feature warnings and per-trial INFO lines are noise next to our own log."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


def storage_url(tune: TuneConfig, study_dir: Path) -> str:
    return tune.storage or f"sqlite:///{(study_dir / 'study.db').resolve()}"


def redact(url: str) -> str:
    """A storage URL without its password, for logs and reports."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not a URL sqlalchemy understands: say nothing about it
        return "<storage>"


def _driver(url: str) -> str:
    """`postgresql://` means psycopg 3 to SQLAlchemy 2.1; use psycopg2 (lftrain[postgres]) when only it is here."""
    import importlib.util

    scheme, sep, rest = url.partition("://")
    if sep and scheme in ("postgresql", "postgres") and importlib.util.find_spec("psycopg") is None \
            and importlib.util.find_spec("psycopg2") is not None:
        return f"postgresql+psycopg2://{rest}"
    return url


def open_storage(url: str, max_retries: int):
    import optuna
    from optuna.storages import RetryHeartbeatStaleTrialCallback
    from sqlalchemy.exc import IntegrityError, ProgrammingError

    url = _driver(url)
    engine_kwargs = {"pool_pre_ping": True} if not url.startswith("sqlite") else {"connect_args": {"timeout": 60}}
    for attempt in range(6):
        try:
            return optuna.storages.RDBStorage(
                url, engine_kwargs=engine_kwargs, heartbeat_interval=HEARTBEAT_SECONDS, grace_period=GRACE_SECONDS,
                heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=max_retries))
        except (IntegrityError, ProgrammingError):
            # Workers starting together on a new database race to create Optuna's tables; the loser sees a
            # duplicate-key error. The tables exist a moment later: try again.
            if attempt == 5:
                raise
            time.sleep(0.5 * (attempt + 1))
        except ImportError as exc:
            raise InputError(f"tune.storage {redact(url)}: the database driver is not installed ({exc}); for "
                             "PostgreSQL: pip install 'lftrain[postgres]'") from None
        except Exception as exc:  # sqlalchemy.exc.OperationalError and friends: unreachable server, bad credentials
            raise InputError(f"tune.storage {redact(url)}: cannot open the study database: "
                             f"{str(exc).splitlines()[0]}") from None


def make_sampler(tune: TuneConfig):
    import optuna

    if tune.sampler == "tpe":
        return optuna.samplers.TPESampler(seed=tune.seed, n_startup_trials=tune.startup_trials)
    if tune.sampler == "gp":
        return optuna.samplers.GPSampler(seed=tune.seed, n_startup_trials=tune.startup_trials)
    if tune.sampler == "qmc":
        return optuna.samplers.QMCSampler(seed=tune.seed)
    return optuna.samplers.RandomSampler(seed=tune.seed)


def make_pruner(tune: TuneConfig):
    import optuna

    if tune.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=tune.startup_trials, n_warmup_steps=tune.warmup_steps)
    if tune.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner()
    if tune.pruner == "asha":
        return optuna.pruners.SuccessiveHalvingPruner()
    return optuna.pruners.NopPruner()


def direction(tune: TuneConfig, metric: str) -> str:
    """`maximize` or `minimize` (search.py resolves `auto` from the task's declaration before a study opens)."""
    if tune.direction == "auto":
        raise ValueError(f"tune.direction for {metric} is unresolved")
    return tune.direction


def open_study(tune: TuneConfig, name: str, url: str, metric: str):
    import optuna

    storage = open_storage(url, tune.max_retries)
    study = optuna.create_study(storage=storage, study_name=name, load_if_exists=True,
                                direction=direction(tune, metric), sampler=make_sampler(tune),
                                pruner=make_pruner(tune))
    if study.direction.name.lower() != direction(tune, metric):
        raise InputError(f"study '{name}' in {redact(url)} was created to {study.direction.name.lower()} "
                         f"{metric}; this recipe asks to {direction(tune, metric)} it")
    return study


class WorkerLock:
    """Held (flock) for as long as this process works on the study: a free lock means its holder is dead."""

    def __init__(self, study_dir: Path) -> None:
        self.id = f"{socket.gethostname()}:{os.getpid()}"
        root = study_dir / ".workers"
        root.mkdir(parents=True, exist_ok=True)
        self.path = root / f"{self.id.replace(':', '-')}.lock"
        self._fd = os.open(self.path, os.O_CREAT | os.O_RDWR)
        fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)

    def release(self) -> None:
        os.close(self._fd)
        self.path.unlink(missing_ok=True)

    @staticmethod
    def is_dead(study_dir: Path, worker: str) -> bool:
        """True only when `worker` ran on this machine, in this study directory, and no longer holds its lock."""
        host, _, _pid = worker.rpartition(":")
        lock = study_dir / ".workers" / f"{worker.replace(':', '-')}.lock"
        if host != socket.gethostname() or not lock.exists():
            return False  # another machine, or unknown here: Optuna's heartbeat decides
        fd = os.open(lock, os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        finally:
            os.close(fd)
        lock.unlink(missing_ok=True)
        return True


def recover_dead_trials(study, study_dir: Path, max_retries: int) -> list[int]:
    """Queue again, with the same values, the trials that were interrupted: RUNNING trials whose worker is gone
    (marked FAIL first) and trials stopped by Ctrl-C. Returns their numbers."""
    import optuna
    from optuna.storages import RetryHeartbeatStaleTrialCallback as Retry
    from optuna.trial import TrialState

    optuna.storages.fail_stale_trials(study)  # other machines' dead workers, by heartbeat (queued by the callback)
    retry = Retry(max_retry=max_retries)
    trials = study.get_trials(deepcopy=False)
    retried = {n for t in trials for n in Retry.retry_history(t)}
    again = []
    for t in trials:
        worker = t.user_attrs.get(WORKER_ATTR)
        if t.state == TrialState.RUNNING and worker and WorkerLock.is_dead(study_dir, worker):
            study._storage.set_trial_state_values(t._trial_id, TrialState.FAIL)  # Optuna has no public call
        elif not (t.state == TrialState.FAIL and t.user_attrs.get(INTERRUPTED_ATTR) and t.number not in retried):
            continue
        retry(study, study._storage.get_trial(t._trial_id))
        again.append(t.number)
    return again


def counts(study) -> dict[str, int]:
    from optuna.trial import TrialState

    out = {s.name.lower(): 0 for s in TrialState}
    for t in study.get_trials(deepcopy=False):
        out[t.state.name.lower()] += 1
    return out


def budget_reached(study, trials: int) -> bool:
    """No new trial is needed: finished + running trials fill the budget and no retry is waiting."""
    c = counts(study)
    return c["waiting"] == 0 and c["complete"] + c["pruned"] + c["running"] >= trials


def is_surplus(study, trial_number: int, trials: int) -> bool:
    """Workers racing for the last slot both get a trial; the one with the higher number yields.
    Trials that failed (dead workers, surplus) do not count: their retries take their place."""
    from optuna.trial import TrialState

    ahead = [t for t in study.get_trials(deepcopy=False) if t.number < trial_number and t.state != TrialState.FAIL]
    return len(ahead) >= trials
