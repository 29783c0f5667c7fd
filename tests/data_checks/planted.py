"""Toy data sets for the data checks: clean ones, and the same with known problems planted at known rows."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import NEUTRAL, toy_rows, write_csv

# A larger neutral vocabulary than conftest's, so clean rows do not collide by chance.
FILLER = NEUTRAL + [f"{a}{b}" for a in ("bra", "clo", "dre", "fli", "gro", "ple", "sta", "tru")
                    for b in ("mo", "ne", "ka", "vi", "lu", "ta")]


def clean_rows(n: int, seed: int = 0) -> list[dict]:
    """Sentences of 12-20 words whose label follows from three sentiment words: learnable, no duplicates."""
    return toy_rows(n, seed, filler=FILLER, filler_words=(9, 17), sentiment_words=3)


def write_clean(directory: Path, n_train: int = 200, n_test: int = 40) -> tuple[Path, Path]:
    rows = clean_rows(n_train + n_test)
    return (write_csv(directory / "train.csv", rows[:n_train]), write_csv(directory / "test.csv", rows[n_train:]))


# Where each problem is planted: 1-based data rows of train.csv / test.csv (the rows a person would open).
PLANTED = {
    "duplicate": 201,      # train row 201 repeats train row 3 with other case and punctuation
    "near": 202,           # train row 202 is train row 5 with one word changed
    "conflict": 203,       # train row 203 is train row 7's text with the other label
    "flipped": [11, 12, 13, 14],  # labels flipped in place
    "leaked_test": 41,     # test row 41 is train row 9
    "email": 204,
    "phone": 205,
}


def write_planted(directory: Path) -> tuple[Path, Path]:
    rows = clean_rows(240)
    train, test = rows[:200], rows[200:]
    flip = {"pos": "neg", "neg": "pos"}
    train.append({"text": train[2]["text"].upper() + " !", "label": train[2]["label"]})
    words = train[4]["text"].split()
    words[-1] = "zebra"  # one word changed: 12+ words keep a bigram Jaccard >= 0.83
    train.append({"text": " ".join(words), "label": train[4]["label"]})
    train.append({"text": train[6]["text"], "label": flip[train[6]["label"]]})
    train.append({"text": "write to jane.doe@example.com " + train[20]["text"][:40], "label": train[20]["label"]})
    train.append({"text": "call 555-123-4567 " + train[22]["text"][:40], "label": train[22]["label"]})
    for r in PLANTED["flipped"]:
        train[r - 1]["label"] = flip[train[r - 1]["label"]]
    test.append(dict(train[8]))
    return write_csv(directory / "train.csv", train), write_csv(directory / "test.csv", test)


def recipe(train: Path, test: Path | None, out: Path, model: str = "none", **checks) -> dict:
    data = {"train": str(train), "eval_fraction": 0.0, "cache_dir": str(out.parent / "cache"),
            "licence": "cc-by-4.0", "checks": checks}
    if test is not None:
        data["test"] = str(test)
    return {"model": {"path": model, "licence": "apache-2.0"},
            "task": {"type": "text-classification", "text": "text", "label": "label", "max_length": 32},
            "data": data, "train": {"max_steps": 2, "batch_size": 8, "threads": 1, "precision": "fp32"},
            "output": {"dir": str(out)}}
