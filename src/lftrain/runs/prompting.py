"""Prompting baseline: would prompting a language model have done as well as fine-tuning?

`lft compare RUN --prompting MODEL --shots 0 4` asks a causal LM (SmolLM2 or any other) to classify the run's
test split, zero-shot and with k examples from its training split, by **constrained label scoring**: each label's
tokens are scored after the prompt (sum of log-probabilities) and the best-scoring label is the answer, so the
model can only answer with a label. Raw scores favour some labels whatever the text (a label of fewer tokens, a
word the model likes): by default they are calibrated against a content-free input ("N/A" under the same prompt and
shots; contextual calibration, Zhao et al. 2021), i.e. each label's score minus its score there. Those scores stand
in for run A in the paired bootstrap of `lft compare`.
The prompt uses the model's chat template when it has one (a system line naming the labels, each shot a
user/assistant turn), else a plain "Text: … / Label: …" layout.
"""

from __future__ import annotations

import inspect
import logging
import time
from dataclasses import dataclass

import numpy as np
import torch

from lftrain.errors import InputError

log = logging.getLogger("lftrain")
MAX_CHARS = 1000  # each text in a prompt is cut here: a few long rows must not blow up every k-shot prompt
CONTENT_FREE = "N/A"


@dataclass
class PromptRun:
    logits: np.ndarray  # (n, classes) summed log-probabilities of each label's tokens (minus the content-free ones)
    examples_per_s: float
    content_free: np.ndarray | None  # the labels' scores on the content-free input (None: not calibrated)


def pick_shots(texts: list[str], labels: np.ndarray, k: int, seed: int = 0) -> list[int]:
    """k training rows, classes taken in turn (each class's rows in a seeded order), so every label is shown."""
    rng = np.random.default_rng(seed)
    pools = [list(rng.permutation(np.flatnonzero(labels == c))) for c in np.unique(labels)]
    picked: list[int] = []
    while len(picked) < k and any(pools):
        for pool in pools:
            if pool and len(picked) < k:
                picked.append(int(pool.pop()))
    return picked


def build_prompts(tokenizer, texts: list[str], names: list[str], shots: list[tuple[str, str]]) -> list[str]:
    """One prompt per text, ending where the label's tokens go."""
    cut = [t[:MAX_CHARS] for t in texts]
    if getattr(tokenizer, "chat_template", None):
        head = [{"role": "system", "content": f"Classify the text. Answer with one label: {', '.join(names)}."}]
        for text, label in shots:
            head += [{"role": "user", "content": f"Text: {text[:MAX_CHARS]}"}, {"role": "assistant", "content": label}]
        return [tokenizer.apply_chat_template(head + [{"role": "user", "content": f"Text: {t}"}], tokenize=False,
                                              add_generation_prompt=True) for t in cut]
    head = f"Classify each text as one of: {', '.join(names)}.\n\n"
    head += "".join(f"Text: {text[:MAX_CHARS]}\nLabel: {label}\n\n" for text, label in shots)
    return [f"{head}Text: {t}\nLabel:" for t in cut]


def option_ids(tokenizer, names: list[str], chat: bool) -> list[list[int]]:
    options = [tokenizer(n if chat else f" {n}", add_special_tokens=False)["input_ids"] for n in names]
    if any(not o for o in options):
        raise InputError("a label encodes to no tokens; prompting cannot score it")
    return options


@torch.no_grad()
def label_scores(model, tokenizer, prompts: list[str], options: list[list[int]], *, batch_size: int = 8) -> np.ndarray:
    """(n, k): for each prompt and label, the sum of log P(label token | prompt, earlier label tokens). Prompts run
    `batch_size` at a time (left-padded), once each; their key/value cache is repeated for the k labels, which then
    cost only their own few tokens."""
    from lftrain.progress import track

    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
    k, width = len(options), max(map(len, options))
    label_ids = torch.tensor([o + [pad] * (width - len(o)) for o in options])
    label_mask = torch.tensor([[1] * len(o) + [0] * (width - len(o)) for o in options])
    # transformers 5.x renamed `past_key_values` to `cache` (the old name warns, then goes)
    cache_arg = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
    encoded = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    out = np.zeros((len(prompts), k))
    starts = range(0, len(prompts), batch_size)
    for start in track(starts, len(starts), "prompting"):
        rows = encoded[start:start + batch_size]
        longest = max(map(len, rows))
        ids = torch.tensor([[pad] * (longest - len(r)) + r for r in rows])
        mask = torch.tensor([[0] * (longest - len(r)) + [1] * len(r) for r in rows])
        head = model(input_ids=ids, attention_mask=mask, position_ids=(mask.cumsum(1) - 1).clamp(min=0),
                     use_cache=True)
        cache = getattr(head, "cache", None) or head.past_key_values
        cache.batch_repeat_interleave(k)  # row b becomes rows b*k .. b*k+k-1, one per label
        lengths = torch.tensor([len(r) for r in rows]).repeat_interleave(k)
        tail = model(input_ids=label_ids.repeat(len(rows), 1),
                     attention_mask=torch.cat([mask.repeat_interleave(k, 0), label_mask.repeat(len(rows), 1)], 1),
                     position_ids=lengths[:, None] + torch.arange(width), **{cache_arg: cache}).logits.float()
        # label token t is predicted by the prompt's last position (t = 0) or by label position t - 1
        first = head.logits[:, -1:].float().repeat_interleave(k, 0)
        logp = torch.log_softmax(torch.cat([first, tail], 1), -1)
        for b in range(len(rows)):
            for j, o in enumerate(options):
                out[start + b, j] = float(logp[b * k + j, torch.arange(len(o)), torch.tensor(o)].sum())
    return out


def prompt_baseline(model_spec: str, texts: list[str], names: list[str], shots: list[tuple[str, str]], *,
                    trust_remote_code: bool = False, calibrate: bool = True) -> PromptRun:
    """Score every text of the split under one prompt setting with the causal LM `model_spec`."""
    from transformers import AutoModelForCausalLM

    from lftrain.models.loading import load_kwargs, load_tokenizer, vet_model_dir
    from lftrain.progress import activity

    source = vet_model_dir(model_spec, allow_pickle=False, trust_remote_code=trust_remote_code)
    tokenizer = load_tokenizer(source, trust_remote_code)
    with activity(f"loading {model_spec}"):
        try:
            model = AutoModelForCausalLM.from_pretrained(source.path, **load_kwargs(source, trust_remote_code)).eval()
        except (OSError, ValueError) as exc:
            raise InputError(f"{model_spec}: cannot load as a causal language model: {exc}") from None
    chat = bool(getattr(tokenizer, "chat_template", None))
    prompts = build_prompts(tokenizer, texts + [CONTENT_FREE] * calibrate, names, shots)
    t0 = time.perf_counter()
    scores = label_scores(model, tokenizer, prompts, option_ids(tokenizer, names, chat))
    seconds = time.perf_counter() - t0
    log.info("prompting %s (%d-shot): %d texts in %.1fs", model_spec, len(shots), len(texts), seconds)
    free = scores[-1] if calibrate else None
    return PromptRun(scores[:-1] - free if calibrate else scores, len(texts) / max(seconds, 1e-9), free)
