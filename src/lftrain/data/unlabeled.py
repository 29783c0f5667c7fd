"""Unlabelled data (`data.unlabeled`): raw text in any format the labelled data may use, validated the same way.

Methods that learn from raw text (distillation now, self-training later) read it from `PreparedData.unlabeled`.
Rows are validated like labelled ones (a bad row names file, line and column) but need no label column.
Duplicates are dropped, and so is any text that is also in the train, eval or test split: a test text
labelled by a teacher would leak the teacher's view of the test set into the student.
"""

from __future__ import annotations

import logging

from lftrain.data.examples import Examples
from lftrain.errors import DataError

log = logging.getLogger("lftrain")


def read_unlabeled(data_cfg, task, labelled: list[Examples | None], stats: dict) -> Examples | None:
    """The recipe's unlabelled rows, validated and de-duplicated against themselves and `labelled`."""
    if not data_cfg.unlabeled:
        return None
    from lftrain.data.prepare import read_examples

    ex = read_examples(data_cfg.unlabeled, data_cfg, task, with_labels=False)
    ex.name = "unlabeled"
    in_labelled = {task.dedupe_key(split, i) for split in labelled if split is not None for i in range(len(split))}
    seen: set[tuple] = set()
    keep, overlap, dupes = [], 0, 0
    for i in range(len(ex)):
        key = task.dedupe_key(ex, i)
        if key in in_labelled:
            overlap += 1
        elif key in seen:
            dupes += 1
        else:
            seen.add(key)
            keep.append(i)
    out = ex.subset(keep)
    if not len(out):
        raise DataError("no unlabelled rows left after dropping duplicates and texts of the labelled splits",
                        file=data_cfg.unlabeled)
    stats.update({"unlabeled_rows": len(out), "unlabeled:overlap_dropped": overlap,
                  "unlabeled:duplicates_dropped": dupes})
    if overlap or dupes:
        log.info("%s: dropped %d texts also in train/eval/test and %d duplicates; %d unlabelled rows left",
                 data_cfg.unlabeled, overlap, dupes, len(out))
    return out

