"""Tasks: what the model predicts (inputs, head, loss, metrics, prediction format), by short name."""

from lftrain.registry import Registry

TASKS: Registry = Registry("task")

from lftrain.tasks import causal_lm_sft, text_classification  # noqa: E402,F401  (registers)


def build_task(config):
    return TASKS.get(config.type)(config)
