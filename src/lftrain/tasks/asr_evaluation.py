"""Evaluation of speech recognition: teacher-forced loss, decoding (greedy and beam), WER/CER with intervals, the
real-time factor, and the base model's WER on the same clips (tasks/speech_recognition.py).

The real-time factor (RTF) is decoding time (encoder + decoder on precomputed log-mel features, in batches of
`train.eval_batch_size`) divided by the seconds of audio decoded: below 1 is faster than real time.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lftrain.evaluation.wer import ErrorCounts, error_counts, paired_wer_difference, scores
from lftrain.models.precision import autocast

log = logging.getLogger("lftrain")


@torch.no_grad()
def teacher_forced_loss(model, task, encoded: dict[str, np.ndarray], *, batch_size: int, precision: str, device,
                        pad_id: int) -> dict[str, float]:
    """Mean cross-entropy per label token (the training objective) and next-token accuracy on those tokens."""
    was_training = model.training
    model.eval()
    total, count, correct = 0.0, 0, 0
    rows = np.arange(len(encoded["seconds"]))
    for start in range(0, len(rows), batch_size):
        batch = task.collate(encoded, rows[start:start + batch_size], pad_id)
        batch = {k: v.to(device) for k, v in batch.items()}
        with autocast(precision, device):
            logits = model(**task.model_inputs(batch)).logits.float()
        labels = batch["labels"]
        valid = labels != -100
        total += float(torch.nn.functional.cross_entropy(logits[valid], labels[valid], reduction="sum"))
        correct += int((logits[valid].argmax(-1) == labels[valid]).sum())
        count += int(valid.sum())
    model.train(was_training)
    return {"loss": total / max(count, 1), "token_accuracy": correct / max(count, 1)}


@torch.no_grad()
def transcribe_encoded(model, processor, encoded: dict[str, np.ndarray], *, n: int, num_beams: int,
                       max_new_tokens: int, batch_size: int, precision: str, device) -> tuple[list[str], float]:
    """Transcripts of the first `n` encoded clips, in order, and the seconds decoding took."""
    was_training = model.training
    model.eval()
    out: list[str] = []
    seconds = 0.0
    for start in range(0, n, batch_size):
        feats = torch.from_numpy(np.ascontiguousarray(encoded["input_features"][start:min(n, start + batch_size)]))
        t0 = time.perf_counter()
        with autocast(precision, device):
            seqs = model.generate(input_features=feats.to(device), num_beams=num_beams, do_sample=False,
                                  max_new_tokens=max_new_tokens)
        seconds += time.perf_counter() - t0
        seqs = seqs.sequences if hasattr(seqs, "sequences") else seqs
        out.extend(processor.decode(s) for s in seqs)
    model.train(was_training)
    return out, seconds


def decode_and_score(model, task, processor, encoded: dict[str, np.ndarray], *, samples: int, level: float,
                     batch_size: int, precision: str, device, n: int | None = None) -> dict[str, Any]:
    """Greedy (and, when `decoding.num_beams` > 1, beam) WER/CER with intervals and real-time factor."""
    cfg = task.config
    n = n or min(len(encoded["seconds"]), cfg.decoding.max_utterances)
    refs = processor.references(encoded, n)
    audio = float(encoded["seconds"][:n].sum())
    common = {"n": n, "max_new_tokens": cfg.decoding.max_new_tokens, "batch_size": batch_size,
              "precision": precision, "device": device}
    hyps, secs = transcribe_encoded(model, processor, encoded, num_beams=1, **common)
    counts = error_counts(refs, hyps, cfg.normalizer)
    res: dict[str, Any] = {**scores(counts, samples=samples, level=level), "rtf": secs / max(audio, 1e-9),
                           "audio_seconds": audio, "references": refs, "transcripts": hyps, "_counts": counts}
    if cfg.decoding.num_beams > 1:
        beam, bsecs = transcribe_encoded(model, processor, encoded, num_beams=cfg.decoding.num_beams, **common)
        bcounts = error_counts(refs, beam, cfg.normalizer)
        res["beam"] = {**scores(bcounts, samples=samples, level=level), "rtf": bsecs / max(audio, 1e-9),
                       "num_beams": cfg.decoding.num_beams}
        res["beam_transcripts"] = beam
    return res


def final_evaluation(task, out) -> dict[str, dict[str, Any]]:
    """Per split of `eval.splits`: loss, greedy and beam WER/CER with intervals, RTF, the base model's WER (at the
    run's window and the model's own), the paired WER difference and relative reduction, samples. Logged, printed,
    written as evidence (evidence.json, evidence/SPLIT_transcripts.jsonl)."""
    from lftrain.evaluation.evidence import write_metric_evidence
    from lftrain.files import write_jsonl_atomic

    cfg, ecfg = task.config, out.recipe.eval
    bs, common = out.recipe.train.eval_batch_size, {"precision": out.precision, "device": out.device}
    processor = out.tokenizer
    results: dict[str, dict[str, Any]] = {}
    for split in ecfg.splits:
        if split not in out.encoded:
            continue
        enc = out.encoded[split]
        n = min(len(enc["seconds"]), cfg.decoding.max_utterances)
        res: dict[str, Any] = teacher_forced_loss(out.model, task, enc, batch_size=bs, pad_id=processor.pad_token_id,
                                                  **common)
        res.update(decode_and_score(out.model, task, processor, enc, samples=ecfg.bootstrap_samples,
                                    level=ecfg.confidence, batch_size=bs, n=n, **common))
        tuned: ErrorCounts = res.pop("_counts")
        rows = [{"row": i, "reference": r, "greedy": h} for i, (r, h) in enumerate(zip(res["references"],
                                                                                       res["transcripts"]))]
        for row, b in zip(rows, res.pop("beam_transcripts", [])):
            row["beam"] = b
        if cfg.decoding.compare_base and out.load_base is not None:
            res.update(_base_comparison(task, out, split, enc, n, tuned, rows, bs, common))
        res["samples"] = rows[: cfg.decoding.samples]
        res.pop("references")
        res.pop("transcripts")
        write_jsonl_atomic(Path(out.run_dir) / "evidence" / f"{split}_transcripts.jsonl", rows)
        results[split] = res
    for split, res in results.items():
        out.log_metrics({"event": "eval", "split": split, "step": out.step, "final": True, **res})
    print(format_report(results, f"final evaluation ({out.run_dir})"), flush=True)
    flat = {s: {k: v for k, v in r.items() if isinstance(v, (int, float))} for s, r in results.items()}
    extra = {s: {k: r[k] for k in ("beam", "base", "base_native") if k in r} for s, r in results.items()}
    write_metric_evidence(out, flat, extra=extra)
    return results


def _base_comparison(task, out, split: str, enc: dict, n: int, tuned: ErrorCounts, rows: list[dict], bs: int,
                     common: dict) -> dict[str, Any]:
    """The base model's greedy WER on the same clips (and at its own window), and the paired comparison."""
    from lftrain.evaluation.generation import base_model

    cfg, ecfg, processor = task.config, out.recipe.eval, out.tokenizer
    refs = processor.references(enc, n)
    kw = {"n": n, "num_beams": 1, "max_new_tokens": cfg.decoding.max_new_tokens, "batch_size": bs, **common}
    res: dict[str, Any] = {}
    with base_model(out.model, out.load_base) as base:
        hyps, secs = transcribe_encoded(base, processor, enc, **kw)
    counts = {"base": error_counts(refs, hyps, cfg.normalizer)}
    res["base"] = {**scores(counts["base"], samples=ecfg.bootstrap_samples, level=ecfg.confidence),
                   "rtf": secs / max(float(enc["seconds"][:n].sum()), 1e-9),
                   "window_seconds": processor.features.n_samples / processor.features.rate}
    for row, h in zip(rows, hyps):
        row["base"] = h
    native = _native_base(task, out, split, enc, n, bs, common)
    if native is not None:
        native_hyps, native_secs, window = native
        counts["base_native"] = error_counts(refs, native_hyps, cfg.normalizer)
        res["base_native"] = {**scores(counts["base_native"], samples=ecfg.bootstrap_samples, level=ecfg.confidence),
                              "rtf": native_secs / max(float(enc["seconds"][:n].sum()), 1e-9),
                              "window_seconds": window}
        for row, h in zip(rows, native_hyps):
            row["base_native"] = h
    best = min(counts, key=lambda k: counts[k].wer())  # compare with the better base: the gain is not flattered
    res.update(paired_wer_difference(counts[best], tuned, samples=max(ecfg.bootstrap_samples, 1),
                                     level=ecfg.confidence), base_reference=best, base_wer=counts[best].wer())
    return res


def _native_base(task, out, split: str, enc: dict, n: int, bs: int, common: dict):
    """(transcripts, seconds, window) of the untouched base model at its own window; None when the run's window is
    already the model's, or when asked not to."""
    from lftrain.models.loading import vet_model_dir
    from lftrain.tasks.speech_processor import SpeechProcessor, load_whisper

    cfg = task.config
    if not cfg.decoding.base_native_window or out.data is None or getattr(out.data, split, None) is None:
        return None
    source = vet_model_dir(out.recipe.model.path, allow_pickle=False, trust_remote_code=False,
                           revision=out.recipe.model.revision)
    native = SpeechProcessor.from_dir(Path(source.path), None, cfg.language)
    if native.features.n_samples <= out.tokenizer.features.n_samples:
        return None
    model = load_whisper(source).to(common["device"])
    native.configure_generation(model)
    examples = getattr(out.data, split).subset(enc["example_index"][:n])
    native_enc = task.encode(native, examples)
    hyps, secs = transcribe_encoded(model, native, native_enc, n=n, num_beams=1,
                                    max_new_tokens=cfg.decoding.max_new_tokens, batch_size=bs, **common)
    del model
    return hyps, secs, native.features.n_samples / native.features.rate


def _fmt(res: dict, key: str) -> str:
    if f"{key}_low" in res:
        return f"{res[key]:.4f} [{res[f'{key}_low']:.4f}, {res[f'{key}_high']:.4f}]"
    return f"{res[key]:.4f}"


def format_split(split: str, res: dict[str, Any]) -> list[str]:
    lines = []
    if "loss" in res:
        lines.append(f"  {split}: loss {res['loss']:.4f}  token accuracy {res['token_accuracy']:.4f}")
    lines.append(f"  {split} greedy: WER {_fmt(res, 'wer')}  CER {_fmt(res, 'cer')}  RTF {res['rtf']:.4f}  "
                 f"({int(res['n'])} clips, {int(res['words'])} words)")
    if "beam" in res:
        b = res["beam"]
        lines.append(f"  {split} beam {b['num_beams']}: WER {_fmt(b, 'wer')}  CER {_fmt(b, 'cer')}  RTF {b['rtf']:.4f}")
    for key in ("base", "base_native"):
        if key in res:
            b = res[key]
            lines.append(f"  base model ({b['window_seconds']:g} s window), greedy: WER {_fmt(b, 'wer')}  "
                         f"CER {_fmt(b, 'cer')}")
    if "relative_wer_reduction" in res:
        lines.append(f"  WER change vs {res['base_reference']}: {res['wer_diff']:+.4f} [{res['wer_diff_low']:+.4f}, "
                     f"{res['wer_diff_high']:+.4f}]  relative reduction {_fmt(res, 'relative_wer_reduction')}")
    for s in res.get("samples", []):
        lines.append(f"    reference: {s['reference'][:100]!r}")
        base = f"   (base: {s['base'][:60]!r})" if "base" in s else ""
        lines.append(f"    greedy:    {s['greedy'][:100]!r}{base}")
    return lines


def format_report(results: dict[str, dict[str, Any]], title: str) -> str:
    return "\n".join([title, *(line for split, res in results.items() for line in format_split(split, res))])
