"""Evaluation of generative (causal LM) tasks: loss and perplexity on response tokens, generation on held-out
prompts scored by exact match and chrF (sacrebleu), sample generations, the base model's scores on the same
prompts, and the forgetting check (`eval.retain`: perplexity on general text, base vs fine-tuned)."""

from __future__ import annotations

import contextlib
import logging
import math
import time
from typing import Any

import numpy as np
import torch

from lftrain.models.precision import autocast
from lftrain.progress import track

log = logging.getLogger("lftrain")


@torch.no_grad()
def lm_loss(model, encoded: dict[str, np.ndarray], collate, *, batch_size: int, precision: str,
            device) -> dict[str, float]:
    """Mean cross-entropy per loss-carrying token, its perplexity, and next-token accuracy on those tokens.
    `collate(encoded, indices)` builds a batch as the SFT task does (data/packing.py)."""
    from lftrain.data.packing import causal_model_inputs

    was_training = model.training
    model.eval()
    order = np.argsort(-np.diff(encoded["offsets"]), kind="stable")
    total, count, correct = 0.0, 0, 0
    starts = range(0, len(order), batch_size)
    for start in track(starts, len(starts), "language-model loss"):
        batch = collate(encoded, order[start:start + batch_size])
        batch = {k: v.to(device) for k, v in batch.items()}
        with autocast(precision, device):
            logits = model(**causal_model_inputs(batch)).logits.float()
        labels = batch["labels"][:, batch["keep"]]
        valid = labels != -100
        total += float(torch.nn.functional.cross_entropy(logits[valid], labels[valid], reduction="sum"))
        correct += int((logits[valid].argmax(-1) == labels[valid]).sum())
        count += int(valid.sum())
    model.train(was_training)
    loss = total / max(count, 1)
    return {"loss": loss, "perplexity": math.exp(min(loss, 50.0)), "token_accuracy": correct / max(count, 1),
            "tokens": float(count)}


@torch.no_grad()
def generate(model, tokenizer, prompts: list[str], *, max_new_tokens: int, batch_size: int, precision: str,
             device) -> list[str]:
    """Greedy continuations of already-templated prompts, in input order (batched longest-first, left-padded)."""
    from lftrain.data.chat import stop_token_ids

    was_training = model.training
    model.eval()
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    stops = stop_token_ids(tokenizer)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else stops[0]
    encoded = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    order = np.argsort([-len(e) for e in encoded], kind="stable")
    out: list[str] = [""] * len(prompts)
    try:
        starts = range(0, len(order), batch_size)
        for start in track(starts, len(starts), "generation"):
            idx = order[start:start + batch_size]
            batch = tokenizer.pad({"input_ids": [encoded[i] for i in idx]}, return_tensors="pt").to(device)
            with autocast(precision, device):
                seqs = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=stops,
                                      pad_token_id=pad)
            for i, seq in zip(idx, seqs[:, batch["input_ids"].shape[1]:]):
                out[int(i)] = tokenizer.decode(seq, skip_special_tokens=True).strip()
    finally:
        tokenizer.padding_side = side
        model.train(was_training)
    return out


def normalise(text: str) -> str:
    return " ".join(text.lower().split()).strip(" .!")


def text_scores(predictions: list[str], references: list[str]) -> dict[str, float]:
    """Exact match (case, surrounding whitespace and final punctuation ignored) and corpus chrF (sacrebleu)."""
    from sacrebleu.metrics import CHRF

    em = float(np.mean([normalise(p) == normalise(r) for p, r in zip(predictions, references)])) if references else 0.0
    chrf = CHRF().corpus_score(predictions, [references]).score if references else 0.0
    return {"exact_match": em, "chrf": float(chrf)}


def held_out_prompts(task, tokenizer, examples, limit: int) -> tuple[list[str], list[str]]:
    """(templated prompts, reference responses) of the first `limit` examples of a split."""
    from lftrain.data.chat import prompt_text

    convs = examples.fields["messages"][:limit]
    return [prompt_text(tokenizer, task.template, m) for m in convs], [m[-1]["content"] for m in convs]


@contextlib.contextmanager
def base_model(model, load_base):
    """The model before fine-tuning: the adapter switched off (no copy), or the base weights loaded beside."""
    from lftrain.models.trained import is_adapter_model

    if is_adapter_model(model):
        with model.disable_adapter():
            yield model
        return
    base = load_base()
    try:
        yield base
    finally:
        del base


def retain_texts(cfg) -> list[str]:
    """The general-text set of `eval.retain` (first `max_rows` non-empty values of its column)."""
    from lftrain.data.readers import is_missing, read_table
    from lftrain.errors import DataError

    table = read_table(cfg.data)
    if cfg.column not in table.columns:
        raise DataError(f"no column '{cfg.column}' (columns: {', '.join(table.columns)}); set eval.retain.column",
                        file=cfg.data)
    texts = [str(r[cfg.column]) for r in table.rows if not is_missing(r.get(cfg.column))]
    return texts[: cfg.max_rows]


@torch.no_grad()
def text_perplexity(model, tokenizer, texts: list[str], *, max_length: int, batch_size: int, precision: str,
                    device) -> float:
    """Perplexity over every token of plain texts (no template): how well the model still models general text."""
    from lftrain.data.packing import collate_causal

    ids = [tokenizer(t, add_special_tokens=False, truncation=True, max_length=max_length)["input_ids"] for t in texts]
    ids = [x for x in ids if len(x) > 1]
    lengths = np.asarray([len(x) for x in ids])
    enc = {"input_ids": np.concatenate(ids).astype(np.int32), "loss_mask": np.ones(lengths.sum(), dtype=np.int8),
           "offsets": np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)}
    pad = tokenizer.pad_token_id or 0
    return lm_loss(model, enc, lambda e, i: collate_causal(e, i, pad, pack_length=None), batch_size=batch_size,
                   precision=precision, device=device)["perplexity"]


def final_evaluation(task, out, extra=None) -> dict[str, dict[str, Any]]:
    """Per split in `eval.splits`: loss, perplexity, token accuracy, generation exact match / chrF, samples, and
    the base model's figures; plus `retain` (forgetting check) when the recipe sets `eval.retain`. Logged,
    printed, and written as evidence (`out`: evaluation.evidence.RunOutputs). `extra(split)`: a method's own
    figures for the split (preference metrics), merged in."""
    from lftrain.evaluation.evidence import write_metric_evidence

    results = _generative_results(task, out.model, out.tokenizer, out.encoded, out.data, out.recipe, out.load_base,
                                  out.precision, out.device)
    for split, res in results.items():
        if extra is not None and split != "retain":
            res.update(extra(split))
    for split, res in results.items():
        out.log_metrics({"event": "eval", "split": split, "step": out.step, "final": True, **res})
    print(format_report(results, f"final evaluation ({out.run_dir})"), flush=True)
    write_metric_evidence(out, {s: {k: v for k, v in r.items() if isinstance(v, (int, float))}
                                for s, r in results.items()})
    return results


def _generative_results(task, model, tokenizer, enc: dict, data, recipe, load_base, precision: str,
                        device) -> dict[str, dict[str, Any]]:
    """Per split in `eval.splits`: loss, perplexity, token accuracy, generation exact match / chrF, samples, and
    the base model's figures; plus `retain` (forgetting check) when the recipe sets `eval.retain`."""
    gcfg, bs = task.config.generation, recipe.train.eval_batch_size
    common = {"precision": precision, "device": device}
    pad = tokenizer.pad_token_id or 0
    collate = lambda e, i: task.collate(e, i, pad)  # noqa: E731
    results: dict[str, dict[str, Any]] = {}
    for split in recipe.eval.splits:
        if split not in enc:
            continue
        examples = getattr(data, split)
        res: dict[str, Any] = lm_loss(model, enc[split], collate, batch_size=bs, **common)
        n = min(gcfg.max_prompts, len(examples))
        if n:
            prompts, refs = held_out_prompts(task, tokenizer, examples, n)
            t0 = time.perf_counter()
            preds = generate(model, tokenizer, prompts, max_new_tokens=gcfg.max_new_tokens, batch_size=bs, **common)
            res.update(text_scores(preds, refs), generated=n, generation_seconds=time.perf_counter() - t0)
            res["samples"] = [{"prompt": examples.fields["messages"][i][-2]["content"], "reference": refs[i],
                               "generated": preds[i]} for i in range(min(gcfg.samples, n))]
            if gcfg.compare_base:
                with base_model(model, load_base) as base:
                    base_preds = generate(base, tokenizer, prompts, max_new_tokens=gcfg.max_new_tokens,
                                          batch_size=bs, **common)
                    base_loss = lm_loss(base, enc[split], collate, batch_size=bs, **common)
                res["base"] = {**text_scores(base_preds, refs), "loss": base_loss["loss"],
                               "perplexity": base_loss["perplexity"]}
                for i, s in enumerate(res["samples"]):
                    s["base_generated"] = base_preds[i]
        results[split] = res
    if recipe.eval.retain is not None:
        results["retain"] = retain_check(model, tokenizer, recipe.eval.retain, load_base, batch_size=bs, **common)
    return results


def retain_check(model, tokenizer, cfg, load_base, **kw) -> dict[str, Any]:
    texts = retain_texts(cfg)
    tuned = text_perplexity(model, tokenizer, texts, max_length=cfg.max_length, **kw)
    with base_model(model, load_base) as base:
        before = text_perplexity(base, tokenizer, texts, max_length=cfg.max_length, **kw)
    change = tuned / before - 1.0
    flagged = change > cfg.threshold
    if flagged:
        log.warning("forgetting: perplexity on %s rose %.1f%% (%.2f -> %.2f), above eval.retain.threshold %.0f%%",
                    cfg.data, 100 * change, before, tuned, 100 * cfg.threshold)
    return {"base_perplexity": before, "perplexity": tuned, "relative_change": change, "flagged": flagged,
            "threshold": cfg.threshold, "texts": len(texts)}


def format_report(results: dict[str, dict[str, Any]], title: str) -> str:
    """Plain-text summary printed at the end of a run."""
    lines = [title]
    for split, res in results.items():
        if split == "retain":
            lines.append(f"  forgetting check ({res['texts']} general texts): perplexity {res['base_perplexity']:.2f}"
                         f" (base) -> {res['perplexity']:.2f} ({100 * res['relative_change']:+.1f}%)"
                         + ("  FLAGGED: above eval.retain.threshold" if res["flagged"] else ""))
            continue
        lines.append(f"  {split}: loss {res['loss']:.4f}  perplexity {res['perplexity']:.3f}  token accuracy "
                     f"{res['token_accuracy']:.4f}")
        if "exact_match" in res:
            lines.append(f"  {split} generation ({res['generated']} prompts): exact match {res['exact_match']:.4f}  "
                         f"chrF {res['chrf']:.2f}")
        if "preference_accuracy" in res:
            lines.append(f"  {split} preference pairs ({res['pairs']}): chosen preferred "
                         f"{res['preference_accuracy']:.4f} (base {res['base_preference_accuracy']:.4f})"
                         + (f"  reward accuracy {res['reward_accuracy']:.4f}  margin {res['reward_margin']:.3f}"
                            if "reward_accuracy" in res else ""))
        if "base" in res:
            b = res["base"]
            lines.append(f"  base model on the same prompts: exact match {b['exact_match']:.4f}  chrF {b['chrf']:.2f}"
                         f"  loss {b['loss']:.4f}")
        for s in res.get("samples", []):
            lines.append(f"    prompt:    {s['prompt'][:100]!r}")
            lines.append(f"    reference: {s['reference'][:100]!r}")
            lines.append(f"    generated: {s['generated'][:100]!r}"
                         + (f"   (base: {s['base_generated'][:60]!r})" if "base_generated" in s else ""))
    return "\n".join(lines)
