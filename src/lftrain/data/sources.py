"""Where a data role's rows come from: one file, several, a glob, a saved data set, or a Hub data set id.

`data.train` (and eval, test, unlabeled) is a path string or a list of them, each optionally a mapping with a weight
and a column mapping:

    data:
      train:
        - data/reviews-*.jsonl                      # a glob: every file it matches, in name order
        - {path: extra.json, weight: 0.5, columns: {text: body}}   # half of its rows; its `body` column is the text
        - stanfordnlp/imdb#train                    # a Hub data set (`org/name[@revision][#split]`)

Hub data sets are downloaded into the Hub cache by lftrain.hub and read through `datasets`' own split detection
(`load_dataset_builder` on the snapshot folder gives each split's files), so every row is then read and validated
by lftrain's readers like a local file's, and errors name the file and row.
"""

from __future__ import annotations

import glob
from dataclasses import dataclass, field
from pathlib import Path

from lftrain.errors import DataError

DEFAULT_SPLIT = {"train": "train", "eval": "validation", "test": "test", "unlabeled": "train"}


@dataclass(frozen=True)
class Source:
    """One readable file (or saved data set) of a role."""

    path: str  # what the readers take: a file, `dir#split`, `pkg:NAME/file`
    weight: float = 1.0  # share of its rows the training mix takes (2: every row twice)
    columns: dict[str, str] = field(default_factory=dict)  # task column -> the file's column
    origin: str = ""  # the entry of the recipe it came from
    hub: dict | None = None  # {"id", "revision", "commit", "split", "name"} for Hub data sets


def _entries(spec) -> list:
    if spec is None:
        return []
    return list(spec) if isinstance(spec, (list, tuple)) else [spec]


def paths_of(spec) -> list[str]:
    """The path strings a role names, as written (for messages and fingerprints of what the recipe says)."""
    return [e if isinstance(e, str) else e.path for e in _entries(spec)]


def expand(spec, role: str) -> list[Source]:
    """Every source of a role, globs and Hub ids resolved (Hub data sets downloaded unless cached)."""
    out: list[Source] = []
    for entry in _entries(spec):
        path = entry if isinstance(entry, str) else entry.path
        weight = 1.0 if isinstance(entry, str) else entry.weight
        columns = {} if isinstance(entry, str) else dict(entry.columns)
        if weight != 1.0 and role != "train":
            raise DataError(f"data.{role}: weights mix training data; they do not apply to {role}", file=path)
        for resolved, hub in _resolve(path, role, entry):
            out.append(Source(resolved, weight, columns, path, hub))
    return out


def _resolve(path: str, role: str, entry) -> list[tuple[str, dict | None]]:
    from lftrain import hub
    from lftrain.data.paths import resolve_path

    location = path.split("#", 1)[0]
    if hub.is_hub_id(location) and not path.startswith("pkg:"):
        return _hub_files(path, role, entry)
    if any(ch in location for ch in "*?["):
        matches = sorted(glob.glob(str(resolve_path(location)), recursive=True))
        if not matches:
            raise DataError(f"data.{role}: no file matches the pattern", file=path)
        return [(m, None) for m in matches if Path(m).is_file()]
    return [(path, None)]


def _hub_files(path: str, role: str, entry) -> list[tuple[str, dict | None]]:
    """The files of one split of a Hub data set, found by `datasets` in the downloaded snapshot."""
    import datasets

    from lftrain import hub

    location, _, split_in_path = path.partition("#")
    repo, revision = hub.parse(location)
    split = split_in_path or getattr(entry, "split", None) or DEFAULT_SPLIT[role]
    name = getattr(entry, "name", None)
    folder = hub.snapshot(location, repo_type="dataset", key=f"data.{role}")
    try:
        files = datasets.load_dataset_builder(str(folder), name=name).config.data_files or {}
    except Exception as exc:  # datasets raises many types for a folder it cannot make sense of
        raise DataError(f"data.{role}: the Hub data set '{repo}' has no data files lftrain can read ({exc})",
                        file=str(folder)) from None
    if split not in files:
        raise DataError(f"data.{role}: the Hub data set '{repo}' has no split '{split}' (splits: "
                        f"{', '.join(files) or 'none'}); name one as '{repo}#SPLIT'", file=str(folder))
    info = {"id": repo, "revision": revision or "main", "commit": hub.commit_of(folder), "split": split,
            "name": name, "folder": str(folder)}
    return [(str(f), info) for f in files[split]]
