"""`eval.fail_if`: thresholds that turn a finished run into a failed CI gate (`lft train` exits 4).

    eval:
      fail_if: {accuracy: "< 0.80", ece: "> 0.05", accuracy_low: "< 0.75", latency_p95_ms: "> 50"}

Each key is a metric of the final evaluation (the test split when there is one, else eval); each value
a comparison that *fails* the gate. `NAME_low` / `NAME_high` are the bounds of NAME's bootstrap interval,
`NAME_calibrated` a calibration metric after temperature scaling, `slice_worst_NAME` / `slice_gap_NAME` the worst
slice's value and the best-to-worst gap under eval.slices. A metric the run did not compute fails
the gate too: a gate that silently passes is worse than none.
"""

from __future__ import annotations

import operator
from typing import Any

from lftrain.config.conditions import parse_condition
from lftrain.errors import LftError
from lftrain.evaluation.slices import gate_values as slice_gate_values

EXIT_GATE = 4
_OPS = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge}


class GateFailed(LftError):
    """The run finished and its model is saved, but a metric crossed an `eval.fail_if` threshold."""

    exit_code = EXIT_GATE

    def __init__(self, message: str, result: Any = None) -> None:
        super().__init__(message)
        self.result = result  # the TrainResult, for Python callers


def gate_values(evidence: dict[str, Any]) -> dict[str, float]:
    """Every scalar a gate can test, flattened from evidence.json (see module docstring for the names)."""
    splits = evidence.get("splits", {})
    split = "test" if "test" in splits else next(iter(splits), None)
    values: dict[str, float] = {}
    if split is not None:
        s = splits[split]
        values.update({k: v for k, v in s.get("metrics", {}).items() if isinstance(v, (int, float))})
        values.update(s.get("calibration", {}).get("before", {}))
        values.update({f"{k}_calibrated": v for k, v in s.get("calibration", {}).get("after", {}).items()})
        for k, ci in s.get("intervals", {}).items():
            values[f"{k}_low"], values[f"{k}_high"] = ci["low"], ci["high"]
    values.update({k: v for k, v in (evidence.get("latency") or {}).items() if isinstance(v, (int, float))})
    for score, m in (evidence.get("ood") or {}).get("scores", {}).items():
        values.update({f"ood_{score}_{k}": v for k, v in m.items()})
    values.update(slice_gate_values(evidence.get("slices") or {}))
    return values


def check_gate(fail_if: dict[str, str], evidence: dict[str, Any]) -> dict[str, Any]:
    """{"passed": bool, "checks": [{metric, condition, value, failed}]}."""
    values = gate_values(evidence)
    checks = []
    for metric, condition in fail_if.items():
        op, threshold = parse_condition(condition)
        value = values.get(metric)
        failed = value is None or bool(_OPS[op](value, threshold))
        checks.append({"metric": metric, "condition": f"{op} {threshold:g}", "value": value, "failed": failed})
    return {"passed": not any(c["failed"] for c in checks), "checks": checks}


def enforce_gate(result: Any) -> None:
    """Raise GateFailed if the finished run's evidence.json records a failed gate."""
    import json

    path = result.run_dir / "evidence.json"
    if not path.is_file():
        return
    gate = json.loads(path.read_text()).get("gate")
    if gate and not gate["passed"]:
        failed = [f"{c['metric']} = {'not computed' if c['value'] is None else format(c['value'], '.4g')} "
                  f"({c['condition']} fails)" for c in gate["checks"] if c["failed"]]
        raise GateFailed(f"{result.run_dir}: eval.fail_if not met: " + "; ".join(failed)
                         + f". The model is saved in {result.model_dir}.", result)
