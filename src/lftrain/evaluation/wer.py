"""Word and character error rates (jiwer), on normalised text, with bootstrap intervals over utterances.

Text is normalised before scoring, the same way for every system compared: by default Whisper's English normaliser
(`transformers`' `EnglishTextNormalizer`: lower case, bracketed and filler words dropped, numbers and contractions
standardised, punctuation and diacritics removed). The British→American spelling table it is usually given
(`normalizer.json` on the Hub) does not ship offline and is left empty. `basic` is Whisper's language-independent
`BasicTextNormalizer`; `none` only collapses whitespace.

WER over a set is corpus-level, as jiwer computes it: (substitutions + deletions + insertions) summed over the
utterances, divided by the reference words summed. So that intervals are cheap, each utterance's error and
reference counts are computed once and a bootstrap resample only re-sums them.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from lftrain.evaluation.bootstrap import bootstrap_ci, paired_bootstrap

NORMALISERS = ("whisper-english", "basic", "none")


@functools.cache
def normaliser(kind: str = "whisper-english") -> Callable[[str], str]:
    """text -> normalised text."""
    if kind == "whisper-english":
        from transformers.models.whisper.english_normalizer import EnglishTextNormalizer

        fn = EnglishTextNormalizer({})
    elif kind == "basic":
        from transformers.models.whisper.english_normalizer import BasicTextNormalizer

        fn = BasicTextNormalizer()
    elif kind == "none":
        fn = str
    else:
        raise ValueError(f"unknown normaliser {kind!r} (choose from {', '.join(NORMALISERS)})")
    return lambda text: " ".join(fn(text).split())


@dataclass
class ErrorCounts:
    """Per utterance: word errors and reference words, character errors and reference characters."""

    word_errors: np.ndarray
    words: np.ndarray
    char_errors: np.ndarray
    chars: np.ndarray

    def wer(self, idx: np.ndarray | None = None) -> float:
        idx = np.arange(len(self.words)) if idx is None else idx
        return float(self.word_errors[idx].sum() / max(self.words[idx].sum(), 1))

    def cer(self, idx: np.ndarray | None = None) -> float:
        idx = np.arange(len(self.chars)) if idx is None else idx
        return float(self.char_errors[idx].sum() / max(self.chars[idx].sum(), 1))


def error_counts(references: list[str], hypotheses: list[str], norm: str = "whisper-english") -> ErrorCounts:
    """Edit-distance counts of each (reference, hypothesis) pair after normalisation (jiwer; characters include the
    spaces between words, as jiwer's CER does). An utterance whose normalised reference is empty counts every
    hypothesis word (character) as an insertion."""
    import jiwer

    if len(references) != len(hypotheses):
        raise ValueError(f"{len(references)} references but {len(hypotheses)} hypotheses")
    fn = normaliser(norm)
    out = np.zeros((4, len(references)), dtype=np.int64)
    for i, (ref, hyp) in enumerate(zip(references, hypotheses)):
        r, h = fn(ref), fn(hyp)
        if not r:
            out[:, i] = (len(h.split()), 0, len(h), 0)
            continue
        if not h:  # jiwer needs a non-empty hypothesis too: all deletions
            out[:, i] = (len(r.split()), len(r.split()), len(r), len(r))
            continue
        w = jiwer.process_words(r, h)
        c = jiwer.process_characters(r, h)
        out[:, i] = (w.substitutions + w.deletions + w.insertions, w.hits + w.substitutions + w.deletions,
                     c.substitutions + c.deletions + c.insertions, c.hits + c.substitutions + c.deletions)
    return ErrorCounts(*out)


def scores(counts: ErrorCounts, *, samples: int = 1000, level: float = 0.95) -> dict[str, float]:
    """WER and CER with percentile bootstrap intervals over utterances (`samples` = 0: no intervals)."""
    out: dict[str, float] = {"wer": counts.wer(), "cer": counts.cer(), "words": float(counts.words.sum()),
                             "n": float(len(counts.words))}
    if samples and len(counts.words):
        for name, fn in (("wer", counts.wer), ("cer", counts.cer)):
            ci = bootstrap_ci(fn, len(counts.words), samples=samples, level=level)
            out[f"{name}_low"], out[f"{name}_high"] = ci["low"], ci["high"]
    return out


def paired_wer_difference(base: ErrorCounts, tuned: ErrorCounts, *, samples: int = 1000,
                          level: float = 0.95) -> dict[str, float]:
    """WER(tuned) - WER(base) on the same utterances, with its paired bootstrap interval and p-value; and the
    relative WER reduction 1 - WER(tuned)/WER(base) with its interval from the same resamples."""
    n = len(base.words)
    diff = paired_bootstrap(base.wer, tuned.wer, n, samples=samples, level=level)
    rel = bootstrap_ci(lambda idx: 1.0 - tuned.wer(idx) / max(base.wer(idx), 1e-12), n, samples=samples,
                       level=level)
    return {"wer_diff": diff["diff"], "wer_diff_low": diff["low"], "wer_diff_high": diff["high"],
            "p_value": diff["p_value"], "relative_wer_reduction": rel["value"],
            "relative_wer_reduction_low": rel["low"], "relative_wer_reduction_high": rel["high"]}
