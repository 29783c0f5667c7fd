"""What image and audio data share: folders of files whose sub-folder names are the labels."""

from __future__ import annotations

from pathlib import Path

from lftrain.errors import DataError


def list_media(folder: Path, suffixes: tuple[str, ...]) -> list[Path]:
    """Every file below `folder` with one of `suffixes` (any case), sorted: the order never depends on the disk."""
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in suffixes)


def labelled_folder(folder: Path, suffixes: tuple[str, ...], kind: str, *,
                    with_labels: bool) -> list[tuple[Path, str | None]]:
    """(file, label) for `folder/<label>/...` (labels = first sub-folder names; None when unlabelled). A folder
    without such files, or a file directly in it when labels are needed, is a data error naming it."""
    files = list_media(folder, suffixes)
    if with_labels:
        loose = [f for f in files if f.parent == folder]
        if loose:
            raise DataError(f"a {kind} file directly in the data folder has no label; put the files in "
                            f"<folder>/<label>/ sub-folders", file=str(loose[0]))
    if not files:
        raise DataError(f"no {kind} files ({', '.join(suffixes)}) in this folder", file=str(folder))
    return [(f, f.relative_to(folder).parts[0] if with_labels else None) for f in files]
