"""The `data.checks` recipe section: which data checks run, with which thresholds, and which stop training."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from lftrain.config.base import Section

CheckName = Literal["duplicates", "near_duplicates", "leakage", "near_leakage", "conflicts", "imbalance",
                    "truncation", "noise", "contamination", "pii", "licence"]
CHECK_NAMES: tuple[str, ...] = CheckName.__args__  # type: ignore[attr-defined]


class ChecksConfig(Section):
    run: bool = True
    """Run the data checks at the start of `lft train` (after row validation, before the model loads)."""
    block: list[CheckName] = ["leakage", "licence"]
    """Checks whose findings stop `lft train` (exit code 2); the others are reported only. `leakage`: exact
    copies of more than `leakage_tolerance` of the eval/test rows in the training split; `licence`: a licence
    that forbids `output.intended_use`."""
    leakage_tolerance: float = Field(0.005, ge=0.0, lt=1.0)
    """Share of eval/test rows that may have an exact copy in the training split before `leakage` counts as a
    problem (a copy can inflate a held-out score by at most its share); copies below it are still listed."""
    benchmarks: list[str] = []
    """Other data files (same text column) checked for 13-gram contamination of the training data, besides
    the eval and test splits."""
    ngram: int = Field(13, ge=3)
    """n of the n-gram overlap used for contamination (13, as in the GPT-3 paper); shorter texts must match whole."""
    near_threshold: float = Field(0.7, gt=0.0, le=1.0)
    """Jaccard similarity of word-bigram sets from which two texts count as near-duplicates (MinHash LSH); one
    changed word in a 15-word text leaves 0.73."""
    noise: Literal["tfidf", "encoder", "off"] = "tfidf"
    """Label-noise suspects from out-of-fold probabilities of a logistic regression on TF-IDF features
    (`tfidf`, fast), or on the frozen base model's mean-pooled embeddings (`encoder`, slower); `off` skips it."""
    noise_folds: int = Field(5, ge=2)
    """Cross-validation folds for the out-of-fold probabilities."""
    imbalance_ratio: float = Field(10.0, gt=1.0)
    """Flag class imbalance when the largest class has more than this many times the rows of the smallest."""
    truncation_share: float = Field(0.05, ge=0.0, le=1.0)
    """Flag truncation when more than this share of texts is longer than `task.max_length` tokens."""
