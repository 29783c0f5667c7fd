"""What replaces the tokenizer for audio models: the model's feature extractor, set to a fixed window.

Whisper's extractor turns 30 s of 16 kHz audio into 3000 log-mel frames (1500 encoder positions). Short
clips such as keywords need far less: with `task.window_seconds: 2` the extractor makes 200 frames and the
encoder runs 100 positions, ~15× less compute. The window is written into the saved
`preprocessor_config.json` (`chunk_length`), so the trained model and `lft predict` use the same one.
Other extractors (wav2vec2-style, raw waveform in `input_values`) get clips of exactly the window's samples.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lftrain.errors import ModelLoadError


class AudioProcessor:
    """A Hugging Face feature extractor + the fixed window every clip is padded/cropped to."""

    pad_token_id = None  # every clip has the same length: no padding in batches

    def __init__(self, extractor, window_seconds: float | None = None) -> None:
        self.extractor = extractor
        self.rate = int(extractor.sampling_rate)
        self.whisper = type(extractor).__name__ == "WhisperFeatureExtractor"
        seconds = window_seconds or (extractor.chunk_length if self.whisper else 1.0)
        self.n_samples = int(round(seconds * self.rate))
        if self.whisper:  # the extractor pads/truncates to n_samples and emits nb_max_frames frames
            extractor.chunk_length = seconds
            extractor.n_samples = self.n_samples
            extractor.nb_max_frames = self.n_samples // extractor.hop_length
        self.input_name = extractor.model_input_names[0]  # input_features (Whisper) / input_values (wav2vec2)

    @property
    def frames(self) -> int | None:
        """Mel frames per clip (Whisper), which fixes the encoder's positions (frames / 2)."""
        return self.extractor.nb_max_frames if self.whisper else None

    @classmethod
    def from_dir(cls, path: Path, window_seconds: float | None = None) -> AudioProcessor:
        from transformers import AutoFeatureExtractor

        try:
            fe = AutoFeatureExtractor.from_pretrained(path, local_files_only=True)
        except (OSError, ValueError) as exc:
            raise ModelLoadError(f"{path}: no usable audio feature extractor (preprocessor_config.json): "
                                 f"{exc}") from None
        return cls(fe, window_seconds)

    def __call__(self, waves: list[np.ndarray], chunk: int = 64) -> np.ndarray:
        """Features of clips already at `rate` and `n_samples` long: float32 (N, ...)."""
        parts = []
        for s in range(0, len(waves), chunk):
            out = self.extractor(waves[s:s + chunk], sampling_rate=self.rate, return_tensors="np")
            parts.append(np.asarray(out[self.input_name], dtype=np.float32))
        return np.concatenate(parts) if parts else np.zeros((0,), np.float32)

    def save_pretrained(self, path: str | Path) -> None:
        Path(path).mkdir(parents=True, exist_ok=True)
        self.extractor.save_pretrained(str(path))
