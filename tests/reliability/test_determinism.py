"""Scenario 6: two fresh runs with the same seed and thread count give bitwise-equal weights, and the manifest
records what that depends on."""

from __future__ import annotations

import json

import torch
from safetensors.torch import load_file

from tests.reliability.conftest import assert_same_run


def test_same_seed_same_threads_bitwise_equal(lab):
    ref = lab.reference()
    assert lab.run("again").code == 0
    assert_same_run(ref, lab.root / "again")
    det = json.loads((ref / "manifest.json").read_text())["determinism"]
    for key in ("seed", "torch_threads", "precision", "cpu", "torch", "num_workers", "note"):
        assert key in det
    assert det["torch_threads"] == 1 and det["precision"] == "fp32"


def test_two_threads_bitwise_equal_and_difference_to_one_thread(lab):
    a = lab.reference(threads=2)
    assert lab.run("again-2t", threads=2).code == 0
    assert_same_run(a, lab.root / "again-2t")
    one, two = load_file(lab.reference() / "model" / "model.safetensors"), load_file(a / "model" / "model.safetensors")
    diff = max((one[k] - two[k]).abs().max().item() for k in one)
    scale = max(one[k].abs().max().item() for k in one)
    differing = sum(int((one[k] != two[k]).sum()) for k in one)
    print(f"1 vs 2 threads: max |weight difference| {diff:.3g} (largest weight {scale:.3g}); {differing} of "
          f"{sum(v.numel() for v in one.values())} weights differ; bitwise equal: {diff == 0}")
    assert torch.isfinite(torch.tensor(diff))
