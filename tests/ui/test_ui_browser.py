"""`lft ui` end to end in headless Chromium (Debian's, driven by Playwright with no browser download): data,
recipe (with a validation error first), one real training with live progress, report, a prediction and a
comparison; a screenshot per page (saved in the test's tmp dir) and the page's text checked at each. The page
must fetch nothing from outside this machine."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import toy_rows, write_csv

CHROMIUM = "/usr/bin/chromium"
pytestmark = [pytest.mark.slow, pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="chromium not installed")]
playwright = pytest.importorskip("playwright.sync_api", reason="playwright not installed (the dev extra has it)")
pytest.importorskip("gradio", reason="gradio not installed (the ui extra)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_up(url: str, proc: subprocess.Popen, log: Path, timeout: float = 120) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        assert proc.poll() is None, f"lft ui exited: {log.read_text()[-3000:]}"
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"lft ui did not answer at {url}: {log.read_text()[-3000:]}")


@pytest.fixture
def ui_server(tmp_path):
    port = _free_port()
    log = tmp_path / "ui.log"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1",
           "TRANSFORMERS_OFFLINE": "1", "NO_PROXY": "127.0.0.1,localhost"}
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "lftrain", "ui", "--port", str(port), "--runs-dir", "runs"],
                                cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}/"
    try:
        _wait_up(url, proc, log)
        yield url, tmp_path / "runs", log
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


class Shots:
    """A screenshot per step, and the page's text at that moment."""

    def __init__(self, page, folder: Path) -> None:
        self.page, self.folder, self.n = page, folder, 0

    def take(self, name: str, *expected: str) -> str:
        self.n += 1
        self.page.screenshot(path=str(self.folder / f"{self.n}-{name}.png"), full_page=True)
        text = self.page.inner_text("body")
        missing = [e for e in expected if e not in text]
        assert not missing, f"{name}: {missing} not on the page:\n{text[:3000]}"
        return text


def _tab(page, name: str) -> None:
    page.get_by_role("tab", name=name).click()
    page.wait_for_timeout(500)


def _fill(page, field: str, value) -> None:
    box = page.locator(f"#lft-{field} textarea, #lft-{field} input").first
    box.fill(str(value))
    box.press("Tab")


def _data_page(page, shots, data: Path) -> None:
    _fill(page, "data_file", data)
    page.get_by_role("button", name="Show the data").click()
    page.get_by_text("120 rows").wait_for(timeout=30_000)
    page.get_by_role("button", name="Check the data").click()
    page.get_by_text("nothing blocks training").wait_for(timeout=120_000)
    shots.take("data", "120 rows", "duplicates", "leakage", "Data card")


def _model_page(page, shots, model: Path) -> None:
    _tab(page, "2. Model & recipe")
    _fill(page, "model", model)
    for field, value in (("epochs", 2), ("batch_size", 8), ("max_length", 32), ("lr", -1)):
        _fill(page, field, value)
    page.get_by_role("button", name="Preview recipe").click()
    page.get_by_text("The recipe is not valid yet").wait_for(timeout=30_000)
    shots.take("model-invalid", "train.lr")
    _fill(page, "lr", 0.005)
    page.get_by_role("button", name="Preview recipe").click()
    page.get_by_text("The recipe is valid.").wait_for(timeout=30_000)
    shots.take("model-valid", "text-classification", "full")


def _train_page(page, shots) -> None:
    _tab(page, "3. Train")
    page.get_by_role("button", name="Start training").click()
    page.get_by_text("Training started").wait_for(timeout=30_000)
    page.wait_for_function("() => /status:\\s*running/.test(document.body.innerText) || "
                           "/status:\\s*finished/.test(document.body.innerText)", timeout=120_000)
    page.wait_for_function("() => /status:\\s*finished/.test(document.body.innerText)", timeout=300_000)
    page.get_by_text("exited with code 0").wait_for(timeout=60_000)  # the process too, not only run.json
    shots.take("train", "step:", "22 / 22", "loss:", "test:", "accuracy", "finished")
    page.locator("#lft-loss-plot canvas, #lft-loss-plot svg").first.wait_for(timeout=10_000)  # the loss curve


def _report_page(page, shots) -> None:
    _tab(page, "4. Report")
    page.locator("#lft-results").get_by_text("macro_f1").first.wait_for(timeout=30_000)
    frame = page.frame_locator("#lft-report")
    frame.get_by_role("heading", name="Calibration").wait_for(timeout=30_000)
    shots.take("report", "accuracy", "report.html")


def _try_page(page, shots) -> None:
    _tab(page, "5. Try it")
    page.locator("#lft-try-text textarea").fill("a great superb film")
    page.get_by_role("button", name="Predict").click()
    page.get_by_text('"probs"').wait_for(timeout=60_000)
    text = shots.take("try", "label")
    assert "pos" in text or "neg" in text


def _compare_page(page, shots) -> None:
    _tab(page, "6. Compare")
    page.locator("#lft-base input").check()
    page.get_by_role("button", name="Compare", exact=True).click()
    page.locator("#lft-compare-table").get_by_text("F1 of pos").wait_for(timeout=120_000)
    shots.take("compare", "accuracy", "verdict", "F1 of neg")
    assert "linear probe on frozen" in page.locator("#lft-compare-text textarea").input_value()


def test_a_training_through_the_ui(ui_server, tiny_bert, tmp_path):
    from playwright.sync_api import sync_playwright

    url, runs, log = ui_server
    data = write_csv(tmp_path / "reviews.csv", toy_rows(120))
    outside: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        page.on("request", lambda r: outside.append(r.url)
                if not r.url.startswith(("http://127.0.0.1", "data:", "blob:", "about:")) else None)
        page.goto(url)
        page.get_by_text("Fine-tune a pre-trained model").wait_for(timeout=60_000)
        shots = Shots(page, tmp_path)
        try:
            for step in (lambda: _data_page(page, shots, data), lambda: _model_page(page, shots, tiny_bert),
                         lambda: _train_page(page, shots), lambda: _report_page(page, shots),
                         lambda: _try_page(page, shots), lambda: _compare_page(page, shots)):
                step()
        except Exception:
            page.screenshot(path=str(tmp_path / "failure.png"), full_page=True)
            print(log.read_text()[-4000:])
            raise
        finally:
            browser.close()
    assert outside == [], f"the page fetched from outside this machine: {outside}"
    assert len(list(tmp_path.glob("*.png"))) == 7
    from lftrain.config import load_recipe

    assert load_recipe(runs / "my-run.yaml").train.lr == 0.005  # a normal recipe, `lft train` reads it
    assert (runs / "my-run" / "report.html").is_file() and (runs / "my-run" / "model").is_dir()
