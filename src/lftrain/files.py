"""Writing files so that a reader (or a resumed run) never sees half of one: write a temporary file (or folder)
beside the target, then rename it into place (atomic on POSIX filesystems)."""

from __future__ import annotations

import functools
import hashlib
import json
import os
from pathlib import Path
from typing import Any


def write_text_atomic(path: str | Path, text: str) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def write_json_atomic(path: str | Path, data: Any) -> Path:
    return write_text_atomic(path, json.dumps(data, indent=1, default=str))


def write_jsonl_atomic(path: str | Path, rows: list[dict]) -> Path:
    return write_text_atomic(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def save_arrays(path: Path, **arrays) -> None:
    """Plain numpy arrays, compressed, written atomically."""
    import numpy as np

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.npz")
    np.savez_compressed(tmp, **arrays)
    tmp.replace(path)


def load_arrays(path: Path) -> dict:
    import numpy as np

    with np.load(path, allow_pickle=False) as z:  # plain arrays only: never unpickle
        return {k: z[k] for k in z.files}


def build_once(out: Path, marker: str, build) -> Path:
    """Build the folder `out` as `build(tmp)` under a temporary name, then write `marker` (the facts `build`
    returns) last and rename the folder into place: a kill or a concurrent build never leaves a half-written
    folder that looks finished (callers treat a folder without `marker` as unfinished)."""
    import logging
    import shutil
    import time

    t0 = time.perf_counter()
    tmp = out.with_name(f".{out.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    facts = build(tmp)
    (tmp / marker).write_text(json.dumps(facts, indent=1))
    if out.exists():  # an unfinished folder (no marker) from a killed run, or a concurrent winner
        shutil.rmtree(out, ignore_errors=True)
    try:
        os.replace(tmp, out)
    except OSError:  # another process renamed its copy first: theirs is complete, ours is redundant
        shutil.rmtree(tmp, ignore_errors=True)
    logging.getLogger("lftrain").info("converted in %.1fs", time.perf_counter() - t0)
    return out


def sha256_file(path: Path, *, cached: bool = False) -> str:
    """Hex sha256 of a file's bytes. `cached=True` (for input data and base-model files, which one run hashes
    for the manifest, the resume fingerprint and the data checks, and a tuning study once per trial) reuses the
    digest while the file's identity, size and mtime are unchanged; checksum *verification* never caches."""
    if cached:
        st = Path(path).stat()
        return _sha256_cached(str(Path(path).resolve()), st.st_ino, st.st_size, st.st_mtime_ns)
    return _sha256(path)


@functools.lru_cache(maxsize=4096)
def _sha256_cached(path: str, inode: int, size: int, mtime_ns: int) -> str:
    return _sha256(Path(path))


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
