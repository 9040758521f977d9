"""The study's record: every user-attribute key of a study and its trials, with typed readers and writers.

A study is the one source of truth (the spec it was started with, the code version, every
trial's config, curve, where it ran and how it ended), kept as Optuna user attributes. This
module is the only one that names those keys: the driver writes through it (the searcher, the
recorder, the leases) and every reader goes through it (``show``, ``studies``, ``export``,
``report``, ``retrain``, the progress display). It imports Optuna only, never Ray.

Study attributes: ``sweeper_spec`` (the validated spec, password redacted),
``sweeper_version``, ``code_version``, ``created_at``, ``duplicate_draws`` (sampled
configurations that had run already and were drawn again) and one ``lease:<driver id>`` per driver.

Trial attributes: ``config`` (the full training config), ``history`` (every metric, every
epoch), ``epochs_run``, ``wall_s``, ``ray_trial_id``, ``node``, ``node_id``, ``worker``,
``device``, ``fail_reason``, ``fail_kind``, ``pruned_reason`` (``infeasible: ...`` for a trial
stopped for a constraint it can no longer meet), ``driver_id``, ``worker_retries``, ``retry_of``,
for grid search ``grid_id``, for a warm-start copy ``warm_start_from`` and, in a
multi-objective study, ``objective_curve``: every
objective at every epoch so far, written as the trial runs. Optuna's intermediate values hold
one number per step, and a multi-objective study must hold none (Optuna's TPE reads a PRUNED
trial's last one through ``study.direction``, which raises there; ``trial.report`` raises too).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

import optuna
from optuna.trial import FrozenTrial, TrialState

# --- study attributes
STUDY_SPEC = "sweeper_spec"
STUDY_VERSION = "sweeper_version"
STUDY_CODE = "code_version"
STUDY_CREATED = "created_at"
DUPLICATE_DRAWS = "duplicate_draws"
LEASE_PREFIX = "lease:"

# --- trial attributes
CONFIG = "config"
HISTORY = "history"
EPOCHS_RUN = "epochs_run"
WALL_S = "wall_s"
RAY_TRIAL_ID = "ray_trial_id"
FAIL_REASON = "fail_reason"
PRUNED_REASON = "pruned_reason"
# "trial": the trial itself failed (counts against max_failed_trials); "driver": its driver was lost.
FAIL_KIND = "fail_kind"
DRIVER_ID = "driver_id"
WORKER_RETRIES = "worker_retries"
RETRY_OF = "retry_of"
GRID_ID = "grid_id"
OBJECTIVE_CURVE = "objective_curve"
# A population-based trial's effective schedule (see sweeper.engine.population): [{epoch, params, source, seed?}].
SCHEDULE = "schedule"
# Its state at its last checkpoint, to resume it: {epoch, checkpoint (a folder), params, schedule}.
POPULATION_STATE = "population_state"
# A trial copied from an earlier study by warm start: "OLD_STUDY#number" (see sweeper.study.warm_start).
WARM_START_FROM = "warm_start_from"
# What a warm-start copy keeps of the earlier trial's attributes.
CARRIED_OVER = (CONFIG, HISTORY, EPOCHS_RUN, WALL_S, OBJECTIVE_CURVE, PRUNED_REASON)
# Where a trial ran, as its worker reports it with every epoch.
WHERE = ("node", "node_id", "worker", "device")

# "duplicate": a draw of a configuration already finished or running, never run (see sweeper.engine.searcher).
FailKind = Literal["trial", "driver", "duplicate"]
_T = TypeVar("_T")


# --- the study --------------------------------------------------------------------------


def write_study_metadata(study: optuna.Study, spec: Mapping[str, Any], version: str, code: str) -> None:
    """Store the validated spec (its ``storage`` already redacted by the caller), sweeper's
    version, the code version and the creation time (UTC) with the study."""
    study.set_user_attr(STUDY_SPEC, dict(spec))
    study.set_user_attr(STUDY_VERSION, version)
    study.set_user_attr(STUDY_CODE, code)
    study.set_user_attr(STUDY_CREATED, dt.datetime.now(dt.UTC).isoformat(timespec="seconds"))


def stored_spec(study_attrs: Mapping[str, Any]) -> dict[str, Any] | None:
    """The spec stored with a study (its user attributes), ``None`` for a study not made by sweeper."""
    spec = study_attrs.get(STUDY_SPEC)
    return dict(spec) if isinstance(spec, dict) else None


def stored_metric(study_attrs: Mapping[str, Any]) -> tuple[str | None, str | None]:
    """The stored spec's ``metric`` as ``(name, goal)``; ``(None, None)`` without a stored spec."""
    metric = (stored_spec(study_attrs) or {}).get("metric") or {}
    return metric.get("name"), metric.get("goal")


def stored_objectives(study_attrs: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The stored spec's objectives as ``(name, goal)`` pairs, in the order of the study's
    directions: its ``metrics``, else its ``metric``; empty without a stored spec."""
    spec = stored_spec(study_attrs) or {}
    metrics = spec.get("metrics") or ([spec["metric"]] if spec.get("metric") else [])
    return [(str(m.get("name")), str(m.get("goal", "maximize"))) for m in metrics]


def code_version_of(study_attrs: Mapping[str, Any]) -> str | None:
    """The code version stored with a study (``sweeper 0.1.0 (git abc1234)``)."""
    value = study_attrs.get(STUDY_CODE)
    return str(value) if value is not None else None


def write_lease(study: optuna.Study, driver_id: str, lease: Mapping[str, Any]) -> None:
    """Store (or renew) driver ``driver_id``'s lease on the study (see :mod:`sweeper.study.coordination`)."""
    study.set_user_attr(LEASE_PREFIX + driver_id, dict(lease))


def read_leases(study_attrs: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Every driver lease stored on a study, by driver id, as written by :func:`write_lease`."""
    return {key[len(LEASE_PREFIX):]: dict(value) for key, value in study_attrs.items()
            if key.startswith(LEASE_PREFIX) and isinstance(value, dict)}


# --- a trial ----------------------------------------------------------------------------


def write_asked(trial: optuna.Trial, config: Mapping[str, Any], driver_id: str, ray_trial_id: str) -> None:
    """Record what a driver asked a trial for: its training config, its driver, Ray's trial id."""
    set_user_attrs(trial, {CONFIG: dict(config), DRIVER_ID: driver_id, RAY_TRIAL_ID: ray_trial_id})


def set_user_attrs(trial: optuna.Trial, attrs: Mapping[str, Any]) -> None:
    """Write ``attrs`` to the running ``trial``, in one transaction where its storage is sweeper's
    (:meth:`sweeper.study.storage.RetryingRDBStorage.set_trial_user_attrs`, behind Optuna's cache)."""
    write_all = getattr(getattr(trial.storage, "_backend", None), "set_trial_user_attrs", None)
    cached = getattr(trial, "_cached_frozen_trial", None)  # what Trial.user_attrs reads
    if write_all is None or cached is None:  # another storage: Optuna's one write per attribute
        for key, value in attrs.items():
            trial.set_user_attr(key, value)
    else:
        write_all(trial._trial_id, attrs)
        cached.user_attrs.update(attrs)


@dataclass
class TrialDetails:
    """What the driver learnt of a trial while it ran, written with its end.

    Attributes:
        history: one row per epoch, ``{"epoch": e, metric: value, ...}``.
        epochs_run: epochs the trial trained.
        where: ``node``, ``node_id``, ``worker`` (``host:pid``) and ``device``.
        wall_s: seconds from its start to its end, ``None`` when unknown.
        worker_retries: times Ray restarted it after its worker died (0: never).
        fail_reason: why it failed (its error's last line), ``None`` unless FAIL.
        fail_kind: ``trial`` (counts against ``max_failed_trials``) or ``driver``.
        pruned_reason: why a PRUNED trial stopped when not by ASHA (``infeasible: ...``), else ``None``.
        schedule: a population-based trial's effective schedule, its sources as study trial
            numbers (:meth:`sweeper.engine.population.PopulationScheduler.schedule`); ``None`` otherwise.
    """

    history: list[dict[str, float]] = field(default_factory=list)
    epochs_run: int = 0
    where: dict[str, str] = field(default_factory=dict)
    wall_s: float | None = None
    worker_retries: int = 0
    fail_reason: str | None = None
    fail_kind: FailKind = "trial"
    pruned_reason: str | None = None
    schedule: list[dict[str, Any]] | None = None


def write_details(trial: optuna.Trial, details: TrialDetails) -> None:
    """Write what :class:`TrialDetails` holds to the trial (before it is told its end)."""
    attrs: dict[str, Any] = {HISTORY: details.history, EPOCHS_RUN: details.epochs_run, **details.where}
    if details.wall_s is not None:
        attrs[WALL_S] = round(details.wall_s, 3)
    if details.worker_retries:
        attrs[WORKER_RETRIES] = details.worker_retries
    if details.fail_reason:
        attrs[FAIL_REASON] = details.fail_reason
        attrs[FAIL_KIND] = details.fail_kind
    if details.pruned_reason:
        attrs[PRUNED_REASON] = details.pruned_reason
    if details.schedule:
        attrs[SCHEDULE] = details.schedule
    set_user_attrs(trial, attrs)


def write_failure(trial: optuna.Trial, reason: str, kind: FailKind) -> None:
    """Record why a trial failed (before it is told FAIL)."""
    set_user_attrs(trial, {FAIL_REASON: reason, FAIL_KIND: kind})


def mark_driver_lost(storage: optuna.storages.BaseStorage, trial_id: int, why: str) -> None:
    """Record on a trial (by storage id) that its driver was lost: ``fail_reason`` "driver lost: <why>",
    kind ``driver`` (not counted against ``max_failed_trials``); the caller then ends it FAIL."""
    storage.set_trial_user_attr(trial_id, FAIL_REASON, f"driver lost: {why}")
    storage.set_trial_user_attr(trial_id, FAIL_KIND, "driver")


def queue_retry(study: optuna.Study, trial: FrozenTrial | optuna.Trial) -> None:
    """Queue ``trial``'s parameters to run again, linked back to it by ``retry_of``."""
    study.enqueue_trial(trial.params, user_attrs={RETRY_OF: trial.number}, skip_if_exists=False)


def queue_grid_point(study: optuna.Study, point: Mapping[str, Any], grid_id: int) -> None:
    """Queue grid point ``grid_id`` (Optuna's representation of its parameters)."""
    study.enqueue_trial(dict(point), user_attrs={GRID_ID: grid_id}, skip_if_exists=False)


def write_objective_curve(trial: optuna.Trial, curve: Mapping[int, list[float]]) -> None:
    """Store a multi-objective trial's curve so far: ``{epoch: [each objective's value]}``."""
    trial.set_user_attr(OBJECTIVE_CURVE, {str(epoch): list(values) for epoch, values in sorted(curve.items())})


def objective_curve_of(trial: FrozenTrial) -> dict[int, list[float]]:
    """A multi-objective trial's curve, ``{epoch: [each objective's value]}`` (empty when none)."""
    stored = trial.user_attrs.get(OBJECTIVE_CURVE) or {}
    return {int(epoch): [float(v) for v in values] for epoch, values in stored.items()}


def objective_values(trial: FrozenTrial) -> list[float] | None:
    """The trial's objective values: a COMPLETE trial's values as told to Optuna, else (a PRUNED
    or FAIL trial of a multi-objective study) those of its last recorded epoch; ``None`` without any."""
    if trial.values is not None:
        return [float(v) for v in trial.values]
    curve = objective_curve_of(trial)
    return curve[max(curve)] if curve else None


def config_of(trial: FrozenTrial) -> dict[str, Any] | None:
    """The trial's full training config (what ``sweeper export`` writes), ``None`` if it has none."""
    config = trial.user_attrs.get(CONFIG)
    return dict(config) if isinstance(config, dict) else None


def configured_epochs(trial: FrozenTrial, default: int) -> int:
    """The epochs the trial was configured to train (its config's ``epochs``), else ``default``."""
    return int((config_of(trial) or {}).get("epochs", default))


def trained_params(trial: FrozenTrial) -> dict[str, Any]:
    """The searched parameters as the trainer got them (decoded and quantised), by Optuna's names
    (a nested parameter's name is its dotted path, ``optimizer.lr``)."""
    given = (config_of(trial) or {}).get("params") or {}

    def lookup(name: str, fallback: Any) -> Any:
        if name in given:
            return given[name]
        node: Any = given
        for part in name.split("."):
            if not isinstance(node, dict) or part not in node:
                return fallback
            node = node[part]
        return node

    return {name: lookup(name, value) for name, value in trial.params.items()}


def history_of(trial: FrozenTrial) -> list[dict[str, float]]:
    """Every metric of every epoch the trial reported, one row per epoch."""
    return list(trial.user_attrs.get(HISTORY) or [])


def write_population_state(trial: optuna.Trial, state: Mapping[str, Any]) -> None:
    """Keep a PBT member's state at its checkpoint (:data:`POPULATION_STATE`)."""
    trial.set_user_attr(POPULATION_STATE, dict(state))


def population_state_of(trial: FrozenTrial) -> dict[str, Any] | None:
    """A PBT member's state at its last checkpoint, ``None`` when none was kept."""
    return trial.user_attrs.get(POPULATION_STATE)


def schedule_of(trial: FrozenTrial) -> list[dict[str, Any]]:
    """A population-based trial's effective schedule (empty for any other trial)."""
    return list(trial.user_attrs.get(SCHEDULE) or [])


def epochs_run_of(trial: FrozenTrial, default: int | None = None) -> int:
    """Epochs the trial trained; ``default`` (else its number of intermediate values) when unrecorded."""
    value = _attr(trial, EPOCHS_RUN, int)
    return value if value is not None else len(trial.intermediate_values) if default is None else default


def recorded_epochs_run(trial: FrozenTrial) -> int | None:
    """Epochs the trial trained as its driver recorded them, ``None`` when unrecorded."""
    return _attr(trial, EPOCHS_RUN, int)


def worker_of(trial: FrozenTrial) -> str:
    """The worker (``host:pid``) the trial ran on, else its node, else ``unknown``."""
    return str(trial.user_attrs.get("worker") or trial.user_attrs.get("node") or "unknown")


def end_reason(trial: FrozenTrial) -> str | None:
    """Why the trial failed (``FloatingPointError: loss became NaN at epoch 3``), ``None`` otherwise."""
    return _attr(trial, FAIL_REASON, str)


def pruned_reason_of(trial: FrozenTrial) -> str | None:
    """Why a PRUNED trial stopped when not by ASHA (``infeasible: param_count 3.2e+06 > max 2e+06``), else ``None``."""
    return _attr(trial, PRUNED_REASON, str)


def fail_kind_of(trial: FrozenTrial) -> FailKind:
    """``driver`` when the trial failed because its driver was lost or interrupted, ``duplicate``
    for a draw of a configuration that had run (never run itself), else ``trial``."""
    kind = trial.user_attrs.get(FAIL_KIND)
    return "driver" if kind == "driver" else "duplicate" if kind == "duplicate" else "trial"


def warm_start_of(trial: FrozenTrial) -> str | None:
    """``OLD_STUDY#number`` for a trial copied from an earlier study by warm start, else ``None``."""
    return _attr(trial, WARM_START_FROM, str)


def warm_start_copy(trial: FrozenTrial, distributions: Mapping[str, Any], origin: str) -> FrozenTrial:
    """A finished ``trial`` of study ``origin`` as a trial to add to another study (Optuna's
    ``create_trial``): its state, parameters (with the new study's ``distributions``), values,
    intermediate values, constraint values and :data:`CARRIED_OVER` attributes, marked ``warm_start_from``."""
    attrs = {k: v for k, v in trial.user_attrs.items() if k in CARRIED_OVER}
    attrs[WARM_START_FROM] = f"{origin}#{trial.number}"
    # Optuna keeps no values for a PRUNED trial of a multi-objective study.
    values = trial.values if trial.state == TrialState.COMPLETE or len(trial.values or []) == 1 else None
    return optuna.trial.create_trial(state=trial.state, params=dict(trial.params), distributions=dict(distributions),
                                     values=values, intermediate_values=dict(trial.intermediate_values),
                                     user_attrs=attrs, constraints=dict(trial.constraints) or None)


def is_duplicate_draw(trial: FrozenTrial) -> bool:
    """A FAIL trial that only records a duplicate draw (never run)."""
    return trial.state == TrialState.FAIL and fail_kind_of(trial) == "duplicate"


Origin = Literal["run", "warm start", "duplicate draw"]


def origin(trial: FrozenTrial) -> Origin:
    """Where a trial's record comes from: ``warm start`` (a copy of an earlier study's trial,
    :mod:`sweeper.study.warm_start`), ``duplicate draw`` (a FAIL that only records a draw of a
    configuration that had run; never run, :mod:`sweeper.engine.searcher`), else ``run`` (it ran in this
    study). The one rule for "does this trial count": only ``run`` trials count toward a sweep's
    budget, its best, its counts and its figures."""
    if warm_start_of(trial) is not None:
        return "warm start"
    return "duplicate draw" if is_duplicate_draw(trial) else "run"


def ran_here(trial: FrozenTrial) -> bool:
    """``origin(trial) == "run"``: the trial ran in this study."""
    return origin(trial) == "run"


FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)


def counts(trials: Iterable[FrozenTrial]) -> dict[TrialState, int]:
    """How many of ``trials`` that ran in this study (:func:`ran_here`) ended COMPLETE, PRUNED and
    FAIL (every one of the three keys present)."""
    out = dict.fromkeys(FINISHED, 0)
    for t in trials:
        if t.state in out and ran_here(t):
            out[t.state] += 1
    return out


def count_duplicate_draw(study: optuna.Study) -> int:
    """Add one to the study's count of duplicate draws (under the study lock); returns the new count."""
    count = duplicate_draws_of(study.user_attrs) + 1
    study.set_user_attr(DUPLICATE_DRAWS, count)
    return count


def duplicate_draws_of(study_attrs: Mapping[str, Any]) -> int:
    """How many sampled configurations were duplicates of one that had run, in the study's life."""
    return int(study_attrs.get(DUPLICATE_DRAWS) or 0)


def failed_by_itself(trial: FrozenTrial) -> bool:
    """A FAIL trial that failed by itself (a trainer error, a worker lost too often), not by its driver."""
    return trial.state == TrialState.FAIL and fail_kind_of(trial) == "trial"


def driver_of(trial: FrozenTrial) -> str | None:
    """The id of the driver that asked the trial."""
    return _attr(trial, DRIVER_ID, str)


def grid_id_of(trial: FrozenTrial) -> int | None:
    """The grid point the trial runs, ``None`` outside grid search."""
    return _attr(trial, GRID_ID, int)


def retry_of(trial: FrozenTrial) -> int | None:
    """The number of the trial whose parameters this one runs again (after its driver was lost)."""
    return _attr(trial, RETRY_OF, int)


def _attr(trial: FrozenTrial, key: str, kind: Callable[[Any], _T]) -> _T | None:
    return None if (value := trial.user_attrs.get(key)) is None else kind(value)
