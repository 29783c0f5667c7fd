"""Domain-adaptive pretraining (`method: {type: mlm}`): continue the language-model pretraining of the base
model on in-domain text — `data.unlabeled` plus the labelled texts, labels ignored — before a supervised stage
(Gururangan et al., 2020, "Don't Stop Pretraining").

- Encoders (BERT family): masked-LM. 15% of the non-special tokens are chosen; of those 80% become [MASK],
  10% a random token, 10% stay (Devlin et al., 2019). Loss: cross-entropy on the chosen tokens, normalised by
  their count (the loop's loss units are masked tokens).
- Decoders (`objective: causal`, or `auto` on a model without a masked-LM head): next-token loss on every token.

The saved `model/` is the whole language model (encoder + LM head) in Hugging Face format; a following
classification stage loads its encoder with `AutoModelForSequenceClassification` (the task head starts new).
A base model shipped without an LM head (MiniLM-L6) gets a fresh one here; weights the LM model class does
not have but the classifier uses (BERT's pooler) are carried over from the base model, so nothing pre-trained
is lost between stages.

Masks are a pure function of (seed, the batch's example indices): the same batch gets the same masks in a
resumed run and in data-loader workers, and evaluation uses one fixed set of masks, so eval losses compare.
Evaluation on the eval split's texts reports `loss`, `perplexity` and `accuracy` (of the masked tokens).
"""

from __future__ import annotations

import logging
import math
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field

from lftrain.config.base import Section
from lftrain.methods.base import METHODS, Method

log = logging.getLogger("lftrain")
IGNORE = -100
EVAL_SALT = 1_000_003  # eval masks: drawn apart from every training seed's


@METHODS.register("mlm")
class MaskedLM(Method):
    """Domain-adaptive pretraining: masked-LM (encoders) or causal-LM (decoders) on the unlabelled and the
    labelled texts; the next stage fine-tunes the adapted model."""

    lower_is_better = frozenset({"perplexity"})

    class Config(Section):
        type: Literal["mlm"] = "mlm"
        objective: Literal["auto", "masked", "causal"] = "auto"
        """`masked` (BERT-style encoders), `causal` (decoders), or `auto`: masked when the model has a masked-LM
        form, else causal."""
        mask_probability: float = Field(0.15, gt=0, lt=1)
        """Share of tokens chosen for prediction (masked-LM); of those 80% masked, 10% random, 10% kept."""
        include_labelled: bool = True
        """Also train on the labelled training texts (labels ignored)."""

    uses_unlabeled = True
    saves_task_model = False  # a language model: the next stage puts the task's head on it

    def __init__(self, config: Config, task) -> None:
        from lftrain.errors import InputError

        super().__init__(config, task)
        if task.generative or not task.token_inputs:
            raise InputError(f"method mlm: task '{task.config.type}' is not supported (use a text-classification "
                             "recipe; its texts, labelled and unlabelled, are the language-model data)")
        self.causal = False
        self.view: LMView | None = None

    def training_examples(self, data):
        texts = lm_texts(data, self.config.include_labelled)
        log.info("language-model data: %d texts (%d labelled, %d unlabelled)", len(texts),
                 len(data.train) if self.config.include_labelled else 0,
                 len(data.unlabeled) if data.unlabeled is not None else 0)
        return texts

    def prepare_tokenizer(self, tokenizer, source) -> None:
        from lftrain.errors import InputError

        self.causal = wants_causal(self.config.objective, source)
        if self.causal and tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        if not self.causal and tokenizer.mask_token_id is None:
            raise InputError(f"{source.path}: the tokenizer has no mask token; set method.objective: causal")

    def load_model(self, source, *, trust_remote_code: bool, attention: str):
        log.info("%s language modelling", "causal" if self.causal else "masked")
        return load_lm(source, causal=self.causal, trust_remote_code=trust_remote_code, attention=attention)

    def prepare(self, model, train_encoded, *, data, recipe, encode, precision, device, tokenizer):
        """fit() trains through the language-model view of the task: each batch masked (or shifted)."""
        self.view = LMView(self.task, causal=self.causal, probability=self.config.mask_probability,
                           mask_id=tokenizer.mask_token_id, vocab_size=model.get_output_embeddings().weight.shape[0],
                           special_ids=list(tokenizer.all_special_ids), seed=recipe.train.seed)
        return train_encoded, self.view

    def manifest(self) -> dict:
        return {"objective": "causal-lm" if self.causal else "masked-lm"}

    def __call__(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        outputs = model(**self.view.model_inputs(batch))
        return {"loss_sum": self.view.loss_sum(outputs, batch), "logits": outputs.logits}

    def selection_metric(self, metric: str) -> str:
        return metric if metric in ("loss", "perplexity", "accuracy") else "loss"

    def evaluate(self, model, encoded, *, batch_size: int, precision: str, device, pad_id: int, **_) -> dict:
        return lm_metrics(model, self.view, encoded, batch_size=batch_size, precision=precision, device=device,
                          pad_id=pad_id)

    def save(self, model, tokenizer, out, source) -> None:
        super().save(model, tokenizer, out, source)
        added = carry_over_base_weights(out, source, model)
        if added:
            log.info("carried over %d base-model tensors the LM class lacks (%s)", len(added), ", ".join(added))

    def final_evaluation(self, out) -> dict:
        """Loss, perplexity and accuracy of the predicted tokens on each evaluated split; logged, printed, and
        written as evidence."""
        from lftrain.evaluation.evidence import write_metric_evidence

        cfg = out.recipe.train
        results = {}
        for split in dict.fromkeys(["eval", *out.recipe.eval.splits]):
            if split in out.encoded:
                results[split] = self.evaluate(out.model, out.encoded[split], batch_size=cfg.eval_batch_size,
                                               precision=out.precision, device=out.device, pad_id=out.pad_id)
                out.log_metrics({"event": "eval", "split": split, "step": out.step, "final": True, **results[split]})
                print(f"language-model {split} ({out.run_dir}): " + "  ".join(
                    f"{k} {v:.4f}" for k, v in results[split].items() if k != "tokens"), flush=True)
        write_metric_evidence(out, results)
        return results


# ---- masking and the task view fit() trains through -----------------------------------------------------

def mask_tokens(ids: np.ndarray, special: np.ndarray, rng: np.random.Generator, probability: float,
                mask_id: int, vocab_size: int) -> tuple[np.ndarray, np.ndarray]:
    """(inputs, labels) of BERT's masking: labels IGNORE except at chosen positions; `special` marks tokens
    (CLS/SEP/PAD) never chosen. At least one token per row is chosen when it has any non-special token."""
    chosen = (rng.random(ids.shape) < probability) & ~special
    lonely = ~chosen.any(1) & (~special).any(1)  # a short row with nothing chosen would add no signal
    for r in np.flatnonzero(lonely):
        chosen[r, rng.choice(np.flatnonzero(~special[r]))] = True
    labels = np.where(chosen, ids, IGNORE)
    roll = rng.random(ids.shape)
    inputs = ids.copy()
    inputs[chosen & (roll < 0.8)] = mask_id
    random_tok = chosen & (roll >= 0.8) & (roll < 0.9)
    inputs[random_tok] = rng.integers(0, vocab_size, size=int(random_tok.sum()))
    return inputs, labels


class LMView:
    """The task as fit() sees it for language modelling: the text-classification arrays (labels ignored), with
    each batch masked (masked-LM) or shifted by the model (causal-LM)."""

    def __init__(self, base_task, *, causal: bool, probability: float, mask_id: int | None, vocab_size: int,
                 special_ids: list[int], seed: int) -> None:
        self.base, self.causal, self.probability = base_task, causal, probability
        self.mask_id, self.vocab_size, self.special_ids, self.seed = mask_id, vocab_size, special_ids, seed
        self.augments_input = not causal  # masks differ between epochs: a row's input is not fixed

    def lengths(self, encoded: dict[str, np.ndarray]) -> np.ndarray:
        return np.diff(encoded["offsets"])

    def collate(self, encoded: dict[str, np.ndarray], indices: np.ndarray, pad_id: int) -> dict[str, Any]:
        arrays = {k: encoded[k] for k in ("input_ids", "offsets", "token_type_ids") if k in encoded}
        batch = self.base.collate(arrays, indices, pad_id)
        ids, attention = batch["input_ids"].numpy(), batch["attention_mask"].numpy().astype(bool)
        if self.causal:
            batch["labels"] = torch.from_numpy(np.where(attention, ids, IGNORE))
            return batch
        special = np.isin(ids, self.special_ids) | ~attention
        rng = np.random.default_rng([self.seed, len(indices), *np.asarray(indices, dtype=np.int64).tolist()])
        inputs, labels = mask_tokens(ids, special, rng, self.probability, self.mask_id, self.vocab_size)
        batch["input_ids"], batch["labels"] = torch.from_numpy(inputs), torch.from_numpy(labels)
        return batch

    def model_inputs(self, batch: dict[str, Any]) -> dict[str, Any]:
        keys = ("input_ids", "attention_mask") if self.causal else ("input_ids", "attention_mask", "token_type_ids")
        return {k: batch[k] for k in keys if k in batch}  # decoders (Llama) take no token type ids

    def loss_units(self, batch: dict[str, Any]) -> int:
        labels = batch["labels"][:, 1:] if self.causal else batch["labels"]  # causal: the first token has no target
        return int((labels != IGNORE).sum())

    def loss_sum(self, outputs, batch: dict[str, Any]) -> torch.Tensor:
        logits, labels = outputs.logits.float(), batch["labels"]
        if self.causal:
            logits, labels = logits[:, :-1], labels[:, 1:]
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=IGNORE,
                               reduction="sum")


@torch.no_grad()
def lm_metrics(model, view: LMView, encoded: dict[str, np.ndarray], *, batch_size: int, precision: str,
               device, pad_id: int) -> dict[str, float]:
    """Loss, perplexity and accuracy of the predicted tokens on `encoded`, with one fixed set of masks."""
    from lftrain.models.precision import autocast

    eval_view = LMView(view.base, causal=view.causal, probability=view.probability, mask_id=view.mask_id,
                       vocab_size=view.vocab_size, special_ids=view.special_ids, seed=EVAL_SALT)
    was_training = model.training
    model.eval()
    loss, units, correct = 0.0, 0, 0
    n = len(encoded["offsets"]) - 1
    for start in range(0, n, batch_size):
        batch = eval_view.collate(encoded, np.arange(start, min(n, start + batch_size)), pad_id)
        batch = {k: v.to(device) for k, v in batch.items()}
        with autocast(precision, device):
            out = model(**eval_view.model_inputs(batch))
        loss += float(eval_view.loss_sum(out, batch))
        units += eval_view.loss_units(batch)
        logits, labels = out.logits, batch["labels"]
        if view.causal:
            logits, labels = logits[:, :-1], labels[:, 1:]
        keep = labels != IGNORE
        correct += int((logits.argmax(-1)[keep] == labels[keep]).sum())
    model.train(was_training)
    mean = loss / max(units, 1)
    return {"loss": mean, "perplexity": math.exp(min(mean, 50.0)), "accuracy": correct / max(units, 1),
            "tokens": units}


# ---- models -----------------------------------------------------------------------------------------------

def wants_causal(objective: str, source) -> bool:
    """`auto`: masked-LM when transformers has a masked-LM class for this model type, else causal-LM."""
    if objective != "auto":
        return objective == "causal"
    from transformers.models.auto.modeling_auto import MODEL_FOR_MASKED_LM_MAPPING_NAMES

    return source.config.get("model_type") not in MODEL_FOR_MASKED_LM_MAPPING_NAMES


def load_lm(source, *, causal: bool, trust_remote_code: bool, attention: str):
    from transformers import AutoModelForCausalLM, AutoModelForMaskedLM

    from lftrain.errors import InputError
    from lftrain.models.loading import load_kwargs

    cls = AutoModelForCausalLM if causal else AutoModelForMaskedLM
    try:
        return cls.from_pretrained(source.path, attn_implementation=attention, **load_kwargs(source, trust_remote_code))
    except (OSError, ValueError) as exc:
        raise InputError(f"{source.path}: cannot load as a {'causal' if causal else 'masked'} language model: "
                         f"{exc}") from None


def carry_over_base_weights(saved_dir, source, model) -> list[str]:
    """Copy into `saved_dir`'s weights the base model's tensors the LM class lacks but a classifier uses (BERT's
    pooler), so the next stage starts from them rather than from random values. Returns the keys added."""
    from safetensors.torch import load_file, save_file

    prefix = getattr(model, "base_model_prefix", "")
    target = saved_dir / "model.safetensors"
    sources = sorted(source.path.glob("*.safetensors"))
    if not target.is_file() or not sources:
        return []
    saved = load_file(target)
    added = []
    for f in sources:
        for key, tensor in load_file(f).items():
            if "pooler." not in key:
                continue
            name = f"{prefix}.pooler.{key.split('pooler.', 1)[1]}" if prefix else key
            if name not in saved:
                saved[name] = tensor
                added.append(name)
    if added:
        save_file(saved, str(target), metadata={"format": "pt"})
    return added


def lm_texts(data, include_labelled: bool):
    """The training texts: unlabelled rows, plus the labelled training rows when asked (labels dropped)."""
    from lftrain.data.examples import Examples
    from lftrain.errors import DataError

    parts = ([data.train] if include_labelled else []) + ([data.unlabeled] if data.unlabeled is not None else [])
    if not parts:
        raise DataError("method mlm with include_labelled: false needs data.unlabeled")
    fields = {k: [v for p in parts for v in p.fields[k]] for k in parts[0].fields if k != "label"}
    fields["label"] = [None] * sum(len(p) for p in parts)
    return Examples("lm-train", fields, [w for p in parts for w in p.where])
