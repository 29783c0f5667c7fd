"""Synthesise a keyword-spotting set with espeak-ng + sox: `python scripts/make_kws.py --out data/kws`.

No speech corpus ships with any installable package here, so the audio recipes train on synthetic speech:
the ten command words of Google's Speech Commands, spoken by espeak-ng voices (an accent + a voice variant),
each clip at a random speed and pitch, shifted by random leading/trailing silence, pitch-shifted and
time-stretched by sox, and mixed with white or pink noise at a random level.

Voices are held out: a voice (accent + variant) that speaks in `test/` never speaks in `train/` or `eval/`,
so test accuracy measures generalisation to unseen speakers, not memorised ones. Output:

    <out>/{train,eval,test}/<word>/<voice>-<n>.wav      16 kHz mono 16-bit
    <out>/manifest.csv                                  split, word, voice, speed, pitch, noise, file

Deterministic for a given --seed (espeak-ng and sox are deterministic; all random choices come from it).
"""

from __future__ import annotations

import argparse
import csv
import random
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

WORDS = ["yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go"]
# espeak-ng voice = accent (language variant) + voice variant (timbre, gender); split so that no
# accent+variant pair is shared between splits, and the test split's variants are never heard in training.
TRAIN_ACCENTS = ["en-us", "en-gb", "en-gb-scotland", "en-029"]
TRAIN_VARIANTS = ["m1", "m3", "f1", "f3", "Andy", "Annie", "Michael", "Belinda"]
EVAL_VOICES = ["en-gb-x-rp+m5", "en-us-nyc+f5", "en-gb-x-gbclan+Edward", "en-us+Alicia"]
TEST_VOICES = ["en-gb-x-rp+m2", "en-us-nyc+f2", "en-gb-x-gbcwmd+m4", "en-029+f4", "en-us+Robert", "en-gb+Linda"]
RATE = 16000


def voices() -> dict[str, list[str]]:
    train = [f"{a}+{v}" for a in TRAIN_ACCENTS for v in TRAIN_VARIANTS]
    return {"train": train, "eval": EVAL_VOICES, "test": TEST_VOICES}


def synthesise(word: str, voice: str, out: Path, rng: random.Random, tmp: Path) -> dict:
    """One clip: espeak-ng -> sox (silence padding, pitch, tempo, 16 kHz) -> sox mix with noise."""
    speed, pitch = rng.randint(120, 200), rng.randint(25, 75)  # words/minute, espeak pitch 0..99
    shift, tempo = rng.randint(-200, 200), round(rng.uniform(0.85, 1.15), 3)  # sox: cents, stretch factor
    lead, tail = round(rng.uniform(0.05, 0.4), 3), round(rng.uniform(0.05, 0.3), 3)
    noise, colour = round(rng.uniform(0.002, 0.03), 4), rng.choice(["whitenoise", "pinknoise"])
    raw, clean = tmp / f"{out.stem}-raw.wav", tmp / f"{out.stem}-clean.wav"
    subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-p", str(pitch), "-w", str(raw), word], check=True)
    subprocess.run(["sox", "-G", str(raw), "-r", str(RATE), "-c", "1", str(clean), "pad", str(lead), str(tail),
                    "pitch", str(shift), "tempo", str(tempo)], check=True)
    seconds = float(subprocess.run(["soxi", "-D", str(clean)], check=True, capture_output=True, text=True).stdout)
    noise_src = f"|sox -n -r {RATE} -c 1 -p synth {seconds:.3f} {colour}"
    subprocess.run(["sox", "-G", "-m", "-v", "1", str(clean), "-v", str(noise), noise_src, "-b", "16", str(out),
                    "trim", "0", f"{seconds:.3f}"], check=True)
    raw.unlink()
    clean.unlink()
    return {"speed": speed, "pitch": pitch, "pitch_cents": shift, "tempo": tempo, "noise": noise,
            "noise_type": colour}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("data/kws"))
    ap.add_argument("--per-voice", type=int, default=3, help="clips per word and training voice (eval/test: ×2)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--jobs", type=int, default=2)
    args = ap.parse_args(argv)
    for tool in ("espeak-ng", "sox", "soxi"):
        if shutil.which(tool) is None:
            print(f"make_kws: '{tool}' not found; install the Debian packages espeak-ng and sox", file=sys.stderr)
            return 2
    if args.out.exists():
        shutil.rmtree(args.out)
    rng = random.Random(args.seed)
    jobs = []  # (split, word, voice, file, rng): every random draw is made here, in a fixed order
    for split, vs in voices().items():
        n = args.per_voice if split == "train" else 2 * args.per_voice
        for word in WORDS:
            (args.out / split / word).mkdir(parents=True, exist_ok=True)
            for voice in vs:
                for k in range(n):
                    name = f"{voice.replace('+', '_')}-{k}.wav"
                    jobs.append((split, word, voice, args.out / split / word / name, random.Random(rng.random())))
    with tempfile.TemporaryDirectory() as tmp, ThreadPoolExecutor(args.jobs) as pool:
        rows = list(pool.map(lambda j: {"split": j[0], "word": j[1], "voice": j[2],
                                        **synthesise(j[1], j[2], j[3], j[4], Path(tmp) / j[0] / j[1]),
                                        "file": str(j[3].relative_to(args.out))},
                             _with_tmp_dirs(jobs, Path(tmp))))
    with open(args.out / "manifest.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    counts = {s: sum(r["split"] == s for r in rows) for s in ("train", "eval", "test")}
    print(f"make_kws: {len(rows)} clips in {args.out} ({counts}); {len(WORDS)} words; voices: "
          f"{len(voices()['train'])} train, {len(EVAL_VOICES)} eval, {len(TEST_VOICES)} test (held out)")
    return 0


def _with_tmp_dirs(jobs: list, tmp: Path) -> list:
    for split, word, *_ in jobs:
        (tmp / split / word).mkdir(parents=True, exist_ok=True)
    return jobs


if __name__ == "__main__":
    sys.exit(main())
