"""Small CPU kernels in C, compiled on first use with the machine's C compiler and called through ctypes.

Some element-wise work costs more in eager PyTorch than its arithmetic: dropout is a random draw, a scale
and a zero-fill, several passes and operator calls (docs/performance.md), and attention's softmax is four
operators over short rows. A loop in C does each in one vectorised pass (dropout.c, attention.c). The
kernels need no PyTorch headers, so they build in well under a second with any `cc`; the shared library is
cached under `$LFTRAIN_CACHE/kernels` (default `~/.cache/lftrain/kernels`), keyed by the source, the compiler,
its flags and the CPU's features (it is built with `-march=native`).

Without a compiler, when the build fails, or with `LFT_KERNELS=off` in the environment, `load()` returns
None and callers keep their PyTorch path; `describe()` says which ran, for the log and the manifest. The
two paths draw different random streams, so a run is reproduced on the same path.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
from functools import cache
from pathlib import Path

log = logging.getLogger(__name__)

SOURCES = ("dropout.c", "attention.c", "layout.c")
HEADERS = ("common.h",)
FLAGS = ("-O3", "-march=native", "-fPIC", "-shared", "-fopenmp")
FALLBACK_FLAGS = ("-O3", "-fPIC", "-shared")  # compilers without OpenMP or -march=native (Apple clang)

_why_not: list[str] = []  # why the last load() returned None


def _source_dir() -> Path:
    return Path(__file__).resolve().parent


def _compiler() -> str | None:
    return os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")


def _cpu_features() -> str:
    """What -march=native depends on: a library built on one CPU must not be loaded on another."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return line
    except OSError:
        pass
    return f"{platform.machine()} {platform.processor()}"


def _cache_dir() -> Path:
    from lftrain.data.token_cache import cache_root

    return cache_root(None) / "kernels"


def _build(cc: str, target: Path) -> None:
    """Compile into a temporary file beside `target` and rename it into place (processes may race)."""
    sources = [str(_source_dir() / s) for s in SOURCES]
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, suffix=".so.tmp")
    os.close(fd)
    try:
        errors = ""
        for flags in (FLAGS, FALLBACK_FLAGS):
            proc = subprocess.run([cc, *flags, "-o", tmp, *sources], capture_output=True, text=True, timeout=120)
            if proc.returncode == 0:
                os.replace(tmp, target)
                return
            errors = proc.stderr.strip()
        raise RuntimeError(f"{cc} failed: {errors[-500:]}")
    finally:
        Path(tmp).unlink(missing_ok=True)


def _signatures() -> dict[str, list]:
    i64, u32, f32, ptr = ctypes.c_int64, ctypes.c_uint32, ctypes.c_float, ctypes.c_void_p
    drop = [i64, u32, u32, u32, f32]  # n, keys, threshold, scale
    return {
        "lft_dropout_bf16": [ptr, ptr, *drop],
        "lft_dropout_float": [ptr, ptr, *drop],
        "lft_dropout_add_bf16": [ptr, ptr, ptr, *drop],
        "lft_dropout_add_grad_bf16": [ptr, ptr, *drop],
        "lft_rows_to_heads": [ptr, ptr, ptr, i64, i64, i64, i64],
        "lft_heads_to_rows": [ptr, ptr, ptr, i64, i64, i64, i64],
        # built only for AVX-512 (lft_attn_available() says whether)
        "lft_attn_probs_bf16": [ptr, ptr, ptr, ptr, i64, i64, i64, f32, u32, u32, u32, f32],
        "lft_attn_probs_grad_bf16": [ptr, ptr, ptr, ptr, i64, i64, f32, f32],
    }


def _declare(lib: ctypes.CDLL) -> ctypes.CDLL:
    lib.lft_attn_available.argtypes, lib.lft_attn_available.restype = [], ctypes.c_int
    for name, argtypes in _signatures().items():
        if hasattr(lib, name):
            fn = getattr(lib, name)
            fn.argtypes, fn.restype = argtypes, None
    return lib


@cache
def load() -> ctypes.CDLL | None:
    """The compiled kernels, or None (callers then use PyTorch); built once per machine, then cached."""
    _why_not.clear()
    if os.environ.get("LFT_KERNELS", "auto").lower() in ("0", "off", "false", "no"):
        _why_not.append("LFT_KERNELS=off")
        return None
    cc = _compiler()
    if cc is None:
        _why_not.append("no C compiler (cc, gcc or clang; or set CC)")
        return None
    try:
        version = subprocess.run([cc, "--version"], capture_output=True, text=True, timeout=30).stdout
        digest = hashlib.sha256()
        for part in (*[(_source_dir() / s).read_bytes() for s in SOURCES + HEADERS], cc.encode(), version.encode(),
                     " ".join(FLAGS + FALLBACK_FLAGS).encode(), _cpu_features().encode()):
            digest.update(part)
            digest.update(b"\0")
        target = _cache_dir() / f"lftrain-kernels-{digest.hexdigest()[:20]}.so"
        if not target.is_file():
            _build(cc, target)
        import torch  # noqa: F401  (loaded first, its OpenMP runtime is the one the library binds to: one thread pool)

        return _declare(ctypes.CDLL(str(target)))
    except (OSError, RuntimeError, subprocess.SubprocessError) as exc:
        _why_not.append(str(exc))
        log.warning("compiled CPU kernels unavailable, using PyTorch's operators instead: %s", exc)
        return None


def describe() -> str:
    """'compiled' or 'torch (<why>)', for the log and the manifest."""
    return "compiled" if load() is not None else f"torch ({'; '.join(_why_not) or 'not loaded'})"
