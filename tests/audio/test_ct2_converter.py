"""The CTranslate2 -> transformers Whisper converter, on a tiny CT2 file written here from a random Whisper.

The writer below follows CTranslate2's binary layout (version 6) and its Whisper variable names: q/k/v fused
into one projection, cross-attention k/v fused, a zero key bias, LayerNorm gamma/beta, fp16 storage and the
output projection stored as an alias of the token embedding. Converting it back must give the same model.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest

from lftrain.errors import ModelLoadError
from tests.audio.conftest import tiny_whisper_config

DTYPE_IDS = {np.dtype("float32"): 0, np.dtype("int8"): 1, np.dtype("int16"): 2, np.dtype("int32"): 3,
             np.dtype("float16"): 4}


def _s(text: str) -> bytes:
    raw = text.encode() + b"\0"
    return struct.pack("<H", len(raw)) + raw


def write_ct2(path: Path, variables: dict[str, np.ndarray], aliases: dict[str, str], spec: str = "WhisperSpec"):
    out = [struct.pack("<I", 6), _s(spec), struct.pack("<I", 3), struct.pack("<I", len(variables))]
    for name, value in variables.items():
        out += [_s(name), struct.pack("<B", value.ndim), *(struct.pack("<I", d) for d in value.shape),
                struct.pack("<B", DTYPE_IDS[value.dtype]), struct.pack("<I", value.nbytes), value.tobytes()]
    out.append(struct.pack("<I", len(aliases)))
    for alias, target in aliases.items():
        out += [_s(alias), _s(target)]
    path.write_bytes(b"".join(out))


def ct2_variables(model) -> dict[str, np.ndarray]:
    """A transformers Whisper -> CTranslate2 WhisperSpec variables (what its own converter does), in fp16."""
    sd = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    cfg = model.config
    var: dict[str, np.ndarray] = {"decoder/activation": np.array(3, np.int8), "decoder/pre_norm": np.array(1, np.int8),
                                  "encoder/num_heads": np.array(cfg.encoder_attention_heads, np.int16),
                                  "decoder/num_heads": np.array(cfg.decoder_attention_heads, np.int16)}

    def fp16(name, value):
        var[name] = value.astype(np.float16)

    def lin(dst, src, bias=True):
        fp16(f"{dst}/weight", sd[f"{src}.weight"])
        if bias:
            fp16(f"{dst}/bias", sd[f"{src}.bias"])

    def norm(dst, src):
        fp16(f"{dst}/gamma", sd[f"{src}.weight"])
        fp16(f"{dst}/beta", sd[f"{src}.bias"])

    def fused(dst, src, names):
        fp16(f"{dst}/weight", np.concatenate([sd[f"{src}.{n}_proj.weight"] for n in names]))
        fp16(f"{dst}/bias", np.concatenate([sd[f"{src}.{n}_proj.bias"] if n != "k" else
                                            np.zeros_like(sd[f"{src}.q_proj.bias"]) for n in names]))

    for side, n in (("encoder", cfg.encoder_layers), ("decoder", cfg.decoder_layers)):
        for i in range(n):
            s, d = f"model.{side}.layers.{i}", f"{side}/layer_{i}"
            norm(f"{d}/self_attention/layer_norm", f"{s}.self_attn_layer_norm")
            fused(f"{d}/self_attention/linear_0", f"{s}.self_attn", ("q", "k", "v"))
            lin(f"{d}/self_attention/linear_1", f"{s}.self_attn.out_proj")
            if side == "decoder":
                norm(f"{d}/attention/layer_norm", f"{s}.encoder_attn_layer_norm")
                lin(f"{d}/attention/linear_0", f"{s}.encoder_attn.q_proj")
                fused(f"{d}/attention/linear_1", f"{s}.encoder_attn", ("k", "v"))
                lin(f"{d}/attention/linear_2", f"{s}.encoder_attn.out_proj")
            norm(f"{d}/ffn/layer_norm", f"{s}.final_layer_norm")
            lin(f"{d}/ffn/linear_0", f"{s}.fc1")
            lin(f"{d}/ffn/linear_1", f"{s}.fc2")
        norm(f"{side}/layer_norm", f"model.{side}.layer_norm")
        fp16(f"{side}/position_encodings/encodings", sd[f"model.{side}.embed_positions.weight"])
    lin("encoder/conv1", "model.encoder.conv1")
    lin("encoder/conv2", "model.encoder.conv2")
    fp16("decoder/embeddings/weight", sd["model.decoder.embed_tokens.weight"])
    return var


@pytest.fixture(scope="module")
def tiny_pair(tmp_path_factory):
    """(a random transformers Whisper, a CTranslate2 folder holding the same weights)."""
    import torch
    from transformers import WhisperForConditionalGeneration

    torch.manual_seed(0)
    model = WhisperForConditionalGeneration(tiny_whisper_config()).eval()
    with torch.no_grad():  # random non-zero biases, so a swapped or dropped bias cannot go unnoticed
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.normal_(0, 0.1)
    src = tmp_path_factory.mktemp("ct2")
    write_ct2(src / "model.bin", ct2_variables(model), {"decoder/projection/weight": "decoder/embeddings/weight"})
    (src / "config.json").write_text(json.dumps({"suppress_ids": [5], "suppress_ids_begin": [2]}))
    (src / "tokenizer.json").write_text(json.dumps({"added_tokens": [{"id": 2, "content": "<|endoftext|>"},
                                                                     {"id": 1, "content": "<|startoftranscript|>"}]}))
    return model, src


def test_read_ct2_layout(tiny_pair):
    from lftrain.models.whisper_ct2 import read_ct2

    model, src = tiny_pair
    spec, arrays = read_ct2(src / "model.bin")
    assert spec == "WhisperSpec"
    assert arrays["encoder/layer_0/self_attention/linear_0/weight"].shape == (96, 32)
    assert arrays["decoder/projection/weight"] is arrays["decoder/embeddings/weight"]  # the alias
    assert int(arrays["encoder/num_heads"]) == 2 and arrays["encoder/conv1/weight"].dtype == np.float32


def test_converted_model_matches_the_original(tiny_pair, tmp_path):
    import torch
    from transformers import WhisperForAudioClassification, WhisperForConditionalGeneration

    from lftrain.models.whisper_ct2 import MARKER, converted_dir

    model, src = tiny_pair
    out = converted_dir(src, cache_dir=str(tmp_path / "cache"))
    assert (out / MARKER).is_file() and (out / "model.safetensors").is_file()
    assert (out / "preprocessor_config.json").is_file()
    assert converted_dir(src, cache_dir=str(tmp_path / "cache")) == out  # cached: same folder, no new conversion
    conv = WhisperForConditionalGeneration.from_pretrained(out).eval()
    assert conv.config.eos_token_id == 2 and conv.config.decoder_start_token_id == 1
    assert conv.config.suppress_tokens == [5] and conv.proj_out.weight.data_ptr() == \
        conv.model.decoder.embed_tokens.weight.data_ptr()
    torch.manual_seed(1)
    feats = torch.randn(2, 80, 200)
    dec = torch.tensor([[1, 7, 9, 3], [1, 4, 4, 8]])
    with torch.no_grad():
        ref = model(input_features=feats, decoder_input_ids=dec)
        got = conv(input_features=feats, decoder_input_ids=dec)
    assert torch.allclose(got.encoder_last_hidden_state, ref.encoder_last_hidden_state, atol=2e-2)
    assert torch.allclose(got.logits, ref.logits, atol=2e-2)  # fp16 storage: ~1e-3 relative error per weight
    assert (got.logits.argmax(-1) == ref.logits.argmax(-1)).float().mean() > 0.85
    clf = WhisperForAudioClassification.from_pretrained(out, num_labels=3).eval()  # the encoder + a new head
    with torch.no_grad():
        hidden = clf.encoder(feats).last_hidden_state
    assert torch.allclose(hidden, got.encoder_last_hidden_state, atol=1e-5)


def test_bad_files_are_refused(tmp_path, tiny_pair):
    from lftrain.models.whisper_ct2 import convert, read_ct2

    _, src = tiny_pair
    cut = tmp_path / "model.bin"
    cut.write_bytes((src / "model.bin").read_bytes()[:5000])
    with pytest.raises(ModelLoadError, match="truncated CTranslate2 model"):
        read_ct2(cut)
    other = tmp_path / "other"
    other.mkdir()
    write_ct2(other / "model.bin", {"x": np.zeros(2, np.float32)}, {}, spec="TransformerSpec")
    with pytest.raises(ModelLoadError, match="only WhisperSpec"):
        convert(other, tmp_path / "out")


def test_int8_weights_are_dequantised(tmp_path):
    from lftrain.models.whisper_ct2 import read_ct2

    w = np.array([[0.5, -1.0], [0.25, 0.125]], np.float32)
    scale = 127 / np.abs(w).max(axis=1)
    q = np.round(w * scale[:, None]).astype(np.int8)
    write_ct2(tmp_path / "model.bin", {"l/weight": q, "l/weight_scale": scale.astype(np.float32)}, {})
    _, arrays = read_ct2(tmp_path / "model.bin")
    assert "l/weight_scale" not in arrays and np.allclose(arrays["l/weight"], w, atol=1e-2)
