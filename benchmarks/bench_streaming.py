"""Training data larger than memory: peak RSS of `lft train` with `data.streaming` as the corpus grows.

Generated review-like corpora (CSV) of 1x, 2x and 5x a memory cap are trained on for a fixed number of steps with
the streamed path; the in-memory path runs on the 1x corpus beside them. Where the machine lets us make a cgroup
(v1 or v2, as root), each run is also confined to the cap, so a run that needs more memory is killed rather than
merely measured. The model is a small BERT (2 layers, width 64) with MiniLM-L6's real tokenizer, so that memory
goes to the data, not the weights.

    python benchmarks/bench_streaming.py --cap-mb 1024 --json benchmarks/results/bench_streaming.json
    python benchmarks/bench_streaming.py --cap-mb 256 --sizes 1 --steps 5      # a quick check of the plumbing
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import sys
import time
from pathlib import Path

from _common import child_env, default_threads, format_table, in_workdir, minilm_dir, run_measured, write_results

WORDS = ("the a film movie story plot actor scene was is and very quite this it with an ending cast score "
         "director script camera light music pace dialogue moment hour minute character world year").split()
GOOD, BAD = "good great fine superb lovely charming brilliant moving".split(), \
    "bad awful poor dull boring tedious clumsy weak".split()


def write_corpus(path: Path, megabytes: float, seed: int = 0) -> int:
    """A CSV of review-like rows (text, label) of about `megabytes` MB; returns the number of rows. Rows are long
    (~2 KB, truncated to 64 tokens) so that the corpus is large in bytes without tens of millions of rows."""
    rng, rows, size = random.Random(seed), 0, 0
    with open(path, "w", encoding="utf-8") as f:
        f.write("text,label\n")
        while size < megabytes * 1e6:
            label = rng.random() < 0.5
            words = rng.choices(WORDS, k=rng.randint(250, 450)) + rng.sample(GOOD if label else BAD, 2)
            rng.shuffle(words)
            line = f"{' '.join(words)} {rows},{'pos' if label else 'neg'}\n"  # the row number keeps rows unique
            f.write(line)
            size += len(line)
            rows += 1
    return rows


def tiny_model(folder: Path) -> Path:
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    tokenizer = AutoTokenizer.from_pretrained(minilm_dir(), local_files_only=True)
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=len(tokenizer), hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                         intermediate_size=128)).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@contextlib.contextmanager
def memory_cgroup(cap_mb: int):
    """The `cgroup.procs` file of a new cgroup limited to `cap_mb` (None when this machine does not allow one)."""
    own = Path("/proc/self/cgroup").read_text().splitlines()
    v1 = next((line.split(":", 2)[2] for line in own if ":memory:" in line), None)
    base = Path("/sys/fs/cgroup/memory") / v1.lstrip("/") if v1 is not None else \
        Path("/sys/fs/cgroup") / next(line.split(":", 2)[2] for line in own if line.startswith("0::")).lstrip("/")
    group = base / f"lft-stream-bench-{os.getpid()}"
    try:
        group.mkdir()
        limit = "memory.limit_in_bytes" if v1 is not None else "memory.max"
        (group / limit).write_text(str(cap_mb * 2**20))
        if v1 is not None:  # no swap to hide in
            with contextlib.suppress(OSError):
                (group / "memory.memsw.limit_in_bytes").write_text(str(cap_mb * 2**20))
    except OSError as exc:
        print(f"no memory cgroup ({exc}): peak RSS is measured, not capped", file=sys.stderr)
        yield None
        return
    try:
        yield group / "cgroup.procs"
    finally:
        with contextlib.suppress(OSError):
            group.rmdir()


def run_one(name: str, work: Path, model: Path, corpus: Path, *, streaming: bool, steps: int, threads: int,
            procs: Path | None) -> dict:
    out = work / f"run-{name}"
    shutil.rmtree(out, ignore_errors=True)
    recipe = work / f"{name}.yaml"
    recipe.write_text(json.dumps({
        "model": {"path": str(model)}, "task": {"max_length": 64, "labels": ["neg", "pos"]},
        "data": {"train": str(corpus), "streaming": streaming, "eval_fraction": 0.002, "test_fraction": 0.002,
                 "cache_dir": str(work / f"cache-{name}"), "checks": {"run": False}},
        "train": {"max_steps": steps, "batch_size": 32, "threads": threads, "eval_every": steps, "log_every": 10},
        "eval": {"latency": False, "report": False, "bootstrap_samples": 0}, "output": {"dir": str(out)}}))
    cmd = [sys.executable, "-m", "lftrain", "train", str(recipe)]
    if procs is not None:  # join the capped cgroup, then become lft
        cmd = ["sh", "-c", f'echo $$ > "{procs}" && exec "$@"', "sh", *cmd]
    # the one-pass tokenisation is most of a streamed run's time here, and runs before training: both cores
    env = {**child_env(threads), "TOKENIZERS_PARALLELISM": "true"}
    m = run_measured(cmd, env, work / f"{name}-rss.json", log=work / f"{name}.log")
    metrics = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()] if m.returncode == 0 else []
    end = next((r for r in metrics if r["event"] == "train_end"), {})
    test = next((r for r in metrics if r.get("split") == "test" and r.get("final")), {})
    return {"run": name, "streaming": streaming, "corpus_mb": round(corpus.stat().st_size / 1e6, 1),
            "exit": m.returncode, "peak_rss_mb": round(m.peak_rss_mb or 0, 1), "wall_s": round(m.wall_s, 1),
            "steps": end.get("step"), "test_accuracy": test.get("accuracy")}


def measure(args: argparse.Namespace, work: Path) -> int:
    model = tiny_model(work / "model")
    results = []
    with memory_cgroup(args.cap_mb) as procs:
        for factor in args.sizes:
            corpus = work / f"corpus-{factor}x.csv"
            t0 = time.perf_counter()
            rows = write_corpus(corpus, factor * args.cap_mb * 2**20 / 1e6)
            print(f"corpus {factor}x: {rows} rows, {corpus.stat().st_size / 1e6:.0f} MB "
                  f"({time.perf_counter() - t0:.0f}s)", file=sys.stderr)
            results.append({"factor": factor, "rows": rows, **run_one(f"stream-{factor}x", work, model, corpus,
                            streaming=True, steps=args.steps, threads=args.threads, procs=procs)})
            if factor == args.sizes[0]:
                results.append({"factor": factor, "rows": rows, **run_one(f"memory-{factor}x", work, model, corpus,
                                streaming=False, steps=args.steps, threads=args.threads, procs=procs)})
            corpus.unlink()
    rows = [[r["run"], f"{r['corpus_mb']:.0f}", str(r["exit"]), f"{r['peak_rss_mb']:.0f}", f"{r['wall_s']:.0f}",
             str(r["test_accuracy"])] for r in results]
    print(f"memory cap {args.cap_mb} MB ({'enforced by a cgroup' if procs else 'not enforced'}), "
          f"{args.steps} steps each")
    print(format_table(["run", "corpus MB", "exit", "peak RSS MB", "wall s", "test accuracy"], rows))
    if args.json:
        write_results(args.json, {"benchmark": "bench_streaming", "cap_mb": args.cap_mb,
                                         "cap_enforced": procs is not None, "steps": args.steps,
                                         "results": results})
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cap-mb", type=int, default=1024, help="the memory cap; corpora are multiples of it")
    p.add_argument("--sizes", type=float, nargs="+", default=[1, 2, 5], help="corpus sizes as multiples of the cap")
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--threads", type=int, default=default_threads())
    p.add_argument("--workdir", type=Path)
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    return in_workdir(args.workdir, "lft-stream-", lambda work: measure(args, work))


if __name__ == "__main__":
    sys.exit(main())
