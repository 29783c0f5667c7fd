"""Scenario 5: resuming with a changed recipe or changed data is refused, listing every difference."""

from __future__ import annotations

import shutil
import signal

from tests.conftest import toy_rows, write_csv


def test_changed_recipe_and_data_are_refused_unless_allowed(lab):
    data = shutil.copy(lab.train, lab.root / "change.csv")
    killed = lab.run("change", faults={"kill_step": 9}, train=data)
    assert killed.code == -signal.SIGKILL
    write_csv(data, toy_rows(200, seed=1))  # same path, other bytes
    lab.recipe("change", train=data, lr=3e-3, batch_size=16)
    refused = lab.run("change")
    assert refused.code == 3, refused.log  # EXIT_RUN_STATE, before any model is loaded
    for diff in ("train.lr: 0.002 -> 0.003", "train.batch_size: 8 -> 16", "data.train sha256:"):
        assert diff in refused.log, refused.log
    assert "(resuming)" not in refused.log
    allowed = lab.run("change", "--allow-recipe-change")
    assert allowed.code == 0, allowed.log
    assert "resumed from step-00000006" in allowed.log
