"""The sweep spec's structure: pydantic models of the YAML's keys, types and bounds.

The W&B sweep format (``name``, ``method``, ``metric`` or ``metrics``, ``parameters``, ``run_cap``,
``early_terminate``, ...) plus sweeper's keys (``trainer``, ``data``, ``epochs``,
``scheduler``, ``max_concurrent_trials``, ``resources_per_trial``, ``storage``, ``seed``).
Rules that span keys (a trainer's parameters, grid discreteness) live in
:mod:`sweeper.spec._validate`; this module is the only one that names the keys.

The ``data`` keys and the training-config file's keys are not defined here: they are the
fields, defaults and bounds of :class:`trainers.base.DataConfig` and
:class:`trainers.base.TrainConfig`, turned into pydantic models by :func:`model_of`.
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, create_model

from sweeper.defaults import DEFAULT_ARTIFACTS, DEFAULT_STORAGE
from trainers.base import PER_TRIAL_DATA, RUNTIME_FIELDS, DataConfig, TrainConfig

# W&B keys that only make sense to W&B's server; accepted and ignored with one warning.
WANDB_IGNORED_KEYS = ("project", "entity")
# The trainer that runs a W&B program (a spec with `program:` and no `trainer:`).
PROGRAM_TRAINER = "sweeper.trial.program:TRAINER"
# Trainers that moved when sweeper's modules went into folders (2026-12): a study or an exported
# config made before names the old path; it is read as the new one.
MOVED_TRAINERS = {"sweeper.program:TRAINER": PROGRAM_TRAINER}


def current_trainer(name: str) -> str:
    """``name`` with a moved trainer's old import path replaced by its path today (``MOVED_TRAINERS``)."""
    return MOVED_TRAINERS.get(name, name)


# A trainer's name as a spec or a training config gives it, read with its current path.
TrainerName = Annotated[str, AfterValidator(current_trainer)]

# Every W&B distribution (W&B's sweeps library, config/schema.json); see sweeper.spec._params.
DISTRIBUTIONS = (
    "constant",
    "categorical",
    "categorical_w_probabilities",
    "int_uniform",
    "uniform",
    "q_uniform",
    "log_uniform",
    "log_uniform_values",
    "q_log_uniform",
    "q_log_uniform_values",
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


def model_of(cls: type, name: str, doc: str, *, exclude: tuple[str, ...] = (),
             extra: dict[str, Any] | None = None) -> type[BaseModel]:
    """A strict pydantic model of dataclass ``cls``'s fields (less ``exclude``, plus ``extra``
    pydantic field definitions): the same names, types and defaults, with the bounds each field
    carries as metadata (``ge``, ``gt``, ``le``, ``lt``; see :func:`trainers.base._bounded`)."""
    hints = typing.get_type_hints(cls)
    fields: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.name in exclude:
            continue
        default = f.default if f.default is not dataclasses.MISSING else ...
        fields[f.name] = (hints[f.name], Field(default=default, **dict(f.metadata)))
    fields.update(extra or {})
    model: type[BaseModel] = create_model(name, __base__=_Model, __doc__=doc, **fields)
    return model


class MetricSpec(_Model):
    """``metric``: what the sweep optimises. ``name`` is a metric the trainer reports per epoch."""

    name: str = "val_accuracy"
    goal: Literal["maximize", "minimize"] = "maximize"
    target: float | None = None  # W&B's: the sweep stops once a finished trial reaches it


class ConstraintSpec(_Model):
    """One entry of ``constraints``: a metric a trial reports or sweeper measures, bounded by
    ``max``, ``min`` or both (see :mod:`sweeper.study.constraints`)."""

    name: str = Field(min_length=1)
    max: float | None = None
    min: float | None = None


# Objectives sweeper measures itself (see trainers.base.MEASURED_METRICS and sweeper.trial.trainable).
SWEEPER_OBJECTIVES = ("param_count", "inference_ms", "train_s", "gpu_hours")


class ParameterSpec(_Model):
    """One entry of ``parameters``: a constant, a list of values, a range, a distribution, or
    nested parameters.

    W&B forms: ``value: x``; ``values: [...]`` (with optional ``probabilities``); ``min``/``max``
    with ``distribution`` (and ``q`` for the quantised ones); ``distribution: normal`` and the
    like with ``mu``/``sigma`` or ``a``/``b``; ``parameters: {...}`` (nested, at any depth).
    sweeper's ``when: {other: value or [values]}`` makes the parameter conditional.
    """

    value: Any = None
    values: list[Any] | None = None
    probabilities: list[float] | None = None
    min: int | float | None = None
    max: int | float | None = None
    distribution: str | None = None
    q: int | float | None = None
    mu: float | None = None
    sigma: float | None = None
    a: float | None = None
    b: float | None = None
    parameters: dict[str, ParameterSpec] | None = None
    # sweeper's: the parameter exists in a trial only when each named parameter has the value
    # (or one of the list of values) given here; otherwise the trainer's default applies.
    when: dict[str, Any] | None = None


class EarlyTerminateSpec(_Model):
    """``early_terminate``: W&B's hyperband, run as ASHA (grace period ``min_iter``, reduction factor ``eta``)."""

    type: Literal["hyperband"]
    min_iter: int | None = Field(default=None, ge=1)
    max_iter: int | None = Field(default=None, ge=1)
    eta: float = Field(default=3, gt=1)
    s: int | None = Field(default=None, ge=0)
    strict: bool | None = None


class SchedulerSpec(_Model):
    """``scheduler``: ASHA (Li et al. 2020, "A System for Massively Parallel Hyperparameter
    Tuning"), none, or population-based training: ``pbt`` (Jaderberg et al. 2017, "Population
    Based Training of Neural Networks") and ``pb2`` (Parker-Holder et al. 2020, "Provably Efficient
    Online Hyperparameter Optimization with Population-Based Bandits"), run by Ray Tune's
    ``PopulationBasedTraining`` and ``PB2`` with their own option names."""

    type: Literal["asha", "none", "pbt", "pb2"] = "asha"
    grace_period: int = Field(default=1, ge=1, description="epochs a trial runs before it can be stopped")
    reduction_factor: float = Field(default=3, gt=1, description="1/fraction of trials promoted at each rung")
    perturbation_interval: int = Field(default=4, ge=1, description="PBT: epochs between two exploit/explore steps")
    quantile_fraction: float = Field(default=0.25, gt=0, le=0.5,
                                     description="PBT: the fraction of the population that copies the top one")
    resample_probability: float = Field(default=0.25, ge=0, le=1,
                                        description="PBT: the chance a mutated value is drawn afresh")
    # PBT: the parameters that change during a run, each in the spec's parameter forms.
    hyperparam_mutations: dict[str, ParameterSpec] | None = None
    # PB2: the parameters that change during a run, each {min, max}.
    hyperparam_bounds: dict[str, ParameterSpec] | None = None


DataSpec = model_of(DataConfig, "DataSpec", "``data``: the images (see :class:`trainers.base.DataConfig`); the "
                   "split's seed is the sweep's ``seed``.", exclude=PER_TRIAL_DATA)
TrainDataSpec = model_of(DataConfig, "TrainDataSpec", "``data`` of a training config: every field of "
                         ":class:`trainers.base.DataConfig`.")


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
    # W&B's multi-objective form: two or more {name, goal}, in the order of the study's directions.
    metrics: list[MetricSpec] | None = Field(default=None, min_length=2)
    # Outcome constraints: the best trial is the best feasible one (sweeper.study.constraints).
    constraints: list[ConstraintSpec] = Field(default_factory=list)
    parameters: dict[str, ParameterSpec] = Field(default_factory=dict)
    run_cap: int | None = Field(default=None, ge=1)
    early_terminate: EarlyTerminateSpec | None = None
    program: str | None = Field(default=None, min_length=1)
    command: list[str | int | float] | None = None
    workdir: str | None = None
    project: Any = None
    entity: Any = None
    trainer: TrainerName = "cnn"
    data: DataSpec = DataSpec()  # type: ignore[valid-type]  # a model made from trainers.base.DataConfig
    epochs: int | None = Field(default=None, ge=1, le=100000)
    scheduler: SchedulerSpec | None = None
    max_concurrent_trials: int | None = Field(default=None, ge=1)
    max_failed_trials: int | None = Field(default=None, ge=0)
    max_failures: int = Field(default=2, ge=0, le=100, description="retries of a trial whose worker died")
    keep_checkpoints: int = Field(default=1, ge=0, description="finished trials whose checkpoints are kept")
    # Seconds a trial may run (each run of it, after a lost worker too); then it is stopped, FAIL.
    trial_timeout: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    resources_per_trial: ResourcesSpec = ResourcesSpec()
    storage: str = DEFAULT_STORAGE
    artifacts: str = DEFAULT_ARTIFACTS
    seed: int = Field(default=0, ge=0, lt=2**31)

    def data_settings(self) -> dict[str, Any]:
        """``data`` as a plain mapping (its model is made at run time, so type checkers see ``Any``)."""
        data: BaseModel = self.data
        return data.model_dump()


class ProgramRunSpec(_Model):
    """``program`` of a training config: how :func:`sweeper.trial.program.fit` runs a W&B program or
    function (what :meth:`sweeper.spec.Sweep.trial_config` writes); nothing else is accepted."""

    program: str | None = Field(default=None, min_length=1)
    command: list[str] | None = None
    workdir: str = Field(min_length=1)
    metric: str = Field(min_length=1)
    study: str = Field(min_length=1)
    logs: str = Field(min_length=1)
    run_id: str = Field(default="run", pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}$")
    function: str | None = Field(default=None, min_length=1)
    trial_timeout: float | None = Field(default=None, gt=0, allow_inf_nan=False)


class ScheduleStep(_Model):
    """One step of a population-based trial's schedule (``schedule`` of a training config): from
    ``epoch`` on, the run trains with ``params``; ``source`` is the trial (and its epoch) whose
    checkpoint the run continued from there, ``None`` for the first step."""

    epoch: int = Field(ge=1)
    params: dict[str, Any]
    source: dict[str, int] | None = None
    by: int | None = None  # the trial that trained the step
    seed: int | None = None
    curve: list[list[float]] | None = None  # [epoch, metric] as the trial's lineage trained them


TrainFileSpec = model_of(
    TrainConfig, "TrainFileSpec", "A single training run's config, as ``sweeper export`` writes it and "
    "``sweeper train`` reads it: :class:`trainers.base.TrainConfig`'s fields, the trainer's name and provenance.",
    exclude=(*RUNTIME_FIELDS, "data", "params", "program"),
    extra={"trainer": (TrainerName, "cnn"), "params": (dict[str, Any], Field(default_factory=dict)),
           "program": (ProgramRunSpec | None, None), "schedule": (list[ScheduleStep] | None, None),
           "data": (TrainDataSpec, TrainDataSpec()), "provenance": (dict[str, Any] | None, None)},
)
