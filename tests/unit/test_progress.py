"""Progress outside training: a bar on a terminal, silence in logs and pipes, never two live displays at once."""

from __future__ import annotations

import io
import sys

from lftrain.progress import Progress, activity, track


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_quiet_when_not_a_terminal(monkeypatch):
    err = io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    assert list(track(range(5), 5, "inference")) == [0, 1, 2, 3, 4]
    with activity("exporting"):
        pass
    assert err.getvalue() == ""


def test_bar_on_a_terminal(monkeypatch):
    err = _Terminal()
    monkeypatch.setattr(sys, "stderr", err)
    monkeypatch.setenv("FORCE_COLOR", "0")
    assert list(track(range(5), 5, "inference")) == [0, 1, 2, 3, 4]
    with activity("exporting the model"):
        pass
    assert "inference" in err.getvalue() and "exporting the model" in err.getvalue()


def test_inner_waits_stay_quiet_under_the_training_bar(monkeypatch):
    err = _Terminal()
    monkeypatch.setattr(sys, "stderr", err)
    bar = Progress(10, 0, enabled_bar=True)
    try:  # rich refuses a second live display; an evaluation inside training must not try one
        assert list(track(range(3), 3, "inference")) == [0, 1, 2]
        with activity("saving"):
            pass
    finally:
        bar.close()
    assert "inference" not in err.getvalue()
    assert list(track(range(3), 3, "after")) == [0, 1, 2]  # and the bar is free again once training ends
