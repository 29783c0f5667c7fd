"""One trial: sample the recipe's values, train through the public train() (orchestrator/launch.py), report each
evaluation to Optuna and stop the run when the pruner says so. The trial is an ordinary run directory, so everything a
run does (checks, manifest, checkpoints, resume, report) holds for it."""

from __future__ import annotations

import copy
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lftrain.config.tune import TuneConfig
from lftrain.files import write_json_atomic
from lftrain.training.rundir import RunDir
from lftrain.tuning.space import override, suggest
from lftrain.tuning.study import INTERRUPTED_ATTR, WORKER_ATTR, is_surplus

log = logging.getLogger("lftrain")


class SurplusTrial(Exception):
    """This worker got a trial the budget has no room for (another worker took the last slot)."""


def trial_dir(study_dir: Path, number: int) -> Path:
    return study_dir / "trials" / f"trial-{number:04d}"


def eval_values(run: RunDir, metric: str) -> dict[int, float]:
    """The metric at each evaluation during training (eval split, not the final test), by step."""
    return {r["step"]: r[metric] for r in run.read_metrics()
            if r.get("event") == "eval" and r.get("split") == "eval" and not r.get("final") and metric in r}


@dataclass
class Objective:
    """Callable by `study.optimize`: returns the trial's best eval metric, or raises TrialPruned."""

    recipe: dict[str, Any]  # the base recipe, without its tune section
    tune: TuneConfig
    metric: str
    study_dir: Path
    worker: str

    def __call__(self, trial) -> float:
        import optuna

        from lftrain.orchestrator import launch
        from lftrain.tuning.study import direction

        trial.set_user_attr(WORKER_ATTR, self.worker)
        if is_surplus(trial.study, trial.number, self.tune.trials):
            trial.set_user_attr("surplus", True)
            trial.study.stop()
            raise SurplusTrial(f"trial {trial.number}: the study already has its {self.tune.trials} trials")
        params = {name: suggest(trial, name, spec) for name, spec in self.tune.space.items()}
        # A retry of a trial whose worker died continues that trial's run directory from its last checkpoint.
        retried = _retry_of(trial)
        number = retried if retried is not None else trial.number
        run = RunDir(trial_dir(self.study_dir, number).resolve())
        trial.set_user_attr("run_dir", str(run.path))
        log.info("trial %d%s: %s", trial.number, f" (retry of trial {retried})" if retried is not None else "",
                 "  ".join(f"{k}={v!r}" for k, v in params.items()))

        reporter = _Reporter(trial, self.metric, run)
        reporter.replay()  # evaluations a killed attempt of this trial already made
        previous = _read_json(run.path / "trial.json")  # a killed trial may have been pruned before it died
        if not run.is_finished():  # (a finished run: its worker died after training ended; nothing to train)
            overrides = [override(k, v) for k, v in params.items()] + [override("output.dir", str(run.path))]
            try:
                launch.train(copy.deepcopy(self.recipe), overrides, on_eval=reporter.on_eval)
            except KeyboardInterrupt:  # Optuna marks the trial FAIL; this says it is to be run again
                trial.set_user_attr(INTERRUPTED_ATTR, True)
                raise

        pruned_at = reporter.pruned_at
        if not pruned_at and "pruned_at_step" in previous and previous.get("state") != "complete":
            pruned_at.append(previous["pruned_at_step"])
        values = eval_values(run, self.metric)
        best = (max if direction(self.tune, self.metric) == "maximize" else min)(values.values()) if values else None
        write_json_atomic(run.path / "trial.json", {"trial": trial.number, "retry_of": retried, "params": params,
                                               "metric": self.metric, "best": best,
                                               "state": "pruned" if pruned_at else "complete",
                                               **({"pruned_at_step": pruned_at[0]} if pruned_at else {})})
        if pruned_at:
            raise optuna.TrialPruned(f"pruned at step {pruned_at[0]}")
        if best is None:
            raise RuntimeError(f"trial {trial.number}: the run {run.path} recorded no evaluation of {self.metric}")
        return best


class _Reporter:
    """Reports each evaluation of a trial's run to Optuna and asks the pruner whether to stop it there."""

    def __init__(self, trial, metric: str, run: RunDir) -> None:
        self.trial, self.metric, self.run = trial, metric, run
        self.reported: set[int] = set()
        self.pruned_at: list[int] = []

    def replay(self) -> None:
        for step, value in sorted(eval_values(self.run, self.metric).items()):
            self.trial.report(float(value), step)
            self.reported.add(step)

    def on_eval(self, step: int, metrics: dict) -> bool:
        if self.metric not in metrics:
            from lftrain.errors import InputError

            raise InputError(f"tune.metric '{self.metric}' is not computed (available: {', '.join(metrics)})")
        if step not in self.reported:  # a resumed run evaluates again the steps after its last checkpoint
            self.trial.report(float(metrics[self.metric]), step)
            self.reported.add(step)
        if not self.trial.should_prune():
            return False
        self.pruned_at.append(step)
        log.info("trial %d pruned at step %d (%s %.4f)", self.trial.number, step, self.metric, metrics[self.metric])
        # Written now, so a retry knows the pruning decision even if this worker dies before recording it.
        write_json_atomic(self.run.path / "trial.json", {"trial": self.trial.number, "pruned_at_step": step})
        return True


def _retry_of(trial) -> int | None:
    """The number of the trial this one retries (its worker died), or None."""
    from optuna.storages import RetryHeartbeatStaleTrialCallback

    frozen = next(t for t in trial.study.get_trials(deepcopy=False) if t.number == trial.number)
    return RetryHeartbeatStaleTrialCallback.retried_trial_number(frozen)




def _read_json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}
