"""Any AutoModelForImageClassification folder (a tiny ViT) with a frozen bottom; `model.init: random`."""

from __future__ import annotations

import json

import torch

from tests.vision.conftest import image_recipe, write_image_folder


def test_vit_frozen_bottom_trains_and_reloads(tmp_path, tiny_vit, caplog):
    from lftrain import api
    from lftrain.runs.loaded import LoadedRun

    data = write_image_folder(tmp_path / "imgs", n_per_class=8)
    recipe = image_recipe(tiny_vit, str(data), tmp_path / "run", image_size=16, augment=False)
    recipe["adaptation"] = {"type": "freeze", "bottom_layers": 1}
    recipe["train"]["epochs"] = 1
    recipe["eval"]["latency"] = False
    with caplog.at_level("INFO", logger="lftrain"):
        result = api.train(recipe)
    assert "frozen-prefix cache: off (not supported" in caplog.text  # image inputs never use the cache
    assert json.loads((result.model_dir / "config.json").read_text())["model_type"] == "vit"
    loaded = LoadedRun(result.run_dir)
    assert loaded.tokenizer.image_size == 16 and loaded.task.labels.names == ["left", "right"]
    rows = api.predict(result.run_dir, [str(sorted(data.rglob("*.png"))[0])])
    assert rows[0]["label"] in ("left", "right") and rows[0]["row"] == 1


def test_random_init_resets_pretrained_weights(tiny_effnet):
    from lftrain.models.loading import reinitialise
    from lftrain.models.vision import EfficientNetLiteForImageClassification

    model = EfficientNetLiteForImageClassification.from_pretrained(tiny_effnet)
    before = model.efficientnet._conv_stem.weight.detach().clone()
    model.efficientnet._bn0.running_mean.fill_(3.0)
    torch.manual_seed(123)
    assert reinitialise(model) > 10
    assert not torch.equal(before, model.efficientnet._conv_stem.weight)
    assert torch.all(model.efficientnet._bn0.running_mean == 0)

