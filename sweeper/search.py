"""What to try next: Optuna samplers asked through a Ray Tune ``Searcher``.

The driver is the only process that writes to the study: :class:`StudySearcher` asks
Optuna for each new trial's parameters (ask/tell), and :class:`sweeper.execution`'s
recorder tells Optuna how each trial ended. Both share one :class:`Ledger`.

Methods (W&B's names):

- ``random``: Optuna's ``RandomSampler``, honouring W&B ``probabilities`` of categorical
  values (:class:`WeightedRandomSampler`).
- ``bayes``: Optuna's ``TPESampler`` (Bergstra et al. 2011; Falkner et al. 2018 for the
  multivariate kernel), ``multivariate=True``, with ``constant_liar=True`` when trials run
  in parallel, so running trials are not proposed again (Optuna ≥ 2.8).
- ``grid``: every grid point, in a fixed order, each run until it finishes once: a point
  whose trial FAILed is run again, a point that finished is never run twice.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping
from typing import Any

import numpy as np
import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution
from optuna.samplers import BaseSampler, RandomSampler, TPESampler
from optuna.trial import FrozenTrial, TrialState
from ray.tune.search import Searcher

from sweeper.spec import Sweep
from sweeper.storage import DRIVER_ATTR, LEASE_RENEW_S, Lease, renew_lease, study_lock, zombie_trials

GRID_ID_ATTR = "grid_id"
CONFIG_ATTR = "config"
RETRY_OF_ATTR = "retry_of"
# "trial": the trial itself failed (counts against max_failed_trials); "driver": its driver was lost.
FAIL_KIND_ATTR = "fail_kind"
WAIT = "WAIT"


def mark_driver_lost(storage: optuna.storages.BaseStorage, trial_id: int, why: str) -> None:
    """Record on a trial that its driver was lost (``fail_reason`` "driver lost: <why>", kind
    ``driver``: not counted against ``max_failed_trials``); the caller then ends it FAIL."""
    storage.set_trial_user_attr(trial_id, "fail_reason", f"driver lost: {why}")
    storage.set_trial_user_attr(trial_id, FAIL_KIND_ATTR, "driver")


class WeightedRandomSampler(BaseSampler):
    """Random search where categorical parameters follow W&B ``probabilities``.

    Parameters without probabilities are drawn by Optuna's ``RandomSampler``.
    """

    def __init__(self, probabilities: Mapping[str, tuple[float, ...]], seed: int | None = None):
        self._probabilities = dict(probabilities)
        self._rng = np.random.RandomState(seed)
        self._random = RandomSampler(seed=seed)

    def infer_relative_search_space(self, study: optuna.Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        return {}

    def sample_relative(self, study: optuna.Study, trial: FrozenTrial,
                        search_space: dict[str, BaseDistribution]) -> dict[str, Any]:
        return {}

    def sample_independent(self, study: optuna.Study, trial: FrozenTrial, param_name: str,
                           param_distribution: BaseDistribution) -> Any:
        probs = self._probabilities.get(param_name)
        if probs is not None and isinstance(param_distribution, CategoricalDistribution):
            index = self._rng.choice(len(param_distribution.choices), p=np.asarray(probs) / sum(probs))
            return param_distribution.choices[int(index)]
        return self._random.sample_independent(study, trial, param_name, param_distribution)


def make_sampler(sweep: Sweep, concurrency: int) -> BaseSampler:
    """The Optuna sampler for the sweep's method (see the module docstring)."""
    seed = sweep.spec.seed
    if sweep.spec.method == "bayes":
        return TPESampler(
            multivariate=True,
            constant_liar=concurrency > 1,
            n_startup_trials=max(2, min(10, sweep.budget // 3)),
            seed=seed,
        )
    probabilities = {d.name: d.probabilities for d in sweep.space.dimensions if d.probabilities is not None}
    return WeightedRandomSampler(probabilities, seed=seed)


@dataclasses.dataclass
class Ledger:
    """The driver's view of the sweep, shared by the searcher and the recorder.

    Several drivers may run one study (``sweeper resume`` on two machines): the counts that
    decide whether to ask another trial are read from the study, under a lock that all
    drivers of the study take (:func:`sweeper.storage.study_lock`).

    Attributes:
        study: the Optuna study.
        sweep: the validated spec.
        storage: the study's storage (for the lock).
        lease: this driver's lease on the study.
        trials: Ray trial id → the Optuna trial this driver asked for it (until it is told).
        failed: FAIL trials of this study that failed by themselves (not a lost driver).
        grid: grid points, for ``method: grid``.
        stop_reason: set when the sweep must stop early (no new trials are asked).
    """

    study: optuna.Study
    sweep: Sweep
    storage: optuna.storages.RDBStorage
    lease: Lease
    trials: dict[str, optuna.Trial] = dataclasses.field(default_factory=dict)
    failed: int = 0
    grid: list[dict[str, Any]] | None = None
    stop_reason: str | None = None
    _renewed: float = 0.0

    def counts(self) -> tuple[int, int, set[int], set[int]]:
        """One read of the study: (finished, running) trials of every driver (COMPLETE + PRUNED,
        and RUNNING), and the grid ids among them that finished and that run now."""
        finished = running = 0
        done: set[int] = set()
        running_points: set[int] = set()
        for t in self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED,
                                                               TrialState.RUNNING)):
            gid = t.user_attrs.get(GRID_ID_ATTR)
            if t.state == TrialState.RUNNING:
                running += 1
                if gid is not None:
                    running_points.add(int(gid))
            else:
                finished += 1
                if gid is not None:
                    done.add(int(gid))
        return finished, running, done, running_points

    def renew_lease(self, force: bool = False) -> None:
        """Renew this driver's lease when it is older than ``LEASE_RENEW_S``."""
        now = time.monotonic()
        if force or now - self._renewed >= LEASE_RENEW_S:
            self.lease = renew_lease(self.study, self.lease)
            self._renewed = now

    def reap_zombies(self) -> list[int]:
        """Mark FAIL the RUNNING trials of drivers that are gone, and queue their parameters
        again (grid points are re-run by the grid itself). Returns their numbers.

        Call it under :func:`sweeper.storage.study_lock`: a trial is RUNNING a moment before
        its driver id is written, and that moment is inside the lock."""
        reaped = []
        for t in zombie_trials(self.study):
            if t.user_attrs.get(DRIVER_ATTR) == self.lease.driver_id:
                continue
            mark_driver_lost(self.storage, t._trial_id, "its driver stopped before the trial ended; the "
                             "parameters run again")
            try:
                self.study.tell(t.number, state=TrialState.FAIL)
            except (ValueError, RuntimeError):
                continue  # another driver reaped it first
            if self.grid is None:
                self.study.enqueue_trial(t.params, user_attrs={RETRY_OF_ATTR: t.number}, skip_if_exists=False)
            reaped.append(t.number)
        return reaped


class StudySearcher(Searcher):
    """A Ray Tune searcher that asks the Optuna study for each trial's parameters.

    It stops asking when the budget of finished trials (COMPLETE + PRUNED, every driver's) is
    met or running (a failed trial frees its place, so the sweep ends with exactly ``budget``
    finished trials), and, for grid search, when every grid point has finished or is running.
    """

    # While waiting, Tune asks again at every step; the study is read at most this often.
    POLL_S = 1.0
    # Dead drivers' trials are looked for this often while the sweep runs.
    REAP_S = 30.0

    def __init__(self, ledger: Ledger, metric: str, mode: str):
        super().__init__(metric=metric, mode=mode)
        self.ledger = ledger
        self._waited_at = -1e9
        self._reaped_at = time.monotonic()
        self._ended_since_wait = True

    def trial_ended(self) -> None:
        """Called by the recorder: counts changed, the next ``suggest`` reads the study."""
        self._ended_since_wait = True

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:  # type: ignore[override]
        """Tune's request for a new trial: its config, ``None`` (not now) or ``FINISHED``.

        Renews the lease, looks for dead drivers' trials every ``REAP_S``, and decides and asks
        under the study lock, so drivers sharing the study never overrun the budget.
        """
        ledger = self.ledger
        ledger.renew_lease()
        now = time.monotonic()
        if not self._ended_since_wait and now - self._waited_at < self.POLL_S:
            return None
        if ledger.stop_reason is not None:
            return Searcher.FINISHED if not ledger.trials else None
        with study_lock(ledger.storage, ledger.sweep.spec.storage, ledger.sweep.name):
            if now - self._reaped_at >= self.REAP_S:
                self._reaped_at = now
                ledger.reap_zombies()
            decision, grid_id = self._decide()
            if decision == WAIT:
                return None
            if decision is not None:
                return decision
            return self._ask(trial_id, grid_id)

    def _decide(self) -> tuple[str | None, int | None]:
        """(``FINISHED`` | ``WAIT`` | ``None``, the grid point to run); under the study lock.

        ``None`` means: ask a trial now (for grid search, of the returned grid point)."""
        ledger = self.ledger
        finished, running, done, running_points = ledger.counts()
        if finished >= ledger.sweep.budget or finished + running >= ledger.sweep.budget:
            return self._wait(finished >= ledger.sweep.budget), None
        if ledger.grid is None:
            return None, None
        todo = [i for i in range(len(ledger.grid)) if i not in done and i not in running_points]
        if not todo:
            return self._wait(len(done) >= len(ledger.grid)), None
        return None, todo[0]

    def _wait(self, budget_met: bool) -> str:
        self._waited_at, self._ended_since_wait = time.monotonic(), False
        return Searcher.FINISHED if budget_met and not self.ledger.trials else WAIT

    def _ask(self, trial_id: str, grid_id: int | None) -> dict[str, Any]:
        ledger, study, sweep = self.ledger, self.ledger.study, self.ledger.sweep
        if ledger.grid is not None and grid_id is not None:
            # Under the study lock a queued grid point is asked at once; one still WAITING was
            # queued by a driver that stopped in between. Optuna's ask() would pop it instead of
            # the point chosen here (running a point twice), so it ends FAIL first.
            for stale in study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
                mark_driver_lost(ledger.storage, stale._trial_id, "queued by a driver that stopped before running it")
                ledger.storage.set_trial_state_values(stale._trial_id, TrialState.FAIL)
            study.enqueue_trial(ledger.grid[grid_id], user_attrs={GRID_ID_ATTR: grid_id}, skip_if_exists=False)
        trial = study.ask(fixed_distributions=sweep.space.distributions)
        config = sweep.trial_config(trial.params, trial.number)
        trial.set_user_attr(CONFIG_ATTR, config)
        trial.set_user_attr(DRIVER_ATTR, ledger.lease.driver_id)
        trial.set_user_attr("ray_trial_id", trial_id)
        ledger.trials[trial_id] = trial
        return {"sweeper": config, "trial_number": trial.number}

    def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False) -> None:
        # The recorder (a Tune callback, which sees the Trial and its error) tells Optuna.
        return None

    # The study is the state; nothing to save with Ray's experiment checkpoint.
    def save(self, checkpoint_path: str) -> None:
        return None

    def restore(self, checkpoint_path: str) -> None:
        return None

    def save_to_dir(self, checkpoint_dir: str, session_str: str = "default") -> None:
        return None

    def restore_from_dir(self, checkpoint_dir: str) -> None:
        return None

    def __getstate__(self) -> dict[str, Any]:
        # Ray pickles the Tuner's config (and so this searcher) into its experiment folder;
        # the live study connection stays behind.
        return {k: v for k, v in self.__dict__.items() if k != "ledger"}
