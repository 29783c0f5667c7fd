"""Preference tuning (methods/preference.py): the losses against hand computation, pair batching and packing,
the row formats, and DPO / ORPO runs through the real CLI on a tiny Llama."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import run_lft, write_recipe
from tests.sft.conftest import make_tiny_llama, write_jsonl


def _sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def test_dpo_loss_by_hand():
    from lftrain.methods.preference import dpo_loss

    # policy prefers chosen by 2 nats more than the reference does: logit = 0.5 * ((-5 + 6) - (-7 + 6)) = 1
    loss, chosen, rejected = dpo_loss(torch.tensor([-5.0]), torch.tensor([-7.0]), torch.tensor([-6.0]),
                                      torch.tensor([-6.0]), beta=0.5)
    assert float(loss) == pytest.approx(-math.log(_sigmoid(1.0)), rel=1e-6)  # 0.3133
    assert float(chosen) == pytest.approx(0.5) and float(rejected) == pytest.approx(-0.5)


def test_orpo_loss_by_hand():
    from lftrain.methods.preference import orpo_loss

    def odds(mean):
        p = math.exp(mean)
        return math.log(p / (1 - p))

    loss, log_odds = orpo_loss(torch.tensor([-1.0]), torch.tensor([-2.0]), beta=0.1)
    expected_ratio = odds(-1.0) - odds(-2.0)
    assert float(log_odds) == pytest.approx(expected_ratio, rel=1e-5)
    assert float(loss) == pytest.approx(1.0 - 0.1 * math.log(_sigmoid(expected_ratio)), rel=1e-5)


# ---- pairs through the tiny model ----------------------------------------------------------------------------

def _pair_rows(n: int, seed: int = 0) -> list[dict]:
    """The chosen answer names the prompt's sentiment word's class; the rejected one the other class."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        good = i % 2 == 0
        word = rng.choice(["good", "great"] if good else ["bad", "awful"])
        words = rng.sample(["the", "film", "plot", "was", "very", "movie"], 3) + [word]
        rng.shuffle(words)
        prompt = "review: " + " ".join(words)
        right, wrong = ("fresh", "rotten") if good else ("rotten", "fresh")
        rows.append({"prompt": prompt, "chosen": right, "rejected": wrong})
    return rows


def _task_and_pairs(model_dir: Path, rows: list[dict], tmp: Path, **task):
    from transformers import AutoTokenizer

    from lftrain.config.schema import recipe_model
    from lftrain.data.readers import read_table
    from lftrain.methods.preference import PairBatches, encode_pairs
    from lftrain.tasks import build_task

    recipe = recipe_model().model_validate({"model": {"path": str(model_dir)},
                                    "task": {"type": "causal-lm-sft", "max_length": 64, **task},
                                    "data": {"train": str(tmp / "x.jsonl")}, "method": {"type": "dpo"}})
    t = build_task(recipe.task)
    table = read_table(str(write_jsonl(tmp / "pairs.jsonl", rows)), "auto", "utf-8")
    ex = t.extract(table, normalize=True)
    tok = AutoTokenizer.from_pretrained(model_dir)
    t.prepare_tokenizer(tok)
    return t, tok, encode_pairs(t, tok, ex), PairBatches(t)


def _by_hand(model, tok, template, row) -> tuple[float, float]:
    """Summed log-prob of the chosen and the rejected response, each scored alone, token by token."""
    from lftrain.data.chat import render

    out = []
    for answer in (row["chosen"], row["rejected"]):
        prompt = render(tok, template, [{"role": "user", "content": row["prompt"]}], generation_prompt=True)
        full = render(tok, template, [{"role": "user", "content": row["prompt"]},
                                      {"role": "assistant", "content": answer}])
        ids = tok(full, add_special_tokens=False)["input_ids"]
        start = len(tok(prompt, add_special_tokens=False)["input_ids"])
        with torch.no_grad():
            logp = torch.log_softmax(model(torch.tensor([ids])).logits[0].float(), -1)
        out.append(sum(float(logp[t - 1, ids[t]]) for t in range(start, len(ids))))
    return out[0], out[1]


@pytest.mark.parametrize("packing", [True, False])
def test_dpo_loss_matches_hand_computation_on_a_tiny_model(tmp_path, tiny_llama, packing):
    from transformers import AutoModelForCausalLM

    from lftrain.methods.preference import dpo_loss, sequence_logps

    rows = _pair_rows(6)
    task, tok, enc, batches = _task_and_pairs(tiny_llama, rows, tmp_path, packing=packing, pack_length=128)
    policy = AutoModelForCausalLM.from_pretrained(tiny_llama).eval()
    reference = AutoModelForCausalLM.from_pretrained(make_tiny_llama(tmp_path / "ref", seed=1)).eval()
    batch = batches.collate(enc, np.arange(6), tok.pad_token_id)
    assert (batch["input_ids"].shape[0] < 12) == packing  # packed: 12 sequences share fewer rows
    with torch.no_grad():
        sums, counts = sequence_logps(policy, batch, 12)
    beta, expected = 0.3, []
    for row in rows:
        pc, pr = _by_hand(policy, tok, task.template, row)
        rc, rr = _by_hand(reference, tok, task.template, row)
        expected.append(-math.log(_sigmoid(beta * ((pc - rc) - (pr - rr)))))
    ref = torch.tensor([v for row in rows for v in _by_hand(reference, tok, task.template, row)])
    loss, _, _ = dpo_loss(sums[0::2], sums[1::2], ref[0::2], ref[1::2], beta)
    assert loss.tolist() == pytest.approx(expected, rel=1e-4)
    assert counts.min() >= 1 and batches.loss_units(batch) == 6


def test_preference_formats(tmp_path, tiny_llama):
    from lftrain.data.readers import read_table
    from lftrain.errors import DataError

    conv = [{"role": "user", "content": "hi"}]
    rows = [{"prompt": "say yes", "chosen": "yes", "rejected": "no"},  # plain
            {"prompt": conv, "chosen": [{"role": "assistant", "content": "hello"}],  # explicit prompt, messages
             "rejected": [{"role": "assistant", "content": "go away"}]}]
    task, tok, enc, _ = _task_and_pairs(tiny_llama, rows, tmp_path)
    assert len(enc["example_index"]) == 2 and len(enc["offsets"]) == 5
    implicit = [{"chosen": conv + [{"role": "assistant", "content": "hello"}],
                 "rejected": conv + [{"role": "assistant", "content": "bye"}]}]
    ex = task.extract(read_table(str(write_jsonl(tmp_path / "i.jsonl", implicit)), "auto", "utf-8"), normalize=True)
    assert ex.fields["messages"][0] == conv + [{"role": "assistant", "content": "hello"}]
    assert ex.fields["rejected"] == ["bye"]
    sft = task.encode(tok, ex)  # method: supervised learns the chosen answer alone
    assert len(sft["offsets"]) == 2 and tok.decode(sft["input_ids"][sft["loss_mask"] == 1]).startswith("hello")
    bad = [{"chosen": conv + [{"role": "assistant", "content": "a"}],
            "rejected": [{"role": "user", "content": "other"}, {"role": "assistant", "content": "b"}]}]
    with pytest.raises(DataError, match="share every turn"):
        task.extract(read_table(str(write_jsonl(tmp_path / "b.jsonl", bad)), "auto", "utf-8"), normalize=True)
    with pytest.raises(DataError, match="empty value.*rejected|rejected.*empty value"):
        task.extract(read_table(str(write_jsonl(tmp_path / "e.jsonl", [{"prompt": "p", "chosen": "c",
                                                                          "rejected": ""}])), "auto", "utf-8"),
                     normalize=True)


# ---- through the CLI -------------------------------------------------------------------------------------------

def _recipe(model: Path, tmp: Path, out: Path, method: dict, **extra) -> dict:
    recipe = {"model": {"path": str(model)},
              "task": {"type": "causal-lm-sft", "max_length": 64,
                       "generation": {"max_new_tokens": 2, "max_prompts": 8, "samples": 2}},
              "data": {"train": str(write_jsonl(tmp / "train.jsonl", _pair_rows(160))),
                       "test_fraction": 0.2, "eval_fraction": 0.1, "cache_dir": str(tmp / "cache")},
              "method": method,
              "train": {"epochs": 2, "lr": 3e-3, "batch_size": 8, "seed": 0, "threads": 1, "precision": "fp32",
                        "log_every": 1},
              "output": {"dir": str(out)}}
    for key, value in extra.items():
        recipe[key] = {**recipe.get(key, {}), **value}
    return recipe


def _records(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def dpo_run(tiny_llama, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("dpo")
    out = tmp / "run"
    proc = run_lft("train", str(write_recipe(tmp / "r.yaml", _recipe(tiny_llama, tmp, out,
                                                                      {"type": "dpo", "beta": 0.5}))))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, proc


def test_dpo_run_learns_the_preference(dpo_run):
    run, proc = dpo_run
    records = _records(run)
    losses = [r["loss"] for r in records if r.get("event") == "train"]
    assert losses[0] == pytest.approx(math.log(2), abs=1e-4)  # policy == reference at the start: margin 0
    assert np.mean(losses[-5:]) < 0.5
    test = next(r for r in records if r.get("final") and r["split"] == "test")
    assert test["reward_accuracy"] >= 0.9 and test["reward_margin"] > 0
    assert test["preference_accuracy"] >= 0.9 and test["base_preference_accuracy"] < 0.8  # the random start: ~0.5
    manifest = json.loads((run / "manifest.json").read_text())["preference"]
    assert manifest["beta"] == 0.5 and manifest["reference_sequences"] == 2 * sum(manifest["pairs"].values())
    assert "chosen preferred" in proc.stdout
    evidence = json.loads((run / "evidence.json").read_text())
    assert "reward_accuracy" in json.dumps(evidence)


def test_orpo_run_learns_to_answer(tiny_llama, tmp_path):
    """ORPO has no reference and trains the chosen responses' likelihood too: the run answers prompts rightly."""
    recipe = _recipe(tiny_llama, tmp_path, tmp_path / "run", {"type": "orpo", "beta": 1.0})
    recipe["train"].update(epochs=6, lr=1e-2)
    proc = run_lft("train", str(write_recipe(tmp_path / "r.yaml", recipe)))
    assert proc.returncode == 0, proc.stderr[-3000:]
    test = next(r for r in _records(tmp_path / "run") if r.get("final") and r["split"] == "test")
    assert test["preference_accuracy"] >= 0.9 and test["log_odds_ratio"] > 0
    assert "reference_seconds" not in json.loads((tmp_path / "run" / "manifest.json").read_text())["preference"]
    proc = run_lft("generate", str(tmp_path / "run"), "--prompt", "review: the film was very great",
                   "--prompt", "review: the plot was awful", "--max-new-tokens", "6")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["fresh", "rotten"]


def test_lora_dpo_run(tiny_llama, tmp_path):
    recipe = _recipe(tiny_llama, tmp_path, tmp_path / "run", {"type": "dpo", "beta": 0.5},
                     adaptation={"type": "lora", "r": 4})
    recipe["train"]["lr"] = 2e-2
    proc = run_lft("train", str(write_recipe(tmp_path / "r.yaml", recipe)))
    assert proc.returncode == 0, proc.stderr[-3000:]
    test = next(r for r in _records(tmp_path / "run") if r.get("final") and r["split"] == "test")
    assert test["reward_accuracy"] >= 0.8 and test["base_preference_accuracy"] < 0.8
    assert (tmp_path / "run" / "model" / "adapter_config.json").is_file()


def test_dpo_needs_preference_rows(tiny_llama, tmp_path):
    from tests.sft.conftest import sentiment_rows

    recipe = _recipe(tiny_llama, tmp_path, tmp_path / "run", {"type": "dpo"})
    recipe["data"]["train"] = str(write_jsonl(tmp_path / "sft.jsonl", sentiment_rows(40)))
    proc = run_lft("train", str(write_recipe(tmp_path / "r.yaml", recipe)))
    assert proc.returncode == 2
    assert "needs preference rows" in proc.stderr and "sft.jsonl" in proc.stderr
    assert not (tmp_path / "run" / "model").exists()


def test_preference_pairs_from_real_reviews(tmp_path):
    """scripts/make_preferences.py: real reviews, the asked sentiment chosen, films held out between splits."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
    from make_preferences import build, corpus_rows

    counts = build(tmp_path)
    assert counts["train"] > 2000 and counts["test"] > 300
    label = {" ".join(r["text"].split()): r["category"] for r in corpus_rows()}
    rows = {s: [json.loads(x) for x in (tmp_path / f"{s}.jsonl").read_text().splitlines()] for s in counts}
    for row in rows["train"][:500]:
        want = "fresh" if row["sentiment"] == "positive" else "rotten"
        assert label[row["chosen"]] == want and label[row["rejected"]] != want
        assert row["film"] in row["prompt"] and row["sentiment"] in row["prompt"]
    assert not {r["film"] for r in rows["train"]} & {r["film"] for r in rows["test"]}
