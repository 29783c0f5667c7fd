"""Knowledge distillation: the student learns the teacher's soft labels, on labelled and unlabelled text.

    method: {type: distill, teacher: runs/teacher, temperature: 2.0, alpha: 0.5}
    data:   {train: labelled.csv, unlabeled: raw.jsonl}

Per row, with student logits s, teacher logits t and temperature T:
    soft = T² · KL(softmax(t/T) ‖ softmax(s/T))        (Hinton et al. 2015; T² keeps gradients comparable across T)
    labelled row:   alpha · soft + (1 − alpha) · CE(s, label)
    unlabelled row: soft                                (the teacher's soft label is the only target)
  + hidden_weight · mean over matched blocks of (1 − cos(P·pool(h_student), pool(h_teacher)))
where pool is the mean over non-padding tokens and P a learned linear map when the widths differ (identity
otherwise). The loop divides the summed loss by the number of rows, labelled or not.

The teacher runs once, before training (see lftrain.methods.teacher): its outputs are cached and each batch
carries the rows' cached values, so an epoch costs what the student alone costs.
"""

from __future__ import annotations

import logging
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field

from lftrain.config.base import Section
from lftrain.data.batching import append_rows
from lftrain.methods.base import METHODS, Method
from lftrain.tasks.base import TaskView

log = logging.getLogger("lftrain")
IGNORE = -100  # label of unlabelled rows in the combined training set
PROJECTION = "distill_projection"  # name of the learned hidden-state projection while it trains


def kd_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """Per-row T² · KL(softmax(teacher/T) ‖ softmax(student/T)), shape (B,)."""
    t = F.log_softmax(teacher.float() / temperature, -1)
    s = F.log_softmax(student.float() / temperature, -1)
    return (t.exp() * (t - s)).sum(-1) * temperature ** 2


def distill_loss(student: torch.Tensor, teacher: torch.Tensor, labels: torch.Tensor, *, temperature: float,
                 alpha: float, label_smoothing: float = 0.0) -> torch.Tensor:
    """Per-row loss (B,): alpha·soft + (1−alpha)·CE where labelled (label ≥ 0), soft alone where not."""
    soft = kd_loss(student, teacher, temperature)
    labelled = labels != IGNORE
    ce = F.cross_entropy(student.float(), labels.clamp_min(0), reduction="none", label_smoothing=label_smoothing)
    return torch.where(labelled, alpha * soft + (1 - alpha) * ce, soft)


def uniform_map(student_layers: int, teacher_layers: int) -> dict[int, int]:
    """Student block j <-> teacher block round((j+1)·Lt/Ls) − 1 (TinyBERT's uniform mapping; tops meet)."""
    return {j: round((j + 1) * teacher_layers / student_layers) - 1 for j in range(student_layers)}


@METHODS.register("distill")
class Distill(Method):
    """Learn from a teacher's soft labels (KL at a temperature) mixed with the hard labels, on labelled and
    unlabelled data (`data.unlabeled`), optionally matching pooled hidden states."""

    class Config(Section):
        type: Literal["distill"] = "distill"
        teacher: str
        """The teacher: a finished run directory (or its `model/`), or a Hugging Face classifier directory,
        with the same class names as the recipe."""
        temperature: float = Field(2.0, gt=0)
        """Softmax temperature of the soft labels (higher: softer, more of the teacher's ranking of wrong classes)."""
        alpha: float = Field(0.5, ge=0, le=1)
        """Weight of the soft (teacher) loss on labelled rows; 1 − alpha goes to the hard-label cross-entropy.
        Unlabelled rows have the soft loss only."""
        hidden_weight: float = Field(0.0, ge=0)
        """Weight of matching the student's mean-pooled block outputs to the teacher's (cosine); 0 disables it."""
        hidden_map: dict[int, int] | None = None
        """Student block -> teacher block (0-based) for hidden-state matching. Default: uniform, top to top."""

    uses_unlabeled = True

    def __init__(self, config: Config, task) -> None:
        from lftrain.methods.teacher import check_labels, find_teacher

        super().__init__(config, task)
        self.teacher = find_teacher(config.teacher)  # vetted now: a wrong path fails before any model loads
        if task.labels is not None:
            check_labels(self.teacher, task.labels.names)
        self.pairs: list[tuple[int, int]] = []  # (student block, teacher block) matched
        self.stats: dict[str, Any] = {}

    # ---- before training ----------------------------------------------------------------------------------
    def prepare(self, model: torch.nn.Module, train_encoded: dict[str, np.ndarray], *, data, recipe, encode,
                precision: str, device: torch.device, tokenizer=None) -> tuple[dict[str, np.ndarray], Any]:
        """The training set (labelled rows, then unlabelled ones) with the teacher's outputs for every row, and
        the task as the loop should see it (its batches carry those outputs)."""
        from lftrain.methods.teacher import teacher_outputs

        parts = [data.train] + ([data.unlabeled] if data.unlabeled is not None else [])
        encoded = (_with_unlabelled(train_encoded, encode(data.unlabeled)) if data.unlabeled is not None
                   else train_encoded)
        if self.config.hidden_weight > 0:
            self._plan_hidden(model)
        teacher_layers = [t for _, t in self.pairs]
        out = teacher_outputs(self.teacher, recipe, parts, layers=teacher_layers, precision=precision,
                              device=device, cache_dir=recipe.data.cache_dir, stats=self.stats)
        encoded = {**encoded, "teacher_logits": out["logits"]}
        if self.pairs:
            encoded["teacher_hidden"] = out["hidden"]
            self._add_projection(model, out["hidden"].shape[-1], device)
        labelled = len(data.train)
        log.info("distill: %d labelled + %d unlabelled rows; T=%g, alpha=%g%s", labelled,
                 len(out["logits"]) - labelled, self.config.temperature, self.config.alpha,
                 f", hidden states matched at {self.pairs}" if self.pairs else "")
        return encoded, _WithTeacher(self.task)

    def _plan_hidden(self, model: torch.nn.Module) -> None:
        from lftrain.errors import InputError
        from lftrain.models.layers import find_layers

        stack = find_layers(model)
        if stack is None:
            raise InputError("method.hidden_weight: cannot find the student's layer stack to match hidden states")
        n_teacher = int(_teacher_config(self.teacher).get("num_hidden_layers", 0))
        n_student = len(stack.layers)
        mapping = self.config.hidden_map or uniform_map(n_student, n_teacher)
        bad = {s: t for s, t in mapping.items() if not (0 <= s < n_student and 0 <= t < n_teacher)}
        if bad:
            raise InputError(f"method.hidden_map: {bad} out of range (student has {n_student} layers, teacher "
                             f"{n_teacher})")
        self.pairs = sorted(mapping.items())

    def _add_projection(self, model: torch.nn.Module, teacher_width: int, device: torch.device) -> None:
        width = model.config.hidden_size
        proj = torch.nn.Linear(width, teacher_width) if width != teacher_width else torch.nn.Identity()
        # A submodule while training, so the optimiser, checkpoints and resume cover it; removed by finish().
        model.add_module(PROJECTION, proj.to(device))

    def finish(self, model: torch.nn.Module) -> None:
        """Drop what only training needed (the projection), so the saved student is a plain model."""
        if hasattr(model, PROJECTION):
            delattr(model, PROJECTION)

    # ---- each batch ---------------------------------------------------------------------------------------
    def __call__(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        outputs = model(**self.task.model_inputs(batch), output_hidden_states=bool(self.pairs))
        cfg = self.config
        loss = distill_loss(outputs.logits, batch["teacher_logits"], batch["labels"], temperature=cfg.temperature,
                            alpha=cfg.alpha, label_smoothing=getattr(self.task.config, "label_smoothing", 0.0))
        if self.pairs:
            loss = loss + cfg.hidden_weight * self._hidden_loss(model, outputs.hidden_states, batch)
        return {"loss_sum": loss.sum(), "logits": outputs.logits}

    def _hidden_loss(self, model, hidden_states, batch) -> torch.Tensor:
        proj = getattr(model, PROJECTION)
        from lftrain.models.pooled import mean_pool

        losses = []
        for k, (s, _) in enumerate(self.pairs):
            pooled = proj(mean_pool(hidden_states[s + 1].float(), batch["attention_mask"]))
            losses.append(1 - F.cosine_similarity(pooled.float(), batch["teacher_hidden"][:, k].float(), dim=-1))
        return torch.stack(losses, 0).mean(0)


class _WithTeacher(TaskView):
    """The task as fit() sees it: the same, except that each batch also carries its rows' cached teacher outputs."""

    def collate(self, encoded: dict[str, np.ndarray], indices: np.ndarray, pad_id: int) -> dict[str, Any]:
        batch = self.task.collate(encoded, indices, pad_id)
        batch["teacher_logits"] = torch.from_numpy(encoded["teacher_logits"][indices])
        if "teacher_hidden" in encoded:
            batch["teacher_hidden"] = torch.from_numpy(encoded["teacher_hidden"][indices])
        return batch


def _with_unlabelled(labelled: dict[str, np.ndarray], unlabelled: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Both in one layout; unlabelled rows get label IGNORE (the teacher's outputs are their targets)."""
    n = len(unlabelled["offsets"]) - 1
    return append_rows(labelled, unlabelled, np.full(n, IGNORE, dtype=labelled["labels"].dtype))


def _teacher_config(ref) -> dict:
    import json

    from lftrain.models.trained import ADAPTER_CONFIG

    cfg = ref.model_dir / "config.json"
    if not cfg.is_file() and (ref.model_dir / ADAPTER_CONFIG).is_file():  # an adapter: the base model's config
        from lftrain.models.trained import _adapter_base

        cfg = _adapter_base(ref.model_dir, ref.base_fallback) / "config.json"
    return json.loads(cfg.read_text())
