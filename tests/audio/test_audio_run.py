"""End to end: train a tiny random Whisper audio classifier on tone clips, reload, evaluate, predict (API + CLI)."""

from __future__ import annotations

import json

import numpy as np

from tests.audio.conftest import audio_recipe, write_tone_folder
from tests.conftest import run_lft, write_recipe


def test_train_evaluate_predict_with_a_short_window(tmp_path, tiny_whisper):
    import torch
    from transformers import AutoModelForAudioClassification

    from lftrain import api

    data = write_tone_folder(tmp_path / "clips", n_per_class=10, rate=22050)  # resampled to 16 kHz on encode
    result = api.train(audio_recipe(tiny_whisper, str(data), tmp_path / "run"))
    assert result.metrics["test"]["n"] == 5
    assert result.metrics["test"]["accuracy"] >= 0.8  # two tones an octave and more apart: easy
    model_dir = result.model_dir
    config = json.loads((model_dir / "config.json").read_text())
    # the 1 s window: 100 mel frames -> 50 encoder positions, saved with the model and its feature extractor
    assert config["max_source_positions"] == 50 and config["id2label"] == {"0": "high", "1": "low"}
    assert json.loads((model_dir / "preprocessor_config.json").read_text())["nb_max_frames"] == 100
    reloaded = AutoModelForAudioClassification.from_pretrained(model_dir)  # loadable without lftrain
    assert reloaded.encoder.embed_positions.weight.shape == (50, 32)
    with torch.no_grad():  # still the fixed sinusoids of the base model (never trained, never re-initialised)
        base = AutoModelForAudioClassification.from_pretrained(tiny_whisper, num_labels=2)
        assert torch.equal(reloaded.encoder.embed_positions.weight, base.encoder.embed_positions.weight[:50])
    evidence = json.loads((result.run_dir / "evidence.json").read_text())
    assert evidence["latency"]["batch1_n"] > 0 and "test" in evidence["splits"]

    files = sorted(str(p) for p in data.rglob("*.wav"))
    rows = api.predict(result.run_dir, data, temperature=False)  # a folder: every clip below it, in order
    assert [r["file"] for r in rows] == files
    picked = api.predict(result.run_dir, files[::-1][:3], temperature=False)  # a list of files, in the order given
    by_file = {r["file"]: r for r in rows}
    assert [r["file"] for r in picked] == files[::-1][:3]
    for r in picked:
        assert np.allclose(list(r["probs"].values()), list(by_file[r["file"]]["probs"].values()), atol=1e-5)
    assert api.evaluate(result.run_dir, data)["n"] == 20


def test_random_init_then_cli_predict_and_bad_file(tmp_path, tiny_whisper):
    import pytest
    import torch
    from transformers import AutoModelForAudioClassification

    from lftrain import api
    from lftrain.errors import DataError

    data = write_tone_folder(tmp_path / "clips", n_per_class=4, fmt="FLAC")
    recipe = audio_recipe(tiny_whisper, str(data), tmp_path / "run")
    recipe["model"]["init"] = "random"
    recipe["train"]["epochs"] = 1
    recipe["eval"] = {"bootstrap_samples": 0, "latency": False, "report": False}
    result = api.train(write_recipe(tmp_path / "r.yaml", recipe))
    trained = AutoModelForAudioClassification.from_pretrained(result.model_dir)
    base = AutoModelForAudioClassification.from_pretrained(tiny_whisper, num_labels=2)
    # re-initialised: learned weights differ from the base model's; the fixed sinusoidal positions do not
    assert not torch.allclose(trained.encoder.layers[1].fc2.weight, base.encoder.layers[1].fc2.weight, atol=1e-2)
    assert torch.equal(trained.encoder.embed_positions.weight, base.encoder.embed_positions.weight[:50])

    files = sorted(str(f) for f in data.rglob("*.flac"))[:2]
    p = run_lft("predict", str(tmp_path / "run"), "--input", *files, "--output", str(tmp_path / "p.jsonl"))
    assert p.returncode == 0, p.stderr[-3000:]
    rows = [json.loads(line) for line in (tmp_path / "p.jsonl").read_text().splitlines()]
    assert [r["file"] for r in rows] == files and set(rows[0]["probs"]) == {"low", "high"}
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF0000WAVEnope")
    with pytest.raises(DataError, match=r"bad\.wav.*cannot decode audio"):
        api.predict(result.run_dir, [files[0], str(bad)])
