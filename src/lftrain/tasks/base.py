"""The task contract: what a task type implements, and all the orchestrator, fit() and the commands may rely on.

A task says what the model predicts: how rows are read and validated, which model class and input processor it
uses, how examples are encoded, batched and scored, and how a finished run is evaluated. A new task is a subclass
registered by short name (`@TASKS.register("name")`), never an edit of the orchestrator. Required hooks are
abstract; optional ones have their default here, so callers never probe with `hasattr`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from lftrain.data.labels import LabelSet
from lftrain.registry import Registry

if TYPE_CHECKING:
    import numpy as np
    from pydantic import BaseModel

    from lftrain.config.base import Section
    from lftrain.data.examples import Examples
    from lftrain.data.readers import Table
    from lftrain.evaluation.evidence import RunOutputs

TASKS: Registry[type[Task]] = Registry("task", section="task")
Encoded = dict[str, "np.ndarray"]  # a split as flat arrays (token ids and offsets, pixels, ...): see `encode`


class Batches(Protocol):
    """What fit() needs of a task: the batches of encoded rows and their summed loss. A Task is one; a method may
    hand fit() a view that changes the batches (masked-LM masking, cached teacher outputs)."""

    augments_input: bool  # a row's input differs between epochs (augmentation, masking): its outputs cannot be cached

    def lengths(self, encoded: Encoded) -> np.ndarray: ...
    def collate(self, encoded: Encoded, indices: np.ndarray, pad_id: int) -> dict[str, Any]: ...
    def model_inputs(self, batch: dict[str, Any]) -> dict[str, Any]: ...
    def loss_units(self, batch: dict[str, Any]) -> int: ...
    def loss_sum(self, outputs, batch: dict[str, Any]): ...


class TaskView:
    """A task's batches as a method changes them for fit() (pairs, cached teacher outputs): every `Batches` hook
    goes to the task; a subclass overrides those it changes."""

    def __init__(self, task: Task) -> None:
        self.task = task

    @property
    def augments_input(self) -> bool:
        return self.task.augments_input

    def lengths(self, encoded: Encoded) -> np.ndarray:
        return self.task.lengths(encoded)

    def collate(self, encoded: Encoded, indices: np.ndarray, pad_id: int) -> dict[str, Any]:
        return self.task.collate(encoded, indices, pad_id)

    def model_inputs(self, batch: dict[str, Any]) -> dict[str, Any]:
        return self.task.model_inputs(batch)

    def loss_units(self, batch: dict[str, Any]) -> int:
        return self.task.loss_units(batch)

    def loss_sum(self, outputs, batch: dict[str, Any]):
        return self.task.loss_sum(outputs, batch)

    def prepare_model(self, model, *, distributed: bool) -> None:
        """Nothing by default: the method's loss reads the model's real outputs (e.g. preference log-probs)."""


class Task(ABC):
    Config: ClassVar[type[Section]]
    type_name: ClassVar[str]  # the name it is registered under (set by TASKS.register)
    generative: ClassVar[bool] = False  # judged on generated text (no class logits)
    default_metric: ClassVar[str | None] = None  # train.metric when the recipe sets none (else `accuracy`)
    cacheable: ClassVar[bool] = True  # encoded splits are worth a token-cache entry (data/token_cache.py)
    token_inputs: ClassVar[bool] = True  # encoded rows are token sequences (`offsets`): the frozen cache stores those
    requires: ClassVar[tuple[str, ...]] = ()  # optional modules the task needs (lftrain.extras), checked when built
    streams: ClassVar[bool] = False  # its training rows can be streamed from disk (data.streaming; data/stream.py)
    data_checks: ClassVar[bool] = False  # the data checks (one class per row) apply to its rows
    label_set_class: ClassVar[type[LabelSet]] = LabelSet  # what `task.labels` is (names, raw label -> index)
    augments_input: bool = False

    # What the layers above read instead of comparing type names: the server, the model card, the UI, privacy,
    # `lft compare --base`, model selection, tuning and `lft compare`.
    serve_input: ClassVar[type[BaseModel] | None] = None  # one POST /predict input (tasks/inputs.py); None: not served
    serve_bare_strings: ClassVar[bool] = False  # a bare string in a request stands for serve_input's first field
    chat: ClassVar[bool] = False  # a chat model: `lft generate` / `lft chat`, OpenAI-style serving, GGUF export
    pipeline_tag: ClassVar[str | None] = None  # the Hub's pipeline tag for the model card (None: none fits)
    auto_model: ClassVar[str] = "AutoModel"  # the transformers auto class of load_model (the memory plan's skeleton)
    private_training: ClassVar[bool] = False  # train.privacy applies: one loss term per row, so a row is the unit
    ui_form: ClassVar[bool] = False  # the web UI's recipe form describes it (one text column, one label column)
    probe_baseline: ClassVar[bool] = False  # `lft compare --base` fits a linear probe on the base model's features
    lower_is_better: ClassVar[frozenset[str]] = frozenset({"loss", "ece", "ece_mass", "nll", "brier"})

    @classmethod
    def higher_is_better(cls, metric: str) -> bool:
        """A metric's direction (best checkpoint, early stopping, `lft tune`, `lft compare`); unknown names rise."""
        return metric not in cls.lower_is_better

    def __init__(self, config) -> None:
        self.config = config
        self.labels: LabelSet | None = None
        self.keep_columns: tuple[str, ...] = ()  # other columns read along as fields `column:NAME` (eval.slices)

    # ---- data: before any model loads ---------------------------------------------------------------------
    def read(self, path, data_cfg, *, with_labels: bool = True, drop_label: Callable[[str], bool] | None = None,
             stats: dict | None = None, columns: dict[str, str] | None = None) -> Examples:
        """One data source as validated examples. Default: a table file (CSV, JSON, Parquet, ...) through
        `extract`, its columns renamed by `columns` (task column -> file column); tasks whose inputs are files
        (images, audio) read folders and lists too."""
        from lftrain.data.readers import read_table
        from lftrain.errors import DataError

        table = read_table(path, data_cfg.format, data_cfg.encoding).renamed(columns or {})
        if not table.rows:
            raise DataError("the file has a header but no rows", file=path)
        ex = self.extract(table, normalize=data_cfg.normalize_whitespace, with_labels=with_labels,
                          drop_label=drop_label)
        return attach_columns(ex, table, self.keep_columns)

    @abstractmethod
    def extract(self, table: Table, *, normalize: bool, with_labels: bool = True,
                drop_label: Callable[[str], bool] | None = None) -> Examples:
        """Validate every row of `table`; raise DataError naming file, row/line and column on the first bad one."""

    @abstractmethod
    def dedupe_key(self, ex: Examples, i: int) -> tuple:
        """What makes two rows the same input (duplicates are dropped before splitting)."""

    @abstractmethod
    def fit_labels(self, train: Examples) -> LabelSet | None:
        """Fix the label set from the training rows (None: the task has no classes)."""

    def balance(self, train: Examples, seed: int, stats: dict) -> Examples:
        """The training rows as training sees them, after splitting (text classification repeats the rows of rare
        classes under `task.imbalance`); default: as they are."""
        return train

    def text_columns(self) -> list[str]:
        """The columns holding text (read from `eval.ood` files); none for non-text tasks."""
        return []

    def row_info(self, ex: Examples, i: int) -> dict[str, Any]:
        """Extra keys of a prediction row (the file an image or clip came from)."""
        return {}

    # ---- model ------------------------------------------------------------------------------------------
    def load_processor(self, source, trust_remote_code: bool = False):
        """What turns rows into model inputs: the tokenizer by default."""
        from lftrain.models.loading import load_tokenizer

        return load_tokenizer(source, trust_remote_code)

    def recipe_processor(self, model_cfg):
        """The processor of the recipe's model (`model_cfg`: its `model` section), for callers that read the data
        without a run (`lft data check` on streamed data)."""
        from lftrain.models.loading import vet_model_dir

        source = vet_model_dir(model_cfg.path, allow_pickle=model_cfg.allow_pickle,
                               trust_remote_code=model_cfg.trust_remote_code, revision=model_cfg.revision)
        return self.load_processor(source, model_cfg.trust_remote_code)

    def prepare_tokenizer(self, tokenizer) -> None:  # noqa: B027  (optional hook, nothing to do by default)
        """Adjust the processor once loaded (a chat template, a pad token)."""

    @abstractmethod
    def load_model(self, source, *, trust_remote_code: bool, attention: str):
        """The model with this task's head, loaded from `source` (a vetted model directory)."""

    # ---- batches ----------------------------------------------------------------------------------------
    @abstractmethod
    def encode(self, processor, ex: Examples) -> Encoded: ...

    @abstractmethod
    def lengths(self, encoded: Encoded) -> np.ndarray: ...

    @abstractmethod
    def collate(self, encoded: Encoded, indices: np.ndarray, pad_id: int) -> dict[str, Any]: ...

    @abstractmethod
    def model_inputs(self, batch: dict[str, Any]) -> dict[str, Any]: ...

    @abstractmethod
    def loss_units(self, batch: dict[str, Any]) -> int:
        """What the loss is averaged over (examples, tokens): the loop normalises a step's summed loss by it."""

    @abstractmethod
    def loss_sum(self, outputs, batch: dict[str, Any]):
        """The batch's loss, summed over its loss units."""

    # ---- evaluation -------------------------------------------------------------------------------------
    def row_outputs(self, outputs, batch: dict[str, Any]) -> list[np.ndarray]:
        """One array per row of a batch's model outputs (default: its class logits)."""
        return list(outputs.logits.float().cpu().numpy())

    def stack_outputs(self, rows: list[np.ndarray]) -> np.ndarray:
        """The rows' outputs as one array, in input order (default: a row each)."""
        import numpy as np

        return np.stack(rows).astype(np.float32) if rows else np.empty((0, 0), dtype=np.float32)

    def selection_metric(self, metric: str, explicit: bool) -> str:
        """The metric that picks the best checkpoint, given `train.metric` (`explicit`: set in the recipe)."""
        return metric

    def metrics(self, logits: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
        """Metrics of outputs against labels (what `score` and the bootstrap intervals compute); default: none,
        for tasks scored another way (`score`, `evaluate`, `evaluate_rows`)."""
        return {}

    def predictions(self, logits: np.ndarray, encoded: Encoded | None = None,
                    examples: Examples | None = None) -> list[dict[str, Any]]:
        """One JSON-able dict per row for `lft predict` (`encoded`, `examples`: the rows, for tasks that need them
        to place their answers). Default: the model's raw outputs per row."""
        return [{"outputs": [round(float(v), 6) for v in row]} for row in logits]

    def score(self, logits: np.ndarray, encoded: Encoded) -> dict[str, Any]:
        """All metrics of a split's outputs against its encoded targets (default: `metrics` of the labels)."""
        return self.metrics(logits, encoded["labels"])

    def evaluate(self, model, encoded: Encoded, *, infer: Callable[[Encoded], np.ndarray], batch_size: int,
                 precision: str, device, pad_id: int) -> dict[str, Any]:
        """Headline metrics of an encoded split during training (model selection, early stopping). `infer`
        returns the model's outputs for every row in order (sharded over processes when distributed)."""
        from lftrain.evaluation.metrics import headline

        return headline(self.score(infer(encoded), encoded))

    @abstractmethod
    def final_evaluation(self, out: RunOutputs) -> dict[str, dict[str, Any]]:
        """Evaluate the final model on `eval.splits`, log and print it, and write the evidence the task supports;
        returns metrics per split."""

    def format_metrics(self, metrics: dict[str, Any], title: str) -> str:
        """The metrics as the plain text `lft train` and `lft evaluate` print."""
        return f"{title}\n  " + "  ".join(f"{k} {v:.4f}" for k, v in metrics.items()
                                         if isinstance(v, float)) + f"  (n={metrics.get('n')})"

    # ---- the saved model ---------------------------------------------------------------------------------
    def prepare_model(self, model, *, distributed: bool) -> None:  # noqa: B027  (an optional hook)
        """Called once the model is built for training (adapted, on its device), before the speed levers."""

    def before_save(self, model) -> None:  # noqa: B027  (an optional hook)
        """Make the final model self-contained before it is written (regression folds its target scaling in)."""

    def restore_labels(self, names: list[str]) -> None:
        """The label set of a saved model, from its config's id2label (tasks without classes ignore it)."""
        self.labels = self.label_set_class(names)

    def after_load(self, model_dir) -> None:  # noqa: B027  (an optional hook)
        """Read what the task kept beside a saved model (multi-label thresholds) for inference."""

    # ---- inference on a finished run: tasks that decode (speech recognition) answer these themselves ----------
    def predict_rows(self, loaded, examples: Examples) -> list[dict[str, Any]] | None:
        """`lft predict`'s rows for `examples`, computed by the task from `loaded` (runs.loaded.LoadedRun);
        None (the default): rows come from the model's outputs through `predictions`."""
        return None

    def evaluate_rows(self, loaded, examples: Examples) -> dict[str, Any] | None:
        """`lft evaluate`'s metrics on labelled `examples`, computed by the task; None (the default): `score` of the
        model's outputs."""
        return None


class ClassificationTask(Task):
    """A task scored on class logits: cross-entropy per example, class metrics, calibrated evidence."""

    data_checks = True

    def fit_labels(self, train: Examples) -> LabelSet:
        self.labels = self.label_set_class.from_config_or_data(self.config.labels, train.fields["label"])
        return self.labels

    def loss_units(self, batch: dict[str, Any]) -> int:
        return int(batch["labels"].shape[0])

    def loss_sum(self, outputs, batch: dict[str, Any]):
        import torch.nn.functional as F

        return F.cross_entropy(outputs.logits.float(), batch["labels"], reduction="sum",
                               label_smoothing=self.config.label_smoothing)

    def metrics(self, logits: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
        from lftrain.evaluation.metrics import classification_metrics

        assert self.labels is not None
        return classification_metrics(logits, labels, self.labels.names)

    def format_metrics(self, metrics: dict[str, Any], title: str) -> str:
        from lftrain.evaluation.metrics import format_table

        assert self.labels is not None
        return format_table(metrics, self.labels.names, title)

    def predictions(self, logits: np.ndarray, encoded: Encoded | None = None,
                    examples: Examples | None = None) -> list[dict[str, Any]]:
        """One JSON-able dict per row for `lft predict` (`encoded`, `examples`: the rows, for tasks that need
        them to place their answers)."""
        from lftrain.evaluation.metrics import softmax

        assert self.labels is not None
        probs = softmax(logits)
        names = self.labels.names
        return [{"label": names[int(p.argmax())], "probs": {n: round(float(v), 6) for n, v in zip(names, p)}}
                for p in probs]

    def final_evaluation(self, out: RunOutputs) -> dict[str, dict[str, Any]]:
        from lftrain.evaluation.evidence import classification_final

        return classification_final(self, out)


def task_class(section: dict | None) -> type[Task]:
    """The registered task class a recipe's `task` section names (as read from a run's recipe.yaml)."""
    return TASKS.get((section or {}).get("type"))


def build_task(config) -> Task:
    """The registered task for a recipe's `task` section (its optional packages checked: extras.py)."""
    from lftrain.extras import need

    cls = TASKS.get(config.type)
    for module in cls.requires:
        need(module, f"task.type {config.type}")
    return cls(config)


def attach_columns(ex: Examples, table: Table, columns: tuple[str, ...]) -> Examples:
    """Carry `columns` of the table's rows along as fields `column:NAME` of the examples kept from them."""
    from lftrain.errors import DataError

    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise DataError(f"eval.slices names column '{missing[0]}', which the file does not have (columns: "
                        f"{', '.join(table.columns)})", file=table.file)
    if columns:
        index = {row: i for i, row in enumerate(table.row_numbers)}
        for c in columns:
            ex.fields[f"column:{c}"] = [table.rows[index[w[1]]].get(c) for w in ex.where]
    return ex
