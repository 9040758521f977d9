"""Early stopping: Ray Tune's ASHA for one objective, multi-objective ASHA for several; both
remember their own decisions and are rebuilt from a study's curves. With ``constraints``, each
also stops a trial that breaks a bound that cannot recover (:mod:`sweeper.study.constraints`), and
:class:`FeasibilityScheduler` does only that when the sweep has no ASHA."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeAlias

from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, TrialScheduler

from sweeper.engine.population import RecordingPBT, make_population_scheduler
from sweeper.study import record
from sweeper.study.constraints import Bound, final_violation, judged
from sweeper.study.pareto import Vector, dominates, minimised, rank_order

if TYPE_CHECKING:
    from optuna.trial import FrozenTrial
    from ray.tune.experiment import Trial

    from sweeper.engine.pb2 import RecordingPB2
    from sweeper.spec import Sweep


class LiveTrials:
    """Ray Tune's choice of the next trial to start, among the trials that have not ended.

    Ray's ``FIFOScheduler.choose_trial_to_run`` (ASHA's too) looks through every trial of the
    experiment for a PENDING one, then for a PAUSED one, at every step of Tune's event loop, and
    Tune keeps every trial it ran: at 10,000 trials that scan is milliseconds per step, the
    largest part of Tune's own cost per trial growing with the sweep (``benchmarks/scale.py``).
    Mixed in before a Ray scheduler, this keeps the trials added (``on_trial_add``, Tune's order)
    until they end (TERMINATED or ERROR) and looks only among them: the same choice, in the same
    order, at a cost of the trials running and waiting.
    """

    _ended = ("TERMINATED", "ERROR")

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._live: dict[Trial, None] = {}  # insertion-ordered, as Tune's trial list

    def on_trial_add(self, tune_controller: Any, trial: Trial) -> None:
        super().on_trial_add(tune_controller, trial)  # type: ignore[misc]
        # A trial whose worker was lost is added again, and Tune moves it to the end of its list.
        self._live.pop(trial, None)
        self._live[trial] = None

    def choose_trial_to_run(self, tune_controller: Any) -> Trial | None:
        for trial in [t for t in self._live if t.status in self._ended]:
            del self._live[trial]
        for status in ("PENDING", "PAUSED"):
            for trial in self._live:
                if trial.status == status:
                    return trial
        return None


class Fifo(LiveTrials, FIFOScheduler):
    """Ray Tune's first-in-first-out scheduler (no early stopping), choosing among live trials only."""


class RecordingASHA(LiveTrials, ASHAScheduler):
    """Ray's ASHA scheduler (Li et al. 2020, "A System for Massively Parallel Hyperparameter
    Tuning") that remembers which trials it stopped, and can be given the learning curves of
    earlier trials.

    Ray marks a trial TERMINATED both when it finished and when a scheduler stopped it;
    the recorder asks :meth:`stopped` to tell PRUNED from COMPLETE. On resume,
    :meth:`replay` feeds the study's curves through the scheduler, so the cut-offs are the
    ones the interrupted sweep had.

    Args:
        time_attr: the result key that counts progress (``"epoch"``: rungs are in epochs).
        metric: the result key ASHA judges (the spec's ``metric.name``).
        mode: ``"max"`` or ``"min"``, the metric's goal.
        best_so_far: judge a trial by its best value so far rather than its value at the rung
            (W&B's hyperband without ``strict: true``; see :class:`sweeper.spec.Asha`).
        bounds: outcome constraints (:mod:`sweeper.study.constraints`): a trial that breaks one
            that cannot recover stops at once; one that may recover ranks below feasible ones.
        **kwargs: Ray's ``ASHAScheduler`` arguments: ``max_t`` and ``grace_period`` (epochs),
            ``reduction_factor``, ``brackets``, ``stop_last_trials``.
    """

    def __init__(self, *, time_attr: str, metric: str, mode: str, best_so_far: bool = False,
                 bounds: Sequence[Bound] = (), **kwargs: Any):
        super().__init__(time_attr=time_attr, metric=metric, mode=mode, **kwargs)
        self._replayed_keys = (time_attr, metric)
        self._sign = 1.0 if mode == "max" else -1.0
        self._best_so_far = best_so_far
        self._bounds = tuple(bounds)
        self._best: dict[str, float] = {}
        self._stopped: set[str] = set()
        self._infeasible: dict[str, str] = {}

    def _judged(self, trial_id: str, result: Mapping[str, Any]) -> dict[str, Any]:
        """``result`` with the metric ASHA judges: the trial's best value so far when ``best_so_far``;
        with constraints, a value below every feasible one while the result breaks a bound
        (:func:`sweeper.study.constraints.judged`)."""
        metric = self._replayed_keys[1]
        if metric not in result or not (self._best_so_far or self._bounds):
            return dict(result)
        value = float(result[metric])
        if self._best_so_far:
            best = self._best.get(trial_id)
            if best is None or self._sign * value > self._sign * best:
                best = self._best[trial_id] = value
            value = best
        if self._bounds:
            value = judged(self._bounds, result, value, maximize=self._sign > 0)
        return {**result, metric: value}

    def on_trial_result(self, tune_controller: Any, trial: Trial, result: dict[str, Any]) -> str:
        reason = final_violation(self._bounds, result) if self._bounds else None
        if reason is not None:  # its rung value is recorded by on_trial_complete, as for any stop
            self._infeasible[trial.trial_id] = reason
            self._stopped.add(trial.trial_id)
            return TrialScheduler.STOP
        decision: str = super().on_trial_result(tune_controller, trial, self._judged(trial.trial_id, result))
        if decision == TrialScheduler.STOP:
            self._stopped.add(trial.trial_id)
        return decision

    def on_trial_complete(self, tune_controller: Any, trial: Trial, result: dict[str, Any]) -> None:
        super().on_trial_complete(tune_controller, trial, self._judged(trial.trial_id, result))
        self._best.pop(trial.trial_id, None)

    def on_trial_remove(self, tune_controller: Any, trial: Trial) -> None:
        super().on_trial_remove(tune_controller, trial)
        self._best.pop(trial.trial_id, None)

    def stopped(self, trial_id: str) -> bool:
        """True when this scheduler decided to stop the trial."""
        return trial_id in self._stopped

    def infeasible(self, trial_id: str) -> str | None:
        """``infeasible: <bound>`` when the scheduler stopped the trial for a broken bound, else ``None``."""
        return self._infeasible.get(trial_id)

    def replay_study(self, trials: Sequence[FrozenTrial]) -> None:
        """:meth:`replay` the curves of a study's trials (on resume, or after a warm start): each
        trial's intermediate values, or with constraints each epoch's metrics (a trial that breaks
        a bound ranks last at a rung, so ASHA judged all of them)."""
        self.replay({_name(t): ({int(r["epoch"]): r for r in record.history_of(t)}
                                if self._bounds and record.history_of(t) else t.intermediate_values)
                     for t in trials if t.intermediate_values})

    def replay(self, curves: Mapping[str, Mapping[int, float | Mapping[str, float]]]) -> None:
        """Feed earlier trials' curves (``{name: {epoch: metric value}}``, or ``{name: {epoch:
        that epoch's metrics}}`` when the sweep has constraints) through the scheduler.

        Each curve goes through ASHA's public hooks as Tune drove them live: the trial is added,
        each epoch's result is reported in order, and the trial completes with its last result;
        ASHA's rungs then hold every value they held live. The decisions are not recorded.
        """
        time_attr, metric = self._replayed_keys
        for name, curve in curves.items():
            if not curve:
                continue
            rows = {e: {time_attr: e, **(dict(v) if isinstance(v, Mapping) else {metric: v})} for e, v in curve.items()}
            if any(metric not in row for row in rows.values()):
                continue
            stand_in: Any = _ReplayedTrial(name)
            ASHAScheduler.on_trial_add(self, None, stand_in)  # type: ignore[arg-type]  # a past trial: not live
            for epoch in sorted(rows):
                if self._bounds and final_violation(self._bounds, rows[epoch]):
                    break  # stopped there live: on_trial_result never reached ASHA
                ASHAScheduler.on_trial_result(self, None, stand_in, self._judged(name, rows[epoch]))  # type: ignore[arg-type]
            last = max(rows)
            self.on_trial_complete(None, stand_in, rows[last])


class MultiObjectiveASHA(LiveTrials, FIFOScheduler):
    """ASHA whose rung decisions weigh every objective at once: multi-objective ASHA (Schmucker
    et al. 2021, "Multi-objective Asynchronous Successive Halving"; Syne Tune's ``MOASHA``).

    One bracket, as Ray's ASHA by default: rungs at ``grace_period * reduction_factor**k``
    epochs below ``max_t``. When a trial reaches a rung, its objective vector there joins the
    vectors of the trials that reached the rung before it; all of them are ranked by
    non-dominated sorting, ties within a front broken by crowding distance (NSGA-II's order,
    one of the two MO-ASHA offers; :func:`sweeper.study.pareto.rank_order`). The trial goes on when it
    ranks among the top ``max(1, floor(m / reduction_factor))`` of those ``m`` trials, or when no
    trial at the rung dominates it; else it stops. With one objective this is ASHA's rule of
    promoting the top ``1/reduction_factor`` (Li et al. 2020), a tie with the best included. The
    second clause is sweeper's: at a rung of few trials most lie on the first front, where
    crowding distance cannot order two or three points (all get infinity) and the cut would fall
    by arrival order. A trial is judged once per rung, on its values at that epoch.

    Like :class:`RecordingASHA`, it remembers whom it stopped (:meth:`stopped`) and rebuilds its
    rungs from earlier curves (:meth:`replay`).

    Args:
        time_attr: the result key that counts progress (``"epoch"``).
        metrics: the objectives' result keys, in the spec's order.
        goals: ``"maximize"`` or ``"minimize"`` for each of ``metrics``.
        max_t: a trial's most epochs; no rung at or above it.
        grace_period: the first rung, in epochs.
        reduction_factor: the rungs' ratio, and the share ``1/reduction_factor`` that goes on.
        bounds: outcome constraints, as for :class:`RecordingASHA`.
    """

    def __init__(self, *, time_attr: str, metrics: Sequence[str], goals: Sequence[str], max_t: float,
                 grace_period: float, reduction_factor: float, bounds: Sequence[Bound] = ()):
        super().__init__()
        self._bounds = tuple(bounds)
        self._infeasible: dict[str, str] = {}
        self._time_attr, self._metrics, self._goals = time_attr, tuple(metrics), tuple(goals)
        self._rf, self._max_t = float(reduction_factor), float(max_t)
        levels = [float(grace_period)]
        while levels[-1] * self._rf < self._max_t:
            levels.append(levels[-1] * self._rf)
        self._rungs: list[tuple[float, dict[str, Vector]]] = [(level, {}) for level in levels if level < self._max_t]
        self._stopped: set[str] = set()

    @property
    def rungs(self) -> list[tuple[float, dict[str, Vector]]]:
        """Each rung's epoch and the minimised vectors recorded there, by trial id (lowest rung first)."""
        return self._rungs

    def decide(self, trial_id: str, epoch: float, values: Sequence[float]) -> str:
        """Record ``values`` (the objectives, in the sweep's order) of trial ``trial_id`` at ``epoch``
        on each rung it reached and has not been judged on; ``STOP`` when a rung drops it or it
        reached ``max_t``, else ``CONTINUE``."""
        point = minimised(values, self._goals)
        action = TrialScheduler.CONTINUE
        for level, recorded in self._rungs:
            if epoch < level or trial_id in recorded:
                continue
            recorded[trial_id] = point
            if not self._promoted(trial_id, recorded):
                action = TrialScheduler.STOP
        if epoch >= self._max_t:
            action = TrialScheduler.STOP
        return action

    def _promoted(self, trial_id: str, recorded: dict[str, Vector]) -> bool:
        """Whether ``trial_id`` goes on from a rung holding ``recorded`` (itself included): it ranks
        among the top ``max(1, floor(m / reduction_factor))`` of the ``m``, or no trial there
        dominates it."""
        ids = list(recorded)
        points = [recorded[t] for t in ids]
        keep = max(1, math.floor(len(ids) / self._rf))
        if trial_id in {ids[i] for i in rank_order(points)[:keep]}:
            return True
        return not any(dominates(p, recorded[trial_id]) for p in points)

    def _values(self, result: dict[str, Any]) -> list[float] | None:
        if self._time_attr not in result or any(m not in result for m in self._metrics):
            return None
        return [float(result[m]) for m in self._metrics]

    def on_trial_result(self, tune_controller: Any, trial: Trial, result: dict[str, Any]) -> str:
        reason = final_violation(self._bounds, result) if self._bounds else None
        if reason is not None:
            self._infeasible[trial.trial_id] = reason
            self._stopped.add(trial.trial_id)
            return TrialScheduler.STOP
        values = self._values(result)
        if values is None:
            return TrialScheduler.CONTINUE
        decision = self.decide(trial.trial_id, float(result[self._time_attr]), values)
        if decision == TrialScheduler.STOP:
            self._stopped.add(trial.trial_id)
        return decision

    def on_trial_complete(self, tune_controller: Any, trial: Trial, result: dict[str, Any]) -> None:
        values = self._values(result)
        if values is not None and trial.trial_id not in self._infeasible:  # an infeasible one joins no rung
            self.decide(trial.trial_id, float(result[self._time_attr]), values)

    def stopped(self, trial_id: str) -> bool:
        """True when this scheduler decided to stop the trial."""
        return trial_id in self._stopped

    def infeasible(self, trial_id: str) -> str | None:
        """``infeasible: <bound>`` when the scheduler stopped the trial for a broken bound, else ``None``."""
        return self._infeasible.get(trial_id)

    def replay_study(self, trials: Sequence[FrozenTrial]) -> None:
        """:meth:`replay` the objective curves of a study's trials (:func:`sweeper.study.record.objective_curve_of`).
        A trial stopped as infeasible was stopped at its last epoch before the rungs judged it
        there, so that epoch is left out."""
        self.replay({_name(t): {e: v for e, v in curve.items() if not (record.pruned_reason_of(t) and e == max(curve))}
                     for t in trials if (curve := record.objective_curve_of(t))})

    def replay(self, curves: Mapping[str, Mapping[int, Sequence[float]]]) -> None:
        """Feed earlier trials' curves (``{name: {epoch: objective values}}``) through the rungs,
        epoch by epoch in each trial's order, as they were recorded live; decisions are not kept."""
        for name, curve in curves.items():
            for epoch in sorted(curve):
                self.decide(name, float(epoch), curve[epoch])


class FeasibilityScheduler(LiveTrials, FIFOScheduler):
    """No early stopping but the constraints': a trial that breaks a bound that cannot recover
    (:func:`sweeper.study.constraints.final_violation`) stops at once; every other trial runs all its
    epochs (a sweep with ``constraints`` and no ASHA).

    Args:
        bounds: the spec's outcome constraints (:func:`sweeper.study.constraints.bounds_of`).
    """

    def __init__(self, bounds: Sequence[Bound]):
        super().__init__()
        self._bounds = tuple(bounds)
        self._infeasible: dict[str, str] = {}

    def on_trial_result(self, tune_controller: Any, trial: Trial, result: dict[str, Any]) -> str:
        reason = final_violation(self._bounds, result)
        if reason is None:
            return TrialScheduler.CONTINUE
        self._infeasible[trial.trial_id] = reason
        return TrialScheduler.STOP

    def stopped(self, trial_id: str) -> bool:
        """True when the trial was stopped for a broken bound."""
        return trial_id in self._infeasible

    def infeasible(self, trial_id: str) -> str | None:
        """``infeasible: <bound>`` when the trial was stopped for a broken bound, else ``None``."""
        return self._infeasible.get(trial_id)

    def replay_study(self, trials: Sequence[FrozenTrial]) -> None:
        """Nothing to rebuild: each decision looks at one result only."""

    def replay(self, curves: Mapping[str, Any]) -> None:
        """Nothing to rebuild: each decision looks at one result only."""


Scheduler: TypeAlias = "RecordingASHA | MultiObjectiveASHA | FeasibilityScheduler | RecordingPBT | RecordingPB2"


@dataclass(frozen=True)
class _ReplayedTrial:
    trial_id: str


def _name(trial: FrozenTrial) -> str:
    """The name a replayed study trial goes by in a scheduler's rungs."""
    return f"study-trial-{trial.number}"


def make_scheduler(sweep: Sweep) -> Scheduler | None:
    """The sweep's early stopping with ``epoch`` as its time (grace period and reduction factor
    from ``scheduler`` or W&B's ``early_terminate``; ``max_t`` the sweep's ``epochs``), or ``None``:
    Ray's ASHA on the metric (judging W&B's way unless ``strict``), or, with several
    ``metrics``, :class:`MultiObjectiveASHA` on all of them; each with the sweep's constraints.
    Without ASHA, a sweep with constraints gets :class:`FeasibilityScheduler`; ``scheduler: {type:
    pbt | pb2}`` gets Ray's population-based training (:mod:`sweeper.engine.population`,
    :mod:`sweeper.engine.pb2`)."""
    if sweep.population is not None and sweep.population.kind == "pb2":
        from sweeper.engine.pb2 import make_pb2  # scikit-learn and SciPy: imported for PB2 only

        return make_pb2(sweep, sweep.population)
    if sweep.population is not None:
        return make_population_scheduler(sweep, sweep.population)
    if sweep.asha is None:
        return FeasibilityScheduler(sweep.bounds) if sweep.bounds else None
    objectives = sweep.objectives
    if len(objectives) > 1:
        return MultiObjectiveASHA(time_attr="epoch", metrics=[m.name for m in objectives],
                                  goals=[m.goal for m in objectives], max_t=sweep.max_epochs,
                                  grace_period=sweep.asha.grace_period, reduction_factor=sweep.asha.reduction_factor,
                                  bounds=sweep.bounds)
    return RecordingASHA(
        time_attr="epoch", metric=sweep.spec.metric.name, mode="max" if sweep.spec.metric.goal == "maximize" else "min",
        max_t=sweep.max_epochs, grace_period=sweep.asha.grace_period, reduction_factor=sweep.asha.reduction_factor,
        best_so_far=sweep.asha.best_so_far, bounds=sweep.bounds,
    )
