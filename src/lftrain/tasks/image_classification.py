"""Image classification with any `AutoModelForImageClassification` (EfficientNet-Lite included, models/vision.py).

Images are decoded once (data/images.py), resized to the model's size and kept as uint8 arrays; a batch is
normalised as the model expects when it is collated, with random resized crops and flips for the training
split (`task.augment`). The processor (tasks/image_processor.py) takes the tokenizer's place.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field

from lftrain.config.base import Section
from lftrain.data.examples import Examples
from lftrain.tasks.base import TASKS, ClassificationTask
from lftrain.tasks.image_processor import ImageProcessor
from lftrain.tasks.inputs import ImageInput

log = logging.getLogger("lftrain")


@TASKS.register("image-classification")
class ImageClassification(ClassificationTask):
    """Predict one label per image. Loss: cross-entropy; one loss unit per image."""

    serve_input = ImageInput
    pipeline_tag = "image-classification"
    auto_model = "AutoModelForImageClassification"

    token_inputs = False
    requires = ("PIL",)
    cacheable = False  # decoded pixels: cheap to resize again, not worth a token-cache entry

    class Config(Section):
        type: Literal["image-classification"] = "image-classification"
        image: str = "image"
        """Column holding the image path (relative to the table file) or bytes, for CSV/JSONL/Parquet data.
        Image folders (`root/<label>/*.png`) and IDX files need no columns."""
        label: str = "label"
        """Column holding the label (tables); folders use the sub-folder names."""
        labels: list[str] | None = None
        """Label names in class-index order. Default: the sorted labels found in the training data."""
        image_size: int | None = Field(None, gt=0)
        """Pixels per side fed to the model; default the model's own (preprocessor_config.json, else 224).
        Smaller is faster; Fashion-MNIST's images are 28 px."""
        augment: bool = True
        """Random resized crops and horizontal flips of training images (never of eval/test images)."""
        crop_scale: float = Field(0.7, gt=0.0, le=1.0)
        """Smallest share of the image area a random crop keeps."""
        hflip: bool = True
        """Flip training images horizontally at random (off for text-like images such as digits)."""
        on_bad_file: Literal["error", "skip"] = "error"
        """A corrupt or unreadable image: stop with an error naming the file, or skip it and count it."""
        label_smoothing: float = Field(0.0, ge=0.0, lt=1.0)
        """Label smoothing of the cross-entropy loss (0 = none)."""

    @property
    def augments_input(self) -> bool:
        return self.config.augment

    # ---- data -------------------------------------------------------------------------------------------
    def read(self, path, data_cfg, *, with_labels: bool = True, drop_label=None, stats: dict | None = None,
             columns: dict[str, str] | None = None) -> Examples:
        """Read and decode one data source: a folder, IDX file, table, or a list of image files."""
        from lftrain.data import images
        from lftrain.data.paths import resolve_path
        from lftrain.data.readers import is_saved_dataset, read_table

        skip = self.config.on_bad_file == "skip"
        if isinstance(path, (list, tuple)):
            rows, name = images.read_files(list(path), skip_bad=skip), f"{len(path)} files"
        elif images.is_idx(str(path)):
            rows, name = images.read_idx(str(path), with_labels=with_labels), str(path)
        elif resolve_path(str(path)).is_dir() and not is_saved_dataset(resolve_path(str(path))):
            rows = images.read_folder(resolve_path(str(path)), with_labels=with_labels, skip_bad=skip)
            name = str(path)
        else:
            table = read_table(str(path), data_cfg.format, data_cfg.encoding).renamed(columns or {})
            rows = images.read_table_images(table, resolve_path(str(path).split("#", 1)[0]).parent, self.config.image,
                                            self.config.label, with_labels=with_labels, skip_bad=skip)
            name = str(path)
        if rows.bad:
            log.warning("%s: skipped %d unreadable images (task.on_bad_file: skip), e.g. %s", name, len(rows.bad),
                        rows.bad[0])
            if stats is not None:
                stats[f"{name}:bad_files_skipped"] = len(rows.bad)
        return self._examples(name, rows, with_labels, drop_label)

    def extract(self, table, *, normalize: bool, with_labels: bool = True, drop_label=None) -> Examples:
        """A table already read (e.g. `eval.ood`): its image column decoded, paths relative to the table file."""
        from lftrain.data import images

        rows = images.read_table_images(table, Path(table.file).parent, self.config.image, self.config.label,
                                        with_labels=with_labels, skip_bad=self.config.on_bad_file == "skip")
        return self._examples(table.file, rows, with_labels, drop_label)

    @staticmethod
    def _examples(name: str, rows, with_labels: bool, drop_label) -> Examples:
        from lftrain.data.labels import keep_labelled

        keep, keys, dropped = keep_labelled(rows.labels, rows.where, with_labels, drop_label)
        return Examples(name, {"image": [rows.images[i] for i in keep], "label": keys},
                        [rows.where[i] for i in keep], dropped)

    def dedupe_key(self, ex: Examples, i: int) -> tuple:
        img = ex.fields["image"][i]  # exact duplicates by content, whatever the file name
        return (img.shape, hashlib.sha1(np.ascontiguousarray(img).tobytes()).hexdigest())

    @staticmethod
    def row_info(ex: Examples, i: int) -> dict[str, Any]:
        """Extra keys of a prediction row: the image it is about."""
        return {"file": ex.where[i][0]}

    # ---- model ----------------------------------------------------------------------------------------
    def load_processor(self, source, trust_remote_code: bool = False) -> ImageProcessor:
        default = int(source.config.get("image_size", 224) or 224) if isinstance(source.config, dict) else 224
        return ImageProcessor.from_dir(source.path, image_size=self.config.image_size, default_size=default)

    def load_model(self, source, *, trust_remote_code: bool, attention: str):
        from transformers import AutoModelForImageClassification

        import lftrain.models.vision as vision  # registers EfficientNet-Lite with the Auto classes
        from lftrain.models.loading import load_classifier

        assert self.labels is not None
        extra = {}
        if source.config.get("model_type") == vision.MODEL_TYPE:
            # Its "same" padding is computed for a fixed input size: build it for the size we feed.
            extra["image_size"] = self.load_processor(source).image_size
        return load_classifier(AutoModelForImageClassification, source, self.labels, "an image classifier",
                               trust_remote_code, ignore_mismatched_sizes=True, **extra)

    def encode(self, processor: ImageProcessor, ex: Examples) -> dict[str, np.ndarray]:
        """Resize every image to the model's size: uint8 (N, C, S, S), C = 1 when all are grey, else 3."""
        from PIL import Image

        size = processor.image_size
        grey = all(img.ndim == 2 for img in ex.fields["image"])
        pixels = np.empty((len(ex), 1 if grey else 3, size, size), dtype=np.uint8)
        for i, img in enumerate(ex.fields["image"]):
            if img.shape[:2] != (size, size):
                img = np.asarray(Image.fromarray(img).resize((size, size), Image.BILINEAR))
            pixels[i] = img[None] if img.ndim == 2 else img.transpose(2, 0, 1)  # grey into RGB broadcasts
        out = {"pixels": pixels, "norm": np.asarray([processor.mean, processor.std], dtype=np.float32),
               "rescale": np.asarray([processor.rescale], dtype=np.float32)}
        if ex.name == "train" and self.config.augment:
            out["augment"] = np.asarray([self.config.crop_scale, float(self.config.hflip)], dtype=np.float32)
        labels = self.labels.encode(ex) if self.labels is not None else None
        if labels is not None:
            out["labels"] = labels
        return out

    @staticmethod
    def lengths(encoded: dict[str, np.ndarray]) -> np.ndarray:
        return np.ones(len(encoded["pixels"]), dtype=np.int64)  # every image is the same size

    @staticmethod
    def collate(encoded: dict[str, np.ndarray], indices: np.ndarray, pad_id: int) -> dict[str, Any]:
        """Normalised float pixels (B, 3, S, S); training images randomly cropped and flipped."""
        import torch

        from lftrain.tasks.image_augment import random_crop_flip

        x = torch.from_numpy(encoded["pixels"][indices]).float()
        if "augment" in encoded:
            scale, flip = encoded["augment"]
            x = random_crop_flip(x, indices, min_scale=float(scale), flip=bool(flip))
        mean, std = (torch.from_numpy(v).view(1, 3, 1, 1) for v in encoded["norm"])
        x = (x.expand(-1, 3, -1, -1) * float(encoded["rescale"][0]) - mean) / std
        batch = {"pixel_values": x.contiguous()}
        if "labels" in encoded:
            batch["labels"] = torch.from_numpy(encoded["labels"][indices])
        return batch

    # ---- model inputs (loss, metrics and predictions: ClassificationTask) -----------------------------
    @staticmethod
    def model_inputs(batch: dict[str, Any]) -> dict[str, Any]:
        return {"pixel_values": batch["pixel_values"]}
