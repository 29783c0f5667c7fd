"""The base model's own answer to a run's task: a linear probe on its frozen embeddings.

`lft compare RUN --base` asks whether fine-tuning beat what the base model already knew. The probe is the
standard yardstick for that (Alain & Bengio, 2016; the "linear probe" rows of most representation papers):
a logistic regression (scikit-learn) fitted on the frozen base encoder's mean-pooled embeddings of the
run's training split, then asked for the run's test split. Its probabilities stand in for run A's saved
predictions, so the paired bootstrap, per-class changes and verdicts are those of `lft compare A B`.

The run's recipe (saved in the run directory) rebuilds the splits exactly as training made them; the test
labels must match the ones the run saved, otherwise the data changed since and a paired test is void.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from lftrain.errors import InputError
from lftrain.reports.runfiles import RunFiles

log = logging.getLogger("lftrain")


@dataclass
class Probe:
    logits: np.ndarray  # (n, classes) log-probabilities of the probe on the run's split
    labels: np.ndarray  # the split's label ids, as the run saved them
    model: str  # the base model spec (recipe model.path)
    train_rows: int
    train_accuracy: float


def _rebuild(run: RunFiles):
    """The run's recipe, task and prepared splits, rebuilt from its saved recipe.yaml."""
    from lftrain.config import load_recipe
    from lftrain.data.prepare import prepare_data
    from lftrain.tasks import build_task

    recipe = load_recipe(data=run.recipe)
    if recipe.task.type != "text-classification":
        raise InputError(f"{run.path}: `compare --base` fits a linear probe on text embeddings, so it needs a "
                         f"text-classification run (this one is {recipe.task.type})")
    task = build_task(recipe.task)
    return recipe, task, prepare_data(recipe, task)


def _texts(ex) -> list[str]:
    # a text pair is embedded as one text, its two parts on separate lines (model-agnostic; no special tokens)
    pair = ex.fields.get("text_pair")
    return list(ex.fields["text"]) if pair is None else [f"{a}\n{b}" for a, b in zip(ex.fields["text"], pair)]


def fit_probe(run: RunFiles, saved_labels: np.ndarray, split: str = "test", *, c: float = 1.0) -> Probe:
    """Fit the probe on the run's training split and return its log-probabilities on `split`."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from lftrain.data.checks.noise import encoder_features
    from lftrain.models.loading import vet_model_dir

    recipe, task, data = _rebuild(run)
    target = getattr(data, split)
    if target is None:
        raise InputError(f"{run.path}: the run has no {split} split")
    y_train = _label_ids(task, data.train)
    y_test = _label_ids(task, target)
    if len(y_test) != len(saved_labels) or not np.array_equal(y_test, saved_labels):
        raise InputError(f"{run.path}: the {split} split rebuilt from recipe.yaml ({len(y_test)} rows) is not the one "
                         f"the run saved ({len(saved_labels)} rows, or labels differ): the data changed since "
                         "training, so a paired comparison is not possible")
    source = vet_model_dir(recipe.model.path, allow_pickle=recipe.model.allow_pickle,
                           trust_remote_code=recipe.model.trust_remote_code, revision=recipe.model.revision)
    max_length = recipe.task.max_length
    log.info("base probe: embedding %d train + %d %s texts with the frozen %s", len(y_train), len(y_test), split,
             recipe.model.path)
    x_train = encoder_features(_texts(data.train), source.path, max_length)
    x_test = encoder_features(_texts(target), source.path, max_length)
    # Standardised features: one C suits every encoder's scale; lbfgs is deterministic, so no seed is needed.
    clf = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=2000))
    clf.fit(x_train, y_train)
    k = len(task.labels)
    probs = np.full((len(y_test), k), 1e-12)
    probs[:, clf.classes_] = clf.predict_proba(x_test)  # a class absent from train keeps probability ~0
    return Probe(np.log(np.clip(probs, 1e-12, 1.0)), y_test, recipe.model.path, len(y_train),
                 float(clf.score(x_train, y_train)))


def _label_ids(task, ex) -> np.ndarray:
    return np.asarray([task.labels.index(v, ex, i) for i, v in enumerate(ex.fields["label"])], dtype=np.int64)
