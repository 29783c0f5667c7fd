"""Contrastive few-shot learning (SetFit-style, Tunstall et al. 2022): from k labelled examples per class,
generate same-label and different-label pairs, fine-tune the encoder so that same-label pairs embed close
together and different-label pairs far apart, and fit a logistic-regression head.

    method: {type: contrastive-few-shot, iterations: 20, loss: cosine}

The saved model must stay an `AutoModelForSequenceClassification` (`lft evaluate/predict`, calibration and
the reports work on it unchanged), whose head reads one vector: for BERT the pooler output of [CLS], or with
`task.pooling: mean` the mean-pooled sentence embedding (models/pooled.py; SetFit's choice, best with few labels). By
default the pair loss compares mean-pooled token vectors (the sentence embedding a sentence-transformer encoder
was trained for), each batch also carries the rows' classification loss through the model's own head (which
teaches the [CLS] path), and the logistic regression is fitted on the head's input and written into the head's
output layer — refitted before every evaluation and before saving, so what is evaluated is what would be saved.
The pairs are the rows fit() trains on: checkpoints, resume and logging are the loop's own.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field, model_validator

from lftrain.config.base import Section
from lftrain.methods.base import METHODS, Method
from lftrain.models.layers import head_layer
from lftrain.tasks.base import TaskView

log = logging.getLogger("lftrain")


# ---- pairs ---------------------------------------------------------------------------------------------------
def make_pairs(labels: np.ndarray, iterations: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(first row, second row, target 1.0 same label / 0.0 different) of the pairs to train on.

    As SetFit's `num_iterations`: in each iteration every example is paired once with a random other example of
    its class and once with a random example of another class, so the pairs are balanced (half positive) when
    every class has at least two examples. Never a row with itself; deterministic given `seed`."""
    from lftrain.errors import InputError

    labels = np.asarray(labels)
    classes = np.unique(labels)
    if len(classes) < 2:
        raise InputError("method contrastive-few-shot needs labelled examples of at least two classes "
                         f"(found {len(classes)})")
    rng = np.random.default_rng(seed)
    first, second, target = [], [], []
    for _ in range(iterations):
        for c in classes:  # class by class (sorted): the draw order, and so the pairs, depend on the seed alone
            members = np.flatnonzero(labels == c)
            others = np.flatnonzero(labels != c)
            if len(members) > 1:  # positive: shift each member's position by 1..n-1 within its class (never itself)
                shift = rng.integers(1, len(members), size=len(members))
                first.append(members)
                second.append(members[(np.arange(len(members)) + shift) % len(members)])
                target.append(np.ones(len(members), dtype=np.float32))
            first.append(members)
            second.append(others[rng.integers(0, len(others), size=len(members))])
            target.append(np.zeros(len(members), dtype=np.float32))
    return np.concatenate(first), np.concatenate(second), np.concatenate(target)


# ---- the representation the head reads ------------------------------------------------------------------------
@contextlib.contextmanager
def capture_head_input(model: torch.nn.Module):
    """While active, `box[0]` holds the input of the last forward pass through the head's output layer."""
    box: list[torch.Tensor] = []

    def hook(_module, args):
        box[:] = [args[0]]

    handle = head_layer(model).register_forward_pre_hook(hook)
    try:
        yield box
    finally:
        handle.remove()


def pair_loss(u: torch.Tensor, v: torch.Tensor, target: torch.Tensor, kind: str, scale: float) -> torch.Tensor:
    """Summed loss over the pairs. `cosine`: (cos(u, v) − target)², SetFit's CosineSimilarityLoss. `cosent`:
    log(1 + Σ exp(scale·(cos_neg − cos_pos))) over every (different, same) pair of pairs in the batch (Su 2022),
    times the number of pairs so the loop's per-pair normalisation gives the batch's CoSENT value."""
    cos = F.cosine_similarity(u.float(), v.float(), dim=-1)
    if kind == "cosine":
        return ((cos - target) ** 2).sum()
    diff = scale * (cos[:, None] - cos[None, :])  # [i, j] = cos_i − cos_j, counted where i is negative, j positive
    wanted = (target[:, None] < target[None, :])
    terms = torch.cat([torch.zeros(1, device=cos.device), diff[wanted]])
    return torch.logsumexp(terms, 0) * len(cos)


@torch.no_grad()
def embed(model: torch.nn.Module, task, encoded: dict[str, np.ndarray], *, batch_size: int, precision: str,
          device: torch.device, pad_id: int) -> np.ndarray:
    """The head's input for every row (eval mode, as at inference), in row order."""
    from lftrain.models.precision import autocast

    was_training = model.training
    model.eval()
    n = len(encoded["offsets"]) - 1
    out: list[np.ndarray] = []
    with capture_head_input(model) as box:
        for start in range(0, n, batch_size):
            batch = task.collate(encoded, np.arange(start, min(start + batch_size, n)), pad_id)
            with autocast(precision, device):
                model(**{k: v.to(device) for k, v in task.model_inputs(batch).items()})
            out.append(box[0].float().cpu().numpy())
    model.train(was_training)
    return np.concatenate(out) if out else np.empty((0, 0), dtype=np.float32)


def fit_head(features: np.ndarray, labels: np.ndarray, num_labels: int, c: float) -> tuple[np.ndarray, np.ndarray]:
    """(weight (num_labels, H), bias (num_labels,)) of a logistic regression on the features, laid out as the
    head's output layer: softmax of its logits gives the regression's probabilities. Binary: ±z/2 (softmax of
    [−z/2, z/2] is sigmoid(z))."""
    from sklearn.linear_model import LogisticRegression

    from lftrain.errors import InputError

    missing = sorted(set(range(num_labels)) - set(np.unique(labels).tolist()))
    if missing:
        raise InputError(f"method contrastive-few-shot: no labelled example of class id(s) {missing}; the head "
                         "needs at least one example of every class")
    lr = LogisticRegression(C=c, max_iter=1000).fit(features, labels)
    if num_labels == 2:
        w, b = lr.coef_[0], lr.intercept_[0]
        return np.stack([-w / 2, w / 2]), np.array([-b / 2, b / 2])
    return lr.coef_, lr.intercept_


@METHODS.register("contrastive-few-shot")
class ContrastiveFewShot(Method):
    """SetFit-style few-shot learning: contrastive pairs tune the encoder, a logistic regression is the head."""

    class Config(Section):
        type: Literal["contrastive-few-shot"] = "contrastive-few-shot"
        iterations: int = Field(20, gt=0)
        """Pair-generation rounds (SetFit's `num_iterations`): each round pairs every labelled example once with
        a same-label and once with a different-label example, so there are 2 · iterations · rows pairs; an epoch
        of `train` is one pass over them."""
        loss: Literal["cosine", "cosent"] = "cosine"
        """`cosine`: squared error between the pair's cosine similarity and 1 (same) / 0 (different), as SetFit.
        `cosent`: CoSENT's ranking loss (every same-label pair more similar than every different-label pair)."""
        cosent_scale: float = Field(20.0, gt=0)
        """Scale of the cosine differences in the CoSENT loss."""
        head_c: float = Field(1.0, gt=0)
        """Inverse regularisation strength of the logistic-regression head (scikit-learn's `C`)."""
        pair_seed: int | None = None
        """Seed of the pair generation (default: `train.seed`)."""
        embedding: Literal["mean", "head"] = "mean"
        """What the pair loss compares: `mean`, the mean of the last layer's token vectors (SetFit's sentence
        embedding; best for sentence-transformer encoders), or `head`, the vector the classification head reads
        (for BERT the pooler output of [CLS])."""
        ce_weight: float = Field(1.0, ge=0)
        """Weight of the classification loss through the model's own head on the rows of each batch. With
        `embedding: mean` it is what teaches the [CLS] path the head reads; 0 leaves the head to the regression."""
        head: Literal["trained", "logistic"] = "logistic"
        """`trained`: the head is the one the classification loss trained (needs ce_weight > 0). `logistic`: a
        logistic regression on the labelled rows' head inputs, refitted before every evaluation and before
        saving (SetFit's head), written into the head's output layer."""

        @model_validator(mode="after")
        def _head_needs_a_loss(self):
            if self.head == "trained" and self.ce_weight == 0:
                raise ValueError("head 'trained' needs ce_weight > 0 (nothing would train the head); "
                                 "use head: logistic")
            return self

    def __init__(self, config: Config, task) -> None:
        super().__init__(config, task)
        self._rows: dict[str, np.ndarray] | None = None  # the labelled rows the head is fitted on
        self._infer: dict[str, Any] = {}

    # ---- before training ----------------------------------------------------------------------------------
    def prepare(self, model: torch.nn.Module, train_encoded: dict[str, np.ndarray], *, data, recipe, encode,
                precision: str, device: torch.device, tokenizer=None) -> tuple[dict[str, np.ndarray], Any]:
        """The pairs as fit()'s training rows, and the task as the loop should see them; the head is fitted once
        here already, so an evaluation before the first refit is of a real classifier."""
        from lftrain.errors import InputError

        if "labels" not in train_encoded:
            raise InputError("method contrastive-few-shot needs labelled training rows (data.train with labels)")
        head_layer(model)  # fails now, before any pair is made, when the model has no recognisable head
        seed = recipe.train.seed if self.config.pair_seed is None else self.config.pair_seed
        a, b, target = make_pairs(train_encoded["labels"], self.config.iterations, seed)
        self._rows = train_encoded
        self._infer = {"batch_size": recipe.train.eval_batch_size, "precision": precision, "device": device,
                       "pad_id": _pad_id(model)}
        per_class = np.bincount(train_encoded["labels"], minlength=model.config.num_labels).tolist()
        log.info("contrastive-few-shot: %d labelled rows (per class %s) -> %d pairs (%d same-label), loss %s",
                 len(train_encoded["labels"]), per_class, len(a), int(target.sum()), self.config.loss)
        if getattr(self.task.config, "pooling", None) == "model":
            log.info("contrastive-few-shot: the head reads the architecture's own pooled vector (BERT: [CLS]); "
                     "with a sentence-transformers encoder, task.pooling: mean usually classifies better from few "
                     "labels (docs/semi-supervised.md)")
        if self.config.head == "logistic":
            self.refit_head(model)
        return {**train_encoded, "pair_a": a, "pair_b": b, "pair_target": target}, _PairTask(self.task)

    # ---- the head ------------------------------------------------------------------------------------------
    def refit_head(self, model: torch.nn.Module) -> None:
        """Fit the logistic-regression head on the current embeddings of the labelled rows and write it into the
        model's output layer."""
        assert self._rows is not None, "prepare() runs first"
        feats = embed(model, self.task, self._rows, **self._infer)
        weight, bias = fit_head(feats, self._rows["labels"], model.config.num_labels, self.config.head_c)
        layer = head_layer(model)
        with torch.no_grad():
            layer.weight.copy_(torch.as_tensor(weight, dtype=layer.weight.dtype))
            layer.bias.copy_(torch.as_tensor(bias, dtype=layer.bias.dtype))

    def before_eval(self, model: torch.nn.Module) -> None:
        if self.config.head == "logistic":
            self.refit_head(model)

    def finish(self, model: torch.nn.Module) -> None:
        if self.config.head == "logistic":
            self.refit_head(model)

    # ---- each batch ---------------------------------------------------------------------------------------
    def __call__(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Both sides of every pair in one forward pass (rows [a₁..a_B, b₁..b_B]); the loss summed over pairs:
        pair loss + ce_weight · the rows' mean classification loss per pair (each pair has two rows)."""
        from lftrain.models.pooled import mean_pool

        cfg = self.config
        with capture_head_input(model) as box:
            outputs = model(**self.task.model_inputs(batch), output_hidden_states=cfg.embedding == "mean")
        emb = mean_pool(outputs.hidden_states[-1], batch["attention_mask"]) if cfg.embedding == "mean" else box[0]
        target = batch["pair_target"]
        loss = pair_loss(emb[: len(target)], emb[len(target):], target, cfg.loss, cfg.cosent_scale)
        if cfg.ce_weight > 0:
            loss = loss + cfg.ce_weight * self.task.loss_sum(outputs, batch) / 2
        return {"loss_sum": loss}


def _pad_id(model: torch.nn.Module) -> int:
    pad = getattr(model.config, "pad_token_id", None)
    return 0 if pad is None else int(pad)


class _PairTask(TaskView):
    """The task as fit() sees it: a training row is a pair; a batch holds both sides of its pairs as 2·B rows."""

    def lengths(self, encoded: dict[str, np.ndarray]) -> np.ndarray:
        rows = self.task.lengths(encoded)
        return np.maximum(rows[encoded["pair_a"]], rows[encoded["pair_b"]])

    def collate(self, encoded: dict[str, np.ndarray], indices: np.ndarray, pad_id: int) -> dict[str, Any]:
        rows = np.concatenate([encoded["pair_a"][indices], encoded["pair_b"][indices]])
        batch = self.task.collate(encoded, rows, pad_id)  # with the rows' labels (the classification loss)
        batch["pair_target"] = torch.from_numpy(encoded["pair_target"][indices])
        return batch

    def loss_units(self, batch: dict[str, Any]) -> int:
        return int(batch["pair_target"].shape[0])
