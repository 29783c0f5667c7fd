"""A distillation teacher: found and vetted before any model loads, run once over the transfer set, cached.

The teacher is a finished run (its `model/`, full or adapter) or a plain Hugging Face classifier directory.
Its outputs do not change while the student trains, so they are computed once — logits, and when hidden
states are matched the mean-pooled output of the chosen blocks — and kept on disk keyed by the teacher's
weights and the exact texts; a resumed run or a second student on the same data reads them back.
The teacher reads the raw texts with its *own* tokenizer, so teacher and student need not share a vocabulary.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from lftrain.data.examples import Examples
from lftrain.errors import InputError

log = logging.getLogger("lftrain")


@dataclass(frozen=True)
class TeacherRef:
    model_dir: Path  # a plain model directory or an adapter directory
    base_fallback: str | None  # the teacher run's model.path, for adapters whose recorded base moved
    labels: list[str]


def find_teacher(spec: str) -> TeacherRef:
    """Resolve `method.teacher` (a run directory, its model/, a model directory or a Hub id `org/name[@revision]`)
    and read its label names."""
    from lftrain import hub
    from lftrain.models.trained import ADAPTER_CONFIG, LABELS, is_adapter_dir

    path = hub.snapshot(spec, key="method.teacher") if hub.is_hub_id(spec) else Path(spec).expanduser()
    if not path.exists():
        raise InputError(f"method.teacher: {path} does not exist (give a finished run directory or a model directory)")
    run_dir = path if (path / "recipe.yaml").is_file() else path.parent if (path.parent / "recipe.yaml").is_file() \
        else None
    fallback = None
    if run_dir is not None:
        status = _run_status(run_dir)
        if status != "finished":
            raise InputError(f"method.teacher: {run_dir} is a run that has not finished (status: {status}); "
                             "finish training the teacher first")
        model_dir = run_dir / "model"
        import yaml

        # the run's resolved recipe, written by lftrain: only where its base model was is needed
        fallback = (yaml.safe_load((run_dir / "recipe.yaml").read_text()) or {}).get("model", {}).get("path")
    else:
        model_dir = path
    if is_adapter_dir(model_dir):
        labels_file = model_dir / LABELS
        id2label = json.loads(labels_file.read_text())["id2label"] if labels_file.is_file() else {}
    elif (model_dir / "config.json").is_file():
        id2label = json.loads((model_dir / "config.json").read_text()).get("id2label") or {}
    else:
        raise InputError(f"method.teacher: {model_dir} holds no model (no config.json or {ADAPTER_CONFIG})")
    labels = [id2label[str(i)] for i in range(len(id2label))]
    return TeacherRef(model_dir, fallback, labels)


def _run_status(run_dir: Path) -> str:
    f = run_dir / "run.json"
    try:
        return json.loads(f.read_text()).get("status", "unknown") if f.is_file() else "unknown"
    except json.JSONDecodeError:
        return "unreadable run.json"


def check_labels(ref: TeacherRef, labels: list[str]) -> None:
    if ref.labels != list(labels):
        raise InputError(f"method.teacher: the teacher's classes {ref.labels} differ from this recipe's "
                         f"{list(labels)} (same names in the same order are needed; set task.labels)")


def _cache_key(ref: TeacherRef, texts: list[Examples], task_cfg: dict, layers: list[int], precision: str) -> str:
    from lftrain.data.token_cache import examples_hash
    from lftrain.files import sha256_file

    weights = sorted(p for p in ref.model_dir.iterdir() if p.suffix in (".safetensors", ".json"))
    h = hashlib.sha256(json.dumps({"task": task_cfg, "layers": layers, "precision": precision, "version": 1},
                                  sort_keys=True).encode())
    for p in weights:
        h.update(p.name.encode())
        h.update(sha256_file(p, cached=True).encode())
    for ex in texts:
        h.update(examples_hash(ex).encode())
    return h.hexdigest()[:32]


def teacher_outputs(ref: TeacherRef, recipe, parts: list[Examples], *, layers: list[int], precision: str,
                    device: torch.device, cache_dir: str | None, stats: dict | None = None) -> dict[str, np.ndarray]:
    """{"logits": (N, C), ["hidden": (N, len(layers), H)]} for the rows of `parts`, concatenated in order.

    `layers` are 0-based block indices whose mean-pooled outputs are returned (empty: logits only).
    Read from the on-disk cache when the teacher's weights and the texts are unchanged."""
    from lftrain.data.token_cache import cache_root

    key = _cache_key(ref, parts, recipe.task.model_dump(mode="json"), layers, precision)
    path = cache_root(cache_dir) / "teacher" / f"{key}.npz"
    if path.is_file():
        try:
            with np.load(path, allow_pickle=False) as z:
                out = {k: z[k] for k in z.files}
            log.info("teacher outputs read from cache %s", path)
            if stats is not None:
                stats["teacher_cache"] = "hit"
            return out
        except (OSError, ValueError) as exc:
            log.warning("ignoring unreadable teacher cache %s (%s)", path, exc)
    t0 = time.perf_counter()
    out = _compute(ref, recipe, parts, layers=layers, precision=precision, device=device)
    log.info("teacher outputs for %d rows computed in %.1fs (cached at %s)", len(out["logits"]),
             time.perf_counter() - t0, path)
    if stats is not None:
        stats["teacher_cache"] = "miss"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}.npz")
    np.savez(tmp, **out)
    os.replace(tmp, path)
    return out


def _compute(ref: TeacherRef, recipe, parts: list[Examples], *, layers: list[int], precision: str,
             device: torch.device) -> dict[str, np.ndarray]:
    from lftrain.models.trained import load_trained_model
    from lftrain.tasks.base import build_task

    task = build_task(recipe.task)  # a separate instance: loading sets its labels from the teacher
    trained = load_trained_model(ref.model_dir, task, base_fallback=ref.base_fallback)
    model = trained.model.to(device).eval()
    tok = trained.tokenizer
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    logits, hidden = [], []
    for ex in parts:
        encoded = task.encode(tok, ex)
        lg, hd = run_teacher(model, task, encoded, layers=layers, batch_size=recipe.train.eval_batch_size,
                             precision=precision, device=device, pad_id=pad)
        logits.append(lg)
        hidden.append(hd)
    del model, trained
    out = {"logits": np.concatenate(logits)}
    if layers:
        out["hidden"] = np.concatenate(hidden)
    return out


@torch.no_grad()
def run_teacher(model: torch.nn.Module, task, encoded: dict[str, np.ndarray], *, layers: list[int], batch_size: int,
                precision: str, device: torch.device, pad_id: int) -> tuple[np.ndarray, np.ndarray | None]:
    """Logits (and pooled block outputs) for every example, in input order (batches formed longest-first)."""
    from lftrain.models.pooled import mean_pool  # tokenizer-independent: teacher and student vocabularies may differ
    from lftrain.models.precision import autocast

    lengths = task.lengths(encoded)
    order = np.argsort(-lengths, kind="stable")
    n = len(order)
    logits: np.ndarray | None = None
    hidden: np.ndarray | None = None
    for start in range(0, n, batch_size):
        idx = order[start:start + batch_size]
        batch = {k: v.to(device) for k, v in task.model_inputs(task.collate(encoded, idx, pad_id)).items()}
        with autocast(precision, device):
            out = model(**batch, output_hidden_states=bool(layers))
        lg = out.logits.float().cpu().numpy()
        if logits is None:
            logits = np.empty((n, lg.shape[-1]), dtype=np.float32)
        logits[idx] = lg
        if layers:
            pooled = torch.stack([mean_pool(out.hidden_states[i + 1].float(), batch["attention_mask"])
                                  for i in layers], 1).cpu().numpy()
            if hidden is None:
                hidden = np.empty((n, len(layers), pooled.shape[-1]), dtype=np.float32)
            hidden[idx] = pooled
    return (logits if logits is not None else np.empty((0, 0), np.float32)), hidden
