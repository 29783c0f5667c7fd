"""Reading audio: formats, channels, resampling, the fixed window, bad and silent files (error or skip)."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from lftrain.data import audio
from lftrain.errors import DataError
from tests.audio.conftest import write_tone_folder


def test_decode_wav_flac_stereo(tmp_path):
    rng = np.random.default_rng(0)
    stereo = rng.uniform(-0.5, 0.5, (800, 2)).astype(np.float32)
    sf.write(tmp_path / "s.flac", stereo, 8000, format="FLAC")
    wave, rate = audio.decode(tmp_path / "s.flac", "s.flac")
    assert rate == 8000 and wave.shape == (800,) and wave.dtype == np.float32
    assert np.allclose(wave, stereo.mean(axis=1), atol=1e-4)  # channels averaged (FLAC is 16-bit)


def test_resample_to_model_rate():
    t = np.arange(8000) / 8000
    wave = np.sin(2 * np.pi * 440 * t).astype(np.float32)  # 1 s at 8 kHz
    up = audio.resample(wave, 8000, 16000)
    assert up.shape == (16000,) and up.dtype == np.float32
    peak = np.argmax(np.abs(np.fft.rfft(up)))  # still a 440 Hz tone (1 Hz bins)
    assert abs(peak - 440) <= 1
    assert audio.resample(wave, 22050, 16000).shape == (round(8000 * 16000 / 22050),)
    assert audio.resample(wave, 16000, 16000) is wave


def test_fit_window_pads_and_keeps_the_loudest_part():
    short = np.ones(10, np.float32)
    assert np.array_equal(audio.fit_window(short, 16), np.r_[np.ones(10), np.zeros(6)])
    long = np.zeros(100, np.float32)
    long[60:70] = 1.0  # the "keyword" sits late in a long recording
    crop = audio.fit_window(long, 20)
    assert crop.shape == (20,) and crop.sum() == 10


def test_bad_and_silent_files_error_or_skip(tmp_path):
    from lftrain.config.loader import load_recipe
    from lftrain.tasks import build_task

    root = write_tone_folder(tmp_path / "clips", n_per_class=3)
    (root / "high" / "broken.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    sf.write(root / "low" / "quiet.wav", np.zeros(1600, np.float32), 16000)
    task = build_task(load_recipe(data={"model": {"path": "x"}, "task": {"type": "audio-classification"},
                                   "data": {"train": str(root)}}).task)
    with pytest.raises(DataError, match=r"broken\.wav.*cannot decode audio"):
        task.read(str(root), None)
    task.config.on_bad_file = "skip"
    stats: dict = {}
    ex = task.read(str(root), None, stats=stats)
    assert len(ex) == 6 and stats == {f"{root}:bad_files_skipped": 2}
    assert sorted(set(ex.fields["label"])) == ["high", "low"]
    with pytest.raises(DataError, match=r"quiet\.wav.*silent audio"):
        audio.decode(root / "low" / "quiet.wav", str(root / "low" / "quiet.wav"))


def test_table_of_paths(tmp_path):
    from lftrain.config.loader import load_recipe
    from lftrain.tasks import build_task

    root = write_tone_folder(tmp_path / "clips", n_per_class=2)
    table = tmp_path / "clips.csv"
    table.write_text("path,word\nclips/low/low-000.wav,low\nclips/high/high-000.wav,high\nclips/gone.wav,low\n")
    recipe = load_recipe(data={"model": {"path": "x"}, "data": {"train": str(table)},
                          "task": {"type": "audio-classification", "audio": "path", "label": "word"}})
    task = build_task(recipe.task)
    with pytest.raises(DataError, match=r"clips\.csv.*row 3.*audio file not found"):
        task.read(str(table), recipe.data)
    table.write_text("path,word\nclips/low/low-000.wav,low\nclips/high/high-000.wav,high\n")
    ex = task.read(str(table), recipe.data)
    assert ex.fields["label"] == ["low", "high"] and ex.where[1][1] == 2
    assert root.is_dir()
