"""Supervised fine-tuning of a causal language model on prompt–response pairs and conversations.

Rows in any of the common formats (data/chat.py) become conversations, rendered by the chat template.
The loss is next-token cross-entropy summed over the tokens that carry it — by default the assistant's
tokens only — and one loss unit is one such token, so gradient accumulation weights every response
token equally. With packing, the examples of a micro-batch share rows: each keeps its own position ids
(restarting at 0), which transformers turns into a block-diagonal causal mask, so no example attends to
another and each gets exactly the loss it would get alone.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Literal

import numpy as np
from pydantic import Field, model_validator

from lftrain.config.base import Section
from lftrain.data import chat
from lftrain.data.examples import Examples, clean_text
from lftrain.data.readers import Table
from lftrain.errors import DataError, InputError
from lftrain.tasks.base import TASKS, Task
from lftrain.tasks.inputs import PromptInput

log = logging.getLogger("lftrain")
IGNORE = -100


class GenerationConfig(Section):
    max_new_tokens: int = Field(32, gt=0)
    """Tokens generated per held-out prompt (greedy decoding) when scoring exact match and chrF."""
    max_prompts: int = Field(200, ge=0)
    """Held-out prompts answered per evaluated split (the first N, in file order; 0 = no generation)."""
    samples: int = Field(5, ge=0)
    """Prompt / reference / generation triples written into the metrics and the report."""
    compare_base: bool = True
    """Also score the base model (before fine-tuning) on the same prompts, so the gain is visible."""


@TASKS.register("causal-lm-sft")
class CausalLMSFT(Task):
    """Teach a decoder model to answer prompts (SFT). Loss: next-token cross-entropy on the response tokens;
    one loss unit per response token."""

    serve_input, serve_bare_strings = PromptInput, True
    chat = True
    pipeline_tag = "text-generation"
    auto_model = "AutoModelForCausalLM"
    lower_is_better = frozenset({"loss", "perplexity"})

    generative = True
    default_metric = "loss"

    class Config(Section):
        type: Literal["causal-lm-sft"] = "causal-lm-sft"
        format: Literal["auto", "chat", "alpaca", "prompt-response", "preference"] = "auto"
        """Row format. `auto` detects it from the columns: chosen/rejected columns (preference pairs, for
        `method: dpo` / `orpo`; supervised training learns the chosen responses), a messages column (chat;
        ShareGPT's from/value accepted), instruction/input/output (Alpaca), or prompt/response columns."""
        prompt: str = "prompt"
        """Column holding the prompt (prompt-response format)."""
        prompt_template: str | None = None
        """Build the prompt from several columns instead, e.g. `"Review: {text}\\nFresh or rotten?"`."""
        response: str = "response"
        """Column holding the response to learn (prompt-response format)."""
        chosen: str = "chosen"
        """Column holding the preferred response (preference format): text, or a list of messages ending with it."""
        rejected: str = "rejected"
        """Column holding the dispreferred response (preference format), in the same form as `chosen`."""
        messages: str = "messages"
        """Column holding the conversation (chat format; `conversations` is also found)."""
        system: str | None = None
        """System message put before each prompt (Alpaca and prompt-response formats)."""
        responses: list[str] | None = None
        """Keep only rows whose response is one of these (others are dropped and counted), e.g. the two labels
        of a classification set that has a third kind of row."""
        chat_template: str | None = None
        """Jinja chat template (inline, or a .jinja file) instead of the tokenizer's. It is saved with the model."""
        max_length: int = Field(512, gt=1)
        """Tokens per example (prompt + response)."""
        overlong: Literal["truncate", "drop"] = "truncate"
        """Examples longer than `max_length`: cut at `max_length` tokens, or drop them. Either way the count is
        logged and recorded; an example left with no response token is always dropped."""
        mask_prompt: bool = True
        """Loss on the assistant's tokens only. False: on every token of the conversation."""
        packing: bool = True
        """Pack the examples of a micro-batch into shared rows of up to `pack_length` tokens (each example still
        attends only to itself), instead of padding each to the longest."""
        pack_length: int | None = Field(None, gt=1)
        """Row length when packing (default: `max_length`)."""
        chunked_loss: Literal["auto", "on", "off"] = "auto"
        """Compute the loss 1,024 tokens at a time without keeping the vocabulary-sized logits (models/chunked_loss.py).
        `auto`: on when one row's fp32 logits would take 256 MB or more (e.g. a 128k vocabulary at 2,048 tokens) and
        the run is one process."""
        generation: GenerationConfig = Field(default_factory=GenerationConfig)
        """Generation on held-out prompts when training ends: exact match, chrF, samples, the base model's scores."""

        @model_validator(mode="after")
        def _pack_fits(self) -> CausalLMSFT.Config:
            if self.pack_length is not None and self.pack_length < self.max_length:
                raise ValueError(f"pack_length ({self.pack_length}) must be at least max_length ({self.max_length})")
            return self

    def __init__(self, config: Config) -> None:
        super().__init__(config)  # no classes (labels stay None): responses are free text
        self.template: str | None = None
        self.chunked_head: Any = None  # the LM head whose loss is computed in chunks (prepare_model)

    # ---- data -------------------------------------------------------------------------------------------
    def extract(self, table: Table, *, normalize: bool, with_labels: bool = True,
                drop_label: Callable[[str], bool] | None = None) -> Examples:
        """Every row as a conversation (DataError naming file, row/line and column on the first bad one)."""
        fmt = chat.detect_format(table.columns, self.config)
        keep = set(self.config.responses) if self.config.responses else None
        conversations, rejected, kept, dropped = [], [], [], 0
        for i, row in enumerate(table.rows):
            if not with_labels:  # prediction input: prompts only; give it an empty response to reuse the formats
                row = {**row, **{c: row.get(c) or "-" for c in (self.config.response, "output", self.config.chosen,
                                                                self.config.rejected)}}
            if fmt == "preference":
                messages, worse = chat.preference_row(row, table, i, self.config)
                rejected.append(worse)
                conversations.append(messages)
                kept.append(i)
                continue
            if with_labels and keep is not None and not self._kept(row, fmt, keep):
                dropped += 1  # checked first: an excluded row cannot fail the run
                continue
            messages = chat.row_messages(fmt, row, table, i, self.config)
            if with_labels and keep is not None and messages[-1]["content"].strip() not in keep:
                dropped += 1  # chat rows: the response is the last message, known once parsed
                continue
            if normalize:  # whitespace inside chat turns can matter (code, lists): only trim the ends
                messages = [{**m, "content": clean_text(m["content"], False).strip()} for m in messages]
            conversations.append(messages)
            kept.append(i)
        if dropped:
            log.info("%s: dropped %d rows whose response is not one of task.responses", table.file, dropped)
        if not kept:
            raise DataError("no usable rows (task.responses excluded all of them)", file=table.file)
        where = [(table.file, table.row_numbers[i], table.lines[i]) for i in kept]
        log.debug("%s: %s format, %d conversations", table.file, fmt, len(kept))
        fields = {"messages": conversations, **({"rejected": rejected} if fmt == "preference" else {})}
        return Examples(table.file, fields, where)

    def _kept(self, row: dict, fmt: str, keep: set[str]) -> bool:
        if fmt == "chat":  # the response is the last message
            return True
        value = row.get("output" if fmt == "alpaca" else self.config.response)
        return str(value).strip() in keep

    @staticmethod
    def dedupe_key(ex: Examples, i: int) -> tuple:
        key = tuple((m["role"], m["content"]) for m in ex.fields["messages"][i])
        return key + (ex.fields["rejected"][i],) if "rejected" in ex.fields else key

    def fit_labels(self, train: Examples) -> None:
        return None

    def restore_labels(self, names: list[str]) -> None:
        return None  # no classes: a causal LM's id2label is transformers' placeholder

    # ---- model ----------------------------------------------------------------------------------------
    def load_model(self, source, *, trust_remote_code: bool, attention: str):
        from transformers import AutoModelForCausalLM

        from lftrain.models.loading import load_kwargs

        try:
            return AutoModelForCausalLM.from_pretrained(source.path, attn_implementation=attention,
                                                        **load_kwargs(source, trust_remote_code))
        except (OSError, ValueError) as exc:
            raise InputError(f"{source.path}: cannot load as a causal language model: {exc}") from None

    def prepare_tokenizer(self, tokenizer) -> None:
        """Fix the chat template (the recipe's wins) and a pad token, and log which template is used."""
        self.template, origin = chat.resolve_template(tokenizer, self.config.chat_template)
        tokenizer.chat_template = self.template  # saved with the model, so `lft chat` formats the same way
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        log.info("chat template: %s", origin)

    def encode(self, tokenizer, ex: Examples) -> dict[str, np.ndarray]:
        """Flat token ids, a per-token loss mask, offsets, and which example each encoded row came from."""
        sequences, index = [], []
        counts = {"truncated": 0, "dropped": 0}
        for i, messages in enumerate(ex.fields["messages"]):
            encoded = self.encode_conversation(tokenizer, messages, ex.where[i], counts)
            if encoded is not None:
                sequences.append(encoded)
                index.append(i)
        self.log_overlong(ex, counts)
        if not sequences:
            raise DataError(f"no example of {ex.name} fits task.max_length={self.config.max_length} with a response "
                            "token left", file=ex.where[0][0] if ex.where else None)
        return {**flat_sequences(sequences), "example_index": np.asarray(index, dtype=np.int64),
                "overlong": np.asarray([counts["truncated"], counts["dropped"]], dtype=np.int64)}

    def encode_conversation(self, tokenizer, messages: list[dict], where: tuple, counts: dict[str, int], *,
                            last_turn_only: bool = False) -> tuple[list[int], list[int]] | None:
        """(token ids, loss mask) of one conversation after task.max_length / task.overlong, or None when it is
        dropped (counted in `counts`). `last_turn_only`: the loss on the final assistant turn alone (preference
        pairs compare responses, not earlier turns)."""
        if self.template is None:
            self.prepare_tokenizer(tokenizer)
        try:
            text, spans = chat.render_with_spans(tokenizer, self.template, messages)
        except ValueError as exc:
            raise DataError(f"{exc}; fix task.chat_template", file=where[0], row=where[1]) from None
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        ids = enc["input_ids"]
        spans = spans[-1:] if last_turn_only else spans
        if self.config.mask_prompt or last_turn_only:
            mask = [int(any(a <= s < b for a, b in spans)) for s, _ in enc["offset_mapping"]]
        else:
            mask = [1] * len(ids)
        mask[0] = 0  # the first token has nothing before it to predict it from
        if len(ids) > self.config.max_length:
            if self.config.overlong == "drop":
                counts["dropped"] += 1
                return None
            counts["truncated"] += 1
            ids, mask = ids[: self.config.max_length], mask[: self.config.max_length]
        if not any(mask):
            counts["dropped"] += 1
            return None
        return ids, mask

    def log_overlong(self, ex: Examples, counts: dict[str, int]) -> None:
        truncated, dropped = counts["truncated"], counts["dropped"]
        if truncated or dropped:
            log.info("%s: %d examples longer than task.max_length=%d %s; %d dropped in all (%s)", ex.name,
                     truncated + (dropped if self.config.overlong == "drop" else 0), self.config.max_length,
                     "truncated" if self.config.overlong == "truncate" else "dropped", dropped,
                     "task.overlong; examples with no response token left are dropped too")

    @staticmethod
    def lengths(encoded: dict[str, np.ndarray]) -> np.ndarray:
        return np.diff(encoded["offsets"])

    def collate(self, encoded: dict[str, np.ndarray], indices: np.ndarray, pad_id: int) -> dict[str, Any]:
        from lftrain.data.packing import collate_causal

        pack = (self.config.pack_length or self.config.max_length) if self.config.packing else None
        return collate_causal(encoded, indices, pad_id, pack_length=pack)

    # ---- loss ------------------------------------------------------------------------------------------
    @staticmethod
    def model_inputs(batch: dict[str, Any]) -> dict[str, Any]:
        from lftrain.data.packing import causal_model_inputs

        return causal_model_inputs(batch)

    @staticmethod
    def loss_units(batch: dict[str, Any]) -> int:
        return int((batch["labels"] != IGNORE).sum())

    def prepare_model(self, model, *, distributed: bool) -> None:
        """`task.chunked_loss`: the LM head hands its input to `loss_sum`, which computes the loss in chunks.
        Not under several processes: FSDP shards the head's weight outside the forward pass."""
        from lftrain.models import chunked_loss

        hf = getattr(model, "get_base_model", lambda: model)()
        setting, row = self.config.chunked_loss, self.config.pack_length or self.config.max_length
        wanted = setting == "on" or (setting == "auto" and hf.config.get_text_config().vocab_size * row * 4 >= 2**28)
        if wanted and distributed:
            log.info("task.chunked_loss: off (several processes)")
            return
        if wanted:
            self.chunked_head = chunked_loss.install(model)
            log.info("task.chunked_loss: %s", "on" if self.chunked_head is not None else "off (no plain LM head)")

    def loss_sum(self, outputs, batch: dict[str, Any]):
        import torch.nn.functional as F

        labels = batch["labels"][:, batch["keep"]]
        if self.chunked_head is not None and self.chunked_head.training:
            from lftrain.models.chunked_loss import loss_sum

            return loss_sum(outputs.logits, self.chunked_head, labels)  # the head's input: hidden states
        logits = outputs.logits.float()
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=IGNORE,
                               reduction="sum")

    # ---- evaluation (generative: scored on text, see evaluation/generation.py) ---------------------------
    def evaluate(self, model, encoded, *, infer=None, batch_size: int, precision: str, device,
                 pad_id: int = 0) -> dict[str, float]:
        from lftrain.evaluation.generation import lm_loss

        return lm_loss(model, encoded, lambda e, i: self.collate(e, i, pad_id), batch_size=batch_size,
                       precision=precision, device=device)

    def final_evaluation(self, out) -> dict[str, dict[str, Any]]:
        from lftrain.evaluation.generation import final_evaluation

        return final_evaluation(self, out)

    # ---- inference on a finished run (lft predict / lft evaluate) ----------------------------------------
    def predict_rows(self, loaded, examples: Examples) -> list[dict[str, Any]]:
        """The model's response to each row's prompt (a response column, if present, is ignored), in input order."""
        from lftrain.evaluation.generation import generate, held_out_prompts

        prompts, _ = held_out_prompts(self, loaded.tokenizer, examples, len(examples))
        preds = generate(loaded.model, loaded.tokenizer, prompts, max_new_tokens=self.config.generation.max_new_tokens,
                         batch_size=32, precision=loaded.precision, device=loaded.device)
        return [{"row": where[1], "response": p} for where, p in zip(examples.where, preds)]

    def evaluate_rows(self, loaded, examples: Examples) -> dict[str, Any]:
        """Loss, perplexity, token accuracy, and generation exact match / chrF on prompts with reference responses."""
        from lftrain.evaluation.generation import generate, held_out_prompts, lm_loss, text_scores

        enc = self.encode(loaded.tokenizer, examples)
        pad = loaded.tokenizer.pad_token_id or 0
        common = {"batch_size": 32, "precision": loaded.precision, "device": loaded.device}
        metrics = lm_loss(loaded.model, enc, lambda e, i: self.collate(e, i, pad), **common)
        prompts, refs = held_out_prompts(self, loaded.tokenizer, examples, len(examples))
        preds = generate(loaded.model, loaded.tokenizer, prompts, max_new_tokens=self.config.generation.max_new_tokens,
                         **common)
        return {**metrics, **text_scores(preds, refs), "n": len(examples)}

    def format_metrics(self, metrics: dict[str, Any], title: str) -> str:
        return f"{title}\n  " + "  ".join(f"{k} {v:.4f}" for k, v in metrics.items() if k != "n") + \
            f"  (n={metrics['n']})"


def flat_sequences(sequences: list[tuple[list[int], list[int]]]) -> dict[str, np.ndarray]:
    """(token ids, loss mask) pairs as one flat token array, its loss mask and the sequences' offsets."""
    lengths = [len(ids) for ids, _ in sequences]
    return {"input_ids": np.asarray([t for ids, _ in sequences for t in ids], dtype=np.int32),
            "loss_mask": np.asarray([m for _, mask in sequences for m in mask], dtype=np.int8),
            "offsets": np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)}
