"""The sweep spec's structure: pydantic models of the YAML's keys, types and bounds.

The W&B sweep format (``name``, ``method``, ``metric``, ``parameters``, ``run_cap``,
``early_terminate``, ...) plus sweeper's keys (``trainer``, ``data``, ``epochs``,
``scheduler``, ``max_concurrent_trials``, ``resources_per_trial``, ``storage``, ``seed``).
Rules that span keys (a trainer's parameters, grid discreteness) live in
:mod:`sweeper.spec._validate`; this module is the only one that names the keys.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

DEFAULT_STORAGE = "sqlite:///sweeps.db"
DEFAULT_ARTIFACTS = "sweeper_artifacts"
DEFAULT_EPOCHS = 10
DEFAULT_RUN_CAP = 20

# W&B keys that only make sense to the W&B agent; accepted and ignored with one warning.
WANDB_IGNORED_KEYS = ("program", "command", "project", "entity")

# W&B distributions sweeper translates to Optuna, and the ones it does not.
DISTRIBUTIONS = (
    "constant",
    "categorical",
    "int_uniform",
    "uniform",
    "q_uniform",
    "log_uniform_values",
    "log_uniform",
    "q_log_uniform_values",
)
UNSUPPORTED_DISTRIBUTIONS = (
    "q_log_uniform",
    "inv_log_uniform",
    "inv_log_uniform_values",
    "normal",
    "q_normal",
    "log_normal",
    "q_log_normal",
    "beta",
    "q_beta",
)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class MetricSpec(_Model):
    """``metric``: what the sweep optimises. ``name`` is a metric the trainer reports per epoch."""

    name: str = "val_accuracy"
    goal: Literal["maximize", "minimize"] = "maximize"
    target: float | None = None  # W&B's stop-at-target; accepted, not used yet


class ParameterSpec(_Model):
    """One entry of ``parameters``: a constant, a list of values, or a range.

    W&B forms: ``value: x``; ``values: [...]`` (with optional ``probabilities``);
    ``min``/``max`` with ``distribution`` (and ``q`` for the quantised ones).
    """

    value: Any = None
    values: list[Any] | None = None
    probabilities: list[float] | None = None
    min: int | float | None = None
    max: int | float | None = None
    distribution: str | None = None
    q: int | float | None = None
    mu: float | None = None  # W&B normal distributions: accepted so the error names the distribution
    sigma: float | None = None


class EarlyTerminateSpec(_Model):
    """``early_terminate``: W&B's hyperband, run as ASHA (grace period ``min_iter``, reduction factor ``eta``)."""

    type: Literal["hyperband"]
    min_iter: int | None = Field(default=None, ge=1)
    max_iter: int | None = Field(default=None, ge=1)
    eta: float = Field(default=3, gt=1)
    s: int | None = Field(default=None, ge=0)
    strict: bool | None = None


class SchedulerSpec(_Model):
    """``scheduler``: ASHA (Li et al. 2020, "A System for Massively Parallel Hyperparameter Tuning") or none."""

    type: Literal["asha", "none"] = "asha"
    grace_period: int = Field(default=1, ge=1, description="epochs a trial runs before it can be stopped")
    reduction_factor: float = Field(default=3, gt=1, description="1/fraction of trials promoted at each rung")


class DataSpec(_Model):
    """``data``: the images (see :class:`trainers.base.DataConfig`)."""

    dataset: str = "mnist5k"
    root: str | None = None
    image_size: int = Field(default=32, ge=1, le=4096)
    val_fraction: float = Field(default=0.2, gt=0, lt=1)
    num_workers: int = Field(default=0, ge=0, le=64)
    cache_dir: str | None = None


class ResourcesSpec(_Model):
    """``resources_per_trial``: what Ray reserves for each trial; GPUs may be fractional (0.25)."""

    cpu: float = Field(default=1, gt=0)
    gpu: float = Field(default=0, ge=0)


class SweepSpec(_Model):
    """A whole sweep spec, as written in the YAML (before defaults that need other keys)."""

    name: str | None = Field(default=None, min_length=1, max_length=200)
    description: str = ""
    method: Literal["random", "bayes", "grid"]
    metric: MetricSpec = MetricSpec()
    parameters: dict[str, ParameterSpec] = Field(default_factory=dict)
    run_cap: int | None = Field(default=None, ge=1)
    early_terminate: EarlyTerminateSpec | None = None
    program: Any = None
    command: Any = None
    project: Any = None
    entity: Any = None
    trainer: str = "cnn"
    data: DataSpec = DataSpec()
    epochs: int | None = Field(default=None, ge=1, le=100000)
    scheduler: SchedulerSpec | None = None
    max_concurrent_trials: int | None = Field(default=None, ge=1)
    max_failed_trials: int | None = Field(default=None, ge=0)
    max_failures: int = Field(default=2, ge=0, le=100, description="retries of a trial whose worker died")
    keep_checkpoints: int = Field(default=1, ge=0, description="finished trials whose checkpoints are kept")
    resources_per_trial: ResourcesSpec = ResourcesSpec()
    storage: str = DEFAULT_STORAGE
    artifacts: str = DEFAULT_ARTIFACTS
    seed: int = Field(default=0, ge=0, lt=2**31)


class TrainDataSpec(DataSpec):
    """``data`` of a training config: the sweep's data settings plus the split's ``seed`` and
    ``train_on_val`` (see :class:`trainers.base.DataConfig`)."""

    seed: int = Field(default=0, ge=0, lt=2**31)
    train_on_val: bool = False


class TrainFileSpec(_Model):
    """A single training run's config, as ``sweeper export`` writes it and ``sweeper train`` reads it."""

    trainer: str = "cnn"
    params: dict[str, Any] = Field(default_factory=dict)
    data: TrainDataSpec = TrainDataSpec()
    epochs: int = Field(default=10, ge=1, le=100000)
    seed: int = Field(default=0, ge=0, lt=2**31)
    threads: int | None = Field(default=None, ge=1, le=1024)
    provenance: dict[str, Any] | None = None
