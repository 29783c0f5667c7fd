"""Training data larger than memory (`data.streaming: true`): read in chunks, validated, de-duplicated and tokenised
into an on-disk token store that batches read their rows from.

One pass over the training files reads `CHUNK_ROWS` rows at a time (CSV/TSV, JSON lines, Parquet; compressed too),
validates them as a whole-file read would (errors name file, row and line), and tokenises them. A row whose text
hashes into the held-out share goes to eval or test (up to `HOLDOUT_MAX` rows each; the same text always lands on
the same side, so no copy leaks across), the others are appended to flat files. Exact duplicates are then dropped
by their hashes (8 bytes a row). What stays in memory is per row only: offsets, labels and lengths. The store is
read with positioned reads, never mapped, so resident memory does not grow with the corpus; it is cached under a key
of the files, the task, the tokenizer and the split settings, so a resumed run reads it back and takes exactly the
same batches. Without `task.labels`, a first pass collects the label names.
"""

from __future__ import annotations

import bz2
import gzip
import hashlib
import io
import json
import logging
import lzma
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lftrain.data.examples import Examples
from lftrain.data.readers import Table, csv_rows, detect_format, jsonl_rows
from lftrain.errors import DataError

log = logging.getLogger("lftrain")
CHUNK_ROWS = 20_000
ENCODE_ROWS = 1_000  # rows tokenised at once: a fast tokenizer keeps every token of a row, truncated or not
HOLDOUT_MAX = 10_000  # rows per held-out split taken from the stream
SAMPLE_ROWS = 20_000  # training rows kept in memory for the data checks
_OPENERS = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}
_BUCKETS = 1_000_000


class DiskArray:
    """A flat array in a file, read by slices with positioned reads (`x[a:b]`), never mapped into memory."""

    def __init__(self, path: Path, dtype: str, length: int) -> None:
        self.path, self.dtype, self.length = Path(path), np.dtype(dtype), length
        self._fd: int | None = None
        self._pid = -1

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, key: slice) -> np.ndarray:
        start, stop, step = key.indices(self.length)
        if step != 1:
            raise IndexError("DiskArray takes contiguous slices only")
        if self._fd is None or self._pid != os.getpid():  # a data-loader worker opens its own descriptor
            self._fd, self._pid = os.open(self.path, os.O_RDONLY), os.getpid()
        size = self.dtype.itemsize
        return np.frombuffer(os.pread(self._fd, (stop - start) * size, start * size), dtype=self.dtype)

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_fd": None, "_pid": -1}


@dataclass
class Streamed:
    """The training rows on disk, and what the stream put aside."""

    encoded: dict  # as task.encode() returns, flat arrays as DiskArrays
    eval: Examples | None
    test: Examples | None
    sample: Examples  # up to SAMPLE_ROWS training rows, for the data checks
    stats: dict = field(default_factory=dict)


# ---- reading in chunks ------------------------------------------------------------------------------------------

def _text_stream(path: str, encoding: str):
    from lftrain.data.paths import resolve_path

    resolved = resolve_path(path)
    if not resolved.is_file():
        raise DataError("file not found", file=path)
    opener = _OPENERS.get(resolved.suffix.lower(), open)
    return io.TextIOWrapper(opener(resolved, "rb"), encoding=encoding, newline="")


def _rows(path: str, data_cfg) -> Iterator[tuple[dict, int, int | None]]:
    fmt = detect_format(path) if data_cfg.format == "auto" else data_cfg.format
    if path.lower().endswith(".zip") or fmt not in ("csv", "tsv", "jsonl", "json", "parquet"):
        raise DataError("cannot be streamed: give CSV/TSV, JSON lines or Parquet files (optionally .gz/.bz2/.xz)",
                        file=path)
    if fmt == "parquet":
        import pyarrow.parquet as pq

        from lftrain.data.paths import resolve_path

        n = 0
        for batch in pq.ParquetFile(resolve_path(path)).iter_batches(batch_size=CHUNK_ROWS):
            for row in batch.to_pylist():
                n += 1
                yield row, n, None
        return
    stream = _text_stream(path, data_cfg.encoding)
    try:
        if fmt in ("csv", "tsv"):
            yield from csv_rows(path, stream, "\t" if fmt == "tsv" else ",")[1]
        else:
            first = stream.read(1)
            if first == "[":
                raise DataError("a JSON array cannot be streamed: write one object per line (JSON lines)", file=path)
            lines = ((n, (first if n == 1 else "") + line) for n, line in enumerate(stream, 1))
            yield from jsonl_rows(path, lines)
    except UnicodeDecodeError as exc:
        raise DataError(f"not valid {data_cfg.encoding} ({exc.reason}); set data.encoding", file=path) from None
    finally:
        stream.close()


def tables(path: str, data_cfg, columns: dict[str, str]) -> Iterator[Table]:
    """The rows of one file as Tables of up to CHUNK_ROWS rows (row numbers and lines as in the whole file)."""
    rows, numbers, lines, names = [], [], [], {}
    for row, n, line in _rows(path, data_cfg):
        rows.append(row)
        numbers.append(n)
        lines.append(line)
        names.update(dict.fromkeys(row))
        if len(rows) == CHUNK_ROWS:
            yield Table(path, list(names), rows, numbers, lines).renamed(columns)
            rows, numbers, lines = [], [], []
    if rows:
        yield Table(path, list(names), rows, numbers, lines).renamed(columns)


def chunks(sources, data_cfg, task, *, drop_label=None) -> Iterator[Examples]:
    """Validated examples of every training source, a chunk at a time."""
    for source in sources:
        for table in tables(source.path, data_cfg, source.columns):
            yield task.extract(table, normalize=data_cfg.normalize_whitespace, drop_label=drop_label)


# ---- the store --------------------------------------------------------------------------------------------------

def _key_hash(task, ex: Examples, i: int) -> int:
    """64 bits of the row's dedupe key: the same text always hashes alike (the held-out split is chosen by it)."""
    digest = hashlib.blake2b(repr(task.dedupe_key(ex, i)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little")


class _Writer:
    """Appends encoded chunks: flat (per-token) arrays to files, per-row arrays in memory."""

    def __init__(self, folder: Path) -> None:
        self.folder, self.files, self.lengths, self.rows, self.hashes = folder, {}, [], {}, []

    def add(self, encoded: dict, hashes: list[int]) -> None:
        self.lengths.append(np.diff(encoded["offsets"]))
        self.hashes.append(np.asarray(hashes, dtype=np.uint64))
        tokens = int(encoded["offsets"][-1])
        for name, array in encoded.items():
            if name == "offsets":
                continue
            if len(array) == tokens and name != "labels":
                if name not in self.files:
                    self.files[name] = (open(self.folder / f"{name}.bin", "wb"), array.dtype)  # noqa: SIM115
                self.files[name][0].write(np.ascontiguousarray(array).tobytes())
            else:
                self.rows.setdefault(name, []).append(array)

    def close(self) -> tuple[np.ndarray, np.ndarray, dict]:
        for handle, _ in self.files.values():
            handle.close()
        lengths = np.concatenate(self.lengths) if self.lengths else np.zeros(0, np.int64)
        hashes = np.concatenate(self.hashes) if self.hashes else np.zeros(0, np.uint64)
        return lengths, hashes, {k: np.concatenate(v) for k, v in self.rows.items()}


def _compact(folder: Path, dtypes: dict, lengths: np.ndarray, keep: np.ndarray) -> None:
    """Rewrite the flat files without the rows `keep` drops, a block of rows at a time."""
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    for name, dtype in dtypes.items():
        src = DiskArray(folder / f"{name}.bin", dtype, int(offsets[-1]))
        with open(folder / f"{name}.tmp", "wb") as out:
            for a in range(0, len(lengths), CHUNK_ROWS):
                b = min(a + CHUNK_ROWS, len(lengths))
                tokens = src[int(offsets[a]):int(offsets[b])]
                out.write(tokens[np.repeat(keep[a:b], lengths[a:b])].tobytes())
        os.replace(folder / f"{name}.tmp", folder / f"{name}.bin")


@dataclass
class _Holdout:
    """Rows of one held-out split, chosen by hash, kept as examples (de-duplicated, at most HOLDOUT_MAX)."""

    share: tuple[float, float]  # the hash range [low, high) this split takes, as fractions of the buckets
    parts: list = field(default_factory=list)
    seen: set = field(default_factory=set)

    def takes(self, h: int) -> bool:
        bucket = h % _BUCKETS
        return self.share[0] * _BUCKETS <= bucket < self.share[1] * _BUCKETS and len(self.seen) < HOLDOUT_MAX

    def examples(self, name: str) -> Examples | None:
        return Examples.concat(name, self.parts) if self.parts else None


def build(sources, data_cfg, task, tokenizer, folder: Path, *, eval_share: float, test_share: float,
          seed: int) -> Streamed:
    """One pass: validate, split off held-out rows, tokenise and write the rest; then drop duplicates."""
    tmp = folder.with_name(folder.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    holdouts = {"test": _Holdout((0.0, test_share)), "eval": _Holdout((test_share, test_share + eval_share))}
    writer, sample, rng, seen_rows = _Writer(tmp), [], np.random.default_rng(seed), 0
    for ex in chunks(sources, data_cfg, task, drop_label=_dropper(task, data_cfg)):
        hashes = [_key_hash(task, ex, i) for i in range(len(ex))]
        train_rows = []
        for i, h in enumerate(hashes):
            side = next((name for name, hold in holdouts.items() if hold.takes(h)), None)
            if side is None:
                train_rows.append(i)
            elif h not in holdouts[side].seen:
                holdouts[side].seen.add(h)
                holdouts[side].parts.append(ex.subset([i]))
        part = ex.subset(train_rows, "train")
        for a in range(0, len(part), ENCODE_ROWS):  # a tokenizer's encodings of long rows are large: bounded
            rows = range(a, min(a + ENCODE_ROWS, len(part)))
            writer.add(task.encode(tokenizer, part.subset(rows)), [hashes[train_rows[i]] for i in rows])
        sample = _reservoir(sample, part, seen_rows, rng)
        seen_rows += len(part)
    lengths, hashes, per_row = writer.close()
    _, first = np.unique(hashes, return_index=True)
    keep = np.zeros(len(hashes), dtype=bool)
    keep[first] = True
    _compact(tmp, {k: dt for k, (_, dt) in writer.files.items()}, lengths, keep)
    kept = lengths[keep]
    meta = {"rows": int(keep.sum()), "duplicates_dropped": int((~keep).sum()),
            "dtypes": {k: str(dt) for k, (_, dt) in writer.files.items()}}
    np.save(tmp / "lengths.npy", kept)
    for name, array in per_row.items():
        np.save(tmp / f"{name}.npy", array[keep])
    for name, hold in holdouts.items():
        if hold.parts:
            _save_examples(tmp / f"{name}.jsonl", hold.examples(name))
    _save_examples(tmp / "sample.jsonl", Examples.concat("train", sample) if sample else None)
    (tmp / "store.json").write_text(json.dumps(meta))  # last: a folder without it is unfinished
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(tmp, folder)
    return load(folder)


def _dropper(task, data_cfg):
    from lftrain.data.labels import LabelSet

    configured = getattr(task.config, "labels", None)
    if not configured or data_cfg.unknown_labels != "drop":
        return None
    known = LabelSet([str(x) for x in configured])
    return lambda raw: known.lookup(raw) is None


def _reservoir(sample: list, part: Examples, seen: int, rng) -> list:
    """Keep a uniform sample of SAMPLE_ROWS training rows (one-row Examples) over the whole stream."""
    for i in range(len(part)):
        n = seen + i
        if n < SAMPLE_ROWS:
            sample.append(part.subset([i]))
        else:
            j = int(rng.integers(0, n + 1))
            if j < SAMPLE_ROWS:
                sample[j] = part.subset([i])
    return sample


def _save_examples(path: Path, ex: Examples | None) -> None:
    if ex is None:
        return
    rows = [{"where": list(ex.where[i]), **{k: v[i] for k, v in ex.fields.items()}} for i in range(len(ex))]
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")


def _load_examples(path: Path, name: str) -> Examples | None:
    if not path.is_file():
        return None
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    keys = [k for k in rows[0] if k != "where"]
    return Examples(name, {k: [r[k] for r in rows] for k in keys}, [tuple(r["where"]) for r in rows])


def load(folder: Path) -> Streamed:
    """A finished store (its `store.json` written) as training arrays and the examples put aside."""
    meta = json.loads((folder / "store.json").read_text())
    lengths = np.load(folder / "lengths.npy")
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    encoded = {name: DiskArray(folder / f"{name}.bin", dtype, int(offsets[-1]))
               for name, dtype in meta["dtypes"].items()}
    encoded["offsets"] = offsets
    for per_row in folder.glob("*.npy"):
        if per_row.stem != "lengths":
            encoded[per_row.stem] = np.load(per_row)
    stats = {"train_rows": meta["rows"], "train:duplicates_dropped": meta["duplicates_dropped"],
             "train_tokens": int(offsets[-1]), "store": str(folder)}
    sample = _load_examples(folder / "sample.jsonl", "train") or Examples("train", {}, [])
    held = {name: _load_examples(folder / f"{name}.jsonl", name) for name in ("eval", "test")}
    return Streamed(encoded, held["eval"], held["test"], sample, stats)


def labels_of(sources, data_cfg, task) -> list[str]:
    """The label names of every training row (the pass made when task.labels is not given)."""
    names: set[str] = set()
    for ex in chunks(sources, data_cfg, task, drop_label=_dropper(task, data_cfg)):
        names.update(ex.fields["label"])
    return sorted(names)
