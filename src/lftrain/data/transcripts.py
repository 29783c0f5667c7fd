"""Audio with transcripts (speech recognition): folders with sidecar text files, LibriSpeech's layout, or tables.

    data.train: speech/train/            # speech/train/**/clip.wav + clip.txt (or clip.lab) beside it
    data.train: LibriSpeech/dev-clean/   # <speaker>/<chapter>/<id>.flac + <speaker>-<chapter>.trans.txt ("<id> TEXT")
    data.train: clips.csv                # columns audio (path relative to the file, or bytes) and text

A folder is read in LibriSpeech's layout when it holds `*.trans.txt` files, else each clip needs a sidecar with
the same stem. Clips are decoded by data/audio.py (mono float32 at the file's rate). A clip without a transcript,
or with an empty one, is a DataError naming the file, before any model loads; unlabelled input (`lft predict`)
needs no transcripts.
"""

from __future__ import annotations

from pathlib import Path

from lftrain.data.audio import AudioRows, BadAudio, decode, list_audio, read_table_audio
from lftrain.errors import DataError

SIDECARS = (".txt", ".lab")
LIBRISPEECH = "*.trans.txt"


def read_transcribed_folder(folder: Path, *, with_labels: bool, skip_bad: bool) -> AudioRows:
    """Every clip below `folder` (sorted) with its transcript (None when `with_labels` is False)."""
    files = list_audio(folder)
    if not files:
        raise DataError("no audio files (.wav, .flac, .ogg, ...) in this folder", file=str(folder))
    table = librispeech_transcripts(folder) if with_labels else {}
    rows = AudioRows()
    for i, f in enumerate(files):
        text = None
        if with_labels:
            text = table.get(str(f.with_suffix(""))) if table else sidecar_text(f)
            if text is None:
                where = (f"no line for '{f.stem}' in {f.parent}/*.trans.txt" if table
                         else f"no transcript: expected {f.stem}.txt or {f.stem}.lab beside it")
                raise DataError(where, file=str(f))
            if not text.strip():
                raise DataError("empty transcript", file=str(f))
        try:
            wave, rate = decode(f, str(f))
        except BadAudio as exc:
            if not skip_bad:
                raise
            rows.bad.append(str(exc))
            continue
        rows.waves.append(wave)
        rows.rates.append(rate)
        rows.labels.append(text.strip() if text is not None else None)
        rows.where.append((str(f), i + 1, None))
    return rows


def sidecar_text(clip: Path) -> str | None:
    """The transcript in `clip`'s .txt/.lab sidecar (whitespace joined to single spaces), None without one."""
    for suffix in SIDECARS:
        f = clip.with_suffix(suffix)
        if f.is_file():
            try:
                return " ".join(f.read_text(encoding="utf-8").split())
            except UnicodeDecodeError as exc:
                raise DataError(f"transcript is not UTF-8 text ({exc.reason} at byte {exc.start})",
                                file=str(f)) from None
    return None


def librispeech_transcripts(folder: Path) -> dict[str, str]:
    """{clip path without suffix: text} from every `*.trans.txt` below `folder` (empty: not LibriSpeech's layout)."""
    out: dict[str, str] = {}
    for f in sorted(folder.rglob(LIBRISPEECH)):
        for n, line in enumerate(f.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            parts = line.split(maxsplit=1)
            if len(parts) < 2:
                raise DataError("expected '<utterance id> <transcript>'", file=str(f), line=n)
            out[str(f.parent / parts[0])] = parts[1]
    return out


def read_transcribed_table(table, base: Path, audio: str, text: str, *, with_labels: bool,
                           skip_bad: bool) -> AudioRows:
    """A table of clips (paths relative to the table's folder, or bytes) and their transcripts."""
    from lftrain.data.readers import is_missing

    if with_labels and text not in table.columns:
        raise DataError(f"no column '{text}' (columns: {', '.join(table.columns)}); set task.text", file=table.file)
    if with_labels:
        for i, row in enumerate(table.rows):
            if is_missing(row.get(text)) or not str(row.get(text)).strip():
                raise DataError("empty transcript", column=text, **table.where(i))
    rows = read_table_audio(table, base, audio, text, with_labels=with_labels, skip_bad=skip_bad)
    rows.labels = [" ".join(str(t).split()) if t is not None else None for t in rows.labels]
    return rows
