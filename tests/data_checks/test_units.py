"""Licences, PII patterns, n-gram contamination and MinHash signatures, each on its own."""

from __future__ import annotations

import numpy as np
import pytest

from lftrain.checks.contamination import NgramIndex
from lftrain.checks.near import jaccard, shingles, signatures
from lftrain.checks.pii import EMAIL, PHONE
from lftrain.checks.text import normalise
from lftrain.reports.licences import model_licence_metadata, verdict


@pytest.mark.parametrize("licence,use,expected", [
    ("apache-2.0", "commercial", "ok"), ("MIT", "commercial", "ok"), ("cc-by-4.0", "commercial", "ok"),
    ("cc-by-nc-4.0", "research", "ok"), ("cc-by-nc-4.0", "commercial", "refuse"),
    ("cc-by-nc-sa-4.0", "commercial", "refuse"), ("cc-by-sa-4.0", "commercial", "warn"),
    ("agpl-3.0", "commercial", "warn"), ("gpl-3.0", "research", "ok"), ("openrail-m", "research", "warn"),
    ("llama3", "commercial", "warn"), ("gemma", "research", "warn"), ("my-own-terms", "research", "warn"),
    (None, "research", "warn"),
])
def test_licence_verdicts(licence, use, expected):
    v = verdict(licence, use, "data 'train'")
    assert v["verdict"] == expected, v
    assert v["reason"]


def test_model_licence_read_from_model_card(tmp_path):
    (tmp_path / "README.md").write_text("---\nlicense: llama3\ndatasets: [a, b]\n---\n# model\n")
    assert model_licence_metadata(tmp_path) == {"model_card": "llama3", "trained_on": ["a", "b"]}


def test_non_commercial_data_blocks_commercial_use(tmp_path):
    from lftrain import api
    from tests.data_checks.planted import recipe, write_clean

    train, test = write_clean(tmp_path, 60, 20)
    rec = recipe(train, test, tmp_path / "run", noise="off")
    rec["data"]["licence"] = {"train": "cc-by-nc-4.0", "test": "mit"}
    rec["output"]["intended_use"] = "commercial"
    report = api.check_data(rec, output=tmp_path / "c", print_table=False)
    assert report.blocking == ["licence"]
    assert "forbids commercial use" in report.results["licence"].summary
    rec["output"]["intended_use"] = "research"
    assert api.check_data(rec, output=tmp_path / "c2", print_table=False).ok


def test_pii_patterns():
    assert EMAIL.findall("mail a.b+c@mail.example.org now") == ["a.b+c@mail.example.org"]
    for phone in ("555-123-4567", "(555) 123 4567", "+44 20 7946 0958", "020 7946 0958"):
        assert PHONE.search(f"call {phone} today"), phone
    for not_phone in ("in 1999 it cost $12.50", "scored 7/10", "ISBN 9780306406157"):
        assert not PHONE.search(not_phone), not_phone


def test_ngram_contamination_index():
    train = [normalise("one two three four five six seven eight nine ten eleven twelve thirteen fourteen"),
             normalise("short text")]
    index = NgramIndex(train, 13)
    assert index.match(normalise("x two three four five six seven eight nine ten eleven twelve thirteen fourteen"))
    assert index.match(normalise("Short, TEXT!")) == (1, "short text")  # short rows must match whole
    assert index.match(normalise("two three four five six seven eight nine ten eleven twelve thirteen y")) is None


def test_minhash_signatures_estimate_jaccard():
    rng = np.random.RandomState(0)
    words = [f"w{i}" for i in range(60)]
    a = shingles(" ".join(words))
    changed = list(words)
    for k in rng.choice(60, 6, replace=False):
        changed[k] = f"x{k}"
    b = shingles(" ".join(changed))
    sig = signatures([a, b])
    estimate = float((sig[0] == sig[1]).mean())
    assert abs(estimate - jaccard(a, b)) < 0.15
    assert (signatures([frozenset()]) == 2**32 - 1).all()
