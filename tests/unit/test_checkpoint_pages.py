"""A converted checkpoint's file pages are handed back to the kernel (models/quantized.py), and the weights read
from it stay exact. Resident pages are read from /proc/self/smaps, the kernel's own count for each map."""

import sys
import time
from types import SimpleNamespace

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from lftrain.models.quantized import paging_out_checkpoint, release_checkpoint_pages

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="page maps are Linux's")
N = 4 * 2**20  # 16 MB of fp32 a tensor


def resident_mb(path) -> float:
    """MB of `path`'s pages mapped and resident in this process."""
    total, inside = 0, False
    for line in open("/proc/self/smaps"):
        first = line.split()[0]
        if "-" in first and not first.endswith(":"):
            inside = line.rstrip().endswith(str(path))
        elif inside and first == "Rss:":
            total += int(line.split()[1])
    return total / 1024


@pytest.fixture
def checkpoint(tmp_path):
    file = tmp_path / "model.safetensors"
    save_file({"a": torch.arange(N, dtype=torch.float32), "b": -torch.arange(N, dtype=torch.float32)}, file)
    return file


def read_all(file):
    with safe_open(str(file), framework="pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    for t in tensors.values():
        t.sum()  # every page read
    return tensors


def test_pages_of_a_converted_load_are_paged_out_as_it_goes(checkpoint):
    tensors = read_all(checkpoint)
    if resident_mb(checkpoint) < 16:
        pytest.skip("safetensors copied the tensors instead of mapping the file")
    with paging_out_checkpoint(SimpleNamespace(quantize="nf4"), every_s=0.01):
        time.sleep(0.3)
        during = resident_mb(checkpoint)
    assert during < 4, f"{during:.1f} MB of the file still resident while loading"
    assert torch.equal(tensors["a"], torch.arange(N, dtype=torch.float32))  # faulted back in, unchanged
    assert torch.equal(tensors["b"], -torch.arange(N, dtype=torch.float32))


def test_a_load_without_conversion_keeps_its_pages(checkpoint):
    source = SimpleNamespace(quantize=None, dtype="fp32", config={"dtype": "float32"})
    read_all(checkpoint)
    tensors = read_all(checkpoint)  # noqa: F841  (kept alive: the model's weights are these pages)
    before = resident_mb(checkpoint)
    with paging_out_checkpoint(source, every_s=0.01):
        time.sleep(0.1)
    assert resident_mb(checkpoint) == pytest.approx(before, abs=1)


def test_release_drops_only_pages_no_model_tensor_lives_in(checkpoint):
    tensors = read_all(checkpoint)
    if resident_mb(checkpoint) < 16:
        pytest.skip("safetensors copied the tensors instead of mapping the file")
    model = nn.Module()
    model.register_buffer("a", tensors["a"])  # a zero-copy weight of the model: its pages stay
    assert release_checkpoint_pages(model) >= 16
    assert 15 <= resident_mb(checkpoint) <= 17
    assert torch.equal(tensors["b"], -torch.arange(N, dtype=torch.float32))
