"""Shared fixtures: tiny random models saved with `save_pretrained` and toy data files.

Models are built in the test and loaded back through the same code path users take (a local
directory), so nothing is downloaded and every test runs offline in seconds.
"""

from __future__ import annotations

import csv
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

POSITIVE = ["good", "great", "fine", "superb", "lovely", "charming", "brilliant", "moving"]
NEGATIVE = ["bad", "awful", "poor", "dull", "boring", "tedious", "clumsy", "weak"]
NEUTRAL = ["the", "a", "film", "movie", "story", "plot", "actor", "scene", "was", "is", "and", "very", "quite",
           "this", "it", "with", "an", "ending", "cast", "score"]
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def make_tokenizer(directory: Path):
    from transformers import BertTokenizerFast

    directory.mkdir(parents=True, exist_ok=True)
    vocab = directory / "vocab.txt"
    words = SPECIAL + sorted(set(POSITIVE + NEGATIVE + NEUTRAL)) + list("abcdefghijklmnopqrstuvwxyz.,!?'")
    vocab.write_text("\n".join(words) + "\n")
    tok = BertTokenizerFast(vocab=str(vocab), do_lower_case=True)
    tok.save_pretrained(directory)
    return tok


def make_tiny_bert(directory: Path, *, dropout: float = 0.1, seed: int = 0, init: float = 0.02) -> Path:
    """A 2-layer, width-32 BERT encoder (no classification head, like a real pre-trained checkpoint); `init`:
    the std of its random weights (BERT's 0.02 by default)."""
    import torch
    from transformers import BertConfig, BertModel

    tok = make_tokenizer(directory)
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=64, max_position_embeddings=64, hidden_dropout_prob=dropout,
                        attention_probs_dropout_prob=dropout, initializer_range=init)
    BertModel(config).save_pretrained(directory)
    return directory


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory) -> Path:
    return make_tiny_bert(tmp_path_factory.mktemp("tiny-bert"))


@pytest.fixture(scope="session")
def tiny_bert_learns(tmp_path_factory) -> Path:
    """tiny_bert with weights at std 0.1: for runs that must learn with a margin whatever the CPU.

    At std 0.02 the attention logits are ~0 and the head reads [CLS] through products of small matrices, so a
    sequence-level run sits on a plateau until it escapes it, and when depends on the rounding of every step
    (threads, bf16, AVX2 or AMX kernels); partial training (an adapter, a few layers) may never escape it."""
    return make_tiny_bert(tmp_path_factory.mktemp("tiny-bert-learns"), init=0.1)


@pytest.fixture(scope="session")
def tiny_bert_nodrop(tmp_path_factory) -> Path:
    return make_tiny_bert(tmp_path_factory.mktemp("tiny-bert-nodrop"), dropout=0.0)


def toy_rows(n: int, seed: int = 0, *, filler: list[str] = NEUTRAL, filler_words: tuple[int, int] = (2, 9),
             sentiment_words: int = 2) -> list[dict]:
    """Sentences whose label follows from the sentiment words they contain (learnable in a few steps)."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = "pos" if i % 2 == 0 else "neg"
        words = (rng.sample(filler, rng.randint(*filler_words))
                 + rng.sample(POSITIVE if label == "pos" else NEGATIVE, sentiment_words))
        rng.shuffle(words)
        rows.append({"text": " ".join(words), "label": label})
    return rows


def write_csv(path: Path, rows: list[dict], fieldnames: list[str] | None = None) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=fieldnames or list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return path


@pytest.fixture
def toy_csv(tmp_path) -> Path:
    return write_csv(tmp_path / "toy.csv", toy_rows(120))


def tiny_recipe(model: Path, train: Path, out: Path, **train_overrides) -> dict:
    train_cfg = {"epochs": 2, "lr": 5e-3, "batch_size": 8, "seed": 0, "threads": 1, "precision": "fp32",
                 "log_every": 1, "warmup_ratio": 0.0, **train_overrides}
    return {"model": {"path": str(model)},
            "task": {"type": "text-classification", "text": "text", "label": "label", "max_length": 32},
            "data": {"train": str(train), "test_fraction": 0.2, "eval_fraction": 0.1,
                     "cache_dir": str(out.parent / "cache")},
            "train": train_cfg, "output": {"dir": str(out)}}


def write_recipe(path: Path, recipe: dict) -> Path:
    import yaml

    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return path


def run_lft(*args: str, cwd: Path | None = None, timeout: float = 300,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """The real CLI in a subprocess, exactly as users run it (`env`: variables to add)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", "lftrain", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=timeout, env=env)


def toy_setup(model_dir, n: int = 32, *, lr: float = 1e-2, batch_size: int | None = None,
              max_grad_norm: float | None = None, attention: str = "eager"):
    """(recipe, task, tokenizer, encoded toy data, model) through the user's loading path, in process: the
    building block of the loop's unit tests. Clipping is off by default: it could hide a wrongly scaled loss."""
    import torch

    from lftrain.config import load_recipe
    from lftrain.data.examples import Examples
    from lftrain.data.labels import LabelSet
    from lftrain.models.loading import load_tokenizer, vet_model_dir
    from lftrain.tasks import build_task

    recipe = load_recipe(data={"model": {"path": str(model_dir)}, "data": {"train": "x.csv"},
                               "train": {"lr": lr, "batch_size": batch_size or n, "warmup_ratio": 0,
                                         "precision": "fp32", "max_grad_norm": max_grad_norm}})
    task = build_task(recipe.task)
    task.labels = LabelSet(["neg", "pos"])
    rows = toy_rows(n)
    ex = Examples("toy", {"text": [r["text"] for r in rows], "label": [r["label"] for r in rows]},
                  [("toy", i + 1, i + 2) for i in range(n)])
    source = vet_model_dir(str(model_dir), allow_pickle=False, trust_remote_code=False)
    tok = load_tokenizer(source, False)
    torch.manual_seed(0)  # the new head's initialisation: the same in every process
    model = task.load_model(source, trust_remote_code=False, attention=attention)
    return recipe, task, tok, task.encode(tok, ex), model
