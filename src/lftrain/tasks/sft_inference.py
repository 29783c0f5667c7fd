"""Trying a fine-tuned causal LM: answer prompts and hold a conversation, formatted by the run's chat template."""

from __future__ import annotations

from pathlib import Path

import torch

from lftrain.errors import InputError


class ChatModel:
    """A finished causal-lm-sft run, loaded for generation (adapter runs on their base model)."""

    def __init__(self, run: str | Path) -> None:
        from lftrain.config.loader import load_recipe
        from lftrain.models.trained import load_trained_model, resolve_run
        from lftrain.tasks import build_task
        from lftrain.training.precision import pick_device, resolve_precision
        from lftrain.training.run import set_threads

        self.run_dir, model_dir = resolve_run(run)
        recipe = load_recipe(self.run_dir / "recipe.yaml")
        if recipe.task.type != "causal-lm-sft":
            raise InputError(f"{self.run_dir}: a {recipe.task.type} run; `lft generate` and `lft chat` need a "
                             "causal-lm-sft run (use `lft predict` for classifiers)")
        self.task = build_task(recipe.task)
        set_threads(recipe.train.threads)
        trained = load_trained_model(model_dir, self.task, base_fallback=recipe.model.path)
        self.tokenizer = trained.tokenizer
        self.task.prepare_tokenizer(self.tokenizer)  # the template saved with the model (or the recipe's)
        self.device = pick_device()
        self.precision, _ = resolve_precision(recipe.train.precision, self.device)
        self.model = trained.model.to(self.device).eval()
        self.system = recipe.task.system

    def reply(self, messages: list[dict], *, max_new_tokens: int = 128, temperature: float = 0.0) -> str:
        """The assistant's next message after `messages` (greedy unless temperature > 0)."""
        from lftrain.data.chat import render, stop_token_ids
        from lftrain.training.precision import autocast

        text = render(self.tokenizer, self.task.template, messages, generation_prompt=True)
        ids = self.tokenizer(text, add_special_tokens=False, return_tensors="pt").to(self.device)
        sampling = {"do_sample": True, "temperature": temperature} if temperature > 0 else {"do_sample": False}
        with torch.no_grad(), autocast(self.precision, self.device):
            out = self.model.generate(**ids, max_new_tokens=max_new_tokens, eos_token_id=stop_token_ids(self.tokenizer),
                                      pad_token_id=self.tokenizer.pad_token_id, **sampling)
        return self.tokenizer.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True).strip()

    def generate(self, prompt: str, *, system: str | None = None, **kw) -> str:
        """Answer one prompt, as a one-turn conversation (with the recipe's system message unless given)."""
        system = system if system is not None else self.system
        messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]
        return self.reply(messages, **kw)


class ChatSession:
    """A conversation with a ChatModel: each `send` adds the user's message and the model's reply."""

    def __init__(self, model: ChatModel, system: str | None = None) -> None:
        self.model = model
        system = system if system is not None else model.system
        self.start = [{"role": "system", "content": system}] if system else []
        self.messages = list(self.start)

    def send(self, text: str, **kw) -> str:
        self.messages.append({"role": "user", "content": text})
        answer = self.model.reply(self.messages, **kw)
        self.messages.append({"role": "assistant", "content": answer})
        return answer

    def reset(self) -> None:
        self.messages = list(self.start)


def is_generative_run(run: str | Path) -> bool:
    """Whether a run directory holds a causal-lm-sft run (so evaluate/predict score or produce text)."""
    import yaml

    from lftrain.models.trained import resolve_run

    run_dir, _ = resolve_run(run)
    recipe = yaml.safe_load((run_dir / "recipe.yaml").read_text()) or {}
    return (recipe.get("task") or {}).get("type") == "causal-lm-sft"


def _read(model: ChatModel, path: str | Path, *, with_labels: bool, encoding: str | None):
    from lftrain.config.loader import load_recipe
    from lftrain.data.prepare import read_examples

    recipe = load_recipe(model.run_dir / "recipe.yaml")
    cfg = recipe.data.model_copy(update={"format": "auto", **({"encoding": encoding} if encoding else {})})
    return read_examples(str(path), cfg, model.task, with_labels=with_labels)


def evaluate_file(run: str | Path, data: str | Path, *, encoding: str | None = None) -> dict:
    """Loss, perplexity, token accuracy, and generation exact match / chrF of a run on a file of prompts with
    reference responses (any format the task reads)."""
    from lftrain.evaluation.generation import generate, held_out_prompts, lm_loss, text_scores

    model = ChatModel(run)
    examples = _read(model, data, with_labels=True, encoding=encoding)
    enc = model.task.encode(model.tokenizer, examples)
    pad = model.tokenizer.pad_token_id or 0
    common = {"batch_size": 32, "precision": model.precision, "device": model.device}
    metrics = lm_loss(model.model, enc, lambda e, i: model.task.collate(e, i, pad), **common)
    prompts, refs = held_out_prompts(model.task, model.tokenizer, examples, len(examples))
    preds = generate(model.model, model.tokenizer, prompts,
                     max_new_tokens=model.task.config.generation.max_new_tokens, **common)
    return {**metrics, **text_scores(preds, refs), "n": len(examples)}


def predict_file(run: str | Path, input: str | Path, *, encoding: str | None = None) -> list[dict]:
    """The model's response to each row's prompt (a response column, if present, is ignored), in input order."""
    from lftrain.evaluation.generation import generate, held_out_prompts

    model = ChatModel(run)
    examples = _read(model, input, with_labels=False, encoding=encoding)
    prompts, _ = held_out_prompts(model.task, model.tokenizer, examples, len(examples))
    preds = generate(model.model, model.tokenizer, prompts, max_new_tokens=model.task.config.generation.max_new_tokens,
                     batch_size=32, precision=model.precision, device=model.device)
    return [{"row": where[1], "response": p} for where, p in zip(examples.where, preds)]


def write_rows(rows: list[dict], output: str | Path | None) -> list[dict]:
    """Write prediction rows as JSON lines (atomically: a temporary file renamed into place); returns them."""
    import json

    if output:
        out = Path(output)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(f".{out.name}.tmp")
        tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
        tmp.replace(out)
    return rows
