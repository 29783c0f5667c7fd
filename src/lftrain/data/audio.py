"""Audio data: folders, tables of paths, or lists of files -> decoded mono float32 waveforms.

Every clip is decoded once, here, with `soundfile` (WAV, FLAC, OGG/Vorbis: whatever libsndfile reads) into a
mono float32 array at the file's own rate; resampling to the model's rate and padding/cropping to a fixed
window happen when the task encodes the clips (`resample` and `fit_window` below), because the rate is the
model's and the model is loaded after the data is checked. Each clip remembers its file (or table file and
row), so a corrupt or silent one is named in the error, or skipped and counted (`task.on_bad_file: skip`).

    data.train: kws/train/                   # kws/train/<label>/*.wav|flac
    data.train: clips.csv                    # columns audio (path relative to the file), label
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass, field
from math import gcd
from pathlib import Path
from typing import Any

import numpy as np

from lftrain.data.media import labelled_folder, list_media
from lftrain.errors import DataError

log = logging.getLogger("lftrain")
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".oga", ".aiff", ".aif")
SILENCE_PEAK = 1e-4  # peak amplitude below -80 dBFS: nothing a model could hear (an empty or muted recording)


@dataclass
class AudioRows:
    """Decoded clips (mono float32 at `rates[i]`) with labels (None when unlabelled) and where each came from."""

    waves: list[np.ndarray] = field(default_factory=list)
    rates: list[int] = field(default_factory=list)
    labels: list[Any] = field(default_factory=list)
    where: list[tuple[str, int, int | None]] = field(default_factory=list)  # (file, row, line)
    bad: list[str] = field(default_factory=list)  # what was skipped, with why


class BadAudio(DataError):
    """A clip that cannot be decoded, or holds only silence."""


def decode(source: bytes | Path, name: str) -> tuple[np.ndarray, int]:
    """Read one clip with soundfile: mono float32 (channels averaged) and its rate; BadAudio naming `name`."""
    import soundfile as sf

    try:
        wave, rate = sf.read(io.BytesIO(source) if isinstance(source, bytes) else str(source), dtype="float32",
                             always_2d=True)
    except (sf.LibsndfileError, RuntimeError, ValueError, OSError) as exc:
        raise BadAudio(f"cannot decode audio: {exc}", file=name) from None
    wave = wave.mean(axis=1) if wave.shape[1] > 1 else wave[:, 0]
    if wave.size == 0:
        raise BadAudio("empty audio (no samples)", file=name)
    if not np.isfinite(wave).all():
        raise BadAudio("audio holds NaN or infinite samples", file=name)
    peak = float(np.abs(wave).max())
    if peak < SILENCE_PEAK:
        raise BadAudio(f"silent audio (peak amplitude {peak:.1e}, below {SILENCE_PEAK:g})", file=name)
    return np.ascontiguousarray(wave), int(rate)


def resample(wave: np.ndarray, rate: int, target: int) -> np.ndarray:
    """Polyphase resampling (scipy's anti-aliased `resample_poly`) from `rate` to `target` Hz."""
    if rate == target:
        return wave
    from scipy.signal import resample_poly

    g = gcd(int(rate), int(target))
    return resample_poly(wave, target // g, rate // g).astype(np.float32)


def fit_window(wave: np.ndarray, n: int) -> np.ndarray:
    """Exactly `n` samples: shorter clips are zero-padded at the end; longer ones keep the `n`-sample window with
    the most energy (a keyword inside a longer recording stays in view, wherever it is)."""
    if len(wave) == n:
        return wave
    if len(wave) < n:
        return np.pad(wave, (0, n - len(wave)))
    energy = np.concatenate([[0.0], np.cumsum(wave.astype(np.float64) ** 2)])
    start = int(np.argmax(energy[n:] - energy[:-n]))
    return wave[start:start + n]


def _add(rows: AudioRows, source: bytes | Path, name: str, label: Any, where: tuple, skip: bool) -> None:
    try:
        wave, rate = decode(source, name)
    except BadAudio as exc:
        if not skip:
            raise
        rows.bad.append(str(exc))
        return
    rows.waves.append(wave)
    rows.rates.append(rate)
    rows.labels.append(label)
    rows.where.append(where)


def list_audio(folder: Path) -> list[Path]:
    return list_media(folder, AUDIO_SUFFIXES)


def read_folder(folder: Path, *, with_labels: bool, skip_bad: bool) -> AudioRows:
    """`folder/<label>/*.wav|flac...` (labels = sub-folder names); unlabelled: every clip below `folder`."""
    rows = AudioRows()
    for i, (f, label) in enumerate(labelled_folder(folder, AUDIO_SUFFIXES, "audio", with_labels=with_labels)):
        _add(rows, f, str(f), label, (str(f), i + 1, None), skip_bad)
    return rows


def read_files(files: list[str], *, skip_bad: bool) -> AudioRows:
    """Clips named one by one (`lft predict --input a.wav b.flac`); a folder among them adds every clip below it."""
    from lftrain.data.paths import resolve_path

    rows = AudioRows()
    for item in files:
        p = resolve_path(str(item))
        for f in list_audio(p) if p.is_dir() else [p]:
            if not f.is_file():
                raise DataError("file not found", file=str(f))
            _add(rows, f, str(f), None, (str(f), len(rows.where) + 1, None), skip_bad)
    return rows


def read_table_audio(table, base: Path, column: str, label: str, *, with_labels: bool, skip_bad: bool) -> AudioRows:
    """A table whose `column` holds clip paths (relative to the table's folder, or absolute) or encoded bytes."""
    from lftrain.data.readers import is_missing

    for col in [column] + ([label] if with_labels else []):
        if col not in table.columns:
            field_name = "task.label" if col == label else "task.audio"
            raise DataError(f"no column '{col}' (columns: {', '.join(table.columns)}); set {field_name}",
                            file=table.file)
    rows = AudioRows()
    for i, row in enumerate(table.rows):
        value, where = row.get(column), table.where(i)
        if is_missing(value):
            raise DataError("empty audio path", column=column, **where)
        if with_labels and is_missing(row.get(label)):
            raise DataError("missing label", column=label, **where)
        if isinstance(value, dict):  # a `datasets.Audio` struct: {"bytes": ..., "path": ...}
            value = value.get("bytes") or value.get("path")
        place = (table.file, table.row_numbers[i], table.lines[i])
        if isinstance(value, (bytes, bytearray)):
            source, name = bytes(value), f"{table.file} row {table.row_numbers[i]}"
        else:
            path = Path(str(value)).expanduser()
            source = path if path.is_absolute() else base / path
            name = str(source)
            if not source.is_file():
                if not skip_bad:
                    raise DataError(f"audio file not found: {source}", column=column, **where)
                rows.bad.append(f"{name}: file not found")
                continue
        _add(rows, source, name, row.get(label) if with_labels else None, place, skip_bad)
    return rows
