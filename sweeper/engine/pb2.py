"""Ray Tune's PB2 (Parker-Holder et al. 2020, "Provably Efficient Online Hyperparameter
Optimization with Population-Based Bandits") with each trial's effective schedule kept, as
:mod:`sweeper.engine.population` keeps PBT's.

A module of its own, imported only when a sweep uses PB2: Ray's ``ray.tune.schedulers.pb2``
imports scikit-learn and SciPy for its Gaussian process, 1.5 s of every sweep's start on a
2-core machine otherwise (``python -X importtime``, 2026-12-07).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ray.tune.schedulers.pb2 import PB2

from sweeper.engine.population import PARAMS_PATH, PopulationScheduler, population_options

if TYPE_CHECKING:
    from sweeper.spec import Sweep
    from sweeper.spec._sweep import Population


class RecordingPB2(PopulationScheduler, PB2):
    """Ray Tune's ``PB2``, its schedules kept (:class:`~sweeper.engine.population.PopulationScheduler`)."""

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        self._schedules, self._curves = {}, {}


def make_pb2(sweep: Sweep, population: Population) -> RecordingPB2:
    """Ray's PB2 for the sweep: each mutated parameter searched between its ``min`` and ``max``
    (PB2's ``hyperparam_bounds``), nested where the trial's config holds the parameters."""
    bounds = {name: [form["min"], form["max"]] for name, form in population.mutations.items()}
    return RecordingPB2(hyperparam_bounds={PARAMS_PATH[0]: {PARAMS_PATH[1]: bounds}},
                        **population_options(sweep, population))
