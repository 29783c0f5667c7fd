"""End to end: train an image classifier from a folder, reload it, evaluate and predict (API and CLI)."""

from __future__ import annotations

import json

import numpy as np

from tests.conftest import run_lft, write_recipe
from tests.vision.conftest import image_recipe, write_image_folder


def test_folder_train_evaluate_predict(tmp_path, tiny_effnet):
    from lftrain import api

    data = write_image_folder(tmp_path / "imgs", n_per_class=16)
    result = api.train(image_recipe(tiny_effnet, str(data), tmp_path / "run"))
    assert result.metrics["test"]["n"] == 8
    model_dir = result.model_dir
    assert (model_dir / "model.safetensors").is_file() and (model_dir / "preprocessor_config.json").is_file()
    config = json.loads((model_dir / "config.json").read_text())
    assert config["model_type"] == "lftrain-efficientnet-lite" and config["id2label"] == {"0": "left", "1": "right"}
    evidence = json.loads((result.run_dir / "evidence.json").read_text())
    assert evidence["latency"]["batch1_n"] > 0 and "test" in evidence["splits"]

    # predict on a folder (every image below it, no labels needed) and on a list of files, in input order
    files = sorted(str(p) for p in data.rglob("*.png"))
    rows = api.predict(result.run_dir, data, temperature=False)
    assert [r["file"] for r in rows] == files
    listed = api.predict(result.run_dir, files[::-1][:3], temperature=False)
    assert [r["file"] for r in listed] == files[::-1][:3]
    by_file = {r["file"]: r for r in rows}
    for r in listed:  # same image, same probabilities, whichever way it was given
        assert np.allclose(list(r["probs"].values()), list(by_file[r["file"]]["probs"].values()), atol=1e-5)
    metrics = api.evaluate(result.run_dir, data)
    assert metrics["n"] == 32


def test_cli_predict_files(tmp_path, tiny_effnet):
    from lftrain import api

    data = write_image_folder(tmp_path / "imgs", n_per_class=6, grey=True)  # grey PNGs become RGB
    recipe = image_recipe(tiny_effnet, str(data), tmp_path / "run", augment=False)
    recipe["train"]["epochs"] = 1
    recipe["eval"] = {"bootstrap_samples": 0, "latency": False, "report": False}
    api.train(write_recipe(tmp_path / "r.yaml", recipe))
    files = sorted(str(f) for f in data.rglob("*.png"))[:2]
    p = run_lft("predict", str(tmp_path / "run"), "--input", *files, "--output", str(tmp_path / "p.jsonl"))
    assert p.returncode == 0, p.stderr[-3000:]
    rows = [json.loads(line) for line in (tmp_path / "p.jsonl").read_text().splitlines()]
    assert [r["file"] for r in rows] == files and set(rows[0]["probs"]) == {"left", "right"}
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"GIF89a broken")
    p = run_lft("predict", str(tmp_path / "run"), "--input", files[0], str(bad), "--output", str(tmp_path / "q.jsonl"))
    assert p.returncode == 2 and "bad.png" in p.stderr and "cannot decode image" in p.stderr


def test_lora_on_efficientnet_default_targets_and_merge(tmp_path, tiny_effnet):
    """peft has no LoRA default for EfficientNet-Lite: lftrain adapts its pointwise convolutions, saves a peft
    adapter, and the merged export predicts the same as the adapter."""
    import torch
    from peft import PeftConfig, PeftModel
    from transformers import AutoModelForImageClassification

    from lftrain import api

    data = write_image_folder(tmp_path / "imgs", n_per_class=6)
    recipe = image_recipe(tiny_effnet, str(data), tmp_path / "run", augment=False)
    recipe.update(adaptation={"type": "lora", "r": 4}, eval={"bootstrap_samples": 0, "latency": False,
                                                             "report": False})
    recipe["train"]["epochs"] = 1
    result = api.train(recipe)
    assert set(PeftConfig.from_pretrained(result.model_dir).target_modules) == {"_expand_conv", "_project_conv"}
    api.export(result.run_dir, tmp_path / "merged", merge=True)
    merged = AutoModelForImageClassification.from_pretrained(tmp_path / "merged").eval()
    assert not any("lora" in n for n, _ in merged.named_parameters())
    base = AutoModelForImageClassification.from_pretrained(tiny_effnet, num_labels=2, ignore_mismatched_sizes=True)
    adapter = PeftModel.from_pretrained(base, result.model_dir).eval()  # peft's own loader
    pixels = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.allclose(adapter(pixel_values=pixels).logits, merged(pixel_values=pixels).logits, atol=1e-4)
    assert api.evaluate(result.run_dir, data)["n"] == 12  # and lftrain reloads the adapter run itself
