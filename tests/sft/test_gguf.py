"""GGUF files: found in folders and packages, refused up front when they cannot be trained."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lftrain.errors import ModelLoadError
from lftrain.models.gguf import find_gguf, inspect_gguf


def _write_gguf(path: Path, arch: str, tensors: dict[str, tuple[np.ndarray, object]]) -> Path:
    import gguf

    w = gguf.GGUFWriter(str(path), arch)
    for name, (data, qtype) in tensors.items():
        w.add_tensor(name, data, raw_dtype=qtype)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def test_float_and_supported_quants_pass(tmp_path):
    import gguf

    q8 = gguf.quants.quantize(np.random.default_rng(0).standard_normal((2, 32)).astype(np.float32),
                              gguf.GGMLQuantizationType.Q8_0)
    f = _write_gguf(tmp_path / "ok.gguf", "llama", {
        "a.weight": (np.zeros((2, 4), np.float32), None),
        "b.weight": (q8, gguf.GGMLQuantizationType.Q8_0)})
    info = inspect_gguf(f)
    assert info == {"architecture": "llama", "tensor_types": {"F32": 1, "Q8_0": 1}}


def test_integer_tensors_refused_before_any_conversion(tmp_path):
    import gguf

    ints = (np.zeros((2, 4), np.int8), gguf.GGMLQuantizationType.I8)
    f = _write_gguf(tmp_path / "int.gguf", "llama", {"a.weight": ints})
    with pytest.raises(ModelLoadError, match="int.gguf: tensors quantised as I8 cannot be dequantised"):
        inspect_gguf(f)


def test_unsupported_architecture_refused(tmp_path):
    f = _write_gguf(tmp_path / "arch.gguf", "rwkv9", {"a.weight": (np.zeros((2, 4), np.float32), None)})
    with pytest.raises(ModelLoadError, match="architecture 'rwkv9' cannot be converted"):
        inspect_gguf(f)


def test_not_a_gguf_file(tmp_path):
    f = tmp_path / "junk.gguf"
    f.write_bytes(b"not gguf at all")
    with pytest.raises(ModelLoadError, match="junk.gguf: not a readable GGUF file"):
        inspect_gguf(f)


def test_find_gguf(tmp_path):
    assert find_gguf(tmp_path) is None
    (tmp_path / "m.gguf").write_bytes(b"")
    assert find_gguf(tmp_path) == tmp_path / "m.gguf"
    assert find_gguf(tmp_path / "m.gguf") == tmp_path / "m.gguf"
    (tmp_path / "n.gguf").write_bytes(b"")
    with pytest.raises(ModelLoadError, match="holds 2 GGUF files"):
        find_gguf(tmp_path)
    (tmp_path / "config.json").write_text("{}")
    assert find_gguf(tmp_path) is None  # a Hugging Face folder wins


def test_bad_gguf_as_model_path_is_an_input_error(tmp_path):
    from lftrain.models.loading import resolve_model_dir

    f = tmp_path / "junk.gguf"
    f.write_bytes(b"not gguf at all")
    with pytest.raises(ModelLoadError, match="not a readable GGUF"):
        resolve_model_dir(str(f))
