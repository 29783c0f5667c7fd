"""report.html in a real browser (Debian's headless Chromium): every figure decodes, nothing logs to the console."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--enable-logging=stderr", "--v=0"]
# Appended to a copy of the report: after load, list images that failed to decode, and JS errors.
PROBE = """<script>
window.__errors = [];
window.addEventListener('error', e => window.__errors.push(String(e.message || e.target.src || e)), true);
window.addEventListener('load', () => {
  const broken = [...document.images].filter(i => !i.complete || i.naturalWidth === 0).map(i => i.alt);
  const p = document.createElement('pre'); p.id = 'probe';
  p.textContent = JSON.stringify({images: document.images.length, broken: broken, errors: window.__errors});
  document.body.appendChild(p);
});
</script>"""


def chromium(url: str, profile: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *extra, url], capture_output=True,
                          text=True, timeout=120)


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="chromium not installed (.ci/system-packages.txt has it)")
def test_report_renders_in_chromium(evidence_runs, tmp_path):
    report = evidence_runs["a"][0] / "report.html"
    page = report.read_text()
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page), "the report must not fetch anything"
    probed = tmp_path / "probed.html"
    probed.write_text(page.replace("</body>", PROBE + "</body>"))

    dom = chromium(probed.as_uri(), tmp_path / "profile1", "--virtual-time-budget=5000", "--dump-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    found = re.search(r'<pre id="probe">(.*?)</pre>', dom.stdout, re.S)
    assert found, "the probe did not run: " + dom.stdout[-500:]
    probe = json.loads(found.group(1).replace("&quot;", '"').replace("&amp;", "&"))
    assert probe["images"] >= 5 and probe["broken"] == [] and probe["errors"] == [], probe
    assert "<h2>Slices</h2>" in dom.stdout and "Worst slice by accuracy" in dom.stdout  # eval.slices, rendered

    shot = tmp_path / "report.png"
    run = chromium(report.as_uri(), tmp_path / "profile2", "--window-size=1200,3000", f"--screenshot={shot}")
    assert run.returncode == 0 and shot.stat().st_size > 10_000, run.stderr[-2000:]
    console = [x for x in (dom.stderr + run.stderr).splitlines() if ":CONSOLE" in x]
    assert console == [], console  # the page has no scripts of its own: any console line is an error
