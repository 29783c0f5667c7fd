"""Training-time image augmentation on uint8-valued batches: random resized crop and horizontal flip.

The random draws come from a generator seeded by the batch's example indices, not from torch's global RNG:
a batch is augmented the same way whether it is collated in the training process or a data-loader worker,
and a resumed run replays exactly the augmentations of an uninterrupted one.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F


def _rng(indices: np.ndarray) -> np.random.Generator:
    return np.random.default_rng(np.asarray(indices, dtype=np.uint64).tolist() + [0x1A6E])


def random_crop_flip(x: torch.Tensor, indices: np.ndarray, *, min_scale: float, flip: bool) -> torch.Tensor:
    """Each image (B, C, H, W): a random crop of `min_scale`..1 of its area, aspect ratio 3/4..4/3, resized back
    to H x W (bilinear), then flipped left-right with probability 1/2 when `flip`."""
    rng = _rng(indices)
    _, _, h, w = x.shape
    out = torch.empty_like(x)
    for i in range(x.shape[0]):
        area = h * w * rng.uniform(min_scale, 1.0)
        ratio = math.exp(rng.uniform(math.log(3 / 4), math.log(4 / 3)))
        ch = min(h, max(1, round(math.sqrt(area / ratio))))
        cw = min(w, max(1, round(math.sqrt(area * ratio))))
        top, left = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
        crop = x[i:i + 1, :, top:top + ch, left:left + cw]
        if (ch, cw) != (h, w):
            crop = F.interpolate(crop, size=(h, w), mode="bilinear", align_corners=False)
        if flip and rng.random() < 0.5:
            crop = crop.flip(-1)
        out[i] = crop[0]
    return out
