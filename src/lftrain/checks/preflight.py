"""The data checks at the start of `lft train`: after row validation, before the model loads.

One summary table goes to the log; checks listed in `data.checks.block` that found something stop the run
with the input-error exit code (2) before any compute is spent."""

from __future__ import annotations

import logging
from pathlib import Path

from lftrain.errors import InputError

log = logging.getLogger("lftrain")


class DataCheckError(InputError):
    """A blocking data check found a problem; the message names the checks and example rows."""


def supported(task, data) -> bool:
    """Labelled classification data, one class per row: text, or images/audio (content hashes; runner.py)."""
    fields = data.train.fields
    return task.data_checks and "label" in fields and len(fields) > 1 and task.labels is not None


def blocking_message(report) -> str:
    lines = [f"data checks block training ({', '.join(report.blocking)}); fix the data (`lft data fix RECIPE "
             "--output DIR` writes a cleaned copy) or change data.checks.block:"]
    for name in report.blocking:
        r = report.results[name]
        lines.append(f"  {name}: {r.summary}")
        for e in r.examples[:3]:
            lines.append(f"    e.g. {e}")
    return "\n".join(lines)


def preflight(recipe, task, data):
    """Run the checks on the prepared data; raise DataCheckError if a blocking check fired. None if off."""
    from lftrain.checks.runner import run_checks

    if not recipe.data.checks.run:
        return None
    if not supported(task, data):
        log.info("data checks: not available for task type %s (labelled text only)", recipe.task.type)
        return None
    report = run_checks(recipe, task, prepared=data)
    log.info("data checks (data.checks):\n%s", report.table())
    if report.blocking:
        raise DataCheckError(blocking_message(report))
    return report


def record(run_dir: Path, recipe, report) -> None:
    """The data card and the full check results in the run directory (the model card links data_card.md)."""
    from lftrain.reports.data_card import write_data_card

    if report is not None:
        write_data_card(Path(run_dir), recipe, report)
