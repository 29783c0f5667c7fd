"""The speed seam (lftrain.accel): what `auto` installs, what `off` leaves alone, what attention `auto` means."""

from __future__ import annotations

import pytest
import torch

from lftrain import accel
from lftrain.accel.dropout import ATTENTION_NAME, FastDropout
from tests.unit.test_training import _setup

CPU, CUDA = torch.device("cpu"), torch.device("cuda:0")  # a device string: no GPU needed to resolve the choice


@pytest.mark.parametrize(("setting", "device", "level", "expected"), [
    ("auto", CUDA, "auto", "sdpa"),  # flash / memory-efficient kernels on GPUs
    ("auto", CUDA, "off", "sdpa"),
    ("auto", CPU, "auto", ATTENTION_NAME),  # measured faster than sdpa and eager on CPUs (docs/performance.md)
    ("auto", CPU, "off", "sdpa"),  # the plain model: transformers' own default
    ("eager", CPU, "auto", "eager"),  # an explicit choice is kept
    ("sdpa", CUDA, "auto", "sdpa"),
])
def test_what_attention_auto_resolves_to(setting, device, level, expected):
    assert accel.attention(setting, device, level) == expected


def _module_kinds(model) -> tuple[int, int, bool]:
    dropouts = [m for m in model.modules() if isinstance(m, torch.nn.Dropout)]
    own_forward = any("forward" in vars(m) for m in model.modules())
    return len(dropouts), sum(isinstance(m, FastDropout) for m in dropouts), own_forward


def test_off_installs_nothing(tiny_bert):
    _, _, _, _, model = _setup(tiny_bert)
    before = _module_kinds(model)
    hooks = accel.install(model, "off", accel.Run(CPU, "fp32"))
    assert _module_kinds(model) == before and before[1] == 0 and not before[2]
    assert hooks.cache is None and hooks.sparse is None and hooks.dropout == "torch"
    assert hooks.lines == ["accel: off (train.accel: off): torch's operators throughout"]


def test_auto_installs_what_applies_and_says_so(tiny_bert, monkeypatch):
    from lftrain.accel import sparse_grads

    monkeypatch.setattr(sparse_grads, "MIN_ROWS", 1)  # the tiny vocabulary is below the production threshold
    _, _, _, _, model = _setup(tiny_bert)
    hooks = accel.install(model, "auto", accel.Run(CPU, "fp32"))
    n, fast, own_forward = _module_kinds(model)
    assert n == fast > 0 and own_forward  # every dropout swapped; the last layer's first-token forward
    assert hooks.dropout == "gaps" and hooks.sparse is not None and hooks.cache is None  # nothing is frozen
    assert [line.split(" (")[0] for line in hooks.lines] == [
        "fast dropout: on", "first-token-only last layer: on", "sparse embedding gradients: on"]


def test_levers_that_do_not_apply_stay_off(tiny_bert):
    _, _, _, _, model = _setup(tiny_bert)
    hooks = accel.install(model, "auto", accel.Run(CUDA, "fp32", distributed=True))
    assert "fast dropout: off (torch's dropout is fused on GPUs and under train.compile)" in hooks.lines
    assert hooks.sparse is None and _module_kinds(model)[1] == 0  # DDP reduces dense gradients


def test_the_removed_keys_name_their_replacement(tmp_path):
    from lftrain.config import load_recipe
    from lftrain.errors import RecipeError

    with pytest.raises(RecipeError, match=r"unknown key 'train.fast_dropout': replaced by train.accel"):
        load_recipe(data={"model": {"path": "m"}, "data": {"train": "t.csv"}, "train": {"fast_dropout": False}})
    recipe = load_recipe(data={"model": {"path": "m"}, "data": {"train": "t.csv"}, "train": {"accel": False}})
    assert recipe.train.accel == "off"  # YAML reads a bare `off` as false
