"""Readers of a study: the best trials, exporting a trial's config, listing studies.

A study holds everything these need (the spec and each trial's full training config), so
nothing but the storage URL is required; they read it through :mod:`sweeper.study.record` and
import no Ray. Only COMPLETE trials are ever "best": a PRUNED trial's value is that of an
unfinished run, a FAIL trial has none. In a multi-objective study "best" is the Pareto front of
the COMPLETE trials (as Optuna's ``study.best_trials``): those that no other COMPLETE trial
matches or beats in every objective while beating in one. With ``constraints``, only feasible
trials are best (Optuna's rule in ``best_trial``/``best_trials``); when none is,
:func:`least_violating` names the trial nearest to feasible, and nothing infeasible is exported
as "best".
"""

from __future__ import annotations

import copy
import datetime as dt
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

import sweeper
from sweeper.errors import InputError
from sweeper.study import record
from sweeper.study.constraints import broken, excess, is_feasible
from sweeper.study.pareto import minimised, non_dominated_fronts
from sweeper.study.storage import open_storage, redact, study_names


def ranked_trials(study: optuna.Study, trials: list[FrozenTrial] | None = None) -> list[FrozenTrial]:
    """Feasible COMPLETE trials (warm-start copies left out), best first (by the study's
    direction); ties keep trial order. In a multi-objective study: the Pareto front of those (the
    set Optuna's ``study.best_trials`` gives, less warm-start copies), best first by the first
    objective, then by trial number."""
    trials = trials if trials is not None else study.get_trials(deepcopy=False)
    # A warm-start copy ran in another study: never this one's best (sweeper.study.warm_start).
    complete = [t for t in trials if t.state == TrialState.COMPLETE and t.values is not None
                and record.ran_here(t) and is_feasible(t)]
    goals = [d.name.lower() for d in study.directions]
    points = [minimised(t.values, goals) for t in complete]
    if len(goals) > 1:
        front = non_dominated_fronts(points)
        complete = [complete[i] for i in front[0]] if front else []
        points = [minimised(t.values, goals) for t in complete]
    order = sorted(range(len(complete)), key=lambda i: (points[i][0], complete[i].number))
    return [complete[i] for i in order]


def infeasible_trials(trials: list[FrozenTrial]) -> list[FrozenTrial]:
    """The finished (COMPLETE or PRUNED) trials of this study (warm-start copies left out) that
    break a constraint, least violating first
    (by Optuna's measure: the sum of positive constraint values), then by trial number."""
    out = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED) and not is_feasible(t)
           and record.ran_here(t)]
    return sorted(out, key=lambda t: (excess(t), t.number))


def least_violating(study: optuna.Study) -> FrozenTrial | None:
    """When the study has constraints and no feasible COMPLETE trial: its finished trial that
    breaks them least, a COMPLETE one before a PRUNED one of equal excess (``None`` when some
    COMPLETE trial is feasible, or no finished trial breaks a constraint)."""
    trials = study.get_trials(deepcopy=False)
    if ranked_trials(study, trials):
        return None
    ordered = sorted(infeasible_trials(trials), key=lambda t: (excess(t), t.state != TrialState.COMPLETE, t.number))
    return ordered[0] if ordered else None


def is_multi_objective(study: optuna.Study) -> bool:
    """True for a study of two or more directions."""
    return len(study.directions) > 1


def pareto_front(study: optuna.Study) -> list[dict[str, Any]]:
    """The Pareto front of a study's COMPLETE trials, best first by the first objective: per
    trial ``{"trial": number, "values": {metric: value}, "epochs_run": n, "params": {...}}``."""
    names = [name for name, _ in record.stored_objectives(study.user_attrs)]
    return [{"trial": t.number,
             "values": dict(zip(names or [f"objective{i}" for i in range(len(t.values))], t.values, strict=True)),
             "epochs_run": record.recorded_epochs_run(t), "params": record.trained_params(t)}
            for t in ranked_trials(study)]


def export_config(study: optuna.Study, url: str, rank: int = 1, trial: int | None = None) -> dict[str, Any]:
    """The full training config of the ``rank``-th best trial, or of trial number ``trial``,
    with where it came from.

    The result is valid input for ``sweeper train`` and ``sweeper retrain``: ``trainer``,
    ``params``, ``data``, ``epochs``, ``seed``, for a population-based trial its ``schedule``
    (:mod:`sweeper.engine.population`; ``params`` are then the last step's), plus ``provenance`` (study, trial number,
    rank (``None`` for a trial chosen by number), storage without password, metric(s), goal(s),
    value(s), epochs run, versions, time).

    Raises:
        InputError: ``rank`` is below 1 or there are fewer COMPLETE trials than ``rank``; a
            multi-objective study given a rank (its front has no order: choose a ``trial``);
            ``trial`` is not a COMPLETE trial of the study; its stored config is not a valid
            training config or is not what the study's spec runs
            (:func:`sweeper.spec.check_trial_config`: read back from a study, it is untrusted).
    """
    chosen, rank_of = _chosen_trial(study, rank, trial)
    return {**_checked_config(study, chosen), "provenance": _provenance(study, chosen, rank_of, url)}


def _chosen_trial(study: optuna.Study, rank: int, trial: int | None) -> tuple[FrozenTrial, int | None]:
    """The trial :func:`export_config` exports and its rank (``None`` when chosen by number)."""
    if trial is not None:
        chosen = next((t for t in study.get_trials(deepcopy=False) if t.number == trial), None)
        if chosen is None or chosen.state != TrialState.COMPLETE:
            state = "no" if chosen is None else f"a {chosen.state.name}"
            raise InputError(f"--trial: {trial} is {state} trial of study {study.study_name!r}; "
                             "choose a COMPLETE one (PRUNED and FAIL trials did not finish training)")
        return chosen, None
    if is_multi_objective(study):
        raise InputError(f"--rank: study {study.study_name!r} has {len(study.directions)} objectives, and its "
                         "Pareto front has no first; list it with `sweeper export STUDY --pareto` and "
                         "choose one with --trial N")
    if rank < 1:
        raise InputError(f"--rank: {rank} must be 1 or more")
    ranked = ranked_trials(study)
    nearest = least_violating(study) if not ranked else None
    if nearest is not None:
        then = (f"export it knowingly with --trial {nearest.number}" if nearest.state == TrialState.COMPLETE
                else "it was PRUNED, so loosen the constraints or search smaller models")
        raise InputError(f"--rank: no COMPLETE trial of study {study.study_name!r} meets its constraints; the "
                         f"least violating is trial {nearest.number} ({', '.join(broken(nearest))}): {then}")
    if len(ranked) < rank:
        raise InputError(f"--rank: {rank} exceeds the {len(ranked)} feasible COMPLETE trial(s) of study "
                         f"{study.study_name!r} (PRUNED and FAIL trials are never best)")
    return ranked[rank - 1], rank


def _checked_config(study: optuna.Study, chosen: FrozenTrial) -> dict[str, Any]:
    """The trial's stored config (a population-based trial's with its schedule's last values),
    checked against the study's stored spec (:func:`sweeper.spec.check_trial_config`)."""
    config = record.config_of(chosen)
    if config is None:
        raise InputError(f"study: trial {chosen.number} of {study.study_name!r} has no stored config "
                         "(was the study made by sweeper?)")
    if schedule := record.schedule_of(chosen):
        # A population-based trial ends with the last step's values; its weights began with the
        # first step's seed. `sweeper train`/`retrain` replay the whole schedule (sweeper.trial.replay).
        final = dict(config["params"])
        for step in schedule:  # each step names what it changed
            final.update(copy.deepcopy(step["params"]))
        config = {**config, "params": final, "seed": schedule[0].get("seed", config["seed"]), "schedule": schedule}
    from sweeper.spec import check_trial_config, stored_space

    # A population-based trial's params changed along its schedule, and a warm-start copy's were
    # decoded by its own study's space: the draw is compared for the others.
    stored = record.stored_spec(study.user_attrs)
    space = stored_space(stored.get("parameters") or {}) if stored else None
    drawn = (space, chosen.params) if space and not schedule and record.warm_start_of(chosen) is None else None
    # Its data must be the stored spec's, a warm-start copy's too: `warm_start_from` is a trial
    # attribute anyone who can write the study can set, so it exempts nothing that picks files.
    check_trial_config(config, stored, f"trial {chosen.number} of {study.study_name!r}", drawn, check_data=True)
    return config


def _provenance(study: optuna.Study, chosen: FrozenTrial, rank_of: int | None, url: str) -> dict[str, Any]:
    """Where an exported config came from (see :func:`export_config`)."""
    objectives = record.stored_objectives(study.user_attrs)
    metric, goal = record.stored_metric(study.user_attrs)
    provenance: dict[str, Any] = {
        "study": study.study_name,
        "trial": chosen.number,
        "rank": rank_of,
        "storage": redact(url),
        "metric": metric,
        "goal": goal,
        "value": chosen.values[0] if chosen.values else None,
    }
    if chosen.constraints:  # Optuna's constraint values (<= 0: met)
        provenance["constraints"] = dict(chosen.constraints)
        provenance["feasible"] = is_feasible(chosen)
    if len(objectives) > 1:
        provenance = {**{k: v for k, v in provenance.items() if k not in ("metric", "goal", "value")},
                      "metrics": [{"name": n, "goal": g} for n, g in objectives],
                      "values": dict(zip([n for n, _ in objectives], chosen.values or [], strict=False))}
    return {
        **provenance,
        "epochs_run": record.recorded_epochs_run(chosen),
        "sweeper_version": sweeper.__version__,
        "code_version": record.code_version_of(study.user_attrs),
        "exported_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }


@dataclass(frozen=True)
class StudyRow:
    """One line of ``sweeper studies``.

    Attributes:
        name: the study name.
        method: ``random`` | ``bayes`` | ``grid`` ("" for studies not made by sweeper).
        counts: trials by state name (``COMPLETE``, ``PRUNED``, ``FAIL``, ``RUNNING``, ``WAITING``).
        best: the best COMPLETE value, ``None`` without one or with several objectives.
        metric: the metric's name and goal, as ``val_accuracy (maximize)``; with several
            objectives each, comma-separated.
        last_activity: when a trial last started or ended (UTC), ``None`` without trials.
        front: the Pareto front's size in a multi-objective study, else ``None``.
    """

    name: str
    method: str
    counts: dict[str, int]
    best: float | None
    metric: str
    last_activity: dt.datetime | None
    front: int | None = None


def list_studies(url: str) -> list[StudyRow]:
    """Every study in the storage, read once each (an SQLite file read-only).

    Raises:
        InputError: the storage does not answer or is not a study database.
    """
    rows: list[StudyRow] = []
    if not study_names(url, read_only=True):
        return rows
    storage = open_storage(url, read_only=True)
    for summary in optuna.get_all_study_summaries(storage, include_best_trial=False):
        study = optuna.load_study(study_name=summary.study_name, storage=storage)
        trials = study.get_trials(deepcopy=False)
        counts: dict[str, int] = {}
        for t in trials:
            counts[t.state.name] = counts.get(t.state.name, 0) + 1
        ranked = ranked_trials(study, trials)
        spec = record.stored_spec(summary.user_attrs) or {}
        objectives = record.stored_objectives(summary.user_attrs) or [
            (f"value{i}" if len(study.directions) > 1 else "value", d.name.lower())
            for i, d in enumerate(study.directions)]
        times = [x for t in trials for x in (t.datetime_start, t.datetime_complete) if x is not None]
        multi = len(study.directions) > 1
        rows.append(StudyRow(
            name=summary.study_name,
            method=str(spec.get("method", "")),
            counts=counts,
            best=ranked[0].values[0] if ranked and not multi else None,
            metric=", ".join(f"{m} ({g})" for m, g in objectives),
            last_activity=max(times) if times else None,
            front=len(ranked) if multi else None,
        ))
    return rows
