"""Audio classification with any `AutoModelForAudioClassification` (Whisper's encoder included).

Clips are decoded once (data/audio.py) at their own rate; `encode` resamples them to the model's rate, pads
or crops them to the fixed window (`task.window_seconds`) and runs the model's feature extractor (Whisper:
log-mel frames) once per run, so a training batch is a slice of one float array. For Whisper the encoder's
position table is cut to the window (2 s -> 100 positions instead of 1500), which is what makes keyword-length
clips cheap: the encoder's cost is proportional to its positions.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field

from lftrain.config.base import Section
from lftrain.data.examples import Examples
from lftrain.errors import InputError
from lftrain.tasks.audio_processor import AudioProcessor
from lftrain.tasks.base import TASKS, ClassificationTask
from lftrain.tasks.inputs import AudioInput

log = logging.getLogger("lftrain")
INPUT_KEYS = ("input_features", "input_values")


@TASKS.register("audio-classification")
class AudioClassification(ClassificationTask):
    """Predict one label per audio clip. Loss: cross-entropy; one loss unit per clip."""

    serve_input = AudioInput
    pipeline_tag = "audio-classification"
    auto_model = "AutoModelForAudioClassification"

    token_inputs = False
    requires = ("soundfile",)
    cacheable = False  # decoded waveforms: re-encoded each run (seconds), not worth a token-cache entry

    class Config(Section):
        type: Literal["audio-classification"] = "audio-classification"
        audio: str = "audio"
        """Column holding the clip's path (relative to the table file) or bytes, for CSV/JSONL/Parquet data.
        Audio folders (`root/<label>/*.wav|flac`) need no columns."""
        label: str = "label"
        """Column holding the label (tables); folders use the sub-folder names."""
        labels: list[str] | None = None
        """Label names in class-index order. Default: the sorted labels found in the training data."""
        window_seconds: float | None = Field(None, gt=0, le=30)
        """Every clip is padded (silence at the end) or cropped (its loudest window) to this length, after
        resampling to the model's rate. Default: the model's own (Whisper: 30 s). Keywords: 1-2 s, and Whisper's
        encoder then runs 50 positions per second of window instead of 1500 for 30 s."""
        on_bad_file: Literal["error", "skip"] = "error"
        """A corrupt, empty or silent clip: stop with an error naming the file, or skip it and count it."""
        label_smoothing: float = Field(0.0, ge=0.0, lt=1.0)
        """Label smoothing of the cross-entropy loss (0 = none)."""

    # ---- data -------------------------------------------------------------------------------------------
    def read(self, path, data_cfg, *, with_labels: bool = True, drop_label=None, stats: dict | None = None,
             columns: dict[str, str] | None = None) -> Examples:
        """Read and decode one data source: a folder of label sub-folders, a table, or a list of clips."""
        from lftrain.data import audio
        from lftrain.data.paths import resolve_path
        from lftrain.data.readers import is_saved_dataset, read_table

        skip = self.config.on_bad_file == "skip"
        if isinstance(path, (list, tuple)):
            rows, name = audio.read_files(list(path), skip_bad=skip), f"{len(path)} files"
        elif resolve_path(str(path)).is_dir() and not is_saved_dataset(resolve_path(str(path))):
            rows = audio.read_folder(resolve_path(str(path)), with_labels=with_labels, skip_bad=skip)
            name = str(path)
        elif resolve_path(str(path)).is_file() and str(path).lower().endswith(audio.AUDIO_SUFFIXES):
            rows, name = audio.read_files([str(path)], skip_bad=skip), str(path)  # one clip (lft predict)
        else:
            table = read_table(str(path), data_cfg.format, data_cfg.encoding).renamed(columns or {})
            rows = audio.read_table_audio(table, resolve_path(str(path).split("#", 1)[0]).parent, self.config.audio,
                                          self.config.label, with_labels=with_labels, skip_bad=skip)
            name = str(path)
        self._count_bad(name, rows, stats)
        return self._examples(name, rows, with_labels, drop_label)

    def extract(self, table, *, normalize: bool, with_labels: bool = True, drop_label=None) -> Examples:
        """A table already read (e.g. `eval.ood`): its audio column decoded, paths relative to the table file."""
        from lftrain.data import audio

        rows = audio.read_table_audio(table, Path(table.file).parent, self.config.audio, self.config.label,
                                      with_labels=with_labels, skip_bad=self.config.on_bad_file == "skip")
        self._count_bad(table.file, rows, None)
        return self._examples(table.file, rows, with_labels, drop_label)

    @staticmethod
    def _count_bad(name: str, rows, stats: dict | None) -> None:
        if rows.bad:
            log.warning("%s: skipped %d unreadable or silent clips (task.on_bad_file: skip), e.g. %s", name,
                        len(rows.bad), rows.bad[0])
            if stats is not None:
                stats[f"{name}:bad_files_skipped"] = len(rows.bad)

    @staticmethod
    def _examples(name: str, rows, with_labels: bool, drop_label) -> Examples:
        from lftrain.data.labels import keep_labelled

        keep, keys, dropped = keep_labelled(rows.labels, rows.where, with_labels, drop_label)
        # "audio" first: content-based data checks hash the first non-label field
        return Examples(name, {"audio": [rows.waves[i] for i in keep], "rate": [rows.rates[i] for i in keep],
                               "label": keys}, [rows.where[i] for i in keep], dropped)

    def dedupe_key(self, ex: Examples, i: int) -> tuple:
        wave = ex.fields["audio"][i]  # exact duplicates by content, whatever the file name
        return (ex.fields["rate"][i], hashlib.sha1(np.ascontiguousarray(wave).tobytes()).hexdigest())

    @staticmethod
    def row_info(ex: Examples, i: int) -> dict[str, Any]:
        """Extra keys of a prediction row: the clip it is about."""
        return {"file": ex.where[i][0]}

    # ---- model ----------------------------------------------------------------------------------------
    def load_processor(self, source, trust_remote_code: bool = False) -> AudioProcessor:
        return AudioProcessor.from_dir(source.path, self.config.window_seconds)

    def load_model(self, source, *, trust_remote_code: bool, attention: str):
        from transformers import AutoModelForAudioClassification

        from lftrain.models.loading import load_classifier

        assert self.labels is not None
        model = load_classifier(AutoModelForAudioClassification, source, self.labels, "an audio classifier",
                                trust_remote_code, ignore_mismatched_sizes=True, attn_implementation=attention)
        frames = self.load_processor(source).frames
        if frames is not None and getattr(model.config, "model_type", "") == "whisper":
            shorten_whisper_encoder(model, frames // 2)
        return model

    def encode(self, processor: AudioProcessor, ex: Examples) -> dict[str, np.ndarray]:
        """Resample to the model's rate, pad/crop to the window, extract features: float32 (N, ...)."""
        from lftrain.data.audio import fit_window, resample

        waves = [fit_window(resample(w, r, processor.rate), processor.n_samples)
                 for w, r in zip(ex.fields["audio"], ex.fields["rate"])]
        out = {processor.input_name: processor(waves)}
        labels = self.labels.encode(ex) if self.labels is not None else None
        if labels is not None:
            out["labels"] = labels
        return out

    @staticmethod
    def _input_key(encoded: dict) -> str:
        return next(k for k in INPUT_KEYS if k in encoded)

    @classmethod
    def lengths(cls, encoded: dict[str, np.ndarray]) -> np.ndarray:
        return np.ones(len(encoded[cls._input_key(encoded)]), dtype=np.int64)  # one window per clip

    @classmethod
    def collate(cls, encoded: dict[str, np.ndarray], indices: np.ndarray, pad_id: int) -> dict[str, Any]:
        import torch

        key = cls._input_key(encoded)
        batch = {key: torch.from_numpy(np.ascontiguousarray(encoded[key][indices]))}
        if "labels" in encoded:
            batch["labels"] = torch.from_numpy(encoded["labels"][indices])
        return batch

    # ---- model inputs (loss, metrics and predictions: ClassificationTask) -----------------------------
    @staticmethod
    def model_inputs(batch: dict[str, Any]) -> dict[str, Any]:
        return {k: batch[k] for k in INPUT_KEYS if k in batch}


def shorten_whisper_encoder(model, positions: int) -> None:
    """Cut Whisper's encoder to `positions` (its input then has 2·positions mel frames). The positional table is
    fixed sinusoids, so its first rows are exactly what the full-length encoder adds at those positions."""
    import torch

    enc = model.encoder if hasattr(model, "encoder") else model.model.encoder
    old = enc.embed_positions
    if old.num_embeddings == positions:
        return
    if positions > old.num_embeddings:
        raise InputError(f"task.window_seconds needs {positions} encoder positions; the model has "
                         f"{old.num_embeddings} (Whisper: at most 30 s)")
    new = torch.nn.Embedding(positions, old.embedding_dim)
    new.weight.data.copy_(old.weight.data[:positions])
    new.requires_grad_(False)
    enc.embed_positions = new
    enc.max_source_positions = positions
    enc.config.max_source_positions = positions
    model.config.max_source_positions = positions
