"""Trying a fine-tuned causal LM: answer prompts and hold a conversation, formatted by the run's chat template."""

from __future__ import annotations

import queue
import threading
from dataclasses import dataclass
from pathlib import Path

import torch

from lftrain.errors import InputError
from lftrain.runs.loaded import LoadedRun
from lftrain.tasks.base import TASKS, Task, task_class


@dataclass
class Completion:
    """One generated reply: its text (stripped), the prompt's and the reply's token counts, and whether it ended with
    an end-of-turn token (else the token budget ran out)."""

    text: str
    prompt_tokens: int
    tokens: int
    stopped: bool

    @property
    def finish_reason(self) -> str:
        """As OpenAI's API says it: `stop` (the model ended its turn) or `length` (max_new_tokens reached)."""
        return "stop" if self.stopped else "length"


class ChatModel(LoadedRun):
    """A finished chat model's run (a task that declares `chat`), loaded for generation (adapter runs on their base
    model)."""

    def __init__(self, run: str | Path) -> None:
        task = run_task(run)  # checked before loading any weights
        if not task.chat:
            chats = ", ".join(TASKS.names(lambda c: c.chat))
            raise InputError(f"{run}: a {task.type_name} run; `lft generate` and `lft chat` "
                             f"need a chat model's run ({chats}; use `lft predict` for classifiers)")
        super().__init__(run)
        self.system = self.recipe.task.system
        self.lock = threading.Lock()

    def reply(self, messages: list[dict], *, max_new_tokens: int = 128, temperature: float = 0.0) -> str:
        """The assistant's next message after `messages` (greedy unless temperature > 0)."""
        return self.complete(messages, max_new_tokens=max_new_tokens, temperature=temperature).text

    def complete(self, messages: list[dict], *, max_new_tokens: int = 128, temperature: float = 0.0) -> Completion:
        """The assistant's next message after `messages`, with its token counts and why generation stopped."""
        from lftrain.data.chat import stop_token_ids

        ids = self.prompt_ids(messages)
        out = self.run_generate(ids, max_new_tokens=max_new_tokens, temperature=temperature)
        new = out[0, ids["input_ids"].shape[1]:]
        text = self.tokenizer.decode(new, skip_special_tokens=True).strip()
        stopped = bool(len(new)) and int(new[-1]) in stop_token_ids(self.tokenizer)
        return Completion(text, int(ids["input_ids"].shape[1]), int(len(new)), stopped)

    def stream(self, messages: list[dict], *, max_new_tokens: int = 128, temperature: float = 0.0) -> ReplyStream:
        """The reply to `messages` as pieces of text while it is generated (see ReplyStream)."""
        return ReplyStream(self, messages, max_new_tokens=max_new_tokens, temperature=temperature)

    def prompt_ids(self, messages: list[dict]):
        """The conversation rendered with the run's chat template (ending in the assistant's turn), tokenised."""
        from lftrain.data.chat import render

        text = render(self.tokenizer, self.task.template, messages, generation_prompt=True)
        return self.tokenizer(text, add_special_tokens=False, return_tensors="pt").to(self.device)

    def run_generate(self, ids, *, max_new_tokens: int, temperature: float, **kw):
        """`model.generate` on tokenised prompts, stopping at the end of the assistant's turn. One generation runs at a
        time (`self.lock`): a model shared by threads (`lft serve`) would otherwise split the cores between them."""
        from lftrain.data.chat import stop_token_ids
        from lftrain.models.precision import autocast

        sampling = {"do_sample": True, "temperature": temperature} if temperature > 0 else {"do_sample": False}
        with self.lock, torch.no_grad(), autocast(self.precision, self.device):
            return self.model.generate(**ids, max_new_tokens=max_new_tokens, pad_token_id=self.tokenizer.pad_token_id,
                                       eos_token_id=stop_token_ids(self.tokenizer), **sampling, **kw)

    def generate(self, prompt: str, *, system: str | None = None, **kw) -> str:
        """Answer one prompt, as a one-turn conversation (with the recipe's system message unless given)."""
        system = system if system is not None else self.system
        messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]
        return self.reply(messages, **kw)


class ReplyStream:
    """A reply generated in a background thread, iterated as pieces of text as its tokens arrive. The pieces join to
    exactly `ChatModel.reply`'s text: leading whitespace is dropped, trailing whitespace held back until more text
    follows, and a piece is sent only once the tokens so far decode to whole characters. After the iteration,
    `completion` holds the counts; `close()` stops the generation early (a client that went away)."""

    def __init__(self, model: ChatModel, messages: list[dict], *, max_new_tokens: int, temperature: float) -> None:
        self.model, self.tokens, self.error = model, queue.Queue(), None
        self.ids = model.prompt_ids(messages)
        self.completion: Completion | None = None
        self.feed = _TokenFeed(self.tokens)
        self.thread = threading.Thread(target=self._generate, args=(max_new_tokens, temperature), daemon=True,
                                       name="lft-generate")
        self.thread.start()

    def _generate(self, max_new_tokens: int, temperature: float) -> None:
        try:
            self.model.run_generate(self.ids, max_new_tokens=max_new_tokens, temperature=temperature,
                                    streamer=self.feed)
        except _Cancelled:
            pass
        except BaseException as exc:  # noqa: BLE001  (re-raised in the iterating thread)
            self.error = exc
        finally:
            self.tokens.put(None)

    def __iter__(self):
        from lftrain.data.chat import stop_token_ids

        ids: list[int] = []
        sent = ""
        while (new := self.tokens.get()) is not None:
            ids += new
            text = self.model.tokenizer.decode(ids, skip_special_tokens=True).strip()
            if not text.endswith("\ufffd") and text.startswith(sent) and len(text) > len(sent):
                yield text[len(sent):]
                sent = text
        self.thread.join()
        if self.error is not None:
            raise self.error
        final = self.model.tokenizer.decode(ids, skip_special_tokens=True).strip()
        if final.startswith(sent) and len(final) > len(sent):
            yield final[len(sent):]
        stopped = bool(ids) and ids[-1] in stop_token_ids(self.model.tokenizer)
        self.completion = Completion(final, int(self.ids["input_ids"].shape[1]), len(ids), stopped)

    def close(self) -> None:
        self.feed.cancelled.set()


class _Cancelled(Exception):
    """Raised inside `generate` (by the streamer) to stop a reply nobody reads any more."""


class _TokenFeed:
    """A `generate` streamer handing each step's new token ids to a queue (the prompt, put first, is skipped)."""

    def __init__(self, tokens: queue.Queue) -> None:
        self.tokens, self.prompt_seen, self.cancelled = tokens, False, threading.Event()

    def put(self, value) -> None:
        if self.cancelled.is_set():
            raise _Cancelled
        if self.prompt_seen:
            self.tokens.put([int(t) for t in value.reshape(-1).tolist()])
        self.prompt_seen = True

    def end(self) -> None:
        pass  # the generating thread signals the end itself, also after an error


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


def run_task(run: str | Path) -> type[Task]:
    """The task class of a run directory, read from its recipe.yaml without loading anything else."""
    import yaml

    from lftrain.models.trained import resolve_run

    run_dir, _ = resolve_run(run)
    recipe = yaml.safe_load((run_dir / "recipe.yaml").read_text()) or {}
    return task_class(recipe.get("task"))
