"""Trying a fine-tuned causal LM: answer prompts and hold a conversation, formatted by the run's chat template."""

from __future__ import annotations

from pathlib import Path

import torch

from lftrain.errors import InputError
from lftrain.evaluation.loaded_run import LoadedRun


class ChatModel(LoadedRun):
    """A finished causal-lm-sft run, loaded for generation (adapter runs on their base model)."""

    def __init__(self, run: str | Path) -> None:
        kind = run_task_type(run)  # checked before loading any weights
        if kind != "causal-lm-sft":
            raise InputError(f"{run}: a {kind} run; `lft generate` and `lft chat` need a causal-lm-sft run (use "
                             "`lft predict` for classifiers)")
        super().__init__(run)
        self.task.prepare_tokenizer(self.tokenizer)  # the template saved with the model (or the recipe's)
        self.system = self.recipe.task.system

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


def run_task_type(run: str | Path) -> str:
    """The task type of a run directory, read from its recipe.yaml without loading anything else."""
    import yaml

    from lftrain.models.trained import resolve_run

    run_dir, _ = resolve_run(run)
    recipe = yaml.safe_load((run_dir / "recipe.yaml").read_text()) or {}
    return (recipe.get("task") or {}).get("type") or "text-classification"


def is_generative_run(run: str | Path) -> bool:
    """Whether a run directory holds a causal-lm-sft run (so evaluate/predict score or produce text)."""
    return run_task_type(run) == "causal-lm-sft"


def evaluate_file(run: str | Path, data: str | Path, *, encoding: str | None = None) -> dict:
    """Loss, perplexity, token accuracy, and generation exact match / chrF of a run on a file of prompts with
    reference responses (any format the task reads)."""
    from lftrain.evaluation.generation import generate, held_out_prompts, lm_loss, text_scores

    model = ChatModel(run)
    examples = model.read(data, with_labels=True, encoding=encoding)
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
    examples = model.read(input, with_labels=False, encoding=encoding)
    prompts, _ = held_out_prompts(model.task, model.tokenizer, examples, len(examples))
    preds = generate(model.model, model.tokenizer, prompts, max_new_tokens=model.task.config.generation.max_new_tokens,
                     batch_size=32, precision=model.precision, device=model.device)
    return [{"row": where[1], "response": p} for where, p in zip(examples.where, preds)]


