"""Population-based training: Ray Tune's ``PopulationBasedTraining`` and ``PB2`` (the latter in
:mod:`sweeper.engine.pb2`), each trial's schedule kept for the study.

PBT (Jaderberg et al. 2017, "Population Based Training of Neural Networks") and PB2
(Parker-Holder et al. 2020, "Provably Efficient Online Hyperparameter Optimization with
Population-Based Bandits") are Ray Tune's own schedulers, run unchanged; sweeper adds two things:

- **The searcher draws the first population.** Ray refuses any search algorithm beside PBT,
  because PBT changes a trial's config under it and a model-based searcher would learn from
  configs it never proposed. sweeper's searcher only asks Optuna for each trial's *initial*
  parameters and tells Optuna those (the study's ``params`` stay the drawn ones), so that check
  is passed by (:class:`_WithoutSearcher`); nothing else of Ray's code is changed.
- **Each trial's schedule is kept.** When a trial in the lower quantile copies a trial of the
  upper one (exploit) and perturbs its values (explore), it continues from the other trial's
  checkpoint: its weights were trained by that trial's schedule up to that epoch. The
  *effective* schedule of a trial is therefore the schedule of the trial it copied up to the
  checkpoint's epoch, then its new values (:meth:`PopulationScheduler.schedule`); that is the
  schedule the recorder stores, ``sweeper export`` writes and ``sweeper train``/``retrain``
  replay (:func:`sweeper.trial.replay.fit_scheduled`).
- **A lost driver's population comes back.** At each checkpoint the recorder keeps the member's
  state in the study (:data:`sweeper.study.record.POPULATION_STATE`); on resume, the member asked again
  (``retry_of``) starts from that checkpoint with those values and that schedule
  (:func:`resumed_member`), its perturbation clock at that epoch.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna
from ray import tune
from ray.tune.schedulers import PopulationBasedTraining, TrialScheduler

from sweeper.study import record

if TYPE_CHECKING:
    from optuna.trial import FrozenTrial
    from ray.tune.experiment import Trial

    from sweeper.spec import Sweep
    from sweeper.spec._sweep import Population

# The part of a Ray trial's config that holds the trainer's parameters (see StudySearcher._asked).
PARAMS_PATH = ("sweeper", "params")


class _WithoutSearcher:
    """A Tune controller seen without its search algorithm: Ray's PBT refuses any (see the module
    docstring for why sweeper's searcher is not what that check guards against)."""

    search_alg = None

    def __init__(self, controller: Any):
        self._controller = controller

    def __getattr__(self, name: str) -> Any:
        return getattr(self._controller, name)


def _params(config: Mapping[str, Any]) -> dict[str, Any]:
    return dict(config[PARAMS_PATH[0]][PARAMS_PATH[1]])


class PopulationScheduler:
    """The schedule keeping shared by :class:`RecordingPBT` and :class:`RecordingPB2` (a mixin
    before Ray's scheduler class)."""

    _trial_state: dict[Trial, Any]
    _schedules: dict[str, list[dict[str, Any]]]
    _curves: dict[str, dict[int, float]]

    def on_trial_add(self, tune_controller: Any, trial: Trial) -> None:
        super().on_trial_add(_WithoutSearcher(tune_controller), trial)  # type: ignore[misc]
        prior = trial.config.get("prior_schedule")
        if prior and trial.trial_id not in self._schedules:  # a member brought back by a resume
            epoch = int(trial.config["resume_epoch"])
            params: dict[str, Any] = {}
            steps = []
            for step in prior:
                params = {**params, **step["params"]}
                steps.append({"epoch": step["epoch"], "params": dict(params), "source": step["source"],
                              "by": step.get("by"), **({"seed": step["seed"]} if "seed" in step else {})})
            self._schedules[trial.trial_id] = steps
            self._curves[trial.trial_id] = {int(e): float(v) for step in prior for e, v in step.get("curve") or []
                                            if int(e) <= epoch}
            state = self._trial_state[trial]
            state.last_perturbation_time = state.last_train_time = epoch
        self._schedules.setdefault(trial.trial_id, [{
            "epoch": 1, "params": _params(trial.config), "seed": int(trial.config["sweeper"]["seed"]),
            "source": None, "by": trial.trial_id}])

    def on_trial_result(self, tune_controller: Any, trial: Trial, result: dict[str, Any]) -> str:
        metric: str = self._metric  # type: ignore[attr-defined]
        if "epoch" in result and metric in result:
            self._curves.setdefault(trial.trial_id, {})[int(result["epoch"])] = float(result[metric])
        if int(result.get("epoch", 0)) >= int(trial.config["sweeper"]["epochs"]):
            # Its last epoch: the trial is done. Ray would still copy another trial into it and
            # retrain epochs whose weights nothing uses.
            return str(TrialScheduler.CONTINUE)
        decision: str = super().on_trial_result(tune_controller, trial, result)  # type: ignore[misc]
        return decision

    def _exploit(self, tune_controller: Any, trial: Trial, trial_to_clone: Trial) -> None:
        super()._exploit(tune_controller, trial, trial_to_clone)  # type: ignore[misc]
        # The checkpoint ``trial`` continues from is the one saved with this result of the other.
        donor_epoch = int(self._trial_state[trial_to_clone].last_result["epoch"])
        kept = [step for step in self._schedules[trial_to_clone.trial_id] if step["epoch"] <= donor_epoch]
        self._schedules[trial.trial_id] = [*copy.deepcopy(kept), {
            "epoch": donor_epoch + 1, "params": _params(trial.config),
            "source": {"trial": trial_to_clone.trial_id, "epoch": donor_epoch}, "by": trial.trial_id}]
        donor_curve = self._curves.get(trial_to_clone.trial_id, {})
        self._curves[trial.trial_id] = {e: v for e, v in donor_curve.items() if e <= donor_epoch}

    def schedule(self, trial_id: str) -> list[dict[str, Any]]:
        """The effective schedule of trial ``trial_id``: ``[{epoch, params, source, by, curve, seed?}]``,
        ``params`` applying from ``epoch`` to the next step's (the first step: every trainer
        parameter; a later step: the values that differ from the step before); the first
        step carries the ``seed`` its weights were first trained with, a later one the ``source``
        (Ray trial id and epoch) whose checkpoint the run continued from; ``by`` the trial that
        trained the step (a step copied with a checkpoint keeps its own); ``curve`` holds
        ``[epoch, metric]`` of the step's epochs as its weights' lineage trained them (what a
        replay of the schedule should reproduce). Empty for an unknown trial."""
        steps = copy.deepcopy(self._schedules.get(trial_id, []))
        curve = self._curves.get(trial_id, {})
        ends = [step["epoch"] for step in steps[1:]] + [max(curve, default=0) + 1]
        for step, end in zip(steps, ends, strict=True):
            step["curve"] = [[e, curve[e]] for e in sorted(curve) if step["epoch"] <= e < end]
        # A later step keeps only what differs from the step before: a schedule reads as what
        # changed when.
        full = [step["params"] for step in steps]
        for i, step in enumerate(steps[1:], start=1):
            step["params"] = {k: v for k, v in full[i].items() if full[i - 1].get(k) != v}
        return steps

    def stopped(self, trial_id: str) -> bool:
        """Never: PBT ends no trial early (an exploit continues the same trial)."""
        return False

    def infeasible(self, trial_id: str) -> str | None:
        """Never: a population sweep has no constraints."""
        return None

    def replay_study(self, trials: Sequence[FrozenTrial]) -> None:
        """Nothing is rebuilt from a study: a resumed sweep starts a new population."""


class RecordingPBT(PopulationScheduler, PopulationBasedTraining):
    """Ray Tune's ``PopulationBasedTraining``, its schedules kept (:class:`PopulationScheduler`)."""

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        self._schedules, self._curves = {}, {}


def resumed_member(study: optuna.Study, trial: optuna.Trial, config: dict[str, Any]) -> dict[str, Any]:
    """The Ray config of a trial asked to run again a population member whose driver was lost
    (``retry_of``): the member's values, seed and schedule at its last checkpoint
    (:data:`sweeper.study.record.POPULATION_STATE`), and that checkpoint to start from
    (``resume_from``, read by :func:`sweeper.trial.trainable.run_trial`); ``config`` unchanged for any
    other trial, or when the checkpoint's folder is gone (the member then starts afresh)."""
    number = record.retry_of(trial)  # type: ignore[arg-type]
    if number is None:
        return config
    lost = next((t for t in study.get_trials(deepcopy=False) if t.number == number), None)
    state = record.population_state_of(lost) if lost is not None else None
    if not state or not Path(state["checkpoint"]).is_dir():
        return config
    member = {**config["sweeper"], "params": dict(state["params"]), "seed": int(state["seed"])}
    return {**config, "sweeper": member, "resume_from": state["checkpoint"], "resume_epoch": int(state["epoch"]),
            "prior_schedule": state["schedule"]}


def _domain(form: Mapping[str, Any]) -> Any:
    """A mutation in Ray Tune's terms: a list for ``values`` (PBT shifts along it), else
    ``tune.loguniform``, ``tune.randint`` (``max`` included) or ``tune.uniform``."""
    if "values" in form:
        return list(form["values"])
    low, high, distribution = form["min"], form["max"], form.get("distribution", "uniform")
    if distribution == "log_uniform_values":
        return tune.loguniform(low, high)
    if distribution == "int_uniform":
        return tune.randint(int(low), int(high) + 1)
    return tune.uniform(low, high)


class _KeepInRange:
    """PBT's ``custom_explore_fn``: a perturbed value (Ray multiplies by 0.8 or 1.2 and does not
    clip) brought back into its range, so a trial never trains with a value the spec excludes."""

    def __init__(self, ranges: Mapping[str, tuple[float, float, bool]]):
        self.ranges = dict(ranges)  # name -> (min, max, whole numbers)

    def __call__(self, config: dict[str, Any]) -> dict[str, Any]:
        params = config[PARAMS_PATH[0]][PARAMS_PATH[1]]
        for name, (low, high, whole) in self.ranges.items():
            if name in params:
                value = min(max(params[name], low), high)
                params[name] = round(value) if whole else value
        return config


def population_options(sweep: Sweep, population: Population) -> dict[str, Any]:
    """What Ray's PBT and PB2 share: ``epoch`` as the time, the sweep's metric and goal, and
    ``population``'s options under Ray's names."""
    metric = sweep.spec.metric
    return {"time_attr": "epoch", "metric": metric.name, "mode": "max" if metric.goal == "maximize" else "min",
            "perturbation_interval": population.perturbation_interval,
            "quantile_fraction": population.quantile_fraction, "log_config": False}


def make_population_scheduler(sweep: Sweep, population: Population) -> RecordingPBT:
    """Ray's PBT for the sweep (:func:`population_options`), the mutations nested where the
    trial's config holds the parameters, perturbed values kept within their ranges
    (:class:`_KeepInRange`). PB2 is :func:`sweeper.engine.pb2.make_pb2`."""
    mutations = {name: _domain(form) for name, form in population.mutations.items()}
    ranges = {name: (form["min"], form["max"], form.get("distribution") == "int_uniform")
              for name, form in population.mutations.items() if "values" not in form}
    return RecordingPBT(hyperparam_mutations={PARAMS_PATH[0]: {PARAMS_PATH[1]: mutations}},
                        resample_probability=population.resample_probability,
                        custom_explore_fn=_KeepInRange(ranges), **population_options(sweep, population))
