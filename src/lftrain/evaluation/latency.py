"""Inference latency and throughput of a classification model (text: `measure_latency`; images, audio and other
encoded inputs: `measure_latency_encoded`) on this machine.

    from lftrain.evaluation.latency import measure_latency
    stats = measure_latency(model, tokenizer, texts)   # {"latency_p50_ms", "latency_p95_ms", "throughput_per_s", ...}

Kept quick on purpose (a few seconds): it runs in every training run. Absolute numbers depend on the
machine and on what else runs on it; compare figures taken side by side.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from lftrain.models.precision import autocast


def _inputs(tokenizer, texts: Sequence[str], pairs: Sequence[str] | None, max_length: int,
            device: torch.device) -> dict[str, torch.Tensor]:
    enc = tokenizer(list(texts), list(pairs) if pairs is not None else None, truncation=True,
                    max_length=max_length, padding=True, return_tensors="pt")
    return {k: v.to(device) for k, v in enc.items()}


@torch.no_grad()
def measure_latency(model: torch.nn.Module, tokenizer, texts: Sequence[str], *,
                    text_pairs: Sequence[str] | None = None, batch1_n: int = 50, throughput_batch: int = 32,
                    throughput_batches: int = 4, warmup: int = 3, max_length: int = 128, precision: str = "fp32",
                    device: torch.device | str | None = None, max_seconds: float = 10.0) -> dict[str, Any]:
    """Per-example latency at batch 1 and throughput at batch `throughput_batch`, timed on real texts.

    `model` is any Hugging Face (or peft-wrapped) sequence classifier, `tokenizer` its tokenizer, `texts`
    (and `text_pairs` for pair tasks) the inputs to time with — typically the test set; they are cycled if
    fewer than needed. Tokenisation is outside the timed region: we time the model, not the tokenizer.
    Latency: `batch1_n` single-example forward passes after `warmup` untimed ones. Throughput: up to
    `throughput_batches` batches of `throughput_batch` texts (padded to the batch's longest). `max_seconds`
    caps each phase so a big model cannot stall a run; the counts actually timed are returned.
    Returns {"latency_p50_ms", "latency_p95_ms", "throughput_per_s", "batch1_n", "throughput_batch",
    "throughput_examples", "threads", "precision", "device"}.
    """
    if not len(texts):
        raise ValueError("measure_latency needs at least one text")
    device = torch.device(device) if device is not None else next(model.parameters()).device
    was_training = model.training
    model.eval()

    def pick(i: int) -> int:
        return i % len(texts)

    def forward(idx: list[int]) -> None:
        pairs = [text_pairs[i] for i in idx] if text_pairs is not None else None
        inputs = _inputs(tokenizer, [texts[i] for i in idx], pairs, max_length, device)
        with autocast(precision, device):
            model(**inputs)

    try:
        for i in range(warmup):
            forward([pick(i)])
        times = []
        start = time.perf_counter()
        for i in range(batch1_n):
            pairs = [text_pairs[pick(i)]] if text_pairs is not None else None
            inputs = _inputs(tokenizer, [texts[pick(i)]], pairs, max_length, device)
            t0 = time.perf_counter()
            with autocast(precision, device):
                model(**inputs)
            times.append(time.perf_counter() - t0)
            if time.perf_counter() - start > max_seconds:
                break
        batches = [_inputs(tokenizer, [texts[pick(b * throughput_batch + j)] for j in range(throughput_batch)],
                           [text_pairs[pick(b * throughput_batch + j)] for j in range(throughput_batch)]
                           if text_pairs is not None else None, max_length, device)
                   for b in range(throughput_batches)]
        with autocast(precision, device):
            model(**batches[0])  # warm-up at the larger shape
        done, busy = 0, 0.0
        for inputs in batches:
            t0 = time.perf_counter()
            with autocast(precision, device):
                model(**inputs)
            busy += time.perf_counter() - t0
            done += throughput_batch
            if busy > max_seconds:
                break
    finally:
        model.train(was_training)
    return _summary(times, done, busy, throughput_batch, precision, device)


@torch.no_grad()
def measure_latency_encoded(model: torch.nn.Module, task, encoded: dict[str, np.ndarray], *, batch1_n: int = 50,
                            throughput_batch: int = 32, warmup: int = 3, precision: str = "fp32",
                            max_seconds: float = 10.0) -> dict[str, Any]:
    """The same measurement for inputs that are not text (images, audio): batches come from the task's own
    `collate` of already-encoded examples (decoding and resizing are outside the timed region, as tokenisation
    is above). Returns the same keys as `measure_latency`."""
    n = len(task.lengths(encoded))
    if not n:
        raise ValueError("measure_latency_encoded needs at least one example")
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()

    def inputs(idx: np.ndarray) -> dict[str, torch.Tensor]:
        return {k: v.to(device) for k, v in task.model_inputs(task.collate(encoded, idx, 0)).items()}

    def timed(batch: dict[str, torch.Tensor]) -> float:
        t0 = time.perf_counter()
        with autocast(precision, device):
            model(**batch)
        return time.perf_counter() - t0

    try:
        for i in range(warmup):
            timed(inputs(np.asarray([i % n])))
        times, start = [], time.perf_counter()
        for i in range(batch1_n):
            times.append(timed(inputs(np.asarray([i % n]))))
            if time.perf_counter() - start > max_seconds:
                break
        big = inputs(np.arange(throughput_batch) % n)
        timed(big)  # warm-up at the larger shape
        done, busy = 0, 0.0
        for _ in range(4):
            busy += timed(big)
            done += throughput_batch
            if busy > max_seconds:
                break
    finally:
        model.train(was_training)
    return _summary(times, done, busy, throughput_batch, precision, device)


def _summary(times: list[float], done: int, busy: float, throughput_batch: int, precision: str, device) -> dict:
    """The evidence's latency block: batch-1 percentiles (ms) and batched throughput, with the conditions."""
    ms = np.asarray(times) * 1000.0
    return {"latency_p50_ms": float(np.percentile(ms, 50)), "latency_p95_ms": float(np.percentile(ms, 95)),
            "throughput_per_s": float(done / busy) if busy > 0 else float("nan"), "batch1_n": len(times),
            "throughput_batch": throughput_batch, "throughput_examples": done, "threads": torch.get_num_threads(),
            "precision": precision, "device": str(device)}
