"""Synthesise a speech-recognition domain set with espeak-ng + sox: `python scripts/make_asr_domain.py --out
data/asr-domain`.

Short sentences dense in words a general English recogniser gets wrong: people's names from several languages
(Siobhan, Przybylski, Oluwaseun), drug names (levetiracetam, rivaroxaban), places (Ballyjamesduff, Ouagadougou)
and invented product names (Quorvane, Veltrocor), in a few templates ("doctor Okonkwo prescribed metoprolol in
Llandudno"). Each clip is spoken by an espeak-ng voice at a random speed and pitch, pitch-shifted and time-stretched
by sox and mixed with white or pink noise (scripts/make_kws.py's `synthesise`).

Held out: a voice that speaks in `test/` never speaks in `train/` or `eval/` (make_kws.py's voice split), and no
test sentence is a training sentence (the domain words recur, their combinations do not). Output:

    <out>/{train,eval,test}/<voice>-<n>.wav + .txt     16 kHz mono 16-bit, the transcript beside each clip
    <out>/manifest.csv                                 split, voice, text, speed, pitch, noise, file

Deterministic for a given --seed.
"""

from __future__ import annotations

import argparse
import csv
import random
import shutil
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_kws import synthesise, voices  # noqa: E402  (the same voices, speeds, pitches and noise)

NAMES = ["Siobhan", "Nguyen", "Okonkwo", "Przybylski", "Aoife", "Thandiwe", "Krzysztof", "Oluwaseun", "Ximena",
         "Dervla", "Saoirse", "Wojciech", "Chidi", "Niamh", "Tadhg", "Eszter"]
DRUGS = ["metoprolol", "levetiracetam", "omeprazole", "zolpidem", "amlodipine", "rivaroxaban", "atorvastatin",
         "gabapentin", "methotrexate", "sertraline", "clopidogrel", "tamsulosin"]
PLACES = ["Ballyjamesduff", "Ouagadougou", "Llandudno", "Skagway", "Kirkcudbright", "Wollongong", "Ecclefechan",
          "Mawlamyine", "Gjirokaster", "Tromso"]
PRODUCTS = ["Zentrix", "Quorvane", "Plexamin", "Veltrocor", "Dyrabex", "Norvique"]
TEMPLATES = ["{name} takes {drug} twice a day.", "Doctor {name} prescribed {drug} in {place}.",
             "Please send the {product} invoice to {name}.", "{name} flew from {place} to {place2}.",
             "The {product} trial in {place} started with {drug}.", "{name} stopped {drug} and switched to {drug2}.",
             "Call {name} about the {product} order.", "{name} moved to {place} last spring."]


def sentence(rng: random.Random) -> str:
    drug, drug2 = rng.sample(DRUGS, 2)
    place, place2 = rng.sample(PLACES, 2)
    return rng.choice(TEMPLATES).format(name=rng.choice(NAMES), drug=drug, drug2=drug2, place=place, place2=place2,
                                        product=rng.choice(PRODUCTS))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("data/asr-domain"))
    ap.add_argument("--train-per-voice", type=int, default=12)
    ap.add_argument("--eval-per-voice", type=int, default=10)
    ap.add_argument("--test-per-voice", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--jobs", type=int, default=2)
    args = ap.parse_args(argv)
    for tool in ("espeak-ng", "sox", "soxi"):
        if shutil.which(tool) is None:
            print(f"make_asr_domain: '{tool}' not found; install the Debian packages espeak-ng and sox",
                  file=sys.stderr)
            return 2
    if args.out.exists():
        shutil.rmtree(args.out)
    rng = random.Random(args.seed)
    per = {"train": args.train_per_voice, "eval": args.eval_per_voice, "test": args.test_per_voice}
    seen: set[str] = set()
    jobs = []  # (split, text, voice, file, rng): every random draw is made here, in a fixed order
    for split, vs in voices().items():
        (args.out / split).mkdir(parents=True)
        for voice in vs:
            for k in range(per[split]):
                text = sentence(rng)
                while split != "train" and text in seen:  # held-out sentences: never one of the training ones
                    text = sentence(rng)
                if split == "train":
                    seen.add(text)
                name = f"{voice.replace('+', '_')}-{k:02d}"
                (args.out / split / f"{name}.txt").write_text(text + "\n")
                jobs.append((split, text, voice, args.out / split / f"{name}.wav", random.Random(rng.random())))
    with tempfile.TemporaryDirectory() as tmp, ThreadPoolExecutor(args.jobs) as pool:
        rows = list(pool.map(lambda j: {"split": j[0], "voice": j[2], "text": j[1],
                                        **synthesise(j[1], j[2], j[3], j[4], Path(tmp)),
                                        "file": str(j[3].relative_to(args.out))}, jobs))
    with open(args.out / "manifest.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    counts = {s: sum(r["split"] == s for r in rows) for s in per}
    print(f"make_asr_domain: {len(rows)} clips in {args.out} ({counts}); voices: {len(voices()['train'])} train, "
          f"{len(voices()['eval'])} eval, {len(voices()['test'])} test (held out); "
          f"{len({r['text'] for r in rows if r['split'] == 'test'} & seen)} test sentences also in train")
    return 0


if __name__ == "__main__":
    sys.exit(main())
