"""Preference tuning of causal LMs on (prompt, chosen, rejected) rows: DPO, and reference-free ORPO.

    task:   {type: causal-lm-sft}      # rows with prompt / chosen / rejected columns (data/chat.py)
    method: {type: dpo, beta: 0.1}     # or {type: orpo, beta: 0.1}

DPO (Rafailov et al., 2023), per pair, with log π(y) the summed log-prob of a response given its prompt:
    loss = −log σ(β·[(log π(y_c) − log π_ref(y_c)) − (log π(y_r) − log π_ref(y_r))])
The reference is the model the run starts from (an SFT run or a base model). Its log-probs are computed once,
before training, for the pairs of every split: a step is one policy forward/backward, with no second model in
memory and no reference forward per step.
ORPO (Hong et al., 2024), no reference, with ℓ = log π(y)/|y| the mean per-token log-prob:
    loss = −ℓ_c + β·(−log σ(odds(ℓ_c) − odds(ℓ_r))),  odds(ℓ) = ℓ − log(1 − e^ℓ)
One loss unit is one pair. A pair's two sequences share a forward, packed into common rows when task.packing is on
(each attends only to itself). Metrics: rewards β·(log π − log π_ref), their margin and reward accuracy (DPO), and
for both the preference accuracy: how often the chosen response has the higher mean per-token log-prob.
"""

from __future__ import annotations

import logging
import time
from abc import ABC, abstractmethod
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field

from lftrain.config.base import Section
from lftrain.data.packing import IGNORE, causal_model_inputs, collate_causal
from lftrain.methods.base import METHODS, Method

log = logging.getLogger("lftrain")


# ---- the losses (per pair) -----------------------------------------------------------------------------------

def dpo_loss(policy_c: torch.Tensor, policy_r: torch.Tensor, ref_c: torch.Tensor, ref_r: torch.Tensor,
             beta: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(loss, chosen reward, rejected reward), each (B,), from summed response log-probs."""
    chosen, rejected = beta * (policy_c - ref_c), beta * (policy_r - ref_r)
    return -F.logsigmoid(chosen - rejected), chosen, rejected


def orpo_loss(mean_c: torch.Tensor, mean_r: torch.Tensor, beta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(loss, log odds ratio), each (B,), from mean per-token response log-probs (< 0)."""
    log_odds = (mean_c - mean_r) - (_log1m_exp(mean_c) - _log1m_exp(mean_r))
    return -mean_c - beta * F.logsigmoid(log_odds), log_odds


def _log1m_exp(x: torch.Tensor) -> torch.Tensor:
    """log(1 − e^x) for x < 0, stable near 0."""
    return torch.log(-torch.expm1(x.clamp(max=-1e-6)))


def sequence_logps(model, batch: dict[str, torch.Tensor], n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(summed log-prob, token count) of each of the batch's `n` sequences' response tokens. The vocabulary-sized
    output layer runs on those tokens only (a causal LM's decoder, then its output embedding): a row of logits
    per response token, not per position, which is most of the time and memory with a large vocabulary."""
    labels = batch["labels"]
    valid = labels != IGNORE
    inputs = {k: batch[k] for k in ("input_ids", "position_ids", "attention_mask") if k in batch}
    hidden = model.get_decoder()(**inputs, use_cache=False).last_hidden_state[valid]
    logits = model.get_output_embeddings()(hidden).float()
    cap = getattr(model.config, "final_logit_softcapping", None)  # Gemma 2 caps its logits in its forward
    if cap:
        logits = torch.tanh(logits / cap) * cap
    token_logp = -F.cross_entropy(logits, labels[valid], reduction="none")
    segment = batch["segment"][valid]
    sums = torch.zeros(n, dtype=token_logp.dtype, device=logits.device).index_add(0, segment, token_logp)
    counts = torch.zeros(n, dtype=token_logp.dtype, device=logits.device).index_add(
        0, segment, torch.ones_like(token_logp))
    return sums, counts


# ---- pairs as batches ----------------------------------------------------------------------------------------

def encode_pairs(task, tokenizer, examples) -> dict[str, np.ndarray]:
    """Each pair as two sequences, chosen then rejected (sequence 2k and 2k+1), the loss on the final response;
    a pair is dropped when either side is (task.max_length / task.overlong)."""
    from lftrain.errors import DataError
    from lftrain.tasks.causal_lm_sft import flat_sequences

    sequences, index = [], []
    counts = {"truncated": 0, "dropped": 0}
    for i, messages in enumerate(examples.fields["messages"]):
        rejected = messages[:-1] + [{"role": "assistant", "content": examples.fields["rejected"][i]}]
        sides = [task.encode_conversation(tokenizer, m, examples.where[i], counts, last_turn_only=True)
                 for m in (messages, rejected)]
        if all(side is not None for side in sides):
            sequences.extend(sides)
            index.append(i)
    task.log_overlong(examples, counts)
    if not index:
        raise DataError(f"no pair of {examples.name} fits task.max_length={task.config.max_length}",
                        file=examples.where[0][0] if examples.where else None)
    return {**flat_sequences(sequences), "example_index": np.asarray(index, dtype=np.int64)}


class PairBatches:
    """The task as fit() sees it under a preference method: one unit per pair, its two sequences batched together
    (chosen at even, rejected at odd positions), with their cached reference log-probs when there are any."""

    augments_input = False

    def __init__(self, task) -> None:
        self.task = task

    @staticmethod
    def lengths(encoded: dict[str, np.ndarray]) -> np.ndarray:
        return encoded["offsets"][2::2] - encoded["offsets"][:-1:2]

    def collate(self, encoded: dict[str, np.ndarray], indices: np.ndarray, pad_id: int) -> dict[str, Any]:
        cfg = self.task.config
        sequences = np.stack([2 * indices, 2 * indices + 1], axis=1).ravel()
        batch = collate_causal(encoded, sequences, pad_id, pack_length=(cfg.pack_length or cfg.max_length)
                               if cfg.packing else None, segments=True)
        if "ref_logp" in encoded:
            batch["ref_logp"] = torch.from_numpy(encoded["ref_logp"][sequences])
        return batch

    @staticmethod
    def model_inputs(batch: dict[str, Any]) -> dict[str, Any]:
        return causal_model_inputs(batch)

    @staticmethod
    def loss_units(batch: dict[str, Any]) -> int:
        return int(batch["segment"].max()) // 2 + 1

    def loss_sum(self, outputs, batch: dict[str, Any]):
        raise TypeError("preference batches are scored by their method (methods/preference.py)")


@torch.no_grad()
def pair_logps(model, encoded: dict[str, np.ndarray], batches: PairBatches, *, batch_size: int, precision: str,
               device, pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """(summed log-prob, token count) of every sequence of `encoded` (chosen/rejected interleaved), eval mode."""
    from lftrain.models.precision import autocast
    from lftrain.progress import track

    was_training = model.training
    model.eval()
    n_pairs = len(encoded["offsets"]) // 2
    sums, counts = np.zeros(2 * n_pairs), np.zeros(2 * n_pairs)
    batch_size = min(batch_size, 16)  # a row of vocabulary-sized logits per response token: keep it bounded
    starts = range(0, n_pairs, batch_size)
    for start in track(starts, len(starts), "response log-probs"):
        idx = np.arange(start, min(start + batch_size, n_pairs))
        batch = {k: v.to(device) for k, v in batches.collate(encoded, idx, pad_id).items()}
        with autocast(precision, device):
            s, c = sequence_logps(model, batch, 2 * len(idx))
        seq = np.stack([2 * idx, 2 * idx + 1], axis=1).ravel()
        sums[seq], counts[seq] = s.cpu().numpy(), c.cpu().numpy()
    model.train(was_training)
    return sums, counts


# ---- the methods ---------------------------------------------------------------------------------------------

class Preference(Method, ABC):
    """What DPO and ORPO share: preference rows, pair batches, evaluation on the pairs of each split."""

    lower_is_better = frozenset({"chosen_nll", "preference_loss"})

    uses_reference: bool = False

    def __init__(self, config, task) -> None:
        from lftrain.errors import InputError
        from lftrain.tasks.causal_lm_sft import CausalLMSFT

        super().__init__(config, task)
        if not isinstance(task, CausalLMSFT):
            raise InputError(f"method.type {config.type} trains causal language models: it needs task.type "
                             "causal-lm-sft with preference rows (prompt, chosen, rejected)")
        self.batches = PairBatches(task)
        self.pairs: dict[str, dict[str, np.ndarray]] = {}  # split -> encoded pairs (with ref_logp for DPO)
        self.stats: dict[str, Any] = {}

    def training_examples(self, data):
        from lftrain.errors import DataError

        for split in ("train", "eval", "test"):
            ex = getattr(data, split)
            if ex is not None and "rejected" not in ex.fields:
                raise DataError(f"method.type {self.config.type} needs preference rows: columns "
                                f"'{self.task.config.prompt}', '{self.task.config.chosen}', "
                                f"'{self.task.config.rejected}' (task.prompt / chosen / rejected)",
                                file=ex.where[0][0] if ex.where else ex.name)
        return data.train

    def prepare(self, model, train_encoded, *, data, recipe, encode, precision, device, tokenizer):
        """Encode each split's pairs and, for DPO, the reference log-probs of all of them (the model as it starts)."""
        for split in ("train", "eval", "test"):
            if getattr(data, split) is not None:
                self.pairs[split] = encode_pairs(self.task, tokenizer, getattr(data, split))
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self.common = {"batch_size": recipe.train.eval_batch_size, "precision": precision, "device": device,
                       "pad_id": self.pad_id}
        if self.uses_reference:
            t0 = time.perf_counter()
            for enc in self.pairs.values():
                enc["ref_logp"] = pair_logps(model, enc, self.batches, **self.common)[0].astype(np.float32)
            self.stats = {"reference_seconds": round(time.perf_counter() - t0, 2),
                          "reference_sequences": int(sum(len(e["offsets"]) - 1 for e in self.pairs.values()))}
            log.info("%s: reference log-probs of %d sequences in %.1fs (computed once)", self.config.type,
                     self.stats["reference_sequences"], self.stats["reference_seconds"])
        log.info("%s: %s", self.config.type, ", ".join(f"{len(e['example_index'])} {s} pairs"
                                                        for s, e in self.pairs.items()))
        return self.pairs["train"], self.batches

    def manifest(self) -> dict[str, Any]:
        return {"preference": {**self.config.model_dump(), **self.stats,
                               "pairs": {s: len(e["example_index"]) for s, e in self.pairs.items()}}}

    def __call__(self, model, batch):
        sums, counts = sequence_logps(model, batch, 2 * self.batches.loss_units(batch))
        loss = self.pair_loss(sums, counts, batch.get("ref_logp"))["loss"]
        return {"loss_sum": loss.sum()}

    @abstractmethod
    def pair_loss(self, sums, counts, ref) -> dict[str, torch.Tensor]:
        """Per-pair loss and metrics from the sequences' summed log-probs and token counts (chosen at even
        positions) and, for DPO, the reference's summed log-probs."""

    def split_metrics(self, model, split: str) -> dict[str, float]:
        """Loss and preference metrics of `model` on a split's pairs."""
        enc = self.pairs[split]
        sums, counts = pair_logps(model, enc, self.batches, **self.common)
        ref = torch.from_numpy(enc["ref_logp"]) if "ref_logp" in enc else None
        terms = self.pair_loss(torch.from_numpy(sums), torch.from_numpy(counts), ref)
        mean = sums / np.maximum(counts, 1)
        return {**{k: float(v.float().mean()) for k, v in terms.items()},
                "preference_accuracy": float(np.mean(mean[0::2] > mean[1::2])), "pairs": len(enc["example_index"])}

    def evaluate(self, model, encoded, **kw) -> dict[str, Any]:
        return self.split_metrics(model, "eval")  # the eval split's pairs (encoded in `prepare`)

    def final_evaluation(self, out) -> dict[str, dict[str, Any]]:
        """The causal-LM evaluation (chosen-response loss, generation before/after) plus each split's preference
        metrics for the fine-tuned model and the starting one."""
        from lftrain.evaluation.generation import base_model, final_evaluation

        def extra(split: str) -> dict[str, float]:
            if split not in self.pairs:
                return {}
            tuned = self.split_metrics(out.model, split)
            with base_model(out.model, out.load_base) as base:
                before = self.split_metrics(base, split)
            return {**{f"preference_{k}" if k == "loss" else k: v for k, v in tuned.items()},
                    "base_preference_accuracy": before["preference_accuracy"]}

        return final_evaluation(self.task, out, extra=extra)


@METHODS.register("dpo")
class DPO(Preference):
    """Direct preference optimisation against the starting model's log-probs (computed once, before training)."""

    class Config(Section):
        type: Literal["dpo"] = "dpo"
        beta: float = Field(0.1, gt=0)
        """Strength of the pull towards the reference (higher: stay closer to the starting model)."""

    uses_reference = True

    def pair_loss(self, sums, counts, ref) -> dict[str, torch.Tensor]:
        loss, chosen, rejected = dpo_loss(sums[0::2], sums[1::2], ref[0::2], ref[1::2], self.config.beta)
        return {"loss": loss, "chosen_reward": chosen, "rejected_reward": rejected,
                "reward_margin": chosen - rejected, "reward_accuracy": (chosen > rejected).float()}


@METHODS.register("orpo")
class ORPO(Preference):
    """Odds-ratio preference optimisation: the chosen response's likelihood plus an odds-ratio term; no reference."""

    class Config(Section):
        type: Literal["orpo"] = "orpo"
        beta: float = Field(0.1, gt=0)
        """Weight of the odds-ratio term beside the chosen response's negative log-likelihood (ORPO's λ)."""

    def pair_loss(self, sums, counts, ref) -> dict[str, torch.Tensor]:
        mean = sums / counts.clamp_min(1)
        loss, log_odds = orpo_loss(mean[0::2], mean[1::2], self.config.beta)
        return {"loss": loss, "log_odds_ratio": log_odds, "chosen_nll": -mean[0::2]}
