"""Near-duplicates with MinHash LSH (datasketch), within splits and across them (train <-> eval/test leakage).

Texts are sets of word bigrams of their normalised form; two texts are near-duplicates when the Jaccard
similarity of those sets reaches `near_threshold`. MinHash signatures are computed for all rows at once with
numpy (the same universal-hash scheme datasketch uses, vectorised), then datasketch's `MinHashLSH` finds
candidate pairs, and every candidate is verified with the exact Jaccard similarity, so no false positives
are reported (LSH may miss a few pairs close to the threshold).
"""

from __future__ import annotations

import zlib

import numpy as np

from lftrain.checks.report import CheckResult, row_ref, short
from lftrain.checks.text import example_text

NUM_PERM = 64
MIN_TOKENS = 4  # shorter texts are compared exactly (duplicates/leakage): 1-2 bigrams say nothing about nearness


def shingles(norm: str) -> frozenset[str]:
    words = norm.split()
    if len(words) < MIN_TOKENS:
        return frozenset()
    return frozenset(f"{a} {b}" for a, b in zip(words, words[1:]))


def signatures(sets: list[frozenset[str]], seed: int = 1) -> np.ndarray:
    """MinHash signatures (rows x NUM_PERM, uint64 holding 32-bit values) of shingle sets; empty sets get all-max.

    Each shingle's id is its CRC-32 (stable across processes, unlike Python's salted `hash`, and scattered, so the
    hash family below behaves min-wise independently; sequential ids biased the estimate); permutation k hashes
    id x by multiply-shift, ((a_k*x + b_k) mod 2^64) >> 32
    (a universal family, Dietzfelbinger et al. 1997), and a row's signature is its minimum over its shingles."""
    ids = np.fromiter((zlib.crc32(s.encode()) for st in sets for s in st), dtype=np.uint64)
    sizes = np.fromiter((len(st) for st in sets), dtype=np.int64, count=len(sets))
    rng = np.random.RandomState(seed)
    a = rng.randint(1, 2**62, size=NUM_PERM, dtype=np.int64).astype(np.uint64) | np.uint64(1)
    b = rng.randint(0, 2**62, size=NUM_PERM, dtype=np.int64).astype(np.uint64)
    sig = np.full((NUM_PERM, len(sets)), np.uint64(2**32 - 1), dtype=np.uint64)
    ends = np.cumsum(sizes)
    # Permutations x shingles layout (reduceat along the contiguous axis is ~10x faster), in chunks of ~200k
    # shingles so the hash matrix stays ~100 MB.
    row = 0
    while row < len(sets):
        lo = int(ends[row - 1]) if row else 0
        stop = max(int(np.searchsorted(ends, lo + 200_000, side="right")), row + 1)
        hi = int(ends[stop - 1])
        chunk = sizes[row:stop]
        nonempty = np.flatnonzero(chunk > 0)
        if hi > lo:
            hashed = (a[:, None] * ids[None, lo:hi] + b[:, None]) >> np.uint64(32)
            starts = np.concatenate([[0], np.cumsum(chunk)[:-1]])[nonempty]
            sig[:, row + nonempty] = np.minimum.reduceat(hashed, starts, axis=1)
        row = stop
    return np.ascontiguousarray(sig.T)


def jaccard(a: frozenset, b: frozenset) -> float:
    return len(a & b) / len(a | b) if a and b else 0.0


def near_pairs(splits: dict, norms: dict[str, list[str]], threshold: float) -> list[tuple]:
    """Verified near-duplicate pairs ((split, i), (split, j), similarity) over all splits; exact copies excluded."""
    from datasketch import LeanMinHash, MinHashLSH

    keys = [(role, i) for role in splits for i in range(len(splits[role]))]
    sets = [shingles(norms[role][i]) for role, i in keys]
    sig = signatures(sets)
    lsh = MinHashLSH(threshold=threshold, num_perm=NUM_PERM)
    hashes = []
    with lsh.insertion_session() as session:
        for k, st in enumerate(sets):
            m = None
            if st:
                m = LeanMinHash(seed=1, hashvalues=sig[k], scheme="affine32")  # no permutations needed: we hashed
                session.insert(k, m, check_duplication=False)
            hashes.append(m)
    pairs = []
    for k, m in enumerate(hashes):
        if m is None:
            continue
        for other in lsh.query(m):
            if other <= k:
                continue
            (r1, i1), (r2, i2) = keys[k], keys[other]
            if norms[r1][i1] == norms[r2][i2]:
                continue  # exact copies: reported by duplicates/leakage
            sim = jaccard(sets[k], sets[other])
            if sim >= threshold:
                pairs.append((keys[k], keys[other], round(sim, 3)))
    return pairs


def _pair_example(splits: dict, a: tuple, b: tuple, sim: float) -> dict:
    return {"a": {**row_ref(splits[a[0]], a[1], a[0]), "text": short(example_text(splits[a[0]], a[1]))},
            "b": {**row_ref(splits[b[0]], b[1], b[0]), "text": short(example_text(splits[b[0]], b[1]))},
            "similarity": sim}


def near_duplicates(splits: dict, pairs: list[tuple]) -> CheckResult:
    """Rows that nearly repeat an earlier row of the same split (the earlier one would be kept)."""
    within = [p for p in pairs if p[0][0] == p[1][0]]
    later = sorted({p[1] for p in within})
    rows = []
    first_of = {}
    for a, b, sim in within:
        first_of.setdefault(b, (a, sim))
    for key in later:
        a, sim = first_of[key]
        rows.append({**row_ref(splits[key[0]], key[1], key[0]), "reason": "near-duplicate",
                     "of": row_ref(splits[a[0]], a[1], a[0]), "similarity": sim})
    return CheckResult("near_duplicates", len(rows), f"{len(rows)} rows nearly repeat another row of their split "
                       f"({len(within)} pairs)", examples=[_pair_example(splits, *p) for p in within[:5]], rows=rows)


def near_leakage(splits: dict, pairs: list[tuple]) -> CheckResult:
    """Eval/test rows with a near-duplicate in the training split."""
    across = [p if p[0][0] == "train" else (p[1], p[0], p[2]) for p in pairs
              if {p[0][0], p[1][0]} in ({"train", "eval"}, {"train", "test"})]
    held = {p[1] for p in across}
    rows = [{**row_ref(splits["train"], a[1], "train"), "reason": f"near-duplicate of a {b[0]} row",
             "of": row_ref(splits[b[0]], b[1], b[0]), "similarity": sim} for a, b, sim in across]
    return CheckResult("near_leakage", len(held), f"{len(held)} eval/test rows have a near-duplicate in the "
                       f"training split ({len(across)} pairs)",
                       examples=[_pair_example(splits, *p) for p in across[:5]], rows=rows)
