"""The machine a run uses: its device, the numeric precision the hardware runs fast (and why), its threads."""

from __future__ import annotations

import contextlib
import functools
import os
from pathlib import Path

import torch


@functools.cache
def cpu_bf16_fast() -> str | None:
    """The CPU feature that makes bf16 matmuls fast here (AMX or AVX512-BF16), or None."""
    try:
        flags = Path("/proc/cpuinfo").read_text().split("flags", 2)[1].split("\n", 1)[0].split()
    except (OSError, IndexError):
        return None
    for flag in ("amx_bf16", "avx512_bf16"):
        if flag in flags:
            return flag
    return None


def resolve_precision(setting: str, device: torch.device) -> tuple[str, str]:
    """(precision, reason). `auto`: bf16 on AMX/AVX512-BF16 CPUs and bf16-capable GPUs; fp16 (with a gradient
    scaler) on GPUs without bf16 (T4, V100); fp32 otherwise."""
    from lftrain.errors import InputError

    if device.type == "cuda" and setting in ("auto", "bf16") and not torch.cuda.is_bf16_supported():
        if setting == "bf16":
            raise InputError(f"train.precision: bf16, but {torch.cuda.get_device_name(device)} has no bf16 support; "
                             "use fp16 (or auto)")
        return "fp16", f"GPU {torch.cuda.get_device_name(device)} has no bf16: fp16 with a gradient scaler"
    if setting != "auto":
        return setting, "set in the recipe"
    if device.type == "cuda":
        return "bf16", f"GPU {torch.cuda.get_device_name(device)} supports bf16"
    flag = cpu_bf16_fast()
    if flag:
        return "bf16", f"CPU has {flag}"
    return "fp32", "CPU has neither amx_bf16 nor avx512_bf16 (bf16 would be emulated and slower)"


def autocast(precision: str, device: torch.device):
    if precision in ("bf16", "fp16"):
        return torch.autocast(device.type, dtype=torch.bfloat16 if precision == "bf16" else torch.float16)
    return contextlib.nullcontext()


def grad_scaler(precision: str, device: torch.device) -> torch.amp.GradScaler | None:
    """fp16 gradients underflow without loss scaling: a scaler that grows the scale while steps stay finite and
    halves it (skipping that step) on an overflow. None for bf16 and fp32, which need none."""
    return torch.amp.GradScaler(device.type) if precision == "fp16" else None


def pick_device(setting: str = "auto") -> torch.device:
    """`train.device`: `auto` (the first GPU when torch sees one, else the CPU), `cpu`, `cuda` or `cuda:N`."""
    from lftrain.errors import InputError

    if setting == "auto":
        return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
    device = torch.device(setting)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            built = f"built for CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
            raise InputError(f"train.device: {setting}, but torch sees no GPU (torch {torch.__version__}, {built}); "
                             "install a CUDA build of torch on a machine with a GPU, or set train.device: cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise InputError(f"train.device: {setting}, but torch sees {torch.cuda.device_count()} GPU(s) "
                             f"(cuda:0 to cuda:{torch.cuda.device_count() - 1})")
    return device


def available_threads() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def set_threads(n: int | None) -> int:
    threads = n or available_threads()
    torch.set_num_threads(threads)
    return threads
