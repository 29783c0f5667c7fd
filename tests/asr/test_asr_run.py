"""End to end on a tiny random Whisper: train on tone clips whose transcript names the tone, then the final
evaluation (fine-tuned vs base WER), `lft predict` on a folder, and the export loaded by plain transformers
(WhisperForConditionalGeneration + the ASR pipeline) transcribing the same; LoRA (merged export) and a frozen
encoder."""

from __future__ import annotations

import json

import numpy as np

from tests.asr.conftest import asr_recipe, write_speech_folder
from tests.conftest import run_lft


def _pipeline_texts(model_dir, files, num_beams: int, max_new_tokens: int) -> list[str]:
    from math import gcd

    import soundfile as sf
    from scipy.signal import resample_poly
    from transformers import WhisperForConditionalGeneration, pipeline

    model = WhisperForConditionalGeneration.from_pretrained(model_dir)  # plain transformers, no lftrain
    asr = pipeline("automatic-speech-recognition", model=model_dir, device="cpu")
    assert type(asr.model).__name__ == type(model).__name__
    out = []
    for f in files:
        wave, rate = sf.read(f, dtype="float32")
        # the pipeline resamples with torchaudio, not installed here: give it 16 kHz audio (scipy's polyphase)
        wave = resample_poly(wave, 16000 // gcd(rate, 16000), rate // gcd(rate, 16000)).astype(np.float32)
        out.append(asr({"raw": wave, "sampling_rate": 16000},
                       generate_kwargs={"num_beams": num_beams, "max_new_tokens": max_new_tokens})["text"].strip())
    return out


def _generate_texts(model_dir, files, max_new_tokens: int) -> list[str]:
    """Plain transformers: its feature extractor, tokenizer and model.generate on the export's folder."""
    import soundfile as sf
    from transformers import AutoTokenizer, WhisperFeatureExtractor, WhisperForConditionalGeneration

    fe, tok = WhisperFeatureExtractor.from_pretrained(model_dir), AutoTokenizer.from_pretrained(model_dir)
    model = WhisperForConditionalGeneration.from_pretrained(model_dir).eval()
    waves = [sf.read(f, dtype="float32")[0] for f in files]  # 16 kHz already
    feats = fe(waves, sampling_rate=16000, return_tensors="pt").input_features
    return [t.strip() for t in tok.batch_decode(model.generate(feats, max_new_tokens=max_new_tokens),
                                                 skip_special_tokens=True)]


def test_train_predict_and_export_round_trip(tmp_path, tiny_asr):
    import torch
    from transformers import WhisperForConditionalGeneration

    from lftrain import api

    data = write_speech_folder(tmp_path / "clips", n_per_class=12, rate=22050)  # resampled to 16 kHz on encode
    result = api.train(asr_recipe(tiny_asr, str(data), tmp_path / "run", window_seconds=1.0))
    test = result.metrics["test"]
    assert test["n"] == 6 and test["wer_low"] <= test["wer"] <= test["wer_high"]
    assert test["base"]["wer"] >= 0.5  # a random decoder does not say "low tone"
    assert test["wer"] <= 0.25 and test["wer"] < test["base"]["wer"]  # two tones, learnt
    assert test["relative_wer_reduction"] > 0.5 and test["rtf"] > 0 and test["beam"]["num_beams"] == 2
    # the run's 1 s window is cut from the model's own 2 s one: the base model is also scored at its own window
    assert test["base"]["window_seconds"] == 1.0 and test["base_native"]["window_seconds"] == 2.0
    evidence = json.loads((result.run_dir / "evidence.json").read_text())
    assert evidence["splits"]["test"]["metrics"]["wer"] == test["wer"]
    rows = [json.loads(x) for x in (result.run_dir / "evidence" / "test_transcripts.jsonl").read_text().splitlines()]
    assert len(rows) == 6 and {"reference", "greedy", "beam", "base"} <= set(rows[0])

    files = sorted(str(p) for p in data.glob("*.wav"))
    p = run_lft("predict", str(result.run_dir), "--input", str(data), "--output", str(tmp_path / "p.jsonl"))
    assert p.returncode == 0, p.stderr[-3000:]
    preds = [json.loads(x) for x in (tmp_path / "p.jsonl").read_text().splitlines()]
    assert [r["file"] for r in preds] == files
    truth = [(data / f"{f.rsplit('/', 1)[1][:-4]}.txt").read_text().strip() for f in files]
    assert np.mean([r["text"] == t for r, t in zip(preds, truth)]) >= 0.8

    out = api.export(result.run_dir, tmp_path / "exported")
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["max_source_positions"] == 50  # 1 s window: 100 mel frames, 50 encoder positions
    assert json.loads((out / "preprocessor_config.json").read_text())["nb_max_frames"] == 100
    theirs = _pipeline_texts(out, files, num_beams=2, max_new_tokens=8)
    assert theirs == [r["text"] for r in preds]
    reloaded = WhisperForConditionalGeneration.from_pretrained(out)
    base = WhisperForConditionalGeneration.from_pretrained(tiny_asr)
    assert not torch.allclose(reloaded.model.decoder.layers[0].fc2.weight, base.model.decoder.layers[0].fc2.weight)

    metrics = api.evaluate(result.run_dir, data)
    assert metrics["n"] == 24 and metrics["wer"] <= 0.25


def test_lora_merged_export_and_frozen_encoder(tmp_path, tiny_asr):
    import torch
    from transformers import WhisperForConditionalGeneration

    from lftrain import api

    data = write_speech_folder(tmp_path / "clips", n_per_class=6)
    recipe = asr_recipe(tiny_asr, str(data), tmp_path / "lora", window_seconds=1.0)
    recipe["adaptation"] = {"type": "lora", "r": 4, "alpha": 8, "dropout": 0.0}
    recipe["train"]["epochs"] = 2
    recipe["eval"]["bootstrap_samples"] = 0
    recipe["task"]["decoding"] = {"num_beams": 1, "max_new_tokens": 6, "base_native_window": False}
    lora = api.train(recipe)
    assert (lora.model_dir / "adapter_model.safetensors").is_file()
    files = sorted(str(p) for p in data.glob("*.wav"))[:4]
    preds = api.predict(lora.run_dir, files)
    out = api.export(lora.run_dir, tmp_path / "merged", merge=True)
    assert not (out / "adapter_config.json").exists()
    assert _generate_texts(out, files, max_new_tokens=6) == [r["text"] for r in preds]

    # decoder-only tuning: the frozen encoder's outputs are computed once per clip (accel's encoder cache), and the
    # run ends with the same weights as one that runs the encoder every step (train.accel: off)
    runs = {}
    for accel in ("auto", "off"):
        recipe = asr_recipe(tiny_asr, str(data), tmp_path / f"frozen-{accel}", window_seconds=1.0)
        recipe["adaptation"] = {"type": "freeze", "patterns": [r"^model\.encoder\."], "embeddings": False}
        recipe["train"].update(epochs=2, accel=accel)
        recipe["eval"]["bootstrap_samples"] = 0
        recipe["task"]["decoding"] = {"num_beams": 1, "max_new_tokens": 6, "compare_base": False}
        runs[accel] = api.train(recipe)
    levers = json.loads((runs["auto"].run_dir / "manifest.json").read_text())["accel"]["levers"]
    assert any(line.startswith("encoder cache: on") for line in levers), levers
    tuned = WhisperForConditionalGeneration.from_pretrained(runs["auto"].model_dir)
    plain = WhisperForConditionalGeneration.from_pretrained(runs["off"].model_dir)
    base = WhisperForConditionalGeneration.from_pretrained(tiny_asr)
    assert torch.equal(tuned.model.encoder.layers[0].fc1.weight, base.model.encoder.layers[0].fc1.weight)
    assert not torch.equal(tuned.model.decoder.layers[0].fc1.weight, base.model.decoder.layers[0].fc1.weight)
    for (name, a), b in zip(tuned.state_dict().items(), plain.state_dict().values()):
        assert torch.allclose(a, b, atol=2e-5), name
