"""Image runs take base64 image bytes (never a path on the server) and predict what `lft predict` does."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

pytest.importorskip("PIL")


@pytest.fixture(scope="module")
def image_run(tmp_path_factory) -> tuple[Path, list[Path]]:
    import lftrain
    from tests.vision.conftest import image_recipe, make_tiny_vit, write_image_folder

    tmp = tmp_path_factory.mktemp("serve-image")
    folder = write_image_folder(tmp / "images", n_per_class=8)
    recipe = image_recipe(make_tiny_vit(tmp / "vit"), str(folder), tmp / "run", image_size=16)
    recipe["train"]["epochs"] = 1
    recipe["eval"] = {"bootstrap_samples": 0, "latency": False, "report": False}
    files = sorted(folder.rglob("*.png"))[::5]
    return Path(lftrain.train(recipe).run_dir), files


def test_images_as_base64_match_predict(image_run):
    from fastapi.testclient import TestClient

    import lftrain
    from lftrain.serve.app import build_app

    run, files = image_run
    expected = lftrain.predict(run, input=[str(f) for f in files])
    inputs = [{"image": base64.b64encode(f.read_bytes()).decode()} for f in files]
    with TestClient(build_app(run)) as client:
        served = client.post("/predict", json={"inputs": inputs}).json()["predictions"]
        assert [p["label"] for p in served] == [p["label"] for p in expected]
        for got, want in zip(served, expected):
            assert got["probs"] == pytest.approx(want["probs"], abs=2e-6)
        for bad, phrase in ((["not base64!"], "inputs.0.image"), ([base64.b64encode(b"GIF89a nope").decode()],
                                                                  "inputs.0.image"),
                            ([str(files[0])], "expected an object with the fields image")):
            body = {"inputs": [{"image": b} for b in bad]} if phrase == "inputs.0.image" else {"inputs": bad}
            response = client.post("/predict", json=body)
            assert response.status_code == 422 and phrase in response.json()["error"]["message"], response.text
        assert client.get("/health").json()["status"] == "ok"
