"""What bitwise reproducibility of a run depends on, recorded in manifest.json."""

from __future__ import annotations

import os
import platform
from pathlib import Path


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def determinism_info(*, seed: int, threads: int, precision: str, device: str, num_workers: int) -> dict:
    import torch

    return {
        "seed": seed,
        "torch_threads": torch.get_num_threads(),
        "threads_requested": threads,
        "interop_threads": torch.get_num_interop_threads(),
        "precision": precision,
        "device": device,
        "cpu": _cpu_model(),
        "torch": torch.__version__,
        "mkldnn": torch.backends.mkldnn.is_available(),
        "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
        "num_workers": num_workers,
        "env": {k: os.environ[k] for k in sorted(os.environ)
                if k.startswith(("OMP_", "MKL_", "ONEDNN_", "DNNL_", "KMP_", "CUBLAS_", "PYTHONHASHSEED"))},
        "note": ("bitwise-equal weights need the same seed, thread count, precision, CPU/GPU model and package "
                 "versions; the data-loader worker count and interruptions (kill, SIGTERM, resume) do not matter. "
                 "Different thread counts change float summation order (see docs/reliability.md)."),
    }
