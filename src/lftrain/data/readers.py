"""Read tabular data files into rows, remembering where each row came from.

Every reader returns a `Table`: rows as dicts, plus for each row its 1-based data row number and the
physical line where it starts (CSV fields may contain newlines), so validation errors can point at
the exact place a person must fix.
"""

from __future__ import annotations

import bz2
import csv
import gzip
import io
import json
import lzma
import math
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lftrain.data.paths import resolve_path
from lftrain.errors import DataError

_SURROGATE = re.compile("[\udc80-\udcff]")
_COMPRESSED = {".gz": gzip.decompress, ".bz2": bz2.decompress, ".xz": lzma.decompress}
csv.field_size_limit(1 << 30)  # long documents are legitimate; the default limit (128 KiB) is not


@dataclass
class Table:
    """Rows of one data file. `lines[i]` is None where a format has no lines (Parquet, datasets)."""

    file: str
    columns: list[str]
    rows: list[dict[str, Any]]
    row_numbers: list[int] = field(default_factory=list)
    lines: list[int | None] = field(default_factory=list)

    def where(self, i: int) -> dict[str, Any]:
        """Keyword arguments for DataError naming row i's place."""
        return {"file": self.file, "row": self.row_numbers[i], "line": self.lines[i]}

    def renamed(self, columns: dict[str, str]) -> Table:
        """The table with the file's columns read as the task's: `columns` maps task column -> file column."""
        if not columns:
            return self
        missing = [c for c in columns.values() if c not in self.columns]
        if missing:
            raise DataError(f"columns: no column '{missing[0]}' to read (columns: {', '.join(self.columns)})",
                            file=self.file)
        back = {file_col: task_col for task_col, file_col in columns.items()}
        rows = [{back.get(k, k): v for k, v in row.items()} for row in self.rows]
        return Table(self.file, [back.get(c, c) for c in self.columns], rows, self.row_numbers, self.lines)


def detect_format(path: str) -> str:
    name = path.split("#", 1)[0].lower()
    for ext in (".gz", ".bz2", ".xz", ".zip"):
        if name.endswith(ext):
            name = name[: -len(ext)]
    p = Path(resolve_path(name))
    if p.is_dir():
        return "hf"
    for suffix, fmt in ((".csv", "csv"), (".tsv", "tsv"), (".tab", "tsv"), (".jsonl", "jsonl"),
                        (".ndjson", "jsonl"), (".json", "jsonl"), (".parquet", "parquet"), (".pq", "parquet"),
                        (".conll", "conll"), (".iob", "conll"), (".bio", "conll")):
        if name.endswith(suffix):
            return fmt
    raise DataError("cannot tell the format from the file name; set data.format "
                    "(csv, tsv, jsonl, parquet, conll or hf)", file=path)


def read_table(path: str, fmt: str = "auto", encoding: str = "utf-8") -> Table:
    """Read one data file of any supported format. Raises DataError naming file/line on any problem."""
    fmt = detect_format(path) if fmt == "auto" else fmt
    if fmt == "hf":
        return _read_hf(path)
    resolved = resolve_path(path)
    if not resolved.is_file():
        raise DataError("file not found", file=path)
    if fmt == "parquet":
        return _read_parquet(path, resolved)
    raw = _read_bytes(path, resolved)
    text, bad = _decode(path, raw, encoding)
    if fmt in ("csv", "tsv"):
        table = _read_csv(path, text, "\t" if fmt == "tsv" else ",")
    elif fmt in ("jsonl", "json"):
        table = _read_jsonl(path, text)
    elif fmt == "conll":
        table = _read_conll(path, text)
    else:
        raise DataError(f"unknown format '{fmt}'", file=path)
    if bad is not None:
        _raise_undecodable(table, encoding, bad)
    return table


def _raise_undecodable(table: Table, encoding: str, err: UnicodeDecodeError) -> None:
    """Name the row and column holding the first byte that did not decode (kept as a surrogate)."""
    for i, row in enumerate(table.rows):
        for col, value in row.items():
            if isinstance(value, str) and _SURROGATE.search(value):
                byte = ord(_SURROGATE.search(value).group()) - 0xDC00
                raise DataError(f"byte 0x{byte:02x} is not valid {encoding}; if the file is in another encoding, "
                                "set data.encoding (for example latin-1 or cp1252)", column=col, **table.where(i))
    raise DataError(f"byte 0x{err.object[err.start]:02x} is not valid {encoding}; set data.encoding",
                    file=table.file, line=err.object.count(b"\n", 0, err.start) + 1)


def _read_bytes(path: str, resolved: Path) -> bytes:
    raw = resolved.read_bytes()
    suffix = resolved.suffix.lower()
    try:
        if suffix in _COMPRESSED:
            return _COMPRESSED[suffix](raw)
        if suffix == ".zip":
            with zipfile.ZipFile(io.BytesIO(raw)) as zf:
                names = [n for n in zf.namelist() if not n.endswith("/")]
                if len(names) != 1:
                    raise DataError(f"a .zip must hold exactly one file, found {len(names)}", file=path)
                _check_member(path, zf.getinfo(names[0]))
                return zf.read(names[0])
    except (OSError, EOFError, lzma.LZMAError, zipfile.BadZipFile, ValueError) as exc:
        raise DataError(f"cannot decompress: {exc}", file=path) from None
    return raw


def _check_member(path: str, info: zipfile.ZipInfo) -> None:
    """The member is only read into memory, never extracted; still refuse names and links that would escape a
    target directory (`../`, absolute paths, symlinks): such an archive was made to attack extractors."""
    name = info.filename
    is_link = (info.external_attr >> 16) & 0o170000 == 0o120000
    if is_link or name.startswith(("/", "\\")) or ".." in re.split(r"[/\\]", name) or re.match(r"^[A-Za-z]:", name):
        raise DataError(f"unsafe archive member {name!r} ({'a symbolic link' if is_link else 'path escapes'}); "
                        "refusing to read it", file=path)


def _decode(path: str, raw: bytes, encoding: str) -> tuple[str, UnicodeDecodeError | None]:
    """Decode strictly; on failure keep the bad bytes as surrogates so the parser can say which row has them."""
    if raw.startswith(b"\xef\xbb\xbf") and encoding.lower().replace("-", "") in ("utf8", "utf8sig"):
        raw = raw[3:]  # a BOM from spreadsheet exports would otherwise glue itself to the first column name
    try:
        return raw.decode(encoding), None
    except LookupError:
        raise DataError(f"unknown encoding '{encoding}' (data.encoding)", file=path) from None
    except UnicodeDecodeError as exc:
        return raw.decode(encoding, errors="surrogateescape"), exc


def _read_csv(path: str, text: str, delimiter: str) -> Table:
    header, rows = csv_rows(path, io.StringIO(text, newline=""), delimiter)
    out = list(rows)
    return Table(path, header, [r for r, _, _ in out], [n for _, n, _ in out], [line for _, _, line in out])


def csv_rows(path: str, stream, delimiter: str):
    """(header, iterator of (row dict, row number, first line)) of a CSV/TSV text stream, validated as it goes."""
    # csv.reader counts physical lines (line_num), so a record spanning lines still gets its first line.
    reader = csv.reader(stream, delimiter=delimiter, strict=True)
    try:
        header = next(reader)
    except StopIteration:
        raise DataError("the file is empty (no header row)", file=path) from None
    except csv.Error as exc:
        raise DataError(f"malformed header: {exc}", file=path, line=1) from None
    header = [h.strip() for h in header]
    dupes = {h for h in header if header.count(h) > 1}
    if dupes:
        raise DataError(f"duplicate column names in the header: {sorted(dupes)}", file=path, line=1)

    def rows():
        n, start = 0, reader.line_num + 1
        while True:
            try:
                record = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                raise DataError(f"malformed CSV: {exc}", file=path, line=start) from None
            if not record or all(not f.strip() for f in record):  # blank lines are not rows
                start = reader.line_num + 1
                continue
            if len(record) != len(header):
                raise DataError(f"expected {len(header)} fields (as in the header) but found {len(record)}; "
                                f"quote fields that contain '{delimiter}'", file=path, row=n + 1, line=start)
            n += 1
            yield dict(zip(header, record)), n, start
            start = reader.line_num + 1

    return header, rows()


def _read_jsonl(path: str, text: str) -> Table:
    """JSON lines, or a JSON array of objects (Alpaca and LLaMA-Factory data, `.json` exports)."""
    if text.lstrip().startswith("["):
        return _read_json_array(path, text)
    rows, numbers, lines, columns = [], [], [], {}
    for obj, n, lineno in jsonl_rows(path, enumerate(text.splitlines(), 1)):
        rows.append(obj)
        numbers.append(n)
        lines.append(lineno)
        columns.update(dict.fromkeys(obj))
    if not rows:
        raise DataError("the file has no rows", file=path)
    return Table(path, list(columns), rows, numbers, lines)


def jsonl_rows(path: str, numbered_lines):
    """(object, row number, line) for each non-blank line of (line number, text) pairs, validated."""
    n = 0
    for lineno, line in numbered_lines:
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"malformed JSON: {exc.msg} at character {exc.colno}", file=path, line=lineno) from None
        if not isinstance(obj, dict):
            raise DataError(f"each line must be a JSON object, got {type(obj).__name__}", file=path, line=lineno)
        n += 1
        yield obj, n, lineno


def _read_conll(path: str, text: str) -> Table:
    """CoNLL-style tagged text: a word per line (the first field) with its tag (the last field), sentences apart by
    blank lines, `-DOCSTART-` lines skipped. Each sentence is a row `{"tokens": [...], "tags": [...]}`."""
    rows, lines, tokens, tags, start = [], [], [], [], None
    for lineno, line in enumerate([*text.splitlines(), ""], 1):
        fields = line.split()
        if fields and fields[0] == "-DOCSTART-":
            continue
        if not fields:
            if tokens:
                rows.append({"tokens": tokens, "tags": tags})
                lines.append(start)
            tokens, tags, start = [], [], None
            continue
        if len(fields) < 2:
            raise DataError("a word without a tag (expected 'word ... TAG')", file=path, line=lineno)
        tokens.append(fields[0])
        tags.append(fields[-1])
        start = start or lineno
    if not rows:
        raise DataError("the file has no tagged sentences", file=path)
    return Table(path, ["tokens", "tags"], rows, list(range(1, len(rows) + 1)), lines)


def _read_json_array(path: str, text: str) -> Table:
    """A JSON array of objects, each row placed at the line where its object starts."""
    decoder, rows, lines, columns = json.JSONDecoder(), [], [], {}
    pos, line, counted = text.index("[") + 1, 1, 0

    def line_at(i: int) -> int:
        nonlocal line, counted
        line, counted = line + text.count("\n", counted, i), i
        return line

    while True:
        pos = _skip_space(text, pos)
        if pos < len(text) and text[pos] == "]" and not rows:
            break
        try:
            obj, end = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as exc:
            raise DataError(f"malformed JSON array: {exc.msg}", file=path, line=line_at(exc.pos)) from None
        if not isinstance(obj, dict):
            raise DataError(f"each element of the array must be a JSON object, got {type(obj).__name__}",
                            file=path, row=len(rows) + 1, line=line_at(pos))
        rows.append(obj)
        lines.append(line_at(pos))
        columns.update(dict.fromkeys(obj))
        pos = _skip_space(text, end)
        if pos < len(text) and text[pos] == ",":
            pos += 1
        elif pos < len(text) and text[pos] == "]":
            break
        else:
            raise DataError("malformed JSON array: expected ',' or ']' after an element", file=path,
                            line=line_at(min(pos, len(text))))
    if not rows:
        raise DataError("the file has no rows (an empty JSON array)", file=path)
    return Table(path, list(columns), rows, list(range(1, len(rows) + 1)), lines)


def _skip_space(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] in " \t\r\n":
        pos += 1
    return pos


def _read_parquet(path: str, resolved: Path) -> Table:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(resolved)
    except Exception as exc:  # pyarrow raises several unrelated types for a bad file
        raise DataError(f"cannot read Parquet: {exc}", file=path) from None
    rows = table.to_pylist()
    return Table(path, table.column_names, rows, list(range(1, len(rows) + 1)), [None] * len(rows))


def is_saved_dataset(folder: Path) -> bool:
    """A folder written by `datasets`' save_to_disk (a Dataset or a DatasetDict), rather than a folder of files."""
    return any((folder / f).is_file() for f in ("dataset_dict.json", "state.json", "dataset_info.json"))


def _read_hf(path: str) -> Table:
    from datasets import Dataset, DatasetDict, load_from_disk

    location, _, split = path.partition("#")
    resolved = resolve_path(location)
    if not resolved.is_dir():
        raise DataError("saved dataset directory not found", file=path)
    try:
        ds = load_from_disk(str(resolved))
    except Exception as exc:  # datasets raises FileNotFoundError/ValueError variants for non-datasets dirs
        raise DataError(f"not a saved `datasets` directory: {exc}", file=path) from None
    if isinstance(ds, DatasetDict):
        if not split:
            raise DataError(f"this is a DatasetDict; name a split as '{location}#SPLIT' "
                            f"(splits: {', '.join(ds)})", file=path)
        if split not in ds:
            raise DataError(f"no split '{split}' (splits: {', '.join(ds)})", file=path)
        ds = ds[split]
    assert isinstance(ds, Dataset)
    rows = ds.to_list()
    return Table(path, list(ds.column_names), rows, list(range(1, len(rows) + 1)), [None] * len(rows))


def is_missing(value: Any) -> bool:
    """None, NaN and blank strings all mean 'no value' in real-world tables."""
    if value is None:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    return isinstance(value, str) and not value.strip()
