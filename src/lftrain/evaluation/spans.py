"""Entity-level scores of tagged sequences, as seqeval computes them in strict IOB2 mode.

An entity is a `B-X` tag followed by any number of `I-X` tags; anything else (`O`, an `I-X` with no `B-X` before it,
an `I-Y` after `B-X`) ends it, and a stray `I-X` starts none. A predicted entity counts only when its type, start
and end all equal a true one's. Scores are micro-averaged over entities, with a row per type.
"""

from __future__ import annotations


def entities(tags: list[str]) -> list[tuple[str, int, int]]:
    """(type, first word, last word + 1) of each entity in one sequence of IOB2 tags."""
    out, start, kind = [], None, None
    for i, tag in enumerate([*tags, "O"]):
        prefix, _, name = tag.partition("-")
        if start is not None and not (prefix == "I" and name == kind):
            out.append((kind, start, i))
            start = kind = None
        if prefix == "B":
            start, kind = i, name
    return out


def _prf(correct: int, predicted: int, true: int) -> dict[str, float]:
    precision = correct / predicted if predicted else 0.0
    recall = correct / true if true else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1}


def entity_scores(true: list[list[str]], pred: list[list[str]]) -> dict:
    """Micro precision/recall/F1 over all entities, and per entity type (with its number of true entities)."""
    if len(true) != len(pred):
        raise ValueError(f"{len(true)} true sequences but {len(pred)} predicted ones")
    gold, guess = set(), set()
    for n, (t, p) in enumerate(zip(true, pred)):
        gold.update((n, *e) for e in entities(t))
        guess.update((n, *e) for e in entities(p))
    hit = gold & guess
    per_type = {}
    for kind in sorted({e[1] for e in gold | guess}):
        counts = [sum(1 for e in s if e[1] == kind) for s in (hit, guess, gold)]
        per_type[kind] = {**_prf(*counts), "support": counts[2]}
    words = [(a == b) for t, p in zip(true, pred) for a, b in zip(t, p)]
    return {**_prf(len(hit), len(guess), len(gold)), "entities": len(gold), "per_type": per_type,
            "token_accuracy": sum(words) / len(words) if words else 0.0}
