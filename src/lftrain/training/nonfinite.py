"""What to do when a step's loss is NaN or infinite (`train.nonfinite`).

`stop` (default): raise before the optimiser step, so the weights — and every checkpoint — stay those of
the last finite step. `skip`: drop that step's update (gradients zeroed, optimiser not stepped; the
learning-rate schedule still advances, so "step N" keeps its meaning) and count it in the train state.
Either way the value is logged in metrics.jsonl as an `event: nonfinite` line.
"""

from __future__ import annotations

import logging
import math

from lftrain.errors import TrainingError

log = logging.getLogger("lftrain")


def finite_or_handle(loss: float, grad_norm: float | None, *, step: int, policy: str, run, state) -> bool:
    """True if the step may update the weights. Logs and raises (stop) or counts (skip) otherwise."""
    if math.isfinite(loss) and (grad_norm is None or math.isfinite(grad_norm)):
        return True
    what = f"loss {loss}" if not math.isfinite(loss) else f"gradient norm {grad_norm} (loss {loss:.6g})"
    run.log_metrics({"event": "nonfinite", "step": step, "loss": str(loss),
                     "grad_norm": None if grad_norm is None else str(grad_norm), "policy": policy})
    if policy == "skip":
        state.skipped_steps += 1
        log.warning("step %d: %s is not finite; update skipped (%d skipped so far, train.nonfinite: skip)",
                    step, what, state.skipped_steps)
        return False
    raise TrainingError(f"step {step}: {what} is not finite; training stopped before updating the weights. The "
                        f"newest checkpoint is from step {state.step} or earlier, all finite. Lower train.lr, check "
                        "the data, or set train.nonfinite: skip to drop such steps")
