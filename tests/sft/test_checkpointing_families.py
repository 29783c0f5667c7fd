"""Activation checkpointing on every decoder family lftrain is asked to train: the same LoRA gradients as without it."""

from __future__ import annotations

import pytest
import torch

FAMILIES = {
    "llama": ("LlamaConfig", "LlamaForCausalLM", {}),
    "qwen2": ("Qwen2Config", "Qwen2ForCausalLM", {}),
    "qwen3": ("Qwen3Config", "Qwen3ForCausalLM", {"head_dim": 16}),
    "mistral": ("MistralConfig", "MistralForCausalLM", {}),
    "gemma2": ("Gemma2Config", "Gemma2ForCausalLM", {"head_dim": 16}),
    "gemma3": ("Gemma3TextConfig", "Gemma3ForCausalLM", {"head_dim": 16}),
    "phi3": ("Phi3Config", "Phi3ForCausalLM", {"pad_token_id": 0}),
}


def _lora_grads(family: str, checkpointing: bool) -> dict[str, torch.Tensor]:
    import transformers
    from peft import LoraConfig, get_peft_model

    from lftrain.training.distributed import gradient_checkpointing

    config_cls, model_cls, extra = FAMILIES[family]
    config = getattr(transformers, config_cls)(vocab_size=128, hidden_size=64, intermediate_size=128,
                                               num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                               max_position_embeddings=64, **extra)
    torch.manual_seed(0)
    model = getattr(transformers, model_cls)(config)
    targets = ["qkv_proj", "o_proj"] if family == "phi3" else ["q_proj", "v_proj", "down_proj"]
    model = get_peft_model(model, LoraConfig(r=4, target_modules=targets, init_lora_weights=False))
    model.train()
    if checkpointing:
        gradient_checkpointing(model)
    ids = torch.randint(0, 128, (2, 24), generator=torch.Generator().manual_seed(1))
    model(input_ids=ids, labels=ids).loss.backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_checkpointed_gradients_equal_the_stored_ones(family):
    plain, recomputed = _lora_grads(family, False), _lora_grads(family, True)
    assert plain.keys() == recomputed.keys() and plain
    for name in plain:
        torch.testing.assert_close(recomputed[name], plain[name], rtol=1e-4, atol=1e-6, msg=name)
