"""Tokenised data cached on disk, keyed by the examples' content, the tokenizer files and the task settings.

A second run over the same data re-tokenises nothing. Arrays are stored with `np.savez` and read with
`allow_pickle=False`, so a cache file can never execute code.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

import numpy as np

from lftrain.data.examples import Examples

log = logging.getLogger("lftrain")
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt",
                    "vocab.json", "merges.txt", "added_tokens.json", "spiece.model", "tokenizer.model",
                    "sentencepiece.bpe.model", "chat_template.jinja")


def cache_root(configured: str | None) -> Path:
    return Path(configured or os.environ.get("LFTRAIN_CACHE") or Path.home() / ".cache" / "lftrain").expanduser()


def tokenizer_hash(model_dir: Path) -> str:
    h = hashlib.sha256()
    for name in _TOKENIZER_FILES:
        f = model_dir / name
        if f.is_file():
            h.update(name.encode())
            h.update(hashlib.sha256(f.read_bytes()).digest())
    return h.hexdigest()


def examples_hash(ex: Examples) -> str:
    h = hashlib.sha256()
    for key in sorted(ex.fields):
        h.update(key.encode())
        h.update(json.dumps(ex.fields[key], ensure_ascii=False).encode())
    return h.hexdigest()


def encode_cached(task, tokenizer, ex: Examples, *, model_dir: Path, cache_dir: str | None,
                  stats: dict | None = None) -> dict[str, np.ndarray]:
    """`task.encode(tokenizer, ex)`, memoised on disk (unless the task sets `cacheable = False`)."""
    if not task.cacheable:
        return task.encode(tokenizer, ex)
    key_src = json.dumps({"task": task.config.model_dump(mode="json"), "labels": getattr(task.labels, "names", None),
                          "tokenizer": tokenizer_hash(model_dir), "data": examples_hash(ex), "version": 1},
                         sort_keys=True)
    key = hashlib.sha256(key_src.encode()).hexdigest()[:32]
    path = cache_root(cache_dir) / "tokens" / f"{key}.npz"
    if path.is_file():
        try:
            with np.load(path, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
            if stats is not None:
                stats["cache_hits"] = stats.get("cache_hits", 0) + 1
            log.debug("tokenised %s from cache %s", ex.name, path)
            return arrays
        except (OSError, ValueError) as exc:  # a truncated or foreign file: rebuild it
            log.warning("ignoring unreadable token cache %s (%s)", path, exc)
    arrays = task.encode(tokenizer, ex)
    if stats is not None:
        stats["cache_misses"] = stats.get("cache_misses", 0) + 1
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, path)  # atomic: a concurrent or killed writer never leaves a half file under the key
    return arrays
