"""The real CLI on a tiny Llama: golden losses, final evaluation, forgetting check, `lft generate` and `lft chat`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import run_lft, write_csv, write_recipe
from tests.sft.conftest import sentiment_rows, write_jsonl

# Train losses (mean per response token) of the 8 steps of the recipe below, recorded from a run of this
# code (fp32, 1 thread). A change means training changed: masking, packing, normalisation or order.
GOLDEN_FULL = [5.749095153808594, 5.542844678534836, 5.27667499410695, 5.092559814453125, 4.869205563567405,
               4.770918554189254, 4.669859282824458, 4.652028050915948]


def _recipe(model: Path, tmp: Path, out: Path, **extra) -> dict:
    train = write_jsonl(tmp / "train.jsonl", sentiment_rows(96))
    retain = write_csv(tmp / "general.csv", [{"text": f"the plot of the movie was very {w}."}
                                             for w in ("good", "bad", "long", "short", "odd", "fine")])
    recipe = {"model": {"path": str(model)},
              "task": {"type": "causal-lm-sft", "max_length": 64,
                       "generation": {"max_new_tokens": 3, "max_prompts": 8, "samples": 2}},
              "data": {"train": str(train), "test_fraction": 0.2, "eval_fraction": 0.1,
                       "cache_dir": str(tmp / "cache")},
              "train": {"epochs": 1, "lr": 5e-3, "batch_size": 8, "seed": 0, "threads": 1, "precision": "fp32",
                        "log_every": 1},
              "eval": {"retain": {"data": str(retain), "column": "text", "threshold": 0.05}},
              "output": {"dir": str(out)}}
    for key, value in extra.items():
        recipe[key] = {**recipe.get(key, {}), **value}
    return recipe


@pytest.fixture(scope="module")
def full_run(tiny_llama, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sft-full")
    out = tmp / "run"
    proc = run_lft("train", str(write_recipe(tmp / "r.yaml", _recipe(tiny_llama, tmp, out))))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, proc


def _records(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_golden_losses(full_run):
    run, _ = full_run
    losses = [r["loss"] for r in _records(run) if r.get("event") == "train"]
    assert losses == pytest.approx(GOLDEN_FULL, rel=1e-4)  # 64 train rows (after de-duplication), 8 per step


def test_final_evaluation_and_forgetting_check(full_run):
    run, proc = full_run
    final = {r["split"]: r for r in _records(run) if r.get("final")}
    test = final["test"]
    assert test["perplexity"] == pytest.approx(2.718281828 ** test["loss"], rel=1e-6)
    assert 0 <= test["exact_match"] <= 1 and 0 <= test["chrf"] <= 100
    assert test["generated"] == 8 and len(test["samples"]) == 2
    assert {"prompt", "reference", "generated", "base_generated"} <= set(test["samples"][0])
    assert test["base"]["loss"] > test["loss"]  # trained on the task: lower loss than the base model
    retain = final["retain"]
    assert retain["texts"] == 6 and retain["base_perplexity"] > 0
    assert retain["flagged"] == (retain["relative_change"] > 0.05)
    assert "forgetting check (6 general texts)" in proc.stdout
    assert json.loads((run / "run.json").read_text())["status"] == "finished"
    saved = json.loads((run / "model" / "tokenizer_config.json").read_text())
    assert "chat_template" in saved or (run / "model" / "chat_template.jinja").is_file()


def test_generate_and_chat(full_run, monkeypatch, capsys):
    import io

    from lftrain.cli import main

    run, _ = full_run
    proc = run_lft("generate", str(run), "--prompt", "review: good film", "--prompt", "review: awful plot",
                   "--max-new-tokens", "3", "--json")
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = [json.loads(x) for x in proc.stdout.splitlines()]
    assert [x["prompt"] for x in lines] == ["review: good film", "review: awful plot"]
    # `lft chat` in-process (same entry point as the console script), reading a piped conversation
    monkeypatch.setattr("sys.stdin", io.StringIO("hello\n/reset\nreview: good\n/exit\nnever read\n"))
    assert main(["chat", str(run), "--max-new-tokens", "3"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 2  # one reply per message; /reset and /exit print nothing


def test_evaluate_and_predict_through_the_api(full_run, tmp_path):
    from lftrain import api

    run, _ = full_run
    metrics = api.evaluate(run, write_jsonl(tmp_path / "d.jsonl", sentiment_rows(6, seed=5)))
    assert metrics["n"] == 6 and 0 <= metrics["exact_match"] <= 1 and metrics["perplexity"] > 1
    prompts = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "review: good"}, {"prompt": "review: bad"}])
    rows = api.predict(run, prompts, tmp_path / "out.jsonl")
    assert [r["row"] for r in rows] == [1, 2] and all(isinstance(r["response"], str) for r in rows)
    assert len((tmp_path / "out.jsonl").read_text().splitlines()) == 2


def test_generate_refuses_a_classifier_run(tmp_path, capsys):
    from lftrain.cli import main

    (tmp_path / "model").mkdir()
    (tmp_path / "recipe.yaml").write_text("model: {path: x}\ndata: {train: t.csv}\n")
    assert main(["generate", str(tmp_path), "--prompt", "hi"]) == 2
    assert "need a chat model's run (causal-lm-sft" in capsys.readouterr().err


def test_lora_run_and_api(tiny_llama, tmp_path):
    import lftrain
    from lftrain.api import chat, generate

    recipe = _recipe(tiny_llama, tmp_path, tmp_path / "lora", adaptation={"type": "lora", "r": 4},
                     train={"max_steps": 3, "lr": 1e-2}, eval={"retain": None})
    result = lftrain.train(recipe)
    assert (result.model_dir / "adapter_config.json").is_file()
    assert set(result.metrics) == {"test"}
    assert result.metrics["test"]["base"]["loss"] != result.metrics["test"]["loss"]
    answers = generate(result.run_dir, ["review: good", "review: bad"], max_new_tokens=2)
    assert len(answers) == 2 and all(isinstance(a, str) for a in answers)
    session = chat(result.run_dir, system="be brief")
    session.send("hello", max_new_tokens=2)
    assert [m["role"] for m in session.messages] == ["system", "user", "assistant"]
