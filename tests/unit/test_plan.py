"""The memory plan (`lft plan`): counts on a weightless skeleton match real tensors, components move the right way
when a recipe changes, and the command exits 2 naming a change that fits."""

from __future__ import annotations

from pathlib import Path

import pytest

from lftrain.config import load_recipe
from lftrain.errors import EXIT_INPUT
from lftrain.plan import MemoryPlanError, check, memory, predict, probe, render


@pytest.fixture(scope="module")
def tiny_decoder(tmp_path_factory) -> Path:
    """A 2-layer, width-64 Llama with random weights (no tokenizer: the plan never reads one)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    directory = tmp_path_factory.mktemp("tiny-decoder")
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=1000, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512)
    LlamaForCausalLM(config).save_pretrained(directory)
    return directory


def _recipe(model: Path, *, adaptation: dict | None = None, **train):
    sft = {"type": "causal-lm-sft", "format": "prompt-response", "max_length": 64}
    return load_recipe(data={"model": {"path": str(model)}, "task": sft, "data": {"train": "unused.jsonl"},
                             "adaptation": adaptation or {"type": "full"},
                             "train": {"batch_size": 4, "precision": "fp32", "device": "cpu", **train}})


def _fake_and_real(recipe) -> tuple[int, int]:
    from lftrain.tasks import build_task

    source = memory._vet(recipe)
    run = memory.resolve_run(recipe, source)
    task = build_task(recipe.task)
    shape = probe.longest_shape(recipe)
    fake = probe.fake_activations(probe.skeleton(recipe, task, source, dtype=run.loading.dtype,
                                                 attention=run.attention), shape, run.precision, "cpu")
    real_model = probe.skeleton(recipe, task, source, dtype=run.loading.dtype, attention=run.attention,
                                device="cpu")
    real = probe.count_saved(real_model, probe._inputs(real_model, shape, "cpu"), run.precision, "cpu")
    return fake.saved, real.saved


@pytest.mark.parametrize("adaptation, train", [
    (None, {}),
    ({"type": "lora", "r": 4}, {}),
    ({"type": "lora", "r": 4}, {"gradient_checkpointing": True, "precision": "bf16"}),
    (None, {"precision": "bf16"}),
])
def test_the_fake_count_is_the_real_count(tiny_decoder, adaptation, train):
    fake, real = _fake_and_real(_recipe(tiny_decoder, adaptation=adaptation, **train))
    assert real > 0 and fake == pytest.approx(real, rel=0.02)


def test_quantized_weights_take_their_blocks():
    n, out = 4096 * 4096, 4096
    assert memory.quantized_bytes(n, out, "nf4", True) == pytest.approx(n / 2 + n / 64 + 4 * n / 64 / 256)
    assert memory.quantized_bytes(n, out, "nf4", False) == pytest.approx(n / 2 + 4 * n / 64)
    assert memory.quantized_bytes(n, out, "int8") == n + 4 * out


def test_weights_shrink_with_their_dtype(tiny_decoder):
    lora = {"type": "lora", "r": 4}
    fp32 = predict(_recipe(tiny_decoder, adaptation=lora), probe_time=False, available_mb=1e6)
    bf16 = predict(_recipe(tiny_decoder, adaptation=lora, precision="bf16"), probe_time=False, available_mb=1e6)
    nf4 = predict(_recipe(tiny_decoder, adaptation={**lora, "quantize": "nf4"}, precision="bf16"),
                  probe_time=False, available_mb=1e6)
    assert nf4.components["weights"] < bf16.components["weights"] < fp32.components["weights"]
    assert nf4.components["adapters"] == bf16.components["adapters"] == fp32.components["adapters"] > 0
    assert "gradients" in fp32.components and fp32.components["gradients"] == fp32.components["adapters"]


def test_checkpointing_and_8bit_adam_lower_their_parts(tiny_decoder):
    plain = predict(_recipe(tiny_decoder), probe_time=False, available_mb=1e6)
    gc = predict(_recipe(tiny_decoder, gradient_checkpointing=True), probe_time=False, available_mb=1e6)
    adam8 = predict(_recipe(tiny_decoder, optimizer="adamw8bit"), probe_time=False, available_mb=1e6)
    assert gc.components["activations"] < plain.components["activations"]
    assert adam8.components["optimizer"] < plain.components["optimizer"] / 3
    assert plain.components["optimizer"] == pytest.approx(2 * plain.components["gradients"])
    assert plain.fits and plain.total_mb == pytest.approx(sum(plain.components.values()))


def test_the_longest_shape_of_packed_rows(tiny_decoder):
    recipe = _recipe(tiny_decoder, micro_batch_size=4)
    assert probe.longest_shape(recipe) == probe.Shape(4, 64)  # packing: pack_length = max_length, one a row
    packed = load_recipe(data={**recipe.model_dump(mode="json"), "task": {**recipe.task.model_dump(mode="json"),
                                                                          "pack_length": 128}})
    assert probe.longest_shape(packed) == probe.Shape(2, 128)


def test_lft_plan_exits_2_and_names_a_change_that_fits(tiny_decoder, tmp_path, capsys):
    import yaml

    from lftrain.cli import main

    recipe = _recipe(tiny_decoder, batch_size=16)
    recipe.task.max_length = 256
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe.model_dump(mode="json")))
    plan = predict(recipe, probe_time=False, available_mb=1e6)
    smallest = min(mb for _, mb in memory.suggestions(recipe, plan.total_mb))
    limit = (plan.total_mb + smallest) / 2
    assert main(["plan", str(path), f"train.memory_limit_mb={limit}", "--no-time"]) == EXIT_INPUT
    out = capsys.readouterr().out
    assert "does not fit" in out and "would fit: `" in out and "activations" in out
    assert main(["plan", str(path), "train.memory_limit_mb=1000000"]) == 0
    out = capsys.readouterr().out
    assert "— fits" in out and "tokens/s" in out


def test_check_refuses_under_check_and_logs_under_warn(tiny_decoder):
    recipe = _recipe(tiny_decoder, memory_limit_mb=1.0)
    with pytest.raises(MemoryPlanError) as info:
        check(recipe, "check")
    assert info.value.exit_code == EXIT_INPUT and "memory plan:" in str(info.value)
    assert check(recipe, "warn").fits is False
    assert check(recipe, "off") is None
    assert "does not fit" in render(predict(recipe, probe_time=False))
