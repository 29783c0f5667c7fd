"""Conversations for supervised fine-tuning: the common data formats, detection, and chat templating.

Every supported row format becomes one list of messages `[{"role": ..., "content": ...}, ...]`:
- `chat`: a column of messages (`{role, content}`, or ShareGPT's `{from, value}` with roles human/gpt);
- `alpaca`: instruction / input / output columns;
- `prompt-response`: a prompt column (or a template over several columns) and a response column.

The tokenizer's chat template (or the recipe's) renders the conversation to text. Which characters
belong to assistant turns is found by rendering growing prefixes of the conversation, so the loss mask
follows the template exactly, whatever special tokens it uses, instead of searching for marker strings.
"""

from __future__ import annotations

import json
import re
from typing import Any

from lftrain.data.readers import Table, is_missing
from lftrain.errors import DataError, InputError

FORMATS = ("chat", "alpaca", "prompt-response", "preference")
CHAT_COLUMNS = ("messages", "conversations", "conversation")
ROLE_ALIASES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "model": "assistant",
                "chatgpt": "assistant", "bot": "assistant", "system": "system"}

# For tokenizers that ship no chat template (base models, tiny test tokenizers): a plain, prefix-stable layout
# whose assistant turns end with the EOS token, so a fine-tuned model learns to stop.
DEFAULT_TEMPLATE = ("{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}"
                    "{% if m['role'] == 'assistant' %}{{ eos_token }}{% endif %}\n{% endfor %}"
                    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}")
_FIELD = re.compile(r"{([^{}]+)}")


def detect_format(columns: list[str], config) -> str:
    """The recipe's `task.format`, or the one the columns imply; DataError listing the columns if none fits."""
    if config.format != "auto":
        return config.format
    cols = set(columns)
    if {config.chosen, config.rejected} <= cols:
        return "preference"
    if config.messages in cols or any(c in cols for c in CHAT_COLUMNS):
        return "chat"
    if {"instruction", "output"} <= cols:
        return "alpaca"
    if config.prompt_template is not None or config.prompt in cols:
        return "prompt-response"  # a missing response column is reported by the row check (prompts alone can predict)
    raise DataError(f"cannot tell the data format from the columns ({', '.join(columns)}): expected a messages "
                    f"column ({', '.join(CHAT_COLUMNS)}), instruction/input/output (Alpaca), or prompt/response "
                    "columns; set task.format and the column names (task.messages, task.prompt, task.response)")


def template_fields(template: str) -> list[str]:
    return _FIELD.findall(template)


def _chat_column(table: Table, config) -> str:
    if config.messages in table.columns:
        return config.messages
    found = [c for c in CHAT_COLUMNS if c in table.columns]
    if not found:
        raise DataError(f"no messages column '{config.messages}' (columns: {', '.join(table.columns)}); set "
                        "task.messages", file=table.file)
    return found[0]


def _parse_messages(value: Any, table: Table, i: int, column: str, *,
                    last_assistant: bool = True) -> list[dict[str, str]]:
    if isinstance(value, str):  # CSV/TSV cells hold the list as JSON text
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise DataError(f"messages are not valid JSON ({exc.msg})", column=column, **table.where(i)) from None
    if not isinstance(value, list) or not value:
        raise DataError("messages must be a non-empty list of {role, content} objects", column=column,
                        **table.where(i))
    out = []
    for k, msg in enumerate(value):
        if not isinstance(msg, dict):
            raise DataError(f"message {k + 1} is not an object", column=column, **table.where(i))
        role = msg.get("role", msg.get("from"))
        content = msg.get("content", msg.get("value"))
        if role is None or content is None:
            raise DataError(f"message {k + 1} needs role/content (or ShareGPT's from/value); has "
                            f"{', '.join(msg) or 'no keys'}", column=column, **table.where(i))
        mapped = ROLE_ALIASES.get(str(role).lower())
        if mapped is None:
            raise DataError(f"message {k + 1} has unknown role {role!r} (known: {', '.join(ROLE_ALIASES)})",
                            column=column, **table.where(i))
        out.append({"role": mapped, "content": str(content)})
    if last_assistant and out[-1]["role"] != "assistant":
        raise DataError("the last message must be the assistant's (the response to learn)", column=column,
                        **table.where(i))
    return out


def _cell(row: dict, column: str, table: Table, i: int, *, required: bool = True) -> str | None:
    if column not in table.columns and column not in row:
        if required:
            raise DataError(f"no column '{column}' (columns: {', '.join(table.columns)})", file=table.file,
                            line=1 if table.lines and table.lines[0] else None)
        return None
    value = row.get(column)
    if is_missing(value):
        if required:
            raise DataError("empty value", column=column, **table.where(i))
        return None
    return str(value)


def row_messages(fmt: str, row: dict, table: Table, i: int, config) -> list[dict[str, str]]:
    """One row as a conversation ending with the assistant's response."""
    if fmt == "chat":
        column = _chat_column(table, config)
        return _parse_messages(row.get(column), table, i, column)
    if fmt == "alpaca":
        prompt = _cell(row, "instruction", table, i)
        extra = _cell(row, "input", table, i, required=False)
        if extra:
            prompt = f"{prompt}\n\n{extra}"
        response = _cell(row, "output", table, i)
    else:
        if config.prompt_template is not None:
            values = {f: _cell(row, f, table, i) for f in template_fields(config.prompt_template)}
            prompt = config.prompt_template.format(**values)
        else:
            prompt = _cell(row, config.prompt, table, i)
        response = _cell(row, config.response, table, i)
    messages = [{"role": "system", "content": config.system}] if config.system else []
    return messages + [{"role": "user", "content": prompt}, {"role": "assistant", "content": response}]


def preference_row(row: dict, table: Table, i: int, config) -> tuple[list[dict[str, str]], str]:
    """(prompt + chosen conversation, rejected response) of a preference row. `chosen` / `rejected` hold text, or
    lists of messages ending with the response (TRL's conversational form); the prompt is the `prompt` column
    (text or messages, or `prompt_template`), else the turns the two lists share (TRL's implicit prompt)."""
    chosen, rejected = (_response(row, c, table, i) for c in (config.chosen, config.rejected))
    if config.prompt_template is not None or config.prompt in table.columns:
        value = row.get(config.prompt)
        if isinstance(value, list):
            prompt = _parse_messages(value, table, i, config.prompt, last_assistant=False)
        else:
            prompt = row_messages("prompt-response", {**row, config.response: "-"}, table, i, config)[:-1]
    elif isinstance(chosen, list) and isinstance(rejected, list):
        if chosen[:-1] != rejected[:-1]:
            raise DataError("without a prompt column, chosen and rejected must share every turn but the last",
                            column=config.chosen, **table.where(i))
        prompt = chosen[:-1]
    else:
        raise DataError(f"no prompt: a column '{config.prompt}' (or task.prompt_template), or chosen/rejected as "
                        "message lists sharing the prompt turns", column=config.chosen, **table.where(i))
    if not prompt or prompt[-1]["role"] == "assistant":
        raise DataError("the prompt must end with a user turn", column=config.prompt, **table.where(i))
    text = [r[-1]["content"] if isinstance(r, list) else r for r in (chosen, rejected)]
    return prompt + [{"role": "assistant", "content": text[0]}], text[1]


def _response(row: dict, column: str, table: Table, i: int) -> str | list[dict[str, str]]:
    value = row.get(column)
    if isinstance(value, list):
        return _parse_messages(value, table, i, column)
    return _cell(row, column, table, i)


# ---- templating ----------------------------------------------------------------------------------------

def resolve_template(tokenizer, override: str | None) -> tuple[str, str]:
    """(template, where it came from): the recipe's (inline Jinja or a file), the tokenizer's, or the default."""
    from pathlib import Path

    if override:
        path = Path(override).expanduser()
        if "{" not in override and path.suffix in (".jinja", ".j2", ".txt"):
            if not path.is_file():
                raise InputError(f"task.chat_template: file not found: {path}")
            return path.read_text(encoding="utf-8"), f"file {path}"
        return override, "task.chat_template"
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.chat_template, "the tokenizer's"
    return DEFAULT_TEMPLATE, "lftrain's default (the tokenizer has none)"


def render(tokenizer, template: str, messages: list[dict], *, generation_prompt: bool = False) -> str:
    """The conversation as the template writes it. A template without a system role (Gemma 2's raises on one)
    gets the system message as the start of the first user turn, as those families' own docs advise."""
    from jinja2 import TemplateError

    try:
        return tokenizer.apply_chat_template(messages, chat_template=template, tokenize=False,
                                             add_generation_prompt=generation_prompt)
    except TemplateError as exc:
        if not (messages and messages[0]["role"] == "system" and "system" in str(exc).lower()):
            raise
    return render(tokenizer, template, fold_system(messages), generation_prompt=generation_prompt)


def fold_system(messages: list[dict]) -> list[dict]:
    """A leading system message merged into the user turn after it (or made a user turn of its own)."""
    system, rest = messages[0]["content"], messages[1:]
    if rest and rest[0]["role"] == "user":
        return [{**rest[0], "content": f"{system}\n\n{rest[0]['content']}"}, *rest[1:]]
    return [{"role": "user", "content": system}, *rest]


def render_with_spans(tokenizer, template: str, messages: list[dict]) -> tuple[str, list[tuple[int, int]]]:
    """The rendered conversation and the character spans of the assistant turns (each including the end-of-turn
    marker the template writes, so the model learns to stop). Raises ValueError if the template renders a
    conversation's prefix differently from the start of the whole (then turns cannot be told apart)."""
    full = render(tokenizer, template, messages)
    spans = []
    for k, msg in enumerate(messages):
        if msg["role"] != "assistant":
            continue
        before = render(tokenizer, template, messages[:k], generation_prompt=True) if k else ""
        through = render(tokenizer, template, messages[:k + 1])
        if not (through.startswith(before) and full.startswith(through)):
            raise ValueError("the chat template renders a conversation's prefix differently from the start of the "
                             "whole conversation, so the assistant turns cannot be located")
        spans.append((len(before), len(through)))
    return full, spans


def prompt_text(tokenizer, template: str, messages: list[dict]) -> str:
    """What the model sees before it answers the last turn (the generation prompt included)."""
    return render(tokenizer, template, messages[:-1], generation_prompt=True)


def stop_token_ids(tokenizer) -> list[int]:
    """Tokens that end an assistant turn: EOS plus the end-of-turn markers of common templates."""
    ids = {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()
    vocab = tokenizer.get_vocab()
    for marker in ("<|im_end|>", "<|eot_id|>", "<|end|>", "<end_of_turn>"):
        if marker in vocab:
            ids.add(vocab[marker])
    return sorted(ids)
