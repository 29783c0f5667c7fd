"""`lft export --format gguf`: tiny Llama SFT runs written as llama.cpp files, read back and compared with torch."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from lftrain.errors import InputError
from tests.sft.conftest import sentiment_rows, write_jsonl

pytest.importorskip("gguf")

PROMPTS = ["review: the film was good", "review: awful plot", "hello world", "what do you say"]


def _recipe(model: Path, tmp: Path, name: str, **extra) -> dict:
    train = write_jsonl(tmp / "train.jsonl", sentiment_rows(48))
    recipe = {"model": {"path": str(model)},
              "task": {"type": "causal-lm-sft", "max_length": 64,
                       "generation": {"max_new_tokens": 2, "max_prompts": 2}},
              "data": {"train": str(train), "test_fraction": 0.1, "cache_dir": str(tmp / "cache")},
              "train": {"max_steps": 3, "lr": 1e-2, "batch_size": 8, "seed": 0, "threads": 1, "precision": "fp32"},
              "output": {"dir": str(tmp / name)}}
    return {**recipe, **extra}


@pytest.fixture(scope="module")
def full_run(tiny_llama, tmp_path_factory) -> Path:
    import lftrain

    tmp = tmp_path_factory.mktemp("gguf-full")
    return lftrain.train(_recipe(tiny_llama, tmp, "run")).run_dir


def _greedy_both(run: Path, gguf_file: Path, prompts: list[str], n: int = 12):
    """Greedy tokens of the run's torch model and of the GGUF file read back, for each prompt."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lftrain.models.gguf_export import greedy

    torch_model = AutoModelForCausalLM.from_pretrained(run / "model", dtype=torch.float32).eval()
    back = AutoModelForCausalLM.from_pretrained(gguf_file.parent, gguf_file=gguf_file.name, dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(run / "model")
    ids = [tok(p)["input_ids"] for p in prompts]
    return [(greedy(torch_model, i, n), greedy(back, i, n)) for i in ids], torch_model, back, ids


def test_rope_permutation_matches_llama_cpp_convention():
    """HF rotates (x_i, x_{i+d/2}); llama.cpp's llama rotates (x_2i, x_2i+1). With the permuted rows, llama.cpp's
    rope gives the permuted HF result for every head and position, so every attention score is unchanged."""
    from lftrain.models.gguf_export import permute_rope

    rng = np.random.default_rng(0)
    heads, d, hidden, base = 3, 8, 12, 10000.0
    w, x = rng.standard_normal((heads * d, hidden)), rng.standard_normal(hidden)
    inv = base ** (-np.arange(0, d, 2) / d)

    def rope_hf(v, pos):  # transformers' apply_rotary_pos_emb with rotate_half
        cos, sin = np.tile(np.cos(pos * inv), 2), np.tile(np.sin(pos * inv), 2)
        return v * cos + np.concatenate([-v[d // 2:], v[:d // 2]]) * sin

    def rope_ggml(v, pos):  # ggml's rope, mode NORM (used for the llama architecture): adjacent pairs
        a, b, c, s = v[0::2], v[1::2], np.cos(pos * inv), np.sin(pos * inv)
        return np.stack([a * c - b * s, a * s + b * c], axis=1).reshape(-1)

    for pos in (0, 1, 7, 300):
        hf = np.concatenate([rope_hf(h, pos) for h in (w @ x).reshape(heads, d)])
        gg = np.concatenate([rope_ggml(h, pos) for h in (permute_rope(w, heads) @ x).reshape(heads, d)])
        assert np.allclose(gg, permute_rope(hf[:, None], heads)[:, 0])
        q_hf, q_gg = hf.reshape(heads, d), gg.reshape(heads, d)
        assert np.allclose(q_hf @ q_hf.T, q_gg @ q_gg.T)  # attention scores (here q·q) are identical


def test_f16_export_generates_what_torch_generates(full_run, tmp_path):
    from lftrain.cli import main

    out = tmp_path / "gguf"
    assert main(["export", str(full_run), "--output", str(out), "--format", "gguf"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["Modelfile", "export.json", "model-f16.gguf"]
    info = json.loads((out / "export.json").read_text())
    check = info["check"]
    assert info["gguf_type"] == "f16" and info["tensor_types"] == {"float16": 15, "float32": 5}
    assert check["greedy_identical"] == check["prompts"] == 10 and check["tokenizer_identical"]
    assert check["max_rel_logit_diff"] < 0.01 and check["chat_template_identical"]  # measured 0.0013
    pairs, *_ = _greedy_both(full_run, out / "model-f16.gguf", PROMPTS)
    assert all(a == b for a, b in pairs), pairs  # independently of the export's own check


def test_metadata_llama_cpp_reads(full_run, tmp_path):
    import gguf

    import lftrain

    out = lftrain.export(full_run, tmp_path / "gguf", format="gguf")
    fields = gguf.GGUFReader(str(out / "model-f16.gguf")).fields
    meta = {k: fields[k].contents() for k in fields if not k.startswith("GGUF.")}
    assert {k: meta[f"llama.{k}"] for k in ("context_length", "embedding_length", "block_count", "feed_forward_length",
                                              "attention.head_count", "attention.head_count_kv", "vocab_size",
                                              "rope.dimension_count")} == {
        "context_length": 256, "embedding_length": 32, "block_count": 2, "feed_forward_length": 64,
        "attention.head_count": 4, "attention.head_count_kv": 2, "vocab_size": 300, "rope.dimension_count": 8}
    assert meta["llama.rope.freq_base"] == pytest.approx(10000.0)
    assert meta["llama.attention.layer_norm_rms_epsilon"] == pytest.approx(1e-6)
    assert (meta["tokenizer.ggml.model"], meta["tokenizer.ggml.pre"]) == ("gpt2", "gpt-2")
    tokens, types = meta["tokenizer.ggml.tokens"], meta["tokenizer.ggml.token_type"]
    assert tokens[:3] == ["<|endoftext|>", "<|im_start|>", "<|im_end|>"] and types[:3] == [3, 3, 3]  # CONTROL
    assert set(types[3:]) == {1} and len(meta["tokenizer.ggml.merges"]) > 0
    assert (meta["tokenizer.ggml.bos_token_id"], meta["tokenizer.ggml.eos_token_id"]) == (1, 2)
    assert meta["tokenizer.chat_template"].startswith("{% for m in messages %}<|im_start|>")
    assert "output.weight" not in {t.name for t in gguf.GGUFReader(str(out / "model-f16.gguf")).tensors}  # tied


def test_q8_0_logits_close(full_run, tmp_path):
    import torch

    import lftrain

    out = lftrain.export(full_run, tmp_path / "q8", format="gguf", gguf_type="q8_0")
    info = json.loads((out / "export.json").read_text())
    assert info["tensor_types"] == {"Q8_0": 15, "float32": 5}
    pairs, torch_model, back, ids = _greedy_both(full_run, out / "model-q8_0.gguf", PROMPTS)
    with torch.no_grad():
        a, b = (m(torch.tensor([ids[0]])).logits[0].numpy() for m in (torch_model, back))
    # Q8_0 keeps each weight to 1/254 of its block's largest magnitude (~0.4%, 8-bit absmax); over two layers the
    # logits move by a few percent of their spread (0.04 measured), a wrong tensor by all of it.
    assert np.abs(a - b).max() / a.std() < 0.1
    assert (a.argmax(-1) == b.argmax(-1)).mean() == 1.0


def test_lora_run_is_merged_and_exported(tiny_llama, tmp_path):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    import lftrain
    from lftrain.models.gguf_export import greedy

    result = lftrain.train(_recipe(tiny_llama, tmp_path, "lora", adaptation={"type": "lora", "r": 4}))
    assert (result.model_dir / "adapter_config.json").is_file()
    out = lftrain.export(result.run_dir, tmp_path / "gguf", format="gguf")  # a GGUF file always holds merged weights
    check = json.loads((out / "export.json").read_text())["check"]
    assert check["greedy_identical"] == check["prompts"]
    # independently: the adapter on its base model (peft, not merged) generates what the file generates
    base = AutoModelForCausalLM.from_pretrained(tiny_llama, dtype=torch.float32)
    adapted = PeftModel.from_pretrained(base, str(result.model_dir)).eval()
    back = AutoModelForCausalLM.from_pretrained(out, gguf_file="model-f16.gguf", dtype=torch.float32).eval()
    ids = [1, 5, 17, 40, 88]
    assert greedy(adapted, ids, 10) == greedy(back, ids, 10)


def _sharp_attention_copy(model: Path, folder: Path) -> Path:
    """The tiny Llama with q/k weights ×10: at random init its attention is nearly uniform, so positions (and the
    rope layout) hardly change its logits (1.4% of their spread with q/k unpermuted); sharpened, they do."""
    import shutil

    from safetensors.torch import load_file, save_file

    shutil.copytree(model, folder)
    weights = load_file(folder / "model.safetensors")
    weights = {k: v * 10 if ("q_proj" in k or "k_proj" in k) else v for k, v in weights.items()}
    save_file(weights, folder / "model.safetensors", metadata={"format": "pt"})
    return folder


def test_wrong_rope_layout_is_caught(tiny_llama, tmp_path, monkeypatch):
    """The read-back check is not a formality: q/k rows left in Hugging Face's order fail it."""
    from lftrain.models import gguf_export
    from lftrain.models.compress import ExportCheckError

    good = gguf_export.convert_folder(_sharp_attention_copy(tiny_llama, tmp_path / "good"), "f16",
                                      source=tiny_llama, name="good")
    check = json.loads((good.parent / "export.json").read_text())["check"]
    assert check["max_rel_logit_diff"] < 0.01 and check["greedy_identical"] == check["prompts"]
    monkeypatch.setattr(gguf_export, "permute_rope", lambda w, heads: w)
    with pytest.raises(ExportCheckError, match="max_rel_logit_diff"):  # 1.8 measured, against 0.03 allowed
        gguf_export.convert_folder(_sharp_attention_copy(tiny_llama, tmp_path / "bad"), "f16",
                                   source=tiny_llama, name="bad")


def test_errors_are_clear(full_run, tmp_path, capsys):
    from lftrain.cli import main

    classifier = tmp_path / "clf"
    (classifier / "model").mkdir(parents=True)
    (classifier / "recipe.yaml").write_text("model: {path: x}\ntask: {type: text-classification}\n")
    assert main(["export", str(classifier), "--output", str(tmp_path / "o1"), "--format", "gguf"]) == 2
    assert "is a text-classification run; GGUF export" in capsys.readouterr().err
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "x.txt").write_text("keep me")
    assert main(["export", str(full_run), "--output", str(taken), "--format", "gguf"]) == 2
    assert "exists and is not an empty directory" in capsys.readouterr().err
    assert main(["export", str(full_run), "--output", str(tmp_path / "o2"), "--gguf-type", "q8_0"]) == 2
    assert "only with --format gguf" in capsys.readouterr().err
    assert not (tmp_path / "o1").exists() and not (tmp_path / "o2").exists()


def test_other_architectures_refused(tmp_path):
    from transformers import GPT2Config

    from lftrain.models.gguf_export import write_gguf

    GPT2Config(n_layer=1, n_embd=8, n_head=2, architectures=["GPT2LMHeadModel"]).save_pretrained(tmp_path)
    with pytest.raises(InputError, match="supported for the causal LMs LlamaForCausalLM.*holds GPT2LMHeadModel"):
        write_gguf(tmp_path, tmp_path / "x.gguf", "f16", name="x")


FAMILIES = {"llama3": "llama"}


@pytest.mark.parametrize("family", FAMILIES)
def test_each_family_is_written_as_llama_cpp_names_it(family, tmp_path):
    """Every architecture the export writes reads back (transformers' GGUF reader, which undoes llama.cpp's
    conventions: Gemma's norm offset, Llama's rope order) to the same logits and greedy tokens."""
    from lftrain.models.gguf_export import _metadata, convert_folder
    from tests.families.conftest import make_decoder

    folder = make_decoder(family, tmp_path / family)
    file = convert_folder(folder, "f16", source=folder, name=family)
    check = json.loads((file.parent / "export.json").read_text())["check"]
    assert _metadata(file, "general.architecture") == FAMILIES[family]
    assert check["max_rel_logit_diff"] < 0.01 and check["greedy_identical"] == check["prompts"]
    assert check["tokenizer_identical"] and check["chat_template_identical"]


def test_llama3_rope_scaling_is_carried(tmp_path):
    """Llama 3.1/3.2's frequency scaling goes into the `rope_freqs` divisors llama.cpp applies: 1 for the fast
    frequencies, the full factor for the slow ones, as transformers computes them."""
    import torch
    from gguf import GGUFReader
    from transformers import LlamaConfig
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    from lftrain.models.gguf_archs import llama3_rope_divisors

    rope = {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 32.0, "low_freq_factor": 1.0,
            "high_freq_factor": 4.0, "original_max_position_embeddings": 64}
    config = LlamaConfig(hidden_size=64, num_attention_heads=2, max_position_embeddings=256, rope_parameters=rope)
    plain = 1.0 / 500000.0 ** (torch.arange(0, 32, 2).float() / 32)
    scaled, _ = ROPE_INIT_FUNCTIONS["llama3"](config, "cpu")
    divisors = llama3_rope_divisors({**rope}, 32)
    np.testing.assert_allclose(plain.numpy() / divisors, scaled.numpy(), rtol=1e-5)
    assert divisors[0] == 1.0 and divisors[-1] == 32.0
    from tests.families.conftest import make_decoder

    folder = make_decoder("llama3", tmp_path / "l")
    cfg = json.loads((folder / "config.json").read_text())
    cfg["rope_parameters"] = {**rope, "original_max_position_embeddings": 16}
    (folder / "config.json").write_text(json.dumps(cfg))
    from lftrain.models.gguf_export import write_gguf

    write_gguf(folder, tmp_path / "l.gguf", "f16", name="l")
    tensors = {t.name: np.asarray(t.data) for t in GGUFReader(str(tmp_path / "l.gguf")).tensors}
    assert tensors["rope_freqs.weight"].shape == (4,)


@pytest.mark.parametrize("family", ["mistral", "qwen2", "qwen3", "gemma2", "gemma3", "phi3"])
def test_families_not_written_yet_are_refused(family, tmp_path):
    from lftrain.models.gguf_export import write_gguf
    from tests.families.conftest import make_decoder

    with pytest.raises(InputError, match="supported for the causal LMs LlamaForCausalLM;"):
        write_gguf(make_decoder(family, tmp_path / family), tmp_path / "x.gguf", "f16", name="x")
