"""Tiny image models and image data built in the test: an EfficientNet-Lite of the real family, and a ViT."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest


def make_tiny_efficientnet(directory: Path, *, image_size: int = 32, seed: int = 0) -> Path:
    import torch

    from lftrain.models.vision import (
        LITE_MEAN,
        LITE_STD,
        EfficientNetLiteConfig,
        EfficientNetLiteForImageClassification,
        preprocessor_config,
    )

    torch.manual_seed(seed)
    config = EfficientNetLiteConfig(image_size=image_size, width_coefficient=0.25, depth_coefficient=0.25,
                                    num_labels=3)
    EfficientNetLiteForImageClassification(config).save_pretrained(directory)
    import json

    (directory / "preprocessor_config.json").write_text(json.dumps(preprocessor_config(image_size, LITE_MEAN,
                                                                                       LITE_STD)))
    return directory


def make_tiny_vit(directory: Path, *, image_size: int = 16, seed: int = 0) -> Path:
    import torch
    from transformers import ViTConfig, ViTForImageClassification

    torch.manual_seed(seed)
    config = ViTConfig(image_size=image_size, patch_size=4, hidden_size=32, num_hidden_layers=2,
                       num_attention_heads=2, intermediate_size=64, num_labels=2)
    ViTForImageClassification(config).save_pretrained(directory)
    return directory


@pytest.fixture(scope="session")
def tiny_effnet(tmp_path_factory) -> Path:
    return make_tiny_efficientnet(tmp_path_factory.mktemp("tiny-effnet"))


@pytest.fixture(scope="session")
def tiny_vit(tmp_path_factory) -> Path:
    return make_tiny_vit(tmp_path_factory.mktemp("tiny-vit"))


def toy_image(label: str, rng: np.random.Generator, size: int = 20, grey: bool = False) -> np.ndarray:
    """Two easy classes: a bright square on the left ('left') or on the right ('right')."""
    img = rng.integers(0, 60, size=(size, size, 3), dtype=np.uint8)
    half = size // 2
    cols = slice(0, half) if label == "left" else slice(half, size)
    img[4:size - 4, cols] = 230
    return img[..., 0] if grey else img


def write_image_folder(root: Path, n_per_class: int = 12, seed: int = 0, grey: bool = False) -> Path:
    from PIL import Image

    rng = np.random.default_rng(seed)
    for label in ("left", "right"):
        (root / label).mkdir(parents=True, exist_ok=True)
        for i in range(n_per_class):
            Image.fromarray(toy_image(label, rng, grey=grey)).save(root / label / f"{label}-{i:03d}.png")
    return root


def write_idx(folder: Path, images: np.ndarray, labels: np.ndarray, prefix: str = "train") -> Path:
    """MNIST's IDX layout (gzip): magic 0x0803 / 0x0801, big-endian dimensions, then the bytes."""
    folder.mkdir(parents=True, exist_ok=True)
    img_file = folder / f"{prefix}-images-idx3-ubyte.gz"
    with gzip.open(img_file, "wb") as f:
        f.write(struct.pack(">HBB3I", 0, 8, 3, *images.shape) + images.astype(np.uint8).tobytes())
    with gzip.open(folder / f"{prefix}-labels-idx1-ubyte.gz", "wb") as f:
        f.write(struct.pack(">HBBI", 0, 8, 1, len(labels)) + labels.astype(np.uint8).tobytes())
    return img_file


def image_recipe(model: Path, train: str, out: Path, **task) -> dict:
    return {"model": {"path": str(model)},
            "task": {"type": "image-classification", "image_size": 32, **task},
            "data": {"train": train, "test_fraction": 0.25, "eval_fraction": 0.15},
            "train": {"epochs": 2, "lr": 3e-3, "batch_size": 8, "seed": 0, "threads": 1, "precision": "fp32",
                      "log_every": 1},
            "eval": {"bootstrap_samples": 50, "latency": True, "report": False},
            "output": {"dir": str(out)}}
