"""The core install (`pip install lftrain`, no extras) trains and evaluates text classification; a feature whose
extra is missing names the `pip install` to run. The extras' packages are hidden from a real `lft` process
(None in sys.modules), so the code paths are the ones a core-only environment takes."""

from __future__ import annotations

import json
import subprocess
import sys

from lftrain.extras import EXTRAS
from tests.conftest import tiny_recipe, toy_rows, write_csv, write_recipe

HIDE = """
import sys
# None in sys.modules: `import x` raises ModuleNotFoundError and importlib.util.find_spec(x) returns None, which is
# how transformers and our extras probe what is installed.
for name in {hidden!r}:
    sys.modules[name] = None
from lftrain.cli import main
sys.exit(main({argv!r}))
"""


def lft_without_extras(*argv: str):
    code = HIDE.format(hidden=sorted(EXTRAS), argv=list(argv))
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})


def test_text_classification_trains_and_reports_on_the_core_alone(tiny_bert, tmp_path):
    train = write_csv(tmp_path / "train.csv", toy_rows(80))
    recipe = tiny_recipe(tiny_bert, train, tmp_path / "run", max_steps=4)
    proc = lft_without_extras("train", str(write_recipe(tmp_path / "r.yaml", recipe)))
    assert proc.returncode == 0, proc.stderr
    run = tmp_path / "run"
    assert json.loads((run / "run.json").read_text())["status"] == "finished"
    report = (run / "report.html").read_text()
    assert "Figures need matplotlib: pip install &#x27;lftrain[report]&#x27;" in report and "<img" not in report
    checks = json.loads((run / "data_check.json").read_text())
    assert "needs datasketch" in json.dumps(checks)


def test_a_missing_extra_names_its_install(tmp_path):
    recipe = {"model": {"path": "m"}, "task": {"type": "image-classification"}, "data": {"train": "x"},
              "output": {"dir": str(tmp_path / "run")}}
    proc = lft_without_extras("train", str(write_recipe(tmp_path / "img.yaml", recipe)))
    assert proc.returncode == 2, proc.stderr
    assert "task.type image-classification needs the package pillow" in proc.stderr
    assert "pip install 'lftrain[vision]'" in proc.stderr
