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


def paired_split(run: RunFiles, saved_labels: np.ndarray, split: str, what: str):
    """(recipe, task, prepared data, the split's examples, its label ids), rebuilt from the run's recipe.yaml and
    checked against the labels the run saved: a baseline scored on other rows cannot be paired with the run."""
    from lftrain.config import load_recipe
    from lftrain.data.prepare import prepare_data
    from lftrain.tasks import TASKS, build_task

    recipe = load_recipe(data=run.recipe)
    task = build_task(recipe.task)
    if not task.probe_baseline:
        fits = ", ".join(TASKS.names(lambda c: c.probe_baseline))
        raise InputError(f"{run.path}: `{what}` needs a run of a task with one label per text ({fits}; this one is "
                         f"{recipe.task.type})")
    data = prepare_data(recipe, task)
    target = getattr(data, split)
    if target is None:
        raise InputError(f"{run.path}: the run has no {split} split")
    y = label_ids(task, target)
    if len(y) != len(saved_labels) or not np.array_equal(y, saved_labels):
        raise InputError(f"{run.path}: the {split} split rebuilt from recipe.yaml ({len(y)} rows) is not the one "
                         f"the run saved ({len(saved_labels)} rows, or labels differ): the data changed since "
                         "training, so a paired comparison is not possible")
    return recipe, task, data, target, y


def texts_of(ex) -> list[str]:
    # a text pair is embedded as one text, its two parts on separate lines (model-agnostic; no special tokens)
    pair = ex.fields.get("text_pair")
    return list(ex.fields["text"]) if pair is None else [f"{a}\n{b}" for a, b in zip(ex.fields["text"], pair)]


def fit_probe(run: RunFiles, saved_labels: np.ndarray, split: str = "test", *, c: float = 1.0) -> Probe:
    """Fit the probe on the run's training split and return its log-probabilities on `split`."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from lftrain.checks.noise import encoder_features
    from lftrain.models.loading import vet_model_dir

    recipe, task, data, target, y_test = paired_split(run, saved_labels, split, "compare --base")
    y_train = label_ids(task, data.train)
    source = vet_model_dir(recipe.model.path, allow_pickle=recipe.model.allow_pickle,
                           trust_remote_code=recipe.model.trust_remote_code, revision=recipe.model.revision)
    max_length = recipe.task.max_length
    log.info("base probe: embedding %d train + %d %s texts with the frozen %s", len(y_train), len(y_test), split,
             recipe.model.path)
    x_train = encoder_features(texts_of(data.train), source.path, max_length)
    x_test = encoder_features(texts_of(target), source.path, max_length)
    # Standardised features: one C suits every encoder's scale; lbfgs is deterministic, so no seed is needed.
    clf = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=2000))
    clf.fit(x_train, y_train)
    k = len(task.labels)
    probs = np.full((len(y_test), k), 1e-12)
    probs[:, clf.classes_] = clf.predict_proba(x_test)  # a class absent from train keeps probability ~0
    return Probe(np.log(np.clip(probs, 1e-12, 1.0)), y_test, recipe.model.path, len(y_train),
                 float(clf.score(x_train, y_train)))


def label_ids(task, ex) -> np.ndarray:
    return np.asarray([task.labels.index(v, ex, i) for i, v in enumerate(ex.fields["label"])], dtype=np.int64)
