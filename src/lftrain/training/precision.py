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
    """(precision, reason). `auto` -> bf16 on AMX/AVX512-BF16 CPUs and bf16-capable GPUs, else fp32."""
    if setting != "auto":
        return setting, "set in the recipe"
    if device.type == "cuda":
        if torch.cuda.is_bf16_supported():
            return "bf16", f"GPU {torch.cuda.get_device_name(device)} supports bf16"
        return "fp32", "GPU without bf16 support"
    flag = cpu_bf16_fast()
    if flag:
        return "bf16", f"CPU has {flag}"
    return "fp32", "CPU has neither amx_bf16 nor avx512_bf16 (bf16 would be emulated and slower)"


def autocast(precision: str, device: torch.device):
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def pick_device() -> torch.device:
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def available_threads() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def set_threads(n: int | None) -> int:
    threads = n or available_threads()
    torch.set_num_threads(threads)
    return threads
