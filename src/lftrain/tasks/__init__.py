"""Tasks: what the model predicts (inputs, head, loss, metrics, prediction format), by short name."""

from lftrain.registry import Registry

TASKS: Registry = Registry("task")

from lftrain.tasks import (  # noqa: E402,F401  (registers)
    audio_classification,
    causal_lm_sft,
    image_classification,
    text_classification,
)


def build_task(config):
    return TASKS.get(config.type)(config)
