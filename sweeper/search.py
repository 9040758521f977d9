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
from collections.abc import Mapping
from typing import Any

import numpy as np
import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution
from optuna.samplers import BaseSampler, RandomSampler, TPESampler
from optuna.trial import FrozenTrial, TrialState
from ray.tune.search import Searcher

from sweeper.spec import Sweep

GRID_ID_ATTR = "grid_id"
CONFIG_ATTR = "config"


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

    Attributes:
        study: the Optuna study.
        sweep: the validated spec.
        trials: Ray trial id → the Optuna trial asked for it (until it is told).
        finished: COMPLETE + PRUNED trials in the study (the budget counts these).
        failed: FAIL trials told by this driver.
        grid: grid points, for ``method: grid``.
        stop_reason: set when the sweep must stop early (no new trials are asked).
    """

    study: optuna.Study
    sweep: Sweep
    trials: dict[str, optuna.Trial] = dataclasses.field(default_factory=dict)
    finished: int = 0
    failed: int = 0
    grid: list[dict[str, Any]] | None = None
    stop_reason: str | None = None

    def grid_point_states(self) -> tuple[set[int], set[int]]:
        """Grid ids that finished (COMPLETE/PRUNED) and that run now, read from the study."""
        done, running = set(), set()
        for t in self.study.get_trials(deepcopy=False):
            gid = t.user_attrs.get(GRID_ID_ATTR)
            if gid is None:
                continue
            if t.state in (TrialState.COMPLETE, TrialState.PRUNED):
                done.add(int(gid))
            elif t.state == TrialState.RUNNING:
                running.add(int(gid))
        return done, running


class StudySearcher(Searcher):
    """A Ray Tune searcher that asks the Optuna study for each trial's parameters.

    It stops asking when the budget of finished trials is met or in flight (a failed
    trial frees its place, so the sweep still ends with ``budget`` finished trials), and,
    for grid search, when every grid point has finished or is running.
    """

    def __init__(self, ledger: Ledger, metric: str, mode: str):
        super().__init__(metric=metric, mode=mode)
        self.ledger = ledger

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:  # type: ignore[override]
        ledger = self.ledger
        in_flight = len(ledger.trials)
        if ledger.stop_reason is not None or ledger.finished >= ledger.sweep.budget:
            return Searcher.FINISHED if in_flight == 0 else None
        if ledger.finished + in_flight >= ledger.sweep.budget:
            return None
        study, sweep = ledger.study, ledger.sweep
        grid_id: int | None = None
        if ledger.grid is not None:
            done, running = ledger.grid_point_states()
            todo = [i for i in range(len(ledger.grid)) if i not in done and i not in running]
            if not todo:
                return Searcher.FINISHED if not running and in_flight == 0 else None
            grid_id = todo[0]
            study.enqueue_trial(ledger.grid[grid_id], user_attrs={GRID_ID_ATTR: grid_id}, skip_if_exists=False)
        trial = study.ask(fixed_distributions=sweep.space.distributions)
        config = sweep.trial_config(trial.params, trial.number)
        trial.set_user_attr(CONFIG_ATTR, config)
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
