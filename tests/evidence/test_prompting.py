"""`lft compare RUN --prompting MODEL`: constrained label scoring by a causal LM, zero- and few-shot, beside the run."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from lftrain.cli import main as lft
from lftrain.runs.prompting import build_prompts, label_scores, option_ids, pick_shots
from tests.sft.conftest import make_tiny_llama


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = make_tiny_llama(tmp_path_factory.mktemp("llama"))
    return path, AutoModelForCausalLM.from_pretrained(path).eval(), AutoTokenizer.from_pretrained(path)


def test_label_scores_are_the_label_tokens_log_probability(llama):
    _, model, tok = llama
    prompts = build_prompts(tok, ["the film was good", "a very bad plot indeed, awful", "yes"], ["neg", "pos"], [])
    options = option_ids(tok, ["neg", "pos", "fresh rotten"], chat=True)
    scores = label_scores(model, tok, prompts, options)  # prompts of unequal length in one batch, labels too
    assert label_scores(model, tok, prompts, options, batch_size=2) == pytest.approx(scores, abs=1e-4)
    for i, p in enumerate(prompts):
        for j, opt in enumerate(options):
            ids = tok(p, add_special_tokens=False)["input_ids"]
            with torch.no_grad():
                logp = torch.log_softmax(model(torch.tensor([ids + opt])).logits[0].float(), -1)
            expected = sum(float(logp[len(ids) - 1 + t, o]) for t, o in enumerate(opt))
            assert scores[i, j] == pytest.approx(expected, abs=1e-4)


def test_shots_take_classes_in_turn_and_prompts_show_them(llama):
    _, _, tok = llama
    labels = np.array([0, 0, 0, 1, 1, 0])
    picked = pick_shots(["t"] * 6, labels, 3)
    assert len(picked) == 3 and sorted(labels[picked].tolist()) == [0, 0, 1]
    prompt = build_prompts(tok, ["new text"], ["neg", "pos"], [("good film", "pos"), ("bad film", "neg")])[0]
    assert prompt.index("good film") < prompt.index("bad film") < prompt.index("new text")
    assert prompt.endswith("<|im_start|>assistant\n") and "neg, pos" in prompt
    template, tok.chat_template = tok.chat_template, None
    try:
        plain = build_prompts(tok, ["new text"], ["neg", "pos"], [("good film", "pos")])[0]
    finally:
        tok.chat_template = template
    assert plain.endswith("Text: new text\nLabel:") and "Label: pos" in plain


def test_compare_run_with_prompting(evidence_runs, llama, tmp_path):
    path, _, _ = llama
    run = evidence_runs["a"][0]
    out = tmp_path / "prompting.json"
    assert lft(["compare", str(run), "--prompting", str(path), "--shots", "0", "2", "--limit", "12",
                "--samples", "200", "--output", str(out)]) == 0
    r = json.loads(out.read_text())
    assert r["n"] == 12 and set(r["prompting"]) == {"0-shot", "2-shot"} and len(r["table"]) == 3
    saved = np.load(run / "evidence" / "test.npz")
    tuned = float((saved["logits"][:12].argmax(1) == saved["labels"][:12]).mean())
    assert r["table"][f"fine-tuned ({run.name})"]["accuracy"]["value"] == pytest.approx(tuned)
    zero = r["prompting"]["0-shot"]["metrics"]["accuracy"]
    assert zero["b"] == pytest.approx(tuned) and zero["diff"] == pytest.approx(tuned - zero["a"])
    assert r["prompting"]["2-shot"]["examples_per_s"] > 0


def test_calibration_subtracts_the_content_free_scores(llama):
    from lftrain.runs.prompting import CONTENT_FREE, prompt_baseline

    path, model, tok = llama
    texts, names = ["the film was good", "bad plot"], ["neg", "pos"]
    raw = prompt_baseline(str(path), texts, names, [], calibrate=False)
    cal = prompt_baseline(str(path), texts, names, [])
    free = label_scores(model, tok, build_prompts(tok, [CONTENT_FREE], names, []), option_ids(tok, names, True))[0]
    assert raw.content_free is None and cal.content_free == pytest.approx(free, abs=1e-4)
    assert cal.logits == pytest.approx(raw.logits - free, abs=1e-4)


def test_prompting_takes_one_run(evidence_runs, llama, capsys):
    a, b = evidence_runs["a"][0], evidence_runs["b"][0]
    assert lft(["compare", str(a), str(b), "--prompting", str(llama[0])]) == 2
    assert "--prompting compares one run" in capsys.readouterr().err
