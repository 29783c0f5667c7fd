"""A 1.1B decoder through the CLI as a user runs it, LoRA (bf16 base) and QLoRA (NF4 base): `lft train` SFT, `lft export
--merge`, `lft train` DPO on the merged model, `lft generate` on the DPO run. Peak RSS of every command.

The model is bench_llm_scale.py's (random weights, TinyLlama-1.1B's shape, SmolLM2's tokenizer): this shows the path
runs and fits at 1B on this machine, not what it learns. The SFT data is bench_sft.py's, the pairs bench_dpo.py's.

    python benchmarks/llm_1b_chain.py            # ~15 min on 2 cores
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import yaml
from _common import child_env, format_table, run_measured, write_results

LORA = {"type": "lora", "r": 8, "alpha": 16, "dropout": 0.0,
        "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]}


def lft(args: list[str], work: Path, name: str, threads: int) -> tuple[int, float | None]:
    m = run_measured([sys.executable, "-m", "lftrain", *args], child_env(threads), work / f"{name}-rss.json",
                     log=work / f"{name}.log")
    return m.returncode, m.peak_rss_mb


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--work", type=Path, default=Path("/tmp/lft-bench-llm-scale"))
    p.add_argument("--output", type=Path, default=Path(__file__).parent / "results" / "llm_1b_chain.json")
    args = p.parse_args()

    import bench_dpo
    import bench_sft
    from bench_llm_scale import make_model

    work = args.work / "chain"
    if work.exists():
        shutil.rmtree(work)  # every run directory below is this script's own, started afresh
    work.mkdir(parents=True)
    model = make_model(args.work / "llama-1.1b")
    sft_train, sft_eval = bench_sft.prepare(work, 48, 8)
    pairs_train, pairs_eval = bench_dpo.prepare(work, 32, 8)
    train = {"max_steps": args.steps, "batch_size": 4, "lr": 1e-4, "precision": "bf16", "threads": args.threads,
             "log_every": 1}
    rows, results = [], {}
    for kind, adaptation in (("lora", LORA), ("qlora", {**LORA, "quantize": "nf4"})):
        sft_run, merged, dpo_run = work / f"{kind}-sft", work / f"{kind}-merged", work / f"{kind}-dpo"
        sft = {"model": {"path": str(model)},
               "task": {"type": "causal-lm-sft", "max_length": 128, "generation": {"max_prompts": 4}},
               "data": {"train": str(sft_train), "eval": str(sft_eval), "test_fraction": 0.0},
               "adaptation": adaptation, "train": train, "output": {"dir": str(sft_run)}}
        dpo = {"model": {"path": str(merged)},
               "task": {"type": "causal-lm-sft", "max_length": 160, "generation": {"max_prompts": 0}},
               "data": {"train": str(pairs_train), "eval": str(pairs_eval), "test_fraction": 0.0},
               "adaptation": adaptation, "method": {"type": "dpo", "beta": 0.1}, "train": train,
               "output": {"dir": str(dpo_run)}}
        (work / f"{kind}-sft.yaml").write_text(yaml.safe_dump(sft))
        (work / f"{kind}-dpo.yaml").write_text(yaml.safe_dump(dpo))
        steps = [("sft", ["train", str(work / f"{kind}-sft.yaml")]),
                 ("export", ["export", str(sft_run), "--output", str(merged), "--merge"]),
                 ("dpo", ["train", str(work / f"{kind}-dpo.yaml")]),
                 ("generate", ["generate", str(dpo_run), "--prompt", "Is this review fresh or rotten? Great film."])]
        for step, cmd in steps:
            code, rss = lft(cmd, work, f"{kind}-{step}", args.threads)
            results[f"{kind}/{step}"] = {"returncode": code, "peak_rss_mb": rss}
            rows.append([kind, step, str(code), f"{rss:,.0f}" if rss else ""])
            print(format_table(["adaptation", "command", "exit", "peak RSS MB"], rows[-1:]), file=sys.stderr)
            if code != 0:
                break
        for name, run in (("sft", sft_run), ("dpo", dpo_run)):
            metrics = run / "metrics.jsonl"
            if metrics.is_file():
                train_losses = [json.loads(x)["loss"] for x in metrics.read_text().splitlines()
                                if json.loads(x).get("event") == "train"]
                results[f"{kind}/{name}"]["train_losses"] = train_losses
    table = format_table(["adaptation", "command", "exit", "peak RSS MB"], rows)
    print(table)
    write_results(args.output, {"steps": args.steps, "results": results, "table": table})
    return 0 if all(r["returncode"] == 0 for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
