"""Image data: folders, tables of paths or bytes, and (Fashion-)MNIST IDX files -> decoded uint8 arrays.

Every image is decoded once, here, with Pillow, into a compact uint8 array (H x W grey or H x W x 3 RGB);
resizing and normalisation happen later (tasks/image_classification.py), on these arrays. Each image
remembers where it came from — its file, or the table file and row, or the IDX file and index — so a corrupt
one is named in the error, or skipped and counted (`task.on_bad_file: skip`).

    data.train: photos/                          # photos/<label>/*.png|jpg|jpeg|bmp|gif|webp
    data.train: labels.csv                       # columns image (path relative to the file, or bytes), label
    data.train: /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz#0:6000   # IDX, rows 0..5999
"""

from __future__ import annotations

import gzip
import io
import logging
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lftrain.data.media import labelled_folder, list_media
from lftrain.data.paths import resolve_path
from lftrain.errors import DataError

log = logging.getLogger("lftrain")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
FASHION_MNIST = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                 "Ankle boot"]


@dataclass
class ImageRows:
    """Decoded images with their labels (None when unlabelled) and where each came from."""

    images: list[np.ndarray] = field(default_factory=list)
    labels: list[Any] = field(default_factory=list)
    where: list[tuple[str, int, int | None]] = field(default_factory=list)  # (file, row, line)
    bad: list[str] = field(default_factory=list)  # what was skipped, with why


class BadImage(DataError):
    """An image that cannot be decoded."""


def decode(data: bytes | Path, name: str) -> np.ndarray:
    """Pillow-decode one image into uint8 (H x W for grey, H x W x 3 otherwise); BadImage naming `name`."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data) if isinstance(data, bytes) else data) as im:
            im.load()  # truncated files fail here, not later
            if im.mode not in ("L", "RGB"):
                im = im.convert("L" if im.mode in ("1", "I;16", "I", "F") else "RGB")
            return np.asarray(im, dtype=np.uint8).copy()
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise BadImage(f"cannot decode image: {exc}", file=name) from None


def _add(rows: ImageRows, source: bytes | Path, name: str, label: Any, where: tuple, skip: bool) -> None:
    try:
        rows.images.append(decode(source, name))
    except BadImage as exc:
        if not skip:
            raise
        rows.bad.append(str(exc))
        return
    rows.labels.append(label)
    rows.where.append(where)


def list_images(folder: Path) -> list[Path]:
    return list_media(folder, IMAGE_SUFFIXES)


def read_folder(folder: Path, *, with_labels: bool, skip_bad: bool) -> ImageRows:
    """`folder/<label>/*.png|jpg...` (labels = sub-folder names); unlabelled: every image below `folder`."""
    rows = ImageRows()
    for i, (f, label) in enumerate(labelled_folder(folder, IMAGE_SUFFIXES, "image", with_labels=with_labels)):
        _add(rows, f, str(f), label, (str(f), i + 1, None), skip_bad)
    return rows


def read_files(files: list[str | Path], *, skip_bad: bool) -> ImageRows:
    """A list of image files (prediction input), in the given order."""
    rows = ImageRows()
    for i, f in enumerate(files):
        p = resolve_path(str(f))
        if not p.is_file():
            raise DataError("image file not found", file=str(f))
        _add(rows, p, str(f), None, (str(f), i + 1, None), skip_bad)
    return rows


def read_table_images(table, base: Path, image_col: str, label_col: str, *, with_labels: bool,
                      skip_bad: bool) -> ImageRows:
    """A CSV/JSONL/Parquet table whose `image_col` holds a path (relative to the table's folder) or the encoded
    bytes (Parquet/`datasets`: bytes, or a {"bytes", "path"} dict as `datasets.Image` stores it)."""
    from lftrain.data.readers import is_missing

    if image_col not in table.columns:
        raise DataError(f"no column '{image_col}' (columns: {', '.join(table.columns)}); set task.image",
                        file=table.file)
    if with_labels and label_col not in table.columns:
        raise DataError(f"no column '{label_col}' (columns: {', '.join(table.columns)}); set task.label",
                        file=table.file)
    rows = ImageRows()
    for i, row in enumerate(table.rows):
        where = table.where(i)
        value, label = row.get(image_col), row.get(label_col) if with_labels else None
        if is_missing(value):
            raise DataError("empty image", column=image_col, **where)
        if with_labels and is_missing(label):
            raise DataError("missing label", column=label_col, **where)
        if isinstance(value, dict):  # datasets.Image: bytes when embedded, else a path
            value = value.get("bytes") or value.get("path")
        if isinstance(value, (bytes, bytearray)):
            source, name = bytes(value), f"{table.file} row {where['row']}"
        elif isinstance(value, str):
            p = Path(value).expanduser()
            source = p if p.is_absolute() else base / p
            name = str(source)
            if not source.is_file():
                if skip_bad:
                    rows.bad.append(f"{name}: file not found ({table.file} row {where['row']})")
                    continue
                raise DataError(f"image file not found: {name}", column=image_col, **where)
        else:
            raise DataError(f"expected an image path or bytes, found {type(value).__name__}", column=image_col,
                            **where)
        _add(rows, source, name, label, (table.file, where["row"], where["line"]), skip_bad)
    return rows


# ---- IDX (MNIST, Fashion-MNIST) -----------------------------------------------------------------------------

def is_idx(path: str) -> bool:
    name = Path(path.split("#", 1)[0]).name
    return "-idx" in name and "-ubyte" in name


def _read_idx(path: Path) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
        zero, dtype, ndim = struct.unpack(">HBB", raw[:4])
        if zero != 0 or dtype != 0x08:  # unsigned bytes: the only type (Fashion-)MNIST uses
            raise ValueError(f"not an unsigned-byte IDX file (magic {raw[:4].hex()})")
        dims = struct.unpack(f">{ndim}I", raw[4:4 + 4 * ndim])
        data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
        if data.size != int(np.prod(dims)):
            raise ValueError(f"{data.size} bytes of data for shape {dims}")
        return data.reshape(dims)
    except (OSError, EOFError, struct.error, ValueError) as exc:
        raise DataError(f"cannot read IDX data: {exc}", file=str(path)) from None


def _slice(spec: str, n: int, path: str) -> slice:
    try:
        start, _, stop = spec.partition(":")
        return slice(int(start) if start else 0, int(stop) if stop else n)
    except ValueError:
        raise DataError(f"'#{spec}' is not a row range START:STOP (e.g. #0:6000)", file=path) from None


def read_idx(path: str, *, with_labels: bool) -> ImageRows:
    """`*-images-idx3-ubyte[.gz][#START:STOP]`; labels from the sibling `*-labels-idx1-ubyte[.gz]`, as the
    Fashion-MNIST class names when the file is Fashion-MNIST's, else as digits."""
    file, _, spec = path.partition("#")
    images_path = resolve_path(file)
    if not images_path.is_file():
        raise DataError("file not found", file=file)
    images = _read_idx(images_path)
    if images.ndim != 3:
        raise DataError(f"expected an idx3 image file (N x H x W), found {images.ndim} dimensions", file=file)
    part = _slice(spec, len(images), path) if spec else slice(0, len(images))
    index = np.arange(len(images))[part]
    labels: list[Any] = [None] * len(index)
    if with_labels:
        labels_path = images_path.with_name(images_path.name.replace("images-idx3", "labels-idx1"))
        if labels_path == images_path or not labels_path.is_file():
            raise DataError(f"no labels file beside it (looked for {labels_path.name})", file=file)
        y = _read_idx(labels_path)
        if len(y) != len(images):
            raise DataError(f"{len(y)} labels for {len(images)} images", file=str(labels_path))
        names = FASHION_MNIST if "fashion" in str(images_path).lower() else [str(d) for d in range(10)]
        labels = [names[int(v)] for v in y[index]]
    return ImageRows([images[i] for i in index], labels, [(file, int(i) + 1, None) for i in index])
