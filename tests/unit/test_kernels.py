"""The compiled CPU kernels (src/lftrain/kernels): build and cache, the dropout mask's distribution, and the
fused paths against the operators they replace."""

from __future__ import annotations

import math
import os
import subprocess
import sys

import pytest
import torch

from lftrain import kernels
from lftrain.kernels.attention import KernelAttentionProbs
from lftrain.kernels.dropout import KernelDropAdd, draw_keys, kernel_dropout
from lftrain.models import fast_dropout as fd

COMPILER = kernels._compiler() is not None
needs_kernels = pytest.mark.skipif(not COMPILER or kernels.load() is None, reason="no compiled kernels here")
needs_attention_kernel = pytest.mark.skipif(
    not COMPILER or kernels.load() is None or not kernels.load().lft_attn_available(),
    reason="the attention kernel is built only for CPUs with AVX-512")


def masks(n: int, p: float, calls: int) -> torch.Tensor:
    """`calls` keep masks of n elements (True = kept), each under fresh keys, as fast_dropout draws them."""
    ones = torch.ones(n)
    return torch.stack([kernel_dropout(ones, draw_keys(), p) != 0 for _ in range(calls)])


def test_the_kernels_build_where_there_is_a_compiler():
    # On a machine with cc the compiled path must load: a broken build would silently fall back otherwise.
    if COMPILER:
        assert kernels.load() is not None, kernels.describe()
        assert kernels.describe() == "compiled"
    else:
        assert kernels.describe().startswith("torch (no C compiler")


@needs_kernels
def test_the_build_is_cached_and_reused(tmp_path):
    code = ("from lftrain import kernels; import sys; lib = kernels.load(); "
            "sys.exit(0 if lib is not None else 3)")
    env = {**os.environ, "LFTRAIN_CACHE": str(tmp_path)}
    subprocess.run([sys.executable, "-c", code], env=env, check=True)
    (built,) = (tmp_path / "kernels").glob("*.so")
    stamp = built.stat().st_mtime_ns
    subprocess.run([sys.executable, "-c", code], env=env, check=True)  # a second process: no rebuild
    assert [p.name for p in (tmp_path / "kernels").iterdir()] == [built.name]
    assert built.stat().st_mtime_ns == stamp


def test_kernels_off_by_environment_and_without_compiler(monkeypatch, tmp_path):
    monkeypatch.setenv("LFTRAIN_CACHE", str(tmp_path))
    try:
        monkeypatch.setenv("LFT_KERNELS", "off")
        kernels.load.cache_clear()
        assert kernels.load() is None and kernels.describe() == "torch (LFT_KERNELS=off)"
        x = torch.ones(10_000)
        torch.manual_seed(0)
        y = fd.fast_dropout(x, 0.1)  # the PyTorch path still drops
        assert 0.05 < float((y == 0).float().mean()) < 0.15
        monkeypatch.setenv("LFT_KERNELS", "auto")
        monkeypatch.setattr(kernels, "_compiler", lambda: None)
        kernels.load.cache_clear()
        assert kernels.load() is None and "no C compiler" in kernels.describe()
        assert not list(tmp_path.glob("kernels/*.so"))
    finally:
        kernels.load.cache_clear()


def test_a_failed_build_falls_back_and_says_why(monkeypatch, tmp_path):
    monkeypatch.setenv("LFTRAIN_CACHE", str(tmp_path))
    fake = tmp_path / "cc"
    fake.write_text("#!/bin/sh\necho 'cc: error: no such thing' >&2\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setenv("CC", str(fake))
    try:
        kernels.load.cache_clear()
        assert kernels.load() is None
        assert "no such thing" in kernels.describe()
    finally:
        kernels.load.cache_clear()


@pytest.mark.skipif(not COMPILER, reason="no C compiler")
def test_the_fallback_flags_build_a_working_library_without_the_attention_kernel(monkeypatch, tmp_path):
    # Compilers without -march=native or OpenMP (Apple clang) get FALLBACK_FLAGS: the dropout kernels still
    # build (one thread), and attention.c builds only its probe, which says to keep torch's operators.
    import ctypes

    monkeypatch.setattr(kernels, "FLAGS", ("--no-such-flag",))  # the first attempt fails, as there
    target = tmp_path / "fallback.so"
    kernels._build(kernels._compiler(), target)
    lib = kernels._declare(ctypes.CDLL(str(target)))
    assert lib.lft_attn_available() == 0
    x = torch.ones(1000)
    y = torch.empty_like(x)
    lib.lft_dropout_float(x.data_ptr(), y.data_ptr(), x.numel(), 1, 2, 2**30, 4 / 3)  # p = 1/4
    assert 0.18 < float((y == 0).float().mean()) < 0.32 and torch.equal(y.unique(), torch.tensor([0.0, 4 / 3]))


@needs_kernels
def test_kernel_mask_drops_each_element_independently_with_rate_p():
    torch.manual_seed(0)
    n, p, trials = 6, 0.2, 20_000
    dropped = ~masks(n, p, trials)
    rate = dropped.double().mean(0)  # sd of each rate: sqrt(0.16 / 20000) = 0.0028
    assert torch.all((rate - p).abs() < 0.012), rate
    both = (dropped[:, :-1] & dropped[:, 1:]).double().mean()  # neighbours independent: p^2
    assert abs(float(both) - p * p) < 0.006
    counts = dropped.sum(1).bincount(minlength=n + 1).double() / trials  # number dropped: binomial(n, p)
    expected = torch.tensor([math.comb(n, k) * p**k * (1 - p) ** (n - k) for k in range(n + 1)], dtype=torch.double)
    assert torch.all((counts - expected).abs() < 0.015), (counts, expected)


@needs_kernels
def test_kernel_mask_is_uncorrelated_along_the_tensor_and_between_calls():
    torch.manual_seed(1)
    n, p = 1_000_000, 0.1
    a, b = (~masks(n, p, 2)).double()
    assert abs(float(a.mean()) - p) < 0.0015  # sd 0.0003
    for lag in (1, 2, 3, 16, 384, 1536):  # neighbours, vector lanes, row lengths of the benchmark model
        assert abs(float((a[:-lag] * a[lag:]).mean()) - p * p) < 0.0012, lag  # sd ~0.0003
    assert abs(float((a * b).mean()) - p * p) < 0.0012  # two calls' keys give independent masks
    gaps = torch.diff(torch.nonzero(a).flatten())  # geometric(p), as in independent drops
    for k in (1, 2, 10):
        assert abs(float((gaps == k).double().mean()) - 0.9 ** (k - 1) * 0.1) < 0.004


@needs_kernels
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_kernel_dropout_scales_kept_values_as_torch_rounds(dtype):
    torch.manual_seed(0)
    x = (torch.randn(300, 77) * 3).to(dtype)
    y = kernel_dropout(x, (12345, 678), 0.15)
    kept = y != 0
    assert 0.12 < 1 - float(kept.double().mean()) < 0.18
    scale = torch.tensor(1 / 0.85, dtype=torch.float32)  # kept values: x * (1 / (1 - p)) in float, then rounded
    assert torch.equal(y[kept], (x.float() * scale).to(dtype)[kept])
    assert torch.equal(kernel_dropout(x, (12345, 678), 0.15), y)  # a function of the keys
    assert not torch.equal(kernel_dropout(x, (12345, 679), 0.15), y)


@needs_kernels
def test_kernel_dropout_keeps_nan_and_inf():
    x = torch.tensor([float("nan"), float("inf"), -float("inf"), 1.0] * 1000).bfloat16()
    keys = (1, 2)
    y = kernel_dropout(x, keys, 0.1)
    kept = kernel_dropout(torch.ones_like(x), keys, 0.1) != 0
    assert torch.isnan(y[0::4][kept[0::4]]).all() and torch.equal(y[1::4][kept[1::4]], x[1::4][kept[1::4]])
    assert torch.equal(y[2::4][kept[2::4]], x[2::4][kept[2::4]])


@needs_kernels
@pytest.mark.parametrize("use_kernels", [True, False])
def test_fast_dropout_paths_rate_and_gradient(monkeypatch, use_kernels):
    monkeypatch.setattr(fd, "USE_KERNELS", use_kernels)
    torch.manual_seed(0)
    x = torch.ones(1_000_000, requires_grad=True)
    y = fd.fast_dropout(x, 0.1)
    assert fd.use_kernel(x) is use_kernels
    assert abs(float((y == 0).float().mean()) - 0.1) < 0.002 and abs(float(y.mean()) - 1.0) < 0.005
    y.backward(torch.full_like(y, 2.0))
    assert torch.equal(x.grad == 0, y == 0) and torch.allclose(x.grad[y != 0], torch.tensor(2 / 0.9))


@needs_kernels
def test_dropout_add_equals_dropout_then_add():
    drop = fd.FastDropout(0.1)
    x = torch.randn(130, 384).bfloat16().requires_grad_()
    residual = torch.randn(130, 384, requires_grad=True)
    grad = torch.randn(130, 384)
    results = []
    for fused in (True, False):
        torch.manual_seed(3)
        out = fd.dropout_add(x, residual, drop) if fused else drop(x) + residual
        out.backward(grad)
        results.append((out.detach(), x.grad, residual.grad))
        x.grad = residual.grad = None
    for a, b in zip(*results):
        assert torch.equal(a, b)
    assert results[0][0].dtype == torch.float32 and 0 < int((results[0][1] == 0).sum()) < x.numel() // 5


def test_dropout_add_falls_back_where_it_does_not_apply():
    drop = fd.FastDropout(0.1)
    x, residual = torch.randn(8, 16), torch.randn(8, 16)  # float32 x: the two operators
    torch.manual_seed(0)
    a = fd.dropout_add(x, residual, drop)
    torch.manual_seed(0)
    assert torch.equal(a, drop(x) + residual)
    drop.eval()
    assert torch.equal(fd.dropout_add(x.bfloat16(), residual, drop), x.bfloat16() + residual)


@needs_kernels
def test_bert_output_blocks_run_fused_with_the_same_loss_and_gradients(tiny_bert, monkeypatch):
    from transformers import AutoModelForSequenceClassification

    fused_calls = []
    apply = KernelDropAdd.apply
    monkeypatch.setattr(KernelDropAdd, "apply", lambda *args: fused_calls.append(1) or apply(*args))

    def loss_and_grads(fuse: bool):
        torch.manual_seed(0)  # the new head's initialisation
        model = AutoModelForSequenceClassification.from_pretrained(tiny_bert, num_labels=2)
        fd.install_fast_dropout(model)
        outputs = [m for m in model.modules() if type(m).__name__ in fd.RESIDUAL_OUTPUTS]
        assert outputs and all("forward" in vars(m) for m in outputs)
        if not fuse:
            for m in outputs:
                del m.forward
        model.train()
        torch.manual_seed(0)
        ids = torch.randint(5, model.config.vocab_size, (4, 12))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = model(input_ids=ids, labels=torch.tensor([0, 1, 1, 0])).loss
        loss.backward()
        return loss.detach(), {n: p.grad for n, p in model.named_parameters() if p.grad is not None}

    loss_a, grads_a = loss_and_grads(True)
    assert len(fused_calls) == 4  # 2 layers x (attention output, feed-forward output)
    loss_b, grads_b = loss_and_grads(False)
    assert len(fused_calls) == 4
    assert torch.equal(loss_a, loss_b) and grads_a.keys() == grads_b.keys()
    for name in grads_a:
        assert torch.equal(grads_a[name], grads_b[name]), name


def test_kernel_sources_are_packaged():
    # A wheel without the C source would never build the kernels: pyproject's package-data must carry it.
    from fnmatch import fnmatch
    from pathlib import Path

    import tomllib

    root = Path(__file__).resolve().parents[2]
    patterns = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["lftrain"]
    for source in kernels.SOURCES:
        assert (root / "src/lftrain/kernels" / source).is_file()
        assert any(fnmatch(f"kernels/{source}", pattern) for pattern in patterns), patterns


def test_the_manifest_names_the_dropout_the_steps_use(monkeypatch):
    cpu = torch.device("cpu")
    assert fd.describe(False, cpu, False) == "off (torch's dropout)"
    assert fd.describe(True, torch.device("cuda"), False).startswith("torch's dropout")  # no kernel off the CPU
    assert fd.describe(True, cpu, True).startswith("torch's dropout")  # nor under train.compile
    assert fd.describe(True, cpu, False).split()[0] == kernels.describe()
    if kernels.load() is not None:
        attention = "and the bf16 attention" if kernels.load().lft_attn_available() else "built without AVX-512"
        assert attention in fd.describe(True, cpu, False)
        monkeypatch.setattr(fd, "KERNEL_ATTENTION", False)
        assert "KERNEL_ATTENTION = False" in fd.describe(True, cpu, False)
    monkeypatch.setattr(fd, "USE_KERNELS", False)
    assert fd.describe(True, cpu, False) == "torch (USE_KERNELS = False)"


def _scores(width: int = 37):
    """bf16 scores (3 examples, 2 heads, width x width; 37 keys: two full blocks of 16 and a tail) and the key
    mask: example 1 has 20 real tokens, example 2 only its first."""
    torch.manual_seed(0)
    scores = (torch.randn(3, 2, width, width) * 4).bfloat16()
    real = torch.ones(3, width, dtype=torch.bool)
    real[1, 20:] = False
    real[2, 1:] = False
    return scores, real


def _reference_probs(scores, real, scaling):
    """softmax over the real keys, in float64"""
    logits = scores.double() * scaling + torch.where(real, 0.0, -math.inf)[:, None, None, :].double()
    return torch.softmax(logits, -1)


@needs_attention_kernel
def test_attention_kernel_probabilities_are_the_softmax_over_real_keys():
    scores, real = _scores()
    probs = KernelAttentionProbs.apply(scores, real.to(torch.uint8), 0.125, 0.0)
    assert probs.dtype == torch.bfloat16 and probs.shape == scores.shape
    padding = ~real[:, None, None, :].expand_as(probs)
    assert (probs[padding] == 0).all()  # exactly 0, as adding the mask's large negative value gives
    assert (probs[2, :, :, 0] == 1).all()  # one real key takes all the weight
    # within one bf16 rounding of the exact value (torch's own operators, rounding the scaled scores to bf16
    # first, are further off)
    torch.testing.assert_close(probs.double(), _reference_probs(scores, real, 0.125), rtol=2**-8, atol=1e-30)


@needs_attention_kernel
def test_attention_kernel_dropout_has_the_compiled_dropout_mask_and_gradient():
    scores, real = _scores()
    p, scaling = 0.25, 0.3
    x = scores.clone().requires_grad_()
    torch.manual_seed(7)
    out = KernelAttentionProbs.apply(x, real.to(torch.uint8), scaling, p)
    torch.manual_seed(7)  # the same keys: the mask of kernel_dropout over the same elements
    kept = kernel_dropout(torch.ones(scores.shape), draw_keys(), p) != 0
    probs = KernelAttentionProbs.apply(scores, real.to(torch.uint8), scaling, 0.0)
    assert torch.equal(out != 0, kept & (probs != 0))
    torch.testing.assert_close(out.float(), (probs.float() / (1 - p)).bfloat16().float() * kept, rtol=0, atol=0)
    weights = torch.randn(scores.shape)
    (out.float() * weights).sum().backward()
    exact = scores.double().requires_grad_()
    logits = exact * scaling + torch.where(real, 0.0, -math.inf)[:, None, None, :].double()
    (torch.softmax(logits, -1) * kept / (1 - p) * weights.double()).sum().backward()
    scale = exact.grad.abs().max()
    assert torch.isfinite(x.grad.float()).all() and scale > 0
    torch.testing.assert_close(x.grad.double(), exact.grad, rtol=2e-2, atol=float(scale) * 2e-3)



@needs_kernels
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_layout_moves_match_index_copy_and_index_select_both_ways(dtype):
    from lftrain.kernels.layout import HeadsToRows, RowsToHeads

    batch, width, heads, size = 3, 5, 4, 6
    torch.manual_seed(0)
    row_grid = torch.tensor([0, 1, 2, 5, 6, 10, 11, 12, 13, 7])  # 10 rows; grid positions 3, 4, 8, 9, 14 empty
    grid_row = torch.full((batch * width,), -1, dtype=torch.int64)
    grid_row[row_grid] = torch.arange(row_grid.numel())
    rows = torch.randn(row_grid.numel(), heads * size, dtype=dtype, requires_grad=True)
    grid = RowsToHeads.apply(rows, grid_row, row_grid, (batch, width), heads)
    expected = torch.zeros(batch * width, heads * size, dtype=dtype).index_copy(0, row_grid, rows.detach())
    expected = expected.view(batch, width, heads, size).transpose(1, 2)
    assert grid.is_contiguous() and torch.equal(grid, expected)
    back = HeadsToRows.apply(grid * 2, grid_row, row_grid)  # the way back: the same rows, doubled
    assert torch.equal(back, rows.detach() * 2)
    weights = torch.randn(back.shape, dtype=dtype)
    (back * weights).sum().backward()  # both backward passes: d/d rows = 2 * weights
    assert torch.equal(rows.grad, (weights * 2).to(dtype))
