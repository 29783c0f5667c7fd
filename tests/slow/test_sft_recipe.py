"""The SFT recipe on the real model: SmolLM2-135M-Instruct (GGUF, converted on load) learns to answer
"fresh"/"rotten" for Rotten Tomatoes snippets, clearly better than the base model (docs/sft.md)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from tests.conftest import run_lft

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_smollm2_recipe_beats_the_base_model(tmp_path):
    # 100 generated answers instead of the recipe's 200: the final evaluation generates for both models.
    proc = run_lft("train", str(ROOT / "recipes" / "smollm2-rotten-tomatoes-lora.yaml"),
                   f"output.dir={tmp_path / 'run'}", f"data.cache_dir={tmp_path / 'cache'}",
                   "task.generation.max_prompts=100", timeout=1500)
    assert proc.returncode == 0, proc.stderr[-3000:]
    final = {r["split"]: r for r in map(json.loads, (tmp_path / "run" / "metrics.jsonl").read_text().splitlines())
             if r.get("final")}
    test, base = final["test"], final["test"]["base"]
    print(f"exact match: fine-tuned {test['exact_match']:.3f}, base {base['exact_match']:.3f}; forgetting: "
          f"{final['retain']['relative_change']:+.1%}")
    # measured 2026-11-29 with 100 prompts: 0.78 fine-tuned, 0.00 base (it answers "This review is not ...")
    assert test["exact_match"] >= 0.6
    assert test["exact_match"] >= base["exact_match"] + 0.4
    assert test["loss"] < base["loss"]
    retain = final["retain"]
    assert retain["texts"] == 60 and math.isfinite(retain["perplexity"]) and math.isfinite(retain["base_perplexity"])
