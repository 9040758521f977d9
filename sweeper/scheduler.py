"""Early stopping: Ray Tune's ASHA, remembering its own decisions and rebuilt from a study's curves."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ray.tune.schedulers import ASHAScheduler, TrialScheduler

if TYPE_CHECKING:
    from ray.tune.experiment import Trial

    from sweeper.spec import Sweep


class RecordingASHA(ASHAScheduler):
    """Ray's ASHA scheduler (Li et al. 2020, "A System for Massively Parallel Hyperparameter
    Tuning") that remembers which trials it stopped, and can be given the learning curves of
    earlier trials.

    Ray marks a trial TERMINATED both when it finished and when a scheduler stopped it;
    the recorder asks :meth:`stopped` to tell PRUNED from COMPLETE. On resume,
    :meth:`replay` feeds the study's curves through the scheduler, so the cut-offs are the
    ones the interrupted sweep had.
    """

    def __init__(self, *, time_attr: str, metric: str, mode: str, best_so_far: bool = False, **kwargs: Any):
        super().__init__(time_attr=time_attr, metric=metric, mode=mode, **kwargs)
        self._replayed_keys = (time_attr, metric)
        self._sign = 1.0 if mode == "max" else -1.0
        self._best_so_far = best_so_far
        self._best: dict[str, float] = {}
        self._stopped: set[str] = set()

    def _judged(self, trial_id: str, result: dict[str, Any]) -> dict[str, Any]:
        """``result`` with the metric ASHA judges: the trial's best value so far when ``best_so_far``."""
        metric = self._replayed_keys[1]
        if not self._best_so_far or metric not in result:
            return result
        value = float(result[metric])
        best = self._best.get(trial_id)
        if best is None or self._sign * value > self._sign * best:
            best = self._best[trial_id] = value
        return {**result, metric: best}

    def on_trial_result(self, tune_controller: Any, trial: Trial, result: dict[str, Any]) -> str:
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

    def replay(self, curves: dict[str, dict[int, float]]) -> None:
        """Feed earlier trials' curves (``{name: {epoch: metric value}}``) through the scheduler.

        Each curve goes through ASHA's public hooks as Tune drove them live: the trial is added,
        each epoch's result is reported in order, and the trial completes with its last result;
        ASHA's rungs then hold every value they held live. The decisions are not recorded.
        """
        time_attr, metric = self._replayed_keys
        for name, curve in curves.items():
            if not curve:
                continue
            stand_in: Any = _ReplayedTrial(name)
            self.on_trial_add(None, stand_in)  # type: ignore[arg-type]
            for epoch in sorted(curve):
                judged = self._judged(name, {time_attr: epoch, metric: curve[epoch]})
                ASHAScheduler.on_trial_result(self, None, stand_in, judged)  # type: ignore[arg-type]
            last = max(curve)
            self.on_trial_complete(None, stand_in, {time_attr: last, metric: curve[last]})


@dataclass(frozen=True)
class _ReplayedTrial:
    trial_id: str


def make_scheduler(sweep: Sweep) -> RecordingASHA | None:
    """ASHA on the sweep's metric with ``epoch`` as its time (grace period and reduction factor
    from ``scheduler`` or W&B's ``early_terminate``, judging W&B's way unless ``strict``; ``max_t``
    the sweep's ``epochs``), or ``None``."""
    if sweep.asha is None:
        return None
    return RecordingASHA(
        time_attr="epoch", metric=sweep.spec.metric.name, mode="max" if sweep.spec.metric.goal == "maximize" else "min",
        max_t=sweep.max_epochs, grace_period=sweep.asha.grace_period, reduction_factor=sweep.asha.reduction_factor,
        best_so_far=sweep.asha.best_so_far,
    )
