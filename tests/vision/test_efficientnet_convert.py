"""The .pth state_dict -> Hugging Face folder conversion gives the same network, and refuses pickled code."""

from __future__ import annotations

import pickle

import pytest
import torch


def _package_model():
    from efficientnet_lite_pytorch import EfficientNet

    torch.manual_seed(0)
    return EfficientNet.from_name("efficientnet-lite0", width_coefficient=0.25, depth_coefficient=0.25,
                                  num_classes=5, image_size=32).eval()


def test_converted_model_matches_package_model(tmp_path):
    from transformers import AutoModelForImageClassification

    from lftrain.models.vision import convert_state_dict

    ref = _package_model()
    for m in ref.modules():  # non-trivial batch-norm statistics, so they must be carried over too
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    torch.save(ref.state_dict(), tmp_path / "w.pth")
    out = convert_state_dict(tmp_path / "w.pth", tmp_path / "hf", width_coefficient=0.25, depth_coefficient=0.25)
    assert (out / "model.safetensors").is_file() and (out / "preprocessor_config.json").is_file()
    model = AutoModelForImageClassification.from_pretrained(out).eval()
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        assert torch.allclose(model(pixel_values=x).logits, ref(x), atol=1e-5)


def test_pickled_code_is_refused(tmp_path):
    from lftrain.models.vision import convert_state_dict

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    (tmp_path / "evil.pth").write_bytes(pickle.dumps({"x": Evil()}))
    with pytest.raises(pickle.UnpicklingError):
        convert_state_dict(tmp_path / "evil.pth", tmp_path / "hf")
