"""The lists of task, method and adaptation types and of trackers (`train.report_to`) written in README.md and
docs/*.md name exactly what is registered: a registered name missing from a list fails, and so does a listed name
that is not registered.

Lists that name a subset on purpose are not checked: the README's "common text tasks", docs/ui.md (what the UI
offers), docs/privacy.md (what DP-SGD refuses), adapter-only lists ("lora, dora, ia3") and the generated
`train.report_to` row of docs/recipes.md (its text is the schema's, in src/).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

# The registries, in one place: if a module moves, change its import here.
from lftrain.methods import METHODS
from lftrain.models.adaptation import ADAPTATIONS
from lftrain.tasks import TASKS
from lftrain.training.tracking import TRACKERS

ROOT = Path(__file__).resolve().parents[2]


def inline(pattern: str):
    """Every match of `pattern` (multi-line mode); its group `list` holds names."""
    return lambda text: [m["list"] for m in re.finditer(pattern, text, re.M)]


def column(header: str):
    """The first cells of the rows of the table whose first header cell is `header`."""
    def find(text: str) -> list[str]:
        lines = text.splitlines()
        starts = [i for i, line in enumerate(lines) if line.startswith(f"| {header} |")]
        if len(starts) != 1:
            return []
        rows = []
        for line in lines[starts[0] + 2:]:  # past the header and its |---| line
            if not line.startswith("|"):
                break
            rows.append(line.split("|")[1])
        return rows
    return find


# (file, what finds the list, the registry its names must be)
LISTS = [
    ("README.md", inline(r"`adaptation: \{type: (?P<list>[^}]*)\}`"), ADAPTATIONS),
    ("README.md", inline(r"`train\.report_to: \[(?P<list>[^\]]*)\]`"), TRACKERS),
    ("README.md", inline(r"\*\*Task\*\* \(`[^`]*`; (?P<list>[^)]*)\)"), TASKS),  # Architecture: the contracts
    ("README.md", inline(r"\*\*Method\*\* \(`[^`]*`; (?P<list>[^)]*)\)"), METHODS),
    ("README.md", inline(r"\*\*Adaptation\*\* \(`[^`]*`; (?P<list>[^)]*)\)"), ADAPTATIONS),
    ("docs/recipes.md", inline(r"^\| `task` \|[^|]*chosen by `type`: (?P<list>[^|]*)\|"), TASKS),  # Sections
    ("docs/recipes.md", inline(r"^\| `method` \|[^|]*chosen by `type`: (?P<list>[^|]*)\|"), METHODS),
    ("docs/recipes.md", inline(r"^\| `adaptation` \|[^|]*chosen by `type`: (?P<list>[^|]*)\|"), ADAPTATIONS),
    ("docs/recipes.md", inline(r"^### `task` — type `(?P<list>[^`]+)`"), TASKS),  # Every key (generated)
    ("docs/recipes.md", inline(r"^### `method` — type `(?P<list>[^`]+)`"), METHODS),
    ("docs/recipes.md", inline(r"^### `adaptation` — type `(?P<list>[^`]+)`"), ADAPTATIONS),
    ("docs/tasks.md", column("`task.type`"), TASKS),
    ("docs/tasks.md", inline(r"every adaptation \((?P<list>[^)]*)\)"), ADAPTATIONS),
    ("docs/adaptation.md", column("`type`"), ADAPTATIONS),
    ("docs/serving.md", column("task"), TASKS),  # what POST /predict takes, per task
    ("docs/sft.md", inline(r"adaptations \((?P<list>[^)]*)\)"), ADAPTATIONS),
    ("docs/tracking.md", inline(r"^ +report_to: \[(?P<list>[^\]]*)\]"), TRACKERS),  # not the `[stdout]` example
]


def builtin(registry) -> set[str]:
    """The names lftrain itself registers: not a test's own plug-in, nor an installed package's (entry points)."""
    return {name for name, obj in registry.items() if getattr(obj, "__module__", "").startswith("lftrain.")}


def names(fragment: str) -> set[str]:
    """The names in a list: those in backticks (`a`, `b` (the default)), else bare between | or , (a | b, [a, b])."""
    quoted = re.findall(r"`([^`]+)`", fragment)
    return set(quoted) if quoted else {n for n in re.split(r"\s*[|,]\s*", fragment.strip()) if n}


@pytest.mark.parametrize(("path", "find", "registry"), LISTS,
                         ids=[f"{p}:{r.kind}-{i}" for i, (p, _, r) in enumerate(LISTS)])
def test_doc_list_names_every_registered_name_and_no_other(path, find, registry):
    fragments = find((ROOT / path).read_text(encoding="utf-8"))
    assert fragments, f"{path}: the list of {registry.kind}s is not found (its wording changed? update LISTS)"
    listed = set().union(*map(names, fragments))
    registered = builtin(registry)
    assert not registered - listed, f"{path}: registered {registry.kind}s missing from the list: " \
                                    f"{sorted(registered - listed)}"
    assert not listed - registered, f"{path}: listed {registry.kind}s that are not registered: " \
                                    f"{sorted(listed - registered)}"
