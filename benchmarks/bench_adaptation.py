"""Benchmark `lft train` against Hugging Face `Trainer` (+ PEFT) for three adaptations of the same job.

For each setting, in one invocation:
  * full     every parameter trains;
  * freeze4  the embeddings and the bottom 4 of 6 encoder layers are frozen (top 2 layers, pooler and
             classifier train);
  * lora     LoRA r=8, alpha=16, dropout 0.1 on `query` and `value`; the classifier trains (PEFT's SEQ_CLS);

it runs HF Trainer and `lft train` (each in its own subprocess under the peak-RSS wrapper, strictly one
after the other) and prints samples/s of both and their ratio, peak RSS, test accuracy, and the model
FLOPs utilisation (MFU) against this machine's matmul peak in the job's precision, measured first.

The job is bench_trainer.py's: MiniLM-L6 on Rotten Tomatoes reviews at their real lengths, the same
train.csv/test.csv, the same hyperparameters, the peer at its best documented settings (bf16 where the CPU runs
it fast, fused AdamW, DataCollatorWithPadding, `train_sampling_strategy="group_by_length"`). LoRA gets a higher
learning rate (`--lora-lr`) on both sides.

Run (from the repository root, with the project venv; the full run takes roughly 20-30 minutes on 2 cores):

    python benchmarks/bench_adaptation.py --json benchmarks/results/bench_adaptation.json
    python benchmarks/bench_adaptation.py --settings freeze4,lora --repeats 3
    python benchmarks/bench_adaptation.py --train-limit 128 --test-limit 256 --epochs 1   # plumbing check only

Exit status is 0 whenever something was measured, whether or not the targets were met (and even when
some cells failed: they are marked as failed); non-zero only when nothing could run.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from _common import child_env, default_threads, format_table, prepare_rotten_tomatoes, run_measured, write_results

# The HF settings, accuracy pairing, recipe writer and metrics reader are bench_trainer's own, imported
# rather than copied, so the two benchmarks cannot drift apart on what "the same job" means.
from bench_trainer import (
    PEER_PAD_HELP,
    BenchError,
    _flow,
    _num,
    job_config,
    lft_result,
    write_recipe,
)
from bench_trainer import run_hf_child as trainer_child

# Each setting's `adaptation` section, exactly as the lft recipe gets it; the HF child reads the same dict.
SETTINGS: dict[str, dict[str, Any]] = {
    "full": {"type": "full"},
    "freeze4": {"type": "freeze", "bottom_layers": 4},  # lft freezes the embeddings by default with this
    "lora": {"type": "lora", "r": 8, "alpha": 16, "dropout": 0.1, "target_modules": ["query", "value"]},
}
SYSTEMS = ("hf", "lft")
TITLES = {"hf": "HF Trainer", "lft": "lftrain"}
RATIO_TARGET = 2.0
ACCURACY_TOLERANCE = 1.0  # points lftrain may lose against HF

# Peak-measurement GEMMs (M x K x N): a large square-ish one plus this model's own shapes at 4096 tokens
# (FFN up, FFN down, attention projection, and a weight-gradient shape where the token axis is K).
PEAK_SHAPES = ((4096, 1536, 1536), (4096, 384, 1536), (4096, 1536, 384), (4096, 384, 384), (1536, 4096, 384))
PEAK_TIMINGS = 20  # per shape; the best one counts (a shared machine only ever makes a GEMM slower)

LAYER_RE = re.compile(r"(?:^|\.)layer\.(\d+)\.")  # bert.encoder.layer.3.attention.self.query.weight
EMBED_RE = re.compile(r"(?:^|\.)embeddings\.")


# --------------------------------------------------------------------------- options


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--settings", default=",".join(SETTINGS), help=f"comma-separated subset of {','.join(SETTINGS)}")
    p.add_argument("--systems", default="hf,lft", help="comma-separated subset of: hf,lft (default both)")
    p.add_argument("--repeats", type=int, default=1, help="runs per system and setting (alternating); median wins")
    p.add_argument("--workdir", type=Path, help="where data, recipes and runs go (default: a temp dir, removed)")
    p.add_argument("--train-limit", type=int, help="stratified subsample of N training rows (dev runs)")
    p.add_argument(
        "--test-limit",
        type=int,
        help="stratified subsample of N test rows (plumbing checks only: accuracy means little)",
    )
    p.add_argument("--epochs", type=float, default=2.0)
    add_job_arguments(p)
    p.add_argument("--peer-pad-multiple", type=int, help=PEER_PAD_HELP)
    # Hidden: the HF runs and the probe re-invoke this script in a child process.
    p.add_argument("--_child", choices=["hf", "probe"], help=argparse.SUPPRESS)
    p.add_argument("--_config", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--_result", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.settings = _subset(p, "--settings", args.settings, tuple(SETTINGS))
    args.systems = _subset(p, "--systems", args.systems, SYSTEMS)
    if args.repeats < 1:
        p.error("--repeats must be at least 1")
    return args


def add_job_arguments(p: argparse.ArgumentParser) -> None:
    """The job's options shared with profile_steps.py (learning rates, batch, length, seed, threads, --json)."""
    p.add_argument("--lr", type=float, default=5e-5, help="learning rate for full and freeze4")
    p.add_argument("--lora-lr", type=float, default=5e-4, help="learning rate for lora (both systems)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--threads", type=int, default=default_threads())
    p.add_argument("--precision", choices=["auto", "bf16", "fp32"], default="auto",
                   help="both systems' precision; auto: bf16 where the CPU runs it fast (AMX/AVX512-BF16), else fp32")
    p.add_argument("--json", type=Path, help="also save the numbers to this JSON file")


def _subset(p: argparse.ArgumentParser, flag: str, text: str, allowed: tuple[str, ...]) -> list[str]:
    chosen = [s.strip() for s in text.split(",") if s.strip()]
    unknown = sorted(set(chosen) - set(allowed))
    if unknown or not chosen:
        p.error(f"{flag} takes a subset of {','.join(allowed)}; got {','.join(unknown) or 'nothing'}")
    return [s for s in allowed if s in chosen]  # canonical order, no duplicates


# --------------------------------------------------------------------------- what trains (shared by both children)


def frozen_by_peer(param_name: str, spec: dict[str, Any]) -> bool:
    """Whether the peer's version of `spec` freezes this *base-model* parameter (adapters are extra)."""
    if spec["type"] == "full":
        return False
    if spec["type"] == "freeze":
        layer = LAYER_RE.search(param_name)
        return bool(EMBED_RE.search(param_name)) or (layer is not None and int(layer.group(1)) < spec["bottom_layers"])
    if spec["type"] == "lora":
        # PEFT's SEQ_CLS task type trains the adapters plus `classifier` (modules_to_save), nothing else.
        return not param_name.startswith("classifier.")
    raise ValueError(f"unknown adaptation type {spec['type']!r}")


# --------------------------------------------------------------------------- probe child: peak and FLOPs


def measure_peak(threads: int, precision: str) -> dict[str, Any]:
    """Best `torch.mm` rate in the job's precision over PEAK_SHAPES at `threads` threads, in FLOP/s."""
    import torch

    torch.set_num_threads(threads)
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    per_shape: dict[str, float] = {}
    for m, k, n in PEAK_SHAPES:
        a = torch.randn(m, k).to(dtype)
        b = torch.randn(k, n).to(dtype)
        out = torch.empty(m, n, dtype=dtype)
        for _ in range(3):  # warm-up: oneDNN builds (and caches) its AMX kernel on first use
            torch.mm(a, b, out=out)
        best = float("inf")
        for _ in range(PEAK_TIMINGS):
            start = time.perf_counter()
            torch.mm(a, b, out=out)
            best = min(best, time.perf_counter() - start)
        per_shape[f"{m}x{k}x{n}"] = 2 * m * k * n / best
    return {
        "flops_per_s": max(per_shape.values()),
        "per_shape": per_shape,
        "threads": threads,
        "timings_per_shape": PEAK_TIMINGS,
        "precision": precision,
    }


@dataclass
class Matmul:
    name: str
    layer: int | None  # encoder layer index; None = task head (pooler, classifier), run once per sample
    weights: int
    trainable: bool


def job_matmuls(model: Any, spec: dict[str, Any]) -> list[Matmul]:
    """Every weight matmul the peer's version of `spec` runs, adapters included, with whether it trains."""
    from torch import nn

    out: list[Matmul] = []
    for name, module in model.named_modules():
        if not isinstance(module, nn.Linear):
            continue
        layer = LAYER_RE.search(name + ".")
        index = int(layer.group(1)) if layer else None
        out.append(
            Matmul(name, index, module.in_features * module.out_features, not frozen_by_peer(name + ".weight", spec))
        )
        if spec["type"] == "lora" and name.rsplit(".", 1)[-1] in spec["target_modules"]:
            r = spec["r"]  # x -> A (in x r) -> B (r x out), added to the frozen base output
            out.append(Matmul(name + ".lora_A", index, module.in_features * r, True))
            out.append(Matmul(name + ".lora_B", index, r * module.out_features, True))
    return out


def job_flops(model: Any, spec: dict[str, Any], mean_t: float, mean_t2: float) -> dict[str, Any]:
    """Model FLOPs per training sample for `spec`: what the job needs, with nothing cached or skipped.

    With T the sample's real token count (no padding), L the encoder layers, h the hidden size, N the
    weights of the encoder's matmuls (adapters included; embedding lookups are not matmuls), and l0 the
    lowest encoder layer holding a trainable parameter (0 when the embeddings train):

        per token   forward              2 * N
                    activation gradients 2 * N(layers >= l0)   (the backward pass must reach layer l0)
                    weight gradients     2 * N(trainable)
        per sample  attention scores     4*h*T^2 per layer forward (Q.K^T and P.V, all heads), and
                                         8*h*T^2 per layer >= l0 backward (gradients of both operands)
                    head (pooler + classifier, on the [CLS] vector only): 2*N_head forward,
                                         2*N_head activation gradients, 2*N_head(trainable) weight gradients

    Averaged over samples: E[T] * per-token + E[T^2] * h * (4L + 8(L - l0)) + head. Counting the whole of
    layer l0 in the activation-gradient term slightly overstates the need there (its input gradient is
    not required when nothing below it trains: at most 2*3h^2 per token). For full fine-tuning this is
    the usual 6*N*T + 12*L*h*T^2. Non-matmul work (norms, softmax, dropout, optimizer) is not counted.
    """
    matmuls = job_matmuls(model, spec)
    config = model.config
    n_layers, hidden = config.num_hidden_layers, config.hidden_size  # BERT: heads * head_dim == hidden
    embeddings_train = any(
        EMBED_RE.search(p_name) and not frozen_by_peer(p_name, spec) for p_name, _ in model.named_parameters()
    )
    trainable_layers = [m.layer for m in matmuls if m.trainable and m.layer is not None]
    lowest = 0 if embeddings_train else min(trainable_layers, default=n_layers)
    enc = [m for m in matmuls if m.layer is not None]
    head = [m for m in matmuls if m.layer is None]

    per_token = {
        "forward": 2 * sum(m.weights for m in enc),
        "activation_grad": 2 * sum(m.weights for m in enc if m.layer >= lowest),
        "weight_grad": 2 * sum(m.weights for m in enc if m.trainable),
    }
    attention = mean_t2 * hidden * (4 * n_layers + 8 * (n_layers - lowest))
    head_flops = 2 * sum(m.weights for m in head) * (2 if lowest < n_layers else 1)
    head_flops += 2 * sum(m.weights for m in head if m.trainable)
    per_sample = mean_t * sum(per_token.values()) + attention + head_flops

    # All parameters that train, adapters included: the figure both systems should report.
    base_trainable = sum(p.numel() for n, p in model.named_parameters() if not frozen_by_peer(n, spec))
    adapter_weights = sum(m.weights for m in matmuls if ".lora_" in m.name)
    return {
        "flops_per_sample": per_sample,
        "flops_per_token": per_sample / mean_t,
        "per_token": per_token,
        "attention_per_sample": attention,
        "head_per_sample": head_flops,
        "lowest_trainable_layer": lowest,
        "n_layers": n_layers,
        "matmul_weights": sum(m.weights for m in enc),
        "expected_trainable_parameters": base_trainable + adapter_weights,
    }


def run_probe_child(config_path: Path, result_path: Path) -> int:
    """Measure the matmul peak, the train set's real token counts and each setting's FLOPs per sample."""
    cfg = json.loads(config_path.read_text())
    import numpy as np
    import pandas as pd
    import torch
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

    peak = measure_peak(cfg["threads"], cfg["precision"])  # first, before anything else has touched the caches

    tokenizer = AutoTokenizer.from_pretrained(cfg["model"])
    texts = pd.read_csv(cfg["train_csv"], keep_default_na=False)["text"].tolist()  # as bench_trainer reads it
    ids = tokenizer(texts, truncation=True, max_length=cfg["max_length"])["input_ids"]
    lengths = np.array([len(x) for x in ids], dtype=np.float64)  # real lengths, special tokens included
    tokens = {
        "mean": float(lengths.mean()),
        "mean_sq": float((lengths**2).mean()),
        "max": int(lengths.max()),
        "rows": int(lengths.size),
    }

    # Only the structure matters here, so no weights are read.
    model_config = AutoConfig.from_pretrained(cfg["model"], num_labels=len(cfg["labels"]))
    with torch.device("meta"):
        model = AutoModelForSequenceClassification.from_config(model_config)
    flops = {name: job_flops(model, spec, tokens["mean"], tokens["mean_sq"]) for name, spec in cfg["settings"].items()}
    result_path.write_text(json.dumps({"peak": peak, "tokens": tokens, "flops": flops}, indent=2))
    return 0


# --------------------------------------------------------------------------- HF child


def apply_peer_adaptation(model: Any, spec: dict[str, Any]) -> Any:
    """The peer's documented way to do `spec`: requires_grad=False for freezing, `peft` for LoRA."""
    if spec["type"] == "lora":
        from peft import LoraConfig, get_peft_model

        lora = LoraConfig(
            task_type="SEQ_CLS",
            r=spec["r"],
            lora_alpha=spec["alpha"],
            lora_dropout=spec["dropout"],
            target_modules=list(spec["target_modules"]),
        )
        return get_peft_model(model, lora)
    frozen = 0
    for name, param in model.named_parameters():
        if frozen_by_peer(name, spec):
            param.requires_grad_(False)
            frozen += 1
    if spec["type"] == "freeze" and frozen == 0:
        raise BenchError("freeze matched no parameter names (expected bert.embeddings.*, bert.encoder.layer.N.*)")
    return model


def run_hf_child(config_path: Path, result_path: Path) -> int:
    """Train and test with HF Trainer (+ PEFT) under one adaptation: bench_trainer's peer run, adapted."""
    return trainer_child(config_path, result_path, adapt=lambda model, cfg: apply_peer_adaptation(model,
                                                                                                 cfg["adaptation"]))


# --------------------------------------------------------------------------- running each system


def failure_reason(returncode: int, log: Path) -> str:
    """Why a child failed, in its own words: lft's `lft: error:` message, else the last lines it printed."""
    kind = {1: "crashed (exit 1)", 2: "rejected its input (exit 2)"}.get(returncode, f"exited with status {returncode}")
    lines = [ln.rstrip() for ln in log.read_text(errors="replace").splitlines() if ln.strip()] if log.is_file() else []
    for i in range(len(lines) - 1, -1, -1):
        if "lft: error:" in lines[i] or lines[i].startswith("bench: error:"):
            return f"{kind}: " + " | ".join(lines[i : i + 6])
    return f"{kind}: " + " | ".join(lines[-3:])


def run_hf(cfg: dict[str, Any], rundir: Path) -> dict[str, Any]:
    if cfg["adaptation"]["type"] == "lora" and importlib.util.find_spec("peft") is None:
        raise BenchError(f"peft is not installed in {sys.executable}; the peer's LoRA needs it")
    cfg_path, result_path = rundir / "hf-config.json", rundir / "hf-result.json"
    cfg_path.write_text(json.dumps(cfg, indent=2))
    cmd = [sys.executable, str(Path(__file__).resolve()), "--_child", "hf"]
    cmd += ["--_config", str(cfg_path), "--_result", str(result_path)]
    log = rundir / "hf.log"
    measured = run_measured(cmd, child_env(cfg["threads"]), rundir / "hf-rss.json", log=log)
    if measured.returncode != 0:
        raise BenchError(f"HF Trainer {failure_reason(measured.returncode, log)}")
    if not result_path.is_file():
        raise BenchError(f"HF Trainer child exited cleanly but wrote no results to {result_path}")
    return {**json.loads(result_path.read_text()), "peak_rss_mb": measured.peak_rss_mb, "process_s": measured.wall_s}


def run_lft(cfg: dict[str, Any], rundir: Path) -> dict[str, Any]:
    recipe = write_recipe(cfg, rundir)  # bench_trainer's recipe; the adaptation section is appended below
    with recipe.open("a") as f:
        f.write(f"adaptation: {_flow(cfg['adaptation'])}\n")
    run_dir = rundir / "lft-run"
    shutil.rmtree(run_dir, ignore_errors=True)  # lft would resume (or refuse) a run it finds there
    log = rundir / "lft.log"
    cmd = [sys.executable, "-m", "lftrain", "train", str(recipe)]
    measured = run_measured(cmd, child_env(cfg["threads"]), rundir / "lft-rss.json", cwd=rundir, log=log)
    if measured.returncode != 0:
        raise BenchError(f"`lft train` {failure_reason(measured.returncode, log)}")
    return lft_result(run_dir, cfg, measured)


def run_probe(cfg: dict[str, Any], workdir: Path, settings: list[str]) -> dict[str, Any] | None:
    """Peak, token counts and FLOPs from a child with the benchmark's own thread settings; None if it fails."""
    cfg_path, result_path, log = workdir / "probe-config.json", workdir / "probe.json", workdir / "probe.log"
    cfg_path.write_text(json.dumps({**cfg, "settings": {s: SETTINGS[s] for s in settings}}, indent=2))
    cmd = [sys.executable, str(Path(__file__).resolve()), "--_child", "probe"]
    cmd += ["--_config", str(cfg_path), "--_result", str(result_path)]
    with log.open("wb") as sink:
        proc = subprocess.run(cmd, env=child_env(cfg["threads"]), stdout=sink, stderr=subprocess.STDOUT, check=False)
    if proc.returncode != 0 or not result_path.is_file():
        print(
            f"warning: the peak/FLOPs probe {failure_reason(proc.returncode, log)}; MFU will be missing",
            file=sys.stderr,
        )
        return None
    return json.loads(result_path.read_text())


# --------------------------------------------------------------------------- aggregation and report


def aggregate(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Median over repeats for rates, accuracy and times; the highest peak RSS (memory is a ceiling)."""
    out: dict[str, Any] = {"repeats": len(runs), "runs": runs}
    for key in ("samples_per_second", "accuracy", "macro_f1", "train_runtime", "process_s"):
        values = [r[key] for r in runs if r.get(key) is not None]
        out[key] = statistics.median(values) if values else None
    rss = [r["peak_rss_mb"] for r in runs if r.get("peak_rss_mb") is not None]
    out["peak_rss_mb"] = max(rss) if rss else None
    out["trainable_parameters"] = runs[-1].get("trainable_parameters")
    return out


def with_mfu(res: dict[str, Any], flops: dict[str, Any] | None, peak: dict[str, Any] | None) -> dict[str, Any]:
    if flops and peak and res.get("samples_per_second"):
        res["mfu"] = res["samples_per_second"] * flops["flops_per_sample"] / peak["flops_per_s"]
    return res


def round_ratios(results: dict[str, dict[str, Any]]) -> list[float]:
    """lft/HF samples/s of each round: run k of each system, taken back to back, so a drift of the machine
    between rounds cancels out of each one (empty unless both systems ran every round)."""
    hf, lft = (results.get(s, {}).get("runs", []) for s in ("hf", "lft"))
    if len(hf) != len(lft) or len(hf) < 2:
        return []
    return [b["samples_per_second"] / a["samples_per_second"] for a, b in zip(hf, lft)
            if a.get("samples_per_second") and b.get("samples_per_second")]


def setting_summary(results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    hf, lft = results.get("hf", {}), results.get("lft", {})
    ratio = lft["samples_per_second"] / hf["samples_per_second"] if hf.get("samples_per_second") and lft else None
    delta = 100 * (lft["accuracy"] - hf["accuracy"]) if hf.get("accuracy") is not None and lft else None
    rss_ok = lft["peak_rss_mb"] <= hf["peak_rss_mb"] if hf.get("peak_rss_mb") and lft.get("peak_rss_mb") else None
    return {
        "ratio_samples_per_second": ratio,
        "ratio_per_round": round_ratios(results),
        "accuracy_delta_points": delta,
        "ratio_target_met": None if ratio is None else ratio >= RATIO_TARGET,
        "accuracy_target_met": None if delta is None else delta >= -ACCURACY_TOLERANCE,
        "rss_target_met": rss_ok,
        "lft_mfu": lft.get("mfu"),
    }


ROWS = (  # (label, key, format, scale)
    ("samples/s", "samples_per_second", ".1f", 1.0),
    ("peak RSS MB", "peak_rss_mb", ".0f", 1.0),
    ("test accuracy %", "accuracy", ".2f", 100.0),
    ("MFU % of matmul peak", "mfu", ".1f", 100.0),
    ("train wall s", "train_runtime", ".1f", 1.0),
    ("process wall s", "process_s", ".1f", 1.0),
)


def setting_report(
    name: str, results: dict[str, dict[str, Any]], errors: dict[str, str], flops: dict[str, Any] | None
) -> str:
    hf, lft = results.get("hf"), results.get("lft")
    rows = []
    for label, key, fmt, scale in ROWS:
        cell = "-"
        if hf and lft and hf.get(key) and lft.get(key) is not None:
            cell = f"{100 * (lft[key] - hf[key]):+.2f} pt" if key == "accuracy" else f"{lft[key] / hf[key]:.2f}x"
        rows.append([label, _num(hf, key, fmt, scale), _num(lft, key, fmt, scale), cell])
    expected = flops.get("expected_trainable_parameters") if flops else None
    counts = [(r or {}).get("trainable_parameters") for r in (hf, lft)]
    check = "-" if expected is None else ("as expected" if all(c in (None, expected) for c in counts) else "DIFFER")
    rows.append(["trainable params", *(f"{c:,}" if c is not None else "-" for c in counts), check])
    spec = _flow(SETTINGS[name])
    lines = [f"=== {name}: adaptation {spec} ===", format_table(["", TITLES["hf"], TITLES["lft"], "lft/HF"], rows)]
    if flops:
        pt = flops["per_token"]
        lines.append(
            f"model FLOPs: {flops['flops_per_sample'] / 1e9:.3f} GFLOP/sample = {flops['flops_per_token'] / 1e6:.1f}"
            f" MFLOP/token (per token: fwd {pt['forward'] / 1e6:.1f}M + act-grad {pt['activation_grad'] / 1e6:.1f}M"
            f" + wgt-grad {pt['weight_grad'] / 1e6:.1f}M; attention {flops['attention_per_sample'] / 1e6:.1f}M/sample;"
            f" backward reaches layer {flops['lowest_trainable_layer']}); expected trainable params {expected:,}"
        )
        lines.append(
            "MFU counts the job's FLOPs for both systems; lftrain skips some of them (the frozen-prefix cache, the "
            "first-token-only last layer), so its MFU can pass 100%"
        )
    for system in SYSTEMS:
        res = results.get(system)
        if res and res["repeats"] > 1:
            runs = ", ".join(f"{r['samples_per_second']:.1f}" for r in res["runs"])
            lines.append(f"{TITLES[system]} samples/s per run: {runs} (median shown)")
        if system in errors:
            lines.append(f"{TITLES[system]} FAILED: {errors[system]}")
    rounds = round_ratios(results)
    if rounds:
        lines.append("lft/HF samples/s per round (both systems back to back): "
                     + ", ".join(f"{r:.2f}x" for r in rounds))
    if expected is not None and check == "DIFFER":
        lines.append("warning: the systems do not train the same number of parameters; the comparison is unfair")
    return "\n".join(lines)


def summary_line(name: str, s: dict[str, Any], errors: dict[str, str], results: dict[str, dict[str, Any]]) -> str:
    def verdict(ok: bool | None) -> str:
        return "n/a" if ok is None else ("met" if ok else "MISSED")

    failed = "; ".join(f"{TITLES[k]} failed" for k in SYSTEMS if k in errors)
    ratio = "n/a" if s["ratio_samples_per_second"] is None else f"{s['ratio_samples_per_second']:.2f}"
    delta = "n/a" if s["accuracy_delta_points"] is None else f"{s['accuracy_delta_points']:+.1f} points"
    rss = [_num(results.get(k), "peak_rss_mb", ".0f") for k in ("lft", "hf")]
    mfu = "n/a" if s["lft_mfu"] is None else f"{100 * s['lft_mfu']:.1f}%"
    line = (
        f"{name}: ratio lft/HF samples/s {ratio} (target >= {RATIO_TARGET}: {verdict(s['ratio_target_met'])}); "
        f"accuracy delta {delta} (target within {ACCURACY_TOLERANCE:g}: {verdict(s['accuracy_target_met'])}); "
        f"peak RSS lft {rss[0]} MB vs HF {rss[1]} MB (target lft <= HF: {verdict(s['rss_target_met'])}); "
        f"lft MFU {mfu}"
    )
    return f"{line}  [{failed}]" if failed else line


def peak_line(probe: dict[str, Any] | None) -> str:
    if probe is None:
        return "matmul peak: not measured (probe failed; see stderr)"
    peak = probe["peak"]
    shapes = ", ".join(f"{k} {v / 1e9:.0f}" for k, v in peak["per_shape"].items())
    tok = probe["tokens"]
    return (
        f"{peak.get('precision', 'bf16')} matmul peak: {peak['flops_per_s'] / 1e9:.0f} GFLOP/s (best of "
        f"{peak['timings_per_shape']} torch.mm"
        f" timings per shape, {peak['threads']} threads; GFLOP/s by MxKxN: {shapes})\n"
        f"train tokens/sample: mean {tok['mean']:.1f}, mean of squares {tok['mean_sq']:.0f}, max {tok['max']}"
        f" ({tok['rows']} rows, real lengths, no padding)"
    )


# --------------------------------------------------------------------------- main


def benchmark(args: argparse.Namespace, workdir: Path) -> int:
    files = prepare_rotten_tomatoes(workdir, args.train_limit, args.test_limit)
    base_cfg = job_config(args, workdir, files.n_train, files.n_test)
    print(f"data: {files.n_train} train / {files.n_test} test rows in {workdir}", file=sys.stderr)

    print("measuring the matmul peak and the job's FLOPs ...", file=sys.stderr, flush=True)
    probe = run_probe(base_cfg, workdir, args.settings)
    print(peak_line(probe), flush=True)
    if importlib.util.find_spec("peft") is None and "lora" in args.settings:
        print(f"warning: peft is not installed in {sys.executable}: the HF lora runs cannot happen", file=sys.stderr)

    results: dict[str, dict[str, Any]] = {}
    errors: dict[str, dict[str, str]] = {}
    for name in args.settings:
        spec = SETTINGS[name]
        cfg = {
            **base_cfg,
            "lr": args.lora_lr if spec["type"] == "lora" else args.lr,
            "adaptation": spec,
            "setting": name,
        }
        runs: dict[str, list[dict[str, Any]]] = {s: [] for s in args.systems}
        errors[name] = {}
        # Alternate HF, lft, HF, lft ... strictly one at a time, so slow drifts of a shared machine hit both.
        for rep in range(args.repeats):
            for system in args.systems:
                if system in errors[name]:  # a failure repeats itself; do not spend more time on it
                    continue
                print(
                    f"\n=== {name} / {TITLES[system]} (run {rep + 1} of {args.repeats}) ===",
                    file=sys.stderr,
                    flush=True,
                )
                rundir = workdir / name / f"{system}-{rep + 1}"
                rundir.mkdir(parents=True, exist_ok=True)
                try:
                    runs[system].append(run_hf(cfg, rundir) if system == "hf" else run_lft(cfg, rundir))
                except BenchError as exc:
                    errors[name][system] = str(exc)
                    print(f"error: {name} / {TITLES[system]}: {exc}", file=sys.stderr)
        flops = probe["flops"].get(name) if probe else None
        peak = probe["peak"] if probe else None
        results[name] = {s: with_mfu(aggregate(r), flops, peak) for s, r in runs.items() if r}
        print("\n" + setting_report(name, results[name], errors[name], flops), flush=True)

    summaries = {name: setting_summary(results[name]) for name in args.settings}
    print()
    for name in args.settings:
        print(summary_line(name, summaries[name], errors[name], results[name]))
    if args.json:
        save_json(args.json, base_cfg, args, probe, results, errors, summaries)
    measured_any = any(results[name] for name in args.settings)
    return 0 if measured_any else 1


def save_json(
    path: Path,
    cfg: dict[str, Any],
    args: argparse.Namespace,
    probe: dict[str, Any] | None,
    results: dict[str, Any],
    errors: dict[str, Any],
    summaries: dict[str, Any],
) -> None:
    payload = {
        "benchmark": "bench_adaptation",
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "host": {"python": platform.python_version(), "machine": platform.machine()},
        "config": {
            **cfg,
            "lr": args.lr,
            "lora_lr": args.lora_lr,
            "repeats": args.repeats,
            "settings": {s: SETTINGS[s] for s in args.settings},
        },
        "peak": probe["peak"] if probe else None,
        "tokens": probe["tokens"] if probe else None,
        "flops": probe["flops"] if probe else None,
        "results": results,
        "errors": errors,
        "summary": summaries,
        "targets": {"ratio": RATIO_TARGET, "accuracy_points": ACCURACY_TOLERANCE, "rss": "lft <= hf"},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    write_results(path, payload)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args._child:
        try:
            return (run_hf_child if args._child == "hf" else run_probe_child)(args._config, args._result)
        except (BenchError, ImportError) as exc:  # said plainly, so the parent can quote it as the reason
            print(f"bench: error: {exc}", file=sys.stderr)
            return 2
    if args.workdir is not None:
        return benchmark(args, args.workdir.resolve())
    with tempfile.TemporaryDirectory(prefix="lft-bench-adapt-") as tmp:
        return benchmark(args, Path(tmp))


if __name__ == "__main__":
    sys.exit(main())
