"""Warm start: a new study begins with the finished trials of an earlier one that fit its space.

``sweeper launch SPACE.yaml --warm-start OLD_STUDY [--warm-storage URL]`` copies every COMPLETE
and PRUNED trial of ``OLD_STUDY`` whose parameters fit the new search space (each parameter a
value its distribution there can take, and exactly the parameters whose conditions hold) into
the new study with Optuna's ``create_trial``/``add_trials``: parameters, values, learning curve,
history and config, marked ``warm_start_from`` (``OLD_STUDY#number``). So TPE starts informed,
their configurations are not run again (:mod:`sweeper.engine.searcher`'s duplicate check sees them),
and ASHA's rungs start from their curves. They do not count toward ``run_cap``, are never the
new study's best (:func:`sweeper.study.results.ranked_trials`) and the report counts them apart.
Optuna only: no Ray.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import FrozenTrial, TrialState

from sweeper.errors import InputError
from sweeper.study import record
from sweeper.study.constraints import Bound, bounds_of
from sweeper.study.storage import open_storage, redact, study_names

if TYPE_CHECKING:
    from sweeper.spec import Sweep


@dataclass(frozen=True)
class WarmStart:
    """Where the earlier study is: its name, and its storage URL (``None``: the sweep's own)."""

    study: str
    storage: str | None = None

    def url(self, sweep: Sweep) -> str:
        """The earlier study's storage URL."""
        return self.storage or sweep.spec.storage


def check(sweep: Sweep, warm: WarmStart) -> None:
    """Check a warm start before anything is written or started.

    Raises:
        InputError: grid search (it runs every point once, by its own list); the earlier study
            is missing, is the sweep's own study, or optimised other objectives (names, goals or
            order differ).
    """
    url = warm.url(sweep)
    if sweep.spec.method == "grid":
        raise InputError("--warm-start: grid search runs every point of its grid once; warm start is for "
                         "method random or bayes")
    if warm.study == sweep.name and url == sweep.spec.storage:
        raise InputError(f"--warm-start: {warm.study!r} is this sweep's own study; continue it with --resume")
    if warm.study not in study_names(url):
        raise InputError(f"--warm-start: no study {warm.study!r} in {redact(url)}"
                         + ("" if warm.storage else " (give its storage with --warm-storage)"))
    storage = open_storage(url)
    attrs = storage.get_study_user_attrs(storage.get_study_id_from_name(warm.study))
    old = record.stored_objectives(attrs)
    new = [(m.name, m.goal) for m in sweep.objectives]
    if old != new:
        shown = ", ".join(f"{n} ({g})" for n, g in old) or "no sweeper spec"
        raise InputError(f"--warm-start: study {warm.study!r} optimised {shown}; this sweep optimises "
                         + ", ".join(f"{n} ({g})" for n, g in new) + ": their values do not carry over")
    theirs = bounds_of((record.stored_spec(attrs) or {}).get("constraints") or [])
    if set(theirs) != set(sweep.bounds):
        def shown_bounds(bounds: tuple[Bound, ...]) -> str:
            return ", ".join(f"{b.metric} {b.kind} {b.limit:g}" for b in bounds) or "none"

        raise InputError(f"--warm-start: study {warm.study!r} had constraints {shown_bounds(theirs)}; this sweep has "
                         f"{shown_bounds(sweep.bounds)}: its trials' feasibility does not carry over")


def add_warm_trials(study: optuna.Study, sweep: Sweep, warm: WarmStart) -> tuple[int, int]:
    """Copy the earlier study's finished trials that fit ``sweep``'s space into ``study``.

    Returns:
        (trials added, finished trials skipped because they do not fit the space).
    """
    old = optuna.load_study(study_name=warm.study, storage=open_storage(warm.url(sweep)))
    finished = old.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
    copies = [copy for t in finished if (copy := _copy(t, sweep, warm.study)) is not None]
    study.add_trials(copies)
    return len(copies), len(finished) - len(copies)


def _copy(trial: FrozenTrial, sweep: Sweep, origin: str) -> FrozenTrial | None:
    """``trial`` as a finished trial of the new study, or ``None`` when it does not fit its space."""
    space = sweep.space
    dims = {d.name: d for d in space.dimensions}
    if set(trial.params) - set(dims) or any(not _fits(dims[n].distribution, v) for n, v in trial.params.items()):
        return None
    if set(trial.params) != space.existing(trial.params):
        return None  # a parameter missing, or one whose conditions do not hold here
    return record.warm_start_copy(trial, {n: dims[n].distribution for n in trial.params}, origin)


def _fits(distribution: BaseDistribution, value: Any) -> bool:
    """Whether ``distribution`` can take ``value`` (Optuna's external representation)."""
    if isinstance(distribution, CategoricalDistribution):
        return any(value == c and type(value) is type(c) for c in distribution.choices)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    if isinstance(distribution, IntDistribution):
        return (float(value).is_integer() and distribution.low <= value <= distribution.high
                and (int(value) - distribution.low) % distribution.step == 0)
    assert isinstance(distribution, FloatDistribution)
    if not distribution.low <= value <= distribution.high:
        return False
    step = distribution.step
    return step is None or abs((value - distribution.low) / step - round((value - distribution.low) / step)) < 1e-8
