"""Tasks: what the model predicts (inputs, head, loss, metrics, prediction format), by short name.

The contract is `tasks/base.py`; each module registers its task there."""

from lftrain.tasks import (  # noqa: E402,F401,I001  (registers)
    audio_classification,
    causal_lm_sft,
    extractive_qa,
    image_classification,
    multi_label,
    speech_recognition,
    text_classification,
    text_regression,
    token_classification,
)
from lftrain.tasks.base import TASKS, ClassificationTask, Task, build_task

__all__ = ["TASKS", "ClassificationTask", "Task", "build_task"]
