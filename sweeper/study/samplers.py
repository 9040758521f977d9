"""Optuna samplers for the sweep's method (W&B's names). Optuna only: no Ray.

- ``random``: Optuna's ``RandomSampler``, honouring W&B ``probabilities`` of categorical
  values (:class:`WeightedRandomSampler`).
- ``bayes``: Optuna's ``TPESampler`` (Bergstra et al. 2011; Falkner et al. 2018 for the
  multivariate kernel), ``multivariate=True``. With trials in parallel in a space that is
  continuous (or too large to enumerate), ``constant_liar=True`` (Optuna ≥ 2.8), so running
  trials are not proposed again. In a finite space the duplicate check
  (:mod:`sweeper.study.duplicates`) keeps a running configuration from running twice and moves a
  repeated draw to the nearest unseen configuration, and the liar is off: on the curve table
  (``benchmarks/simulate.py``, 30 seeds, 64 trials) it cost seeds the top 1% at 16 workers
  (18 of 30 reached it with the liar, 24 without; median 114 s both) and gained nothing at 4
  (216 s with it, 210 s without). With several
  ``metrics`` the same sampler is multi-objective TPE (Ozaki et al. 2020, 2022, "Multiobjective
  tree-structured Parzen estimator"). Optuna's reference says so for this case: its
  ``NSGAIISampler`` page points to ``TPESampler`` (faster since v4.0, and it handles dynamic
  search spaces and categorical distance), and its ``NSGAIIISampler`` page suggests ``TPESampler``
  or ``GPSampler`` below 1000 trials; sweeps have tens. (A multi-objective study holds no
  intermediate values: Optuna's TPE ranks PRUNED trials by them through ``study.direction``,
  which raises in such a study; see :mod:`sweeper.engine.recorder`.)
- ``grid``: the grid's points are queued one at a time by :class:`sweeper.engine.searcher.StudySearcher`
  (each run until it finishes once); the sampler then only samples a queued point's values.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution
from optuna.samplers import BaseSampler, RandomSampler, TPESampler
from optuna.trial import FrozenTrial

from sweeper.study.duplicates import finite_enumerated

if TYPE_CHECKING:
    from sweeper.spec import Sweep


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
        with warnings.catch_warnings():  # `group` is marked experimental by Optuna; the user cannot act on it
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return TPESampler(
                multivariate=True,
                # For a conditional (define-by-run) space: the multivariate TPE on each group of
                # parameters that occur together (TPESampler's `group`, Optuna >= 2.8).
                group=sweep.space.conditional,
                constant_liar=concurrency > 1 and not finite_enumerated(sweep.space.size()),
                n_startup_trials=max(2, min(10, sweep.budget // 3)),
                seed=seed,
            )
    probabilities = {d.name: d.probabilities for d in sweep.space.dimensions if d.probabilities is not None}
    return WeightedRandomSampler(probabilities, seed=seed)
