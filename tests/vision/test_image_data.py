"""Image readers (folder, table of paths/bytes, IDX), bad files, duplicates and the collated batch — no training."""

from __future__ import annotations

import numpy as np
import pytest

from lftrain.config import load_recipe
from lftrain.data.prepare import prepare_data
from lftrain.errors import DataError
from lftrain.tasks import build_task
from tests.conftest import write_csv
from tests.vision.conftest import image_recipe, write_idx, write_image_folder


def _prepare(recipe: dict):
    resolved = load_recipe(data=recipe)
    task = build_task(resolved.task)
    return task, prepare_data(resolved, task)


def _corrupt(path) -> None:
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + b"not really a png" * 4)


def test_folder_labels_and_corrupt_png_named(tmp_path):
    data = write_image_folder(tmp_path / "imgs", n_per_class=5)
    bad = data / "left" / "left-002.png"
    _corrupt(bad)
    with pytest.raises(DataError, match="cannot decode image") as err:
        _prepare(image_recipe(tmp_path / "m", str(data), tmp_path / "run"))
    assert str(bad) in str(err.value)

    task, prepared = _prepare(image_recipe(tmp_path / "m", str(data), tmp_path / "run", on_bad_file="skip"))
    assert prepared.labels == ["left", "right"]
    assert prepared.stats[f"{data}:bad_files_skipped"] == 1
    total = prepared.stats["train_rows"] + prepared.stats["eval_rows"] + prepared.stats["test_rows"]
    assert total == 9


def test_table_of_paths_and_bytes(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    data = write_image_folder(tmp_path / "imgs", n_per_class=4)
    files = sorted(data.rglob("*.png"))
    rows = [{"path": str(f.relative_to(tmp_path)), "y": f.parent.name} for f in files]
    csv = write_csv(tmp_path / "images.csv", rows)
    task, prepared = _prepare({**image_recipe(tmp_path / "m", str(csv), tmp_path / "run", image="path",
                                              label="y"), "data": {"train": str(csv), "test_fraction": 0.0,
                                                                   "eval_fraction": 0.0}})
    assert len(prepared.train) == 8 and prepared.train.fields["image"][0].shape == (20, 20, 3)

    pq.write_table(pa.table({"img": [f.read_bytes() for f in files], "label": [f.parent.name for f in files]}),
                   tmp_path / "images.parquet")
    _, from_bytes = _prepare({**image_recipe(tmp_path / "m", "", tmp_path / "run", image="img"),
                              "data": {"train": str(tmp_path / "images.parquet"), "test_fraction": 0.0,
                                       "eval_fraction": 0.0}})
    same = [x.tobytes() for x in prepared.train.fields["image"]]
    assert [x.tobytes() for x in from_bytes.train.fields["image"]] == same

    write_csv(tmp_path / "missing.csv", [{"path": "nowhere.png", "y": "left"}])
    with pytest.raises(DataError, match="image file not found") as err:
        _prepare({**image_recipe(tmp_path / "m", "", tmp_path / "run", image="path", label="y"),
                  "data": {"train": str(tmp_path / "missing.csv"), "test_fraction": 0.0, "eval_fraction": 0.0}})
    assert "row 1" in str(err.value)


def test_idx_reader_slices_and_labels(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, size=(20, 28, 28), dtype=np.uint8)
    labels = np.arange(20) % 10
    idx = write_idx(tmp_path / "mnist", images, labels)
    recipe = image_recipe(tmp_path / "m", f"{idx}#4:16", tmp_path / "run")
    recipe["data"].update({"test_fraction": 0.0, "eval_fraction": 0.0})
    task, prepared = _prepare(recipe)
    assert len(prepared.train) == 12
    assert prepared.train.fields["label"][0] == "4" and prepared.train.where[0] == (str(idx), 5, None)
    assert np.array_equal(prepared.train.fields["image"][0], images[4])

    (tmp_path / "mnist" / "train-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError, match="no labels file"):
        _prepare(recipe)
    (tmp_path / "broken-images-idx3-ubyte.gz").write_bytes(b"junk")
    with pytest.raises(DataError, match="cannot read IDX") as err:
        _prepare({**recipe, "data": {"train": str(tmp_path / "broken-images-idx3-ubyte.gz")}})
    assert "broken-images-idx3-ubyte.gz" in str(err.value)


def test_duplicates_by_content_and_collate(tmp_path):
    from lftrain.tasks.image_processor import ImageProcessor

    data = write_image_folder(tmp_path / "imgs", n_per_class=3, grey=True)
    (data / "left" / "copy.png").write_bytes((data / "left" / "left-000.png").read_bytes())
    recipe = image_recipe(tmp_path / "m", str(data), tmp_path / "run")
    recipe["data"].update({"test_fraction": 0.0, "eval_fraction": 0.0})
    task, prepared = _prepare(recipe)
    assert prepared.stats["train:duplicates_dropped"] == 1 and len(prepared.train) == 6

    proc = ImageProcessor(16, [127 / 255] * 3, [128 / 255] * 3)
    enc = task.encode(proc, prepared.train)  # train split: augmentation marked
    assert enc["pixels"].dtype == np.uint8 and enc["pixels"].shape == (6, 1, 16, 16) and "augment" in enc
    idx = np.arange(4)
    a, b = task.collate(enc, idx, 0), task.collate(enc, idx, 0)
    assert a["pixel_values"].shape == (4, 3, 16, 16)
    assert np.array_equal(a["pixel_values"].numpy(), b["pixel_values"].numpy())  # seeded by the batch: repeatable
    prepared.train.name = "test"
    plain = task.collate(task.encode(proc, prepared.train), idx, 0)["pixel_values"].numpy()
    expected = (enc["pixels"][:4].astype(np.float32) - 127) / 128  # EfficientNet-Lite's (x - 127) / 128
    assert np.allclose(plain, np.repeat(expected, 3, axis=1), atol=1e-5)


def test_data_checks_on_images_use_content(tmp_path):
    from lftrain import api

    train = write_image_folder(tmp_path / "train", n_per_class=4, seed=0)
    test = write_image_folder(tmp_path / "test", n_per_class=2, seed=1)
    (test / "left" / "leaked.png").write_bytes((train / "left" / "left-001.png").read_bytes())
    (train / "right" / "again.png").write_bytes((train / "right" / "right-000.png").read_bytes())
    recipe = image_recipe(tmp_path / "m", str(train), tmp_path / "run")
    recipe["data"] = {"train": str(train), "test": str(test), "eval_fraction": 0.0}
    report = api.check_data(recipe, output=tmp_path / "checks", print_table=False)
    assert report.results["leakage"].count == 1 and report.results["duplicates"].count == 1
    assert str(test / "left" / "leaked.png") in str(report.results["leakage"].examples)
    assert "pii" not in report.results and "near_duplicates" not in report.results
