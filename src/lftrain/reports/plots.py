"""The report's figures, drawn with matplotlib (Agg backend, no display) and returned as PNG bytes.

Each function takes plain data read from the run directory and returns PNG bytes, or None when the run
has nothing to draw for it (so the report shows only what exists, whatever the task).
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np


def _figure(width: float = 6.0, height: float = 3.6, ncols: int = 1):
    """(figure, list of `ncols` axes)."""
    import matplotlib

    matplotlib.use("Agg", force=True)  # never a GUI backend: reports are written headless
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, ncols, figsize=(width, height), dpi=100, layout="constrained", squeeze=False)
    return fig, list(axes[0])


def _png(fig) -> bytes:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def curves(records: list[dict[str, Any]]) -> bytes | None:
    """Training loss per logged step, and every scalar evaluation metric during training."""
    train = [r for r in records if r.get("event") == "train" and "loss" in r]
    evals = [r for r in records if r.get("event") == "eval" and r.get("split") == "eval" and not r.get("final")]
    if not train and not evals:
        return None
    fig, axes = _figure(10 if evals else 6, 3.6, 2 if evals else 1)
    ax1 = axes[0]
    if train:
        ax1.plot([r["step"] for r in train], [r["loss"] for r in train], label="train loss", lw=1)
    if evals and "loss" in evals[0]:
        ax1.plot([r["step"] for r in evals], [r["loss"] for r in evals], "o-", label="eval loss")
    ax1.set(xlabel="optimiser step", ylabel="loss", title="Loss")
    ax1.legend()
    if evals:
        ax2 = axes[1]
        names = [k for k, v in evals[-1].items() if isinstance(v, float) and k not in ("loss", "epoch")]
        for name in names:
            ax2.plot([r["step"] for r in evals], [r.get(name, np.nan) for r in evals], "o-", label=name)
        ax2.set(xlabel="optimiser step", title="Evaluation metrics during training")
        if names:
            ax2.legend()
    return _png(fig)


def confusion(matrix: list[list[int]], names: list[str]) -> bytes:
    k = len(names)
    fig, (ax,) = _figure(max(4.0, 0.45 * k + 2.5), max(3.5, 0.45 * k + 2.0))
    cm = np.asarray(matrix)
    im = ax.imshow(cm, cmap="Blues")
    fig.colorbar(im, ax=ax)
    ax.set_xticks(range(k), [n[:14] for n in names], rotation=45 if k > 3 else 0, ha="right" if k > 3 else "center")
    ax.set_yticks(range(k), [n[:14] for n in names])
    ax.set(xlabel="predicted", ylabel="true", title="Confusion matrix (test)")
    if k <= 12:
        for i in range(k):
            for j in range(k):
                ax.text(j, i, str(cm[i, j]), ha="center", va="center",
                        color="white" if cm[i, j] > cm.max() / 2 else "black", fontsize=8)
    return _png(fig)


def reliability(before: list[dict], after: list[dict] | None, temperature: float | None) -> bytes:
    """Accuracy against confidence per bin, before and after temperature scaling; the diagonal is perfect."""
    panels = [("before temperature scaling", before)] + ([(f"after (T = {temperature:.2f})", after)] if after else [])
    fig, axes = _figure(5 * len(panels), 4, len(panels))
    for ax, (title, bins) in zip(axes, panels):
        ax.plot([0, 1], [0, 1], "--", color="grey", lw=1, label="perfect calibration")
        conf = [b["confidence"] for b in bins]
        acc = [b["accuracy"] for b in bins]
        sizes = [20 + 300 * b["count"] / max(sum(x["count"] for x in bins), 1) for b in bins]
        ax.plot(conf, acc, "-", lw=1, color="C0")
        ax.scatter(conf, acc, s=sizes, color="C0", alpha=0.7, label="bins (area = examples)")
        ax.set(xlim=(0, 1.02), ylim=(0, 1.02), xlabel="confidence (top-class probability)", ylabel="accuracy",
               title=f"Reliability, {title}")
        ax.legend(loc="upper left", fontsize=8)
    return _png(fig)


def per_class(per_class: dict[str, dict[str, float]]) -> bytes:
    names = list(per_class)
    x = np.arange(len(names))
    fig, (ax,) = _figure(max(6.0, 0.5 * len(names) + 2), 3.6)
    for i, metric in enumerate(("precision", "recall", "f1")):
        ax.bar(x + (i - 1) * 0.27, [per_class[n][metric] for n in names], width=0.27, label=metric)
    ax.set_xticks(x, [n[:14] for n in names], rotation=45 if len(names) > 4 else 0,
                  ha="right" if len(names) > 4 else "center")
    ax.set(ylim=(0, 1.05), title="Per-class precision, recall and F1 (test)")
    ax.legend(fontsize=8, ncols=3)
    return _png(fig)


def ood_histograms(scores_in: dict[str, np.ndarray], scores_out: dict[str, np.ndarray]) -> bytes:
    """Histograms of each OOD score for in-distribution and OOD inputs."""
    fig, axes = _figure(5 * len(scores_in), 3.6, len(scores_in))
    for ax, name in zip(axes, scores_in):
        a, b = scores_in[name], scores_out[name]
        bins = np.histogram_bin_edges(np.concatenate([a, b]), bins=30)
        ax.hist(a, bins=bins, alpha=0.6, density=True, label="in-distribution (test)")
        ax.hist(b, bins=bins, alpha=0.6, density=True, label="OOD")
        ax.set(title=f"{name} score", xlabel="score (higher = more in-distribution)", ylabel="density")
        ax.legend(fontsize=8)
    return _png(fig)
