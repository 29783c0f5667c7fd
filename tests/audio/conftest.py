"""Tiny audio models and audio data built in the test: a random Whisper (the real architecture, 2+1 layers,
width 32) and folders of synthetic tone clips whose pitch is the label."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

TONES = {"low": 300.0, "high": 1800.0}


def tiny_whisper_config(max_source_positions: int = 100):
    from transformers import WhisperConfig

    return WhisperConfig(vocab_size=64, num_mel_bins=80, d_model=32, encoder_layers=2, decoder_layers=1,
                         encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64,
                         max_source_positions=max_source_positions, max_target_positions=16, pad_token_id=0,
                         bos_token_id=1, eos_token_id=2, decoder_start_token_id=1, classifier_proj_size=16)


def make_tiny_whisper(directory: Path, *, seed: int = 0) -> Path:
    """A random WhisperForConditionalGeneration folder shaped like a converted checkpoint (2 s of audio at most)."""
    import torch
    from transformers import WhisperFeatureExtractor, WhisperForConditionalGeneration

    torch.manual_seed(seed)
    WhisperForConditionalGeneration(tiny_whisper_config()).save_pretrained(directory)
    WhisperFeatureExtractor(chunk_length=2).save_pretrained(directory)
    return directory


@pytest.fixture(scope="session")
def tiny_whisper(tmp_path_factory) -> Path:
    return make_tiny_whisper(tmp_path_factory.mktemp("tiny-whisper"))


def tone(freq: float, rng: np.random.Generator, rate: int = 16000, seconds: float = 0.5) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    wave = 0.3 * np.sin(2 * np.pi * freq * (1 + rng.uniform(-0.05, 0.05)) * t)
    return (wave + rng.normal(0, 0.01, t.shape)).astype(np.float32)


def write_tone_folder(root: Path, n_per_class: int = 8, seed: int = 0, rate: int = 16000, fmt: str = "WAV") -> Path:
    import soundfile as sf

    rng = np.random.default_rng(seed)
    suffix = ".flac" if fmt == "FLAC" else ".wav"
    for label, freq in TONES.items():
        (root / label).mkdir(parents=True, exist_ok=True)
        for i in range(n_per_class):
            sf.write(root / label / f"{label}-{i:03d}{suffix}", tone(freq, rng, rate), rate, format=fmt)
    return root


def audio_recipe(model: Path, train: str, out: Path, **task) -> dict:
    return {"model": {"path": str(model)},
            "task": {"type": "audio-classification", "window_seconds": 1.0, **task},
            "data": {"train": train, "test_fraction": 0.25, "eval_fraction": 0.2},
            "train": {"epochs": 10, "lr": 3e-3, "batch_size": 4, "seed": 0, "threads": 1, "precision": "fp32",
                      "log_every": 1},
            "eval": {"bootstrap_samples": 50, "latency": True, "report": False},
            "output": {"dir": str(out)}}
