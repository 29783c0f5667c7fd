"""What replaces the tokenizer for image models: the pixel size and normalisation the model expects.

Read from the model folder's `preprocessor_config.json` (Hugging Face's format: `size`, `image_mean`,
`image_std`), written back beside the trained weights, so `lft predict` prepares images exactly as training did.
"""

from __future__ import annotations

import json
from pathlib import Path

from lftrain.errors import ModelLoadError

FILE = "preprocessor_config.json"


def _size(value, default: int) -> int:
    if isinstance(value, int):
        return value
    if isinstance(value, dict):
        for key in ("height", "shortest_edge", "width"):
            if key in value:
                return int(value[key])
    return default


class ImageProcessor:
    """Image size (square) and per-channel mean/std on 0..1 pixel values."""

    pad_token_id = None  # no padding: every image is resized to the same shape

    def __init__(self, image_size: int = 224, mean: list[float] | None = None, std: list[float] | None = None,
                 rescale: float = 1 / 255) -> None:
        self.image_size = int(image_size)
        self.mean = list(mean or [0.5, 0.5, 0.5])
        self.std = list(std or [0.5, 0.5, 0.5])
        self.rescale = rescale

    @classmethod
    def from_dir(cls, path: Path, *, image_size: int | None = None, default_size: int = 224) -> ImageProcessor:
        """The model folder's preprocessor_config.json (defaults: the config's image_size, mean/std 0.5)."""
        cfg: dict = {}
        f = Path(path) / FILE
        if f.is_file():
            try:
                cfg = json.loads(f.read_text(encoding="utf-8"))
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                raise ModelLoadError(f"{f}: not valid JSON ({exc})") from None
        size = image_size or _size(cfg.get("size") or cfg.get("crop_size"), default_size)
        mean, std = cfg.get("image_mean"), cfg.get("image_std")
        if cfg.get("do_normalize") is False:
            mean, std = [0.0] * 3, [1.0] * 3
        return cls(size, mean, std, float(cfg.get("rescale_factor", 1 / 255)) if cfg.get("do_rescale", True) else 1.0)

    def save_pretrained(self, path: str | Path) -> None:
        out = {"image_processor_type": "lftrain", "size": {"height": self.image_size, "width": self.image_size},
               "do_rescale": True, "rescale_factor": self.rescale, "do_normalize": True,
               "image_mean": self.mean, "image_std": self.std}
        Path(path).mkdir(parents=True, exist_ok=True)
        (Path(path) / FILE).write_text(json.dumps(out, indent=1))
