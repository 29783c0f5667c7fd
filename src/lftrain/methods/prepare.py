"""The one place a method adds to what fit() trains on: extra rows (unlabelled text) or per-row targets.

Most methods train on the labelled rows as they are. A method with a `prepare(...)` (distill) returns its
own training set and the task as the loop should see it; `finish(model)` (optional) runs before saving.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

log = logging.getLogger("lftrain")


def prepare_method_data(method, model, train_encoded: dict[str, np.ndarray], *, data, recipe, tokenizer, source,
                        precision: str, device) -> tuple[dict[str, np.ndarray], Any]:
    """(training arrays, task for fit()) — the labelled rows and the task itself unless the method adds to them."""
    from lftrain.data.token_cache import encode_cached

    task = method.task
    if data.unlabeled is not None and not getattr(method, "uses_unlabeled", False):
        log.warning("data.unlabeled is set but method '%s' does not use unlabelled data; ignoring it",
                    recipe.method.type)
    if not hasattr(method, "prepare"):
        return train_encoded, task

    def encode(examples):
        return encode_cached(task, tokenizer, examples, model_dir=source.path, cache_dir=recipe.data.cache_dir)

    return method.prepare(model, train_encoded, data=data, recipe=recipe, encode=encode, precision=precision,
                          device=device)
