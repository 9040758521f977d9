"""Readers of a study: the best trials, exporting a trial's config, listing studies.

A study holds everything these need (the spec and each trial's full training config), so
nothing but the storage URL is required; they read it through :mod:`sweeper.record` and
import no Ray. Only COMPLETE trials are ever "best": a PRUNED trial's value is that of an
unfinished run, a FAIL trial has none.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

import sweeper
from sweeper import record
from sweeper.errors import InputError
from sweeper.storage import open_storage, redact, study_names


def ranked_trials(study: optuna.Study, trials: list[FrozenTrial] | None = None) -> list[FrozenTrial]:
    """COMPLETE trials, best first (by the study's direction); ties keep trial order."""
    trials = trials if trials is not None else study.get_trials(deepcopy=False)
    complete = [t for t in trials if t.state == TrialState.COMPLETE and t.value is not None]
    sign = -1.0 if study.direction == optuna.study.StudyDirection.MAXIMIZE else 1.0
    return sorted(complete, key=lambda t: (sign * float(t.value or 0.0), t.number))


def export_config(study: optuna.Study, url: str, rank: int = 1) -> dict[str, Any]:
    """The ``rank``-th best trial's full training config, with where it came from.

    The result is valid input for ``sweeper train`` and ``sweeper retrain``: ``trainer``,
    ``params``, ``data``, ``epochs``, ``seed``, plus ``provenance`` (study, trial number,
    rank, storage without password, metric, goal, value, epochs run, versions, time).

    Raises:
        InputError: ``rank`` is below 1 or there are fewer COMPLETE trials than ``rank``.
    """
    if rank < 1:
        raise InputError(f"--rank: {rank} must be 1 or more")
    ranked = ranked_trials(study)
    if len(ranked) < rank:
        raise InputError(f"--rank: {rank} exceeds the {len(ranked)} COMPLETE trial(s) of study "
                         f"{study.study_name!r} (PRUNED and FAIL trials are never best)")
    trial = ranked[rank - 1]
    config = record.config_of(trial)
    if config is None:
        raise InputError(f"study: trial {trial.number} of {study.study_name!r} has no stored config "
                         "(was the study made by sweeper?)")
    metric, goal = record.stored_metric(study.user_attrs)
    return {
        **config,
        "provenance": {
            "study": study.study_name,
            "trial": trial.number,
            "rank": rank,
            "storage": redact(url),
            "metric": metric,
            "goal": goal,
            "value": trial.value,
            "epochs_run": record.recorded_epochs_run(trial),
            "sweeper_version": sweeper.__version__,
            "code_version": record.code_version_of(study.user_attrs),
            "exported_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        },
    }


@dataclass(frozen=True)
class StudyRow:
    """One line of ``sweeper studies``.

    Attributes:
        name: the study name.
        method: ``random`` | ``bayes`` | ``grid`` ("" for studies not made by sweeper).
        counts: trials by state name (``COMPLETE``, ``PRUNED``, ``FAIL``, ``RUNNING``, ``WAITING``).
        best: the best COMPLETE value, ``None`` without one.
        metric: the metric's name and goal, as ``val_accuracy (maximize)``.
        last_activity: when a trial last started or ended (UTC), ``None`` without trials.
    """

    name: str
    method: str
    counts: dict[str, int]
    best: float | None
    metric: str
    last_activity: dt.datetime | None


def list_studies(url: str) -> list[StudyRow]:
    """Every study in the storage, read once each.

    Raises:
        InputError: the storage does not answer.
    """
    rows: list[StudyRow] = []
    if not study_names(url):
        return rows
    storage = open_storage(url)
    for summary in optuna.get_all_study_summaries(storage, include_best_trial=False):
        study = optuna.load_study(study_name=summary.study_name, storage=storage)
        trials = study.get_trials(deepcopy=False)
        counts: dict[str, int] = {}
        for t in trials:
            counts[t.state.name] = counts.get(t.state.name, 0) + 1
        ranked = ranked_trials(study, trials)
        spec = record.stored_spec(summary.user_attrs) or {}
        metric, _ = record.stored_metric(summary.user_attrs)
        times = [x for t in trials for x in (t.datetime_start, t.datetime_complete) if x is not None]
        rows.append(StudyRow(
            name=summary.study_name,
            method=str(spec.get("method", "")),
            counts=counts,
            best=ranked[0].value if ranked else None,
            metric=f"{metric or 'value'} ({summary.direction.name.lower()})",
            last_activity=max(times) if times else None,
        ))
    return rows
