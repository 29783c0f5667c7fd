"""Write the Rotten Tomatoes files the few-shot and DAPT + self-training recipes read (recipes/rotten-tomatoes-*).

A fixed stratified test split (split seed 0), k labelled reviews per class drawn by `--seed` from the rest, and
an unlabelled pool of other non-test reviews (at most `--pool`). The pool keeps its `category` column: lftrain
never trains on it (`data.unlabeled` reads text only) but scores the pseudo-labels against it.

    python benchmarks/semi_supervised_data.py --k 64 --seed 0 --out data/rt-semi
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from _common import rotten_tomatoes_source

LABELS = ["rotten", "fresh"]


def reviews():
    import pandas as pd

    df = pd.read_csv(rotten_tomatoes_source())
    df = df[df["category"].isin(LABELS)].dropna(subset=["text"]).drop_duplicates("text")
    return df[["text", "category"]].reset_index(drop=True)


def write_split(out: Path, k: int, seed: int, pool: int, test_size: int) -> dict[str, Path]:
    from sklearn.model_selection import train_test_split

    df = reviews()
    rest, test = train_test_split(np.arange(len(df)), test_size=test_size, stratify=df["category"], random_state=0)
    rng = np.random.default_rng(1000 * k + seed)
    labelled = np.concatenate([rng.choice(rest[df["category"].to_numpy()[rest] == c], k, replace=False)
                               for c in LABELS])
    others = np.setdiff1d(rest, labelled)
    pool_idx = np.random.default_rng(seed).permutation(others)[:pool]
    out.mkdir(parents=True, exist_ok=True)
    files = {"train": out / f"k{k}.csv", "pool": out / "pool.csv", "test": out / "test.csv"}
    df.iloc[np.sort(labelled)].to_csv(files["train"], index=False)
    df.iloc[np.sort(pool_idx)].to_csv(files["pool"], index=False)
    df.iloc[np.sort(test)].to_csv(files["test"], index=False)
    return files


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--k", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--pool", type=int, default=3000)
    p.add_argument("--test-size", type=int, default=1000)
    p.add_argument("--out", type=Path, default=Path("data/rt-semi"))
    a = p.parse_args()
    for role, f in write_split(a.out, a.k, a.seed, a.pool, a.test_size).items():
        print(f"{role}: {f}")
