"""Which vector should a few-shot head read? Logistic regression on the untrained MiniLM-L6 encoder's features.

Compares the mean-pooled last layer (SetFit's sentence embedding, `task.pooling: mean`) with BERT's [CLS] pooler
output, on the test set and k-per-class draws that bench_semi_supervised.py writes to runs/bench-semi/data
(docs/semi-supervised.md).

    python benchmarks/bench_head_features.py --k 8 64 --seeds 0 1
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from _common import minilm_dir


def features(texts: list[str], tok, model) -> tuple[np.ndarray, np.ndarray]:
    """(mean-pooled last layer, pooler output) for each text; max length 64 as in the benchmark."""
    import torch

    mean, pooled = [], []
    for i in range(0, len(texts), 64):
        batch = tok(texts[i:i + 64], padding=True, truncation=True, max_length=64, return_tensors="pt")
        with torch.no_grad():
            out = model(**batch)
        mask = batch["attention_mask"].unsqueeze(-1).float()
        mean.append(((out.last_hidden_state * mask).sum(1) / mask.sum(1)).numpy())
        pooled.append(out.pooler_output.numpy())
    return np.concatenate(mean), np.concatenate(pooled)


def main() -> None:
    import pandas as pd
    import torch
    from sklearn.linear_model import LogisticRegression
    from transformers import AutoModel, AutoTokenizer

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--k", type=int, nargs="+", default=[8, 64])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--data", type=Path, default=Path("runs/bench-semi/data"))
    args = p.parse_args()
    torch.set_num_threads(2)
    tok, model = AutoTokenizer.from_pretrained(minilm_dir()), AutoModel.from_pretrained(minilm_dir()).eval()
    test = pd.read_csv(args.data / "test.csv")
    test_mean, test_pool = features(test["text"].astype(str).tolist(), tok, model)
    y = (test["category"] == "fresh").to_numpy()
    for k in args.k:
        for seed in args.seeds:
            train = pd.read_csv(args.data / f"train-k{k}-s{seed}.csv")
            tr_mean, tr_pool = features(train["text"].astype(str).tolist(), tok, model)
            y_tr = (train["category"] == "fresh").to_numpy()
            for name, a, t in (("mean-pooled", tr_mean, test_mean), ("pooler", tr_pool, test_pool)):
                acc = (LogisticRegression(max_iter=2000).fit(a, y_tr).predict(t) == y).mean()
                print(f"k={k} seed={seed} {name:12s} test accuracy {acc:.3f}")


if __name__ == "__main__":
    main()
