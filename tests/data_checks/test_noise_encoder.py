"""`data.checks.noise: encoder`: label-noise suspects from the frozen base model's embeddings (tiny BERT)."""

from __future__ import annotations

import pytest

from lftrain import api
from tests.conftest import make_tokenizer
from tests.data_checks.planted import PLANTED, recipe, write_clean, write_planted


@pytest.fixture(scope="module")
def wide_bert(tmp_path_factory):
    """A random 1-layer, width-128 BERT. The shared width-32 one mixes tokens too much for its mean-pooled
    embeddings to keep the three label words apart (it found 2 of the 4 flipped rows); at width 128 a random
    encoder already keeps enough of each token for a linear model, like a real pre-trained one keeps more."""
    import torch
    from transformers import BertConfig, BertModel

    d = tmp_path_factory.mktemp("wide-bert")
    tok = make_tokenizer(d)
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=len(tok), hidden_size=128, num_hidden_layers=1, num_attention_heads=4,
                         intermediate_size=256, max_position_embeddings=64)).save_pretrained(d)
    return d


def _train_suspects(report) -> list[int]:
    return [r["row"] for r in report.results["noise"].rows if r["split"] == "train"]


def test_encoder_noise_finds_flipped_labels(wide_bert, tmp_path):
    train, test = write_planted(tmp_path)
    rec = recipe(train, test, tmp_path / "run", model=str(wide_bert), noise="encoder")
    report = api.check_data(rec, output=tmp_path / "check", print_table=False)
    noise = report.results["noise"]
    assert noise.details["method"] == "encoder"
    suspects = _train_suspects(report)
    assert set(PLANTED["flipped"]) <= set(suspects), (suspects, noise.summary)
    assert len(suspects) <= 8, noise.summary  # a short list to review, not every row


def test_encoder_noise_quiet_on_clean_labels(wide_bert, tmp_path):
    train, test = write_clean(tmp_path)
    rec = recipe(train, test, tmp_path / "run", model=str(wide_bert), noise="encoder")
    report = api.check_data(rec, output=tmp_path / "check", print_table=False)
    assert _train_suspects(report) == [], report.results["noise"].summary
