"""A base model loaded in a low-precision dtype or quantized by bitsandbytes (QLoRA), and what such a run must
keep: fp32 master copies of what trains, the loading written beside the adapter, a dequantized base to merge into.

bitsandbytes was measured against torchao's NF4 tensor (the other well-kept NF4 on the CPU) on this project's
CPU: one 2048→8192 layer's forward and input-gradient at 512 tokens took 228 ms with bitsandbytes, 432 ms with
torchao and 204 ms unquantized (fp32; bf16 114 / 332 / 83 ms); both store 4.1–4.2 bits per weight. bitsandbytes is
also the CUDA path, and peft adapts its layers natively (docs/large-models.md).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import nn

LOADING_FILE = "base_loading.json"  # beside an adapter: how its base was loaded when it trained


def is_quantized(model: nn.Module) -> bool:
    return any(type(m).__name__ in ("Linear4bit", "Linear8bitLt") for m in model.modules())


def master_weights(model: nn.Module) -> int:
    """fp32 copies of every trained parameter stored in a lower precision (the heads peft copies from a bf16 base,
    adapters made beside bf16 layers): updates smaller than bf16's resolution would otherwise be lost. Returns
    how many were cast."""
    n = 0
    for p in model.parameters():
        if p.requires_grad and p.is_floating_point() and p.dtype != torch.float32:
            p.data = p.data.float()
            n += 1
    return n


def _checkpoint_maps() -> list[tuple[int, int]]:
    """Address ranges of this process's private maps of .safetensors files (how transformers reads them)."""
    ranges = []
    with open("/proc/self/maps") as maps:
        for line in maps:
            parts = line.split()
            if len(parts) >= 6 and parts[-1].endswith(".safetensors") and parts[1].endswith("p"):
                start, end = (int(x, 16) for x in parts[0].split("-"))
                ranges.append((start, end))
    return ranges


def _madvise():
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    return libc.madvise


@contextmanager
def paging_out_checkpoint(source: Any, every_s: float = 0.1) -> Iterator[None]:
    """While a converted checkpoint loads, hand its read pages back to the kernel every `every_s`.

    Each weight is read once and converted into a copy, but the file's map keeps every page read resident until
    the load ends: a 1.1B bf16 checkpoint loaded as NF4 peaked at 3.0 GB, for 0.7 GB of weights. MADV_PAGEOUT
    reclaims what the kernel would under memory pressure and never loses data (a page written to is kept), so it
    is safe beside tensors that still read the map; a later read faults the page back in."""
    import sys
    import threading

    from lftrain.models.loading import stored_dtype

    converted = source is not None and (source.quantize or stored_dtype(source.config) not in (None, source.dtype))
    if not (converted and sys.platform.startswith("linux")):
        yield
        return
    madvise, stop = _madvise(), threading.Event()

    def page_out() -> None:
        while not stop.wait(every_s):
            for start, end in _checkpoint_maps():
                if madvise(start, end - start, 21) != 0:  # MADV_PAGEOUT (Linux 5.4+); older kernels: stop
                    return

    thread = threading.Thread(target=page_out, name="lftrain-page-out", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def release_checkpoint_pages(model: nn.Module) -> int:
    """Drop the resident pages of checkpoint mappings that no tensor of `model` lives in; returns MB dropped.

    transformers reads safetensors through a memory map. When the weights are converted on load (quantized, or
    cast to another dtype) the model holds copies, yet the map of the file stays open with every page it read
    resident, and those pages count in the process's memory: a 1.1B bf16 checkpoint quantized to NF4 measured
    2.0 GB of them beside its 0.6 GB of weights (docs/large-models.md). A map no tensor of the model lives in is
    a private one nobody writes to, so its pages are copies of the file: dropping them loses nothing."""
    import sys

    if not sys.platform.startswith("linux"):
        return 0
    ranges = _checkpoint_maps()
    storages = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes()
                for t in [*model.parameters(), *model.buffers()]}
    madvise = _madvise()
    page, released = 4096, 0
    for start, end in ranges:
        # the model's own zero-copy weights (stored as loaded) stay; the gaps between them go
        kept = sorted((p, p + n) for p, n in storages.items() if start <= p < end)
        at = start
        for lo, hi in [*kept, (end, end)]:
            gap_start, gap_end = -(-at // page) * page, lo // page * page
            if gap_end > gap_start and madvise(gap_start, gap_end - gap_start, 4) == 0:  # MADV_DONTNEED
                released += gap_end - gap_start
            at = max(at, hi)
    return released >> 20


def write_loading(out: Path, source) -> None:
    """Record a non-default loading beside an adapter, so inference loads the same base it trained on."""
    if source is None or (source.dtype == "fp32" and not source.quantize):
        return
    (out / LOADING_FILE).write_text(json.dumps({"dtype": source.dtype, "quantize": source.quantize,
                                                "double_quant": source.double_quant, "compute": source.compute}))


def read_loading(model_dir: Path, source):
    """The base source loaded as the adapter in `model_dir` trained on (unchanged when nothing was recorded).
    A quantized base needs bitsandbytes' kernels for the device: on a machine without it, say so."""
    from dataclasses import replace

    f = model_dir / LOADING_FILE
    if not f.is_file():
        return source
    saved = json.loads(f.read_text())
    return replace(source, dtype=saved["dtype"], quantize=saved.get("quantize"),
                   double_quant=saved.get("double_quant", True), compute=saved.get("compute", "fp32"))


def dequantize(model: nn.Module) -> nn.Module:
    """Replace a bitsandbytes-quantized base's Linear layers by plain ones holding the dequantized weights — the
    exact values the adapter was trained against — so a merged model computes what the trained one did."""
    if not is_quantized(model):
        return model
    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)
    hf: Any = model  # a transformers model: its own dequantize, for the quantizer that loaded it
    return hf.dequantize(dtype=dtype)
