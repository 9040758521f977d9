"""Replay the curve table on a simulated clock: which search reaches a good model first?

    python -m benchmarks.simulate [--seeds 0-29] [--workers 4 16] [--trials 32 64 96]
                                  [--runners sweeper optuna-tpe-hyperband ...] [--json OUT]
                                  [--ray-running]

The tabular-benchmark method of NAS-Bench-201 (Dong & Yang 2020), LCBench (Zimmer et al. 2021) and
Syne Tune's simulator backend (Salinas et al. 2022): a trial does not train; its epochs are read
from ``benchmarks/curves/cnn_cifar10.csv.gz``. ``W`` workers share a simulated clock. A trial's
epoch ``e`` takes the table's ``epoch_s`` of that epoch (runs slowed by other jobs scaled back,
:func:`benchmarks.curves.table.retime`); starting a trial (and resuming a paused
one) costs the tool's measured per-trial start, and the sweep its once-per-sweep start
(:data:`COSTS`; with ``--ray-running``, :data:`COSTS_RAY_RUNNING`: the Ray tools join a Ray that is
already up, as on a cluster, instead of starting their own). Every runner makes its own decisions
with its own code, called as its tool calls it:

- ``sweeper`` (its default search: ``method: bayes`` with no scheduler named, which runs TPE with
  ASHA at grace period 1 and reduction factor 3, and the duplicate check) and
  ``random`` (sweeper's random search, no early stopping): sweeper's own
  :class:`~sweeper.engine.searcher.StudySearcher`, scheduler and :class:`~sweeper.engine.recorder.StudyRecorder`
  on a real SQLite study, driven through the calls Ray Tune's controller makes
  (``ray/tune/execution/tune_controller.py``: ``suggest``; per result the scheduler's
  ``on_trial_result``, then the callbacks'; at a stop the scheduler's ``on_trial_complete``, then
  the callbacks'), without Ray processes;
- ``optuna-*``: Optuna's samplers and pruners through ask/tell, ``report`` and ``should_prune``;
- ``ray-asha``: Ray Tune's ``OptunaSearch`` and ``ASHAScheduler`` through their ``Searcher`` and
  ``TrialScheduler`` methods, as the controller calls them;
- ``syne-*``: Syne Tune's schedulers through their ``TrialScheduler`` methods (``suggest``,
  ``on_trial_add``, ``on_trial_result``, ``on_trial_complete``), the calls its ``Tuner`` makes
  with its simulator backend, here on the one clock that every runner shares.

A runner's incumbent is the best ``val_accuracy`` it has seen in any epoch of any trial, the
quantity Syne Tune's and HPOBench's benchmarking plots. The targets are the table's top 1% and
top 5% of configurations by that same best-over-epochs value; regret is the table's best minus
the incumbent.
"""

from __future__ import annotations

import argparse
import dataclasses
import heapq
import itertools
import json
import math
import random
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.curves.table import TABLE, Run, load, retime

CONTINUE, STOP, PAUSE = "CONTINUE", "STOP", "PAUSE"
METRIC = "val_accuracy"


@dataclass(frozen=True)
class Costs:
    """A tool's simulated overheads, in seconds.

    Attributes:
        sweep_s: once per sweep, before the first epoch (command start to the first epoch's
            start; ``benchmarks.first_epoch``, warm cache).
        trial_s: each time a trial starts or resumes (``benchmarks.orchestration_overhead``'s
            per-trial cost, 2026-11-23).
    """

    sweep_s: float
    trial_s: float


# Measured on this project's 2-core machine (benchmarks/RESULTS.md): sweep_s is the mean of the warm
# cache medians at 1 and 2 trials at a time of `python -m benchmarks.first_epoch` (2026-12-07,
# evening, the Ray tools starting their own Ray), trial_s the per-trial cost of
# `benchmarks.orchestration_overhead` (2026-11-23). Syne Tune's own start was not measured; it is
# given Optuna's (the cheapest), which can only favour it.
COSTS: dict[str, Costs] = {
    "sweeper": Costs(sweep_s=8.0, trial_s=0.11),
    "ray": Costs(sweep_s=8.7, trial_s=0.15),
    "optuna": Costs(sweep_s=2.3, trial_s=0.006),
    "syne": Costs(sweep_s=2.3, trial_s=0.006),
}

# The same, with Ray already running when the sweep starts (a cluster, or a machine that keeps Ray
# up), so that the Ray tools join it instead of starting their own: `python -m benchmarks.first_epoch
# --ray-running`, the same evening. Optuna and Syne Tune start no Ray: their costs are unchanged.
COSTS_RAY_RUNNING: dict[str, Costs] = {
    **COSTS,
    "sweeper": Costs(sweep_s=5.6, trial_s=0.11),
    "ray": Costs(sweep_s=5.7, trial_s=0.15),
}


@dataclass(frozen=True)
class Noise:
    """Training noise added to each trial's replayed curve: what a real trial of the configuration
    would differ by from the table's run (its own seed, its own initial weights and batches).

    The table replays one run per configuration; a real sweep trains each trial afresh, so a
    configuration run twice scores differently, and a runner that runs the best ones again sees the
    maximum of several noisy scores. With noise, each trial's ``val_accuracy`` is the table's plus an
    offset drawn once for the trial and a draw for each epoch, both normal with mean 0.

    Attributes:
        run_sd: standard deviation of the trial's offset.
        epoch_sd: standard deviation of each epoch's draw.
    """

    run_sd: float
    epoch_sd: float

    @classmethod
    def measure(cls, runs: Mapping[tuple[int, int], Run]) -> Noise:
        """The noise between two seeds of the same configuration in the table (its configurations
        trained twice): of the difference of the two curves, the standard deviation of its mean over
        epochs (``run_sd``) and of what is left at each epoch (``epoch_sd``), each over ``sqrt(2)``
        (the difference of two draws has twice the variance of one).

        Raises:
            ValueError: no configuration of the table was trained twice.
        """
        by_config: dict[int, list[Run]] = {}
        for (config_id, _), run in sorted(runs.items()):
            by_config.setdefault(config_id, []).append(run)
        offsets: list[float] = []
        rest: list[float] = []
        for first, second, *_ in (v for v in by_config.values() if len(v) > 1):
            diffs = first.differences_from(second)
            if diffs:
                offsets.append(statistics.fmean(diffs))
                rest.extend(d - offsets[-1] for d in diffs)
        if len(offsets) < 2:
            raise ValueError("the table has fewer than 2 configurations trained with two seeds")
        return cls(round(statistics.pstdev(offsets) / math.sqrt(2), 4),
                   round(statistics.pstdev(rest) / math.sqrt(2), 4))

    def apply(self, run: Run, rng: random.Random) -> Run:
        """``run`` with this noise added to its ``val_accuracy`` (a NaN epoch stays NaN)."""
        offset = rng.gauss(0.0, self.run_sd)
        return dataclasses.replace(run, val_accuracy=tuple(
            v if math.isnan(v) else v + offset + rng.gauss(0.0, self.epoch_sd) for v in run.val_accuracy))


class Table:
    """The curve table as a replayable benchmark: the grid of each hyperparameter's values and
    each configuration's first-seed run.

    Args:
        runs: the table's runs by ``(config_id, seed)`` (:func:`benchmarks.curves.table.load`).
        seed: which seed's curves are replayed.

    Raises:
        ValueError: the table holds no run of ``seed``.
    """

    def __init__(self, runs: Mapping[tuple[int, int], Run], seed: int = 0):
        chosen = [run for (_, s), run in sorted(runs.items()) if s == seed]
        if not chosen:
            raise ValueError(f"the table has no run with seed {seed}")
        self.keys = list(chosen[0].config)
        self.grid: dict[str, list[Any]] = {k: sorted({r.config[k] for r in chosen}, key=_order) for k in self.keys}
        self.runs: dict[tuple[Any, ...], Run] = {self.key(r.config): r for r in chosen}
        self.max_epochs = max(len(r.val_accuracy) for r in chosen)

    @classmethod
    def read(cls, path: Path = TABLE, seed: int = 0) -> Table:
        """The table in ``path`` (see :mod:`benchmarks.curves.table`), with the wall seconds of runs
        slowed by other jobs on the CPUs scaled back (:func:`benchmarks.curves.table.retime`)."""
        runs, _ = retime(load(path))
        return cls(runs, seed)

    def key(self, config: Mapping[str, Any]) -> tuple[Any, ...]:
        """The grid values of ``config`` in column order (the lookup key of its run)."""
        return tuple(config[k] for k in self.keys)

    def run(self, config: Mapping[str, Any]) -> Run:
        """The recorded run of ``config``.

        Raises:
            KeyError: the configuration is not in the table (a table still being recorded).
        """
        return self.runs[self.key(config)]

    def best_values(self) -> list[float]:
        """Each configuration's best ``val_accuracy`` over its epochs (NaN epochs left out)."""
        return [r.best for r in self.runs.values()]

    def threshold(self, top: float) -> float:
        """The smallest best-over-epochs ``val_accuracy`` among the top ``top`` share of configurations
        (``top`` = 0.01: the top 1%, at least one configuration)."""
        values = sorted(self.best_values(), reverse=True)
        return values[max(1, math.ceil(top * len(values))) - 1]


def _order(value: Any) -> tuple[int, Any]:
    return (0, value) if isinstance(value, (int, float)) else (1, str(value))


# --- runners


class Runner:
    """One tool's decisions: which configuration next, and what to do with each epoch's result.

    The simulator calls :meth:`suggest` when a worker is free (after :meth:`resume` offered no
    paused trial), :meth:`result` after each epoch, and :meth:`end` once per trial when it stops
    (all epochs, stopped, or failed: ``value`` NaN).
    """

    costs: Costs

    def suggest(self, trial: int) -> dict[str, Any] | None:
        """The configuration of new trial ``trial`` (numbered from 0), or ``None``: none now."""
        raise NotImplementedError

    def result(self, trial: int, epoch: int, value: float) -> str:
        """``CONTINUE``, ``STOP`` or ``PAUSE`` after ``trial``'s ``epoch`` scored ``value``."""
        raise NotImplementedError

    def end(self, trial: int, epoch: int, value: float) -> None:
        """``trial`` stopped after ``epoch`` (``value`` its last score; NaN when it failed)."""

    def resume(self) -> int | None:
        """A paused trial to continue now, or ``None``."""
        return None

    def close(self) -> None:
        """Release what the runner holds (a study's storage)."""


@dataclass
class Outcome:
    """One simulated sweep.

    Attributes:
        trace: ``(simulated seconds, epochs trained so far, incumbent)`` after each epoch that
            raised the incumbent.
        seconds: simulated seconds until the last trial stopped.
        epochs: epochs trained by all trials.
        trials: trials started.
        epochs_run: the epochs each trial trained, by trial number.
        distinct: distinct configurations among the trials.
    """

    trace: list[tuple[float, int, float]] = field(default_factory=list)
    seconds: float = 0.0
    epochs: int = 0
    trials: int = 0
    epochs_run: dict[int, int] = field(default_factory=dict)
    distinct: int = 0

    def time_to(self, target: float) -> float:
        """Simulated seconds until the incumbent reached ``target`` (``inf`` if never)."""
        return next((t for t, _, best in self.trace if best >= target), math.inf)

    def best(self) -> float:
        """The final incumbent (0 when no epoch ran)."""
        return self.trace[-1][2] if self.trace else 0.0

    def best_at(self, seconds: float) -> float:
        """The incumbent at simulated time ``seconds``."""
        return _best_at(self.trace, seconds)


def simulate(table: Table, runner: Runner, workers: int, trials: int, noise: Noise | None = None,
             seed: int = 0) -> Outcome:
    """Replay ``runner`` on ``table`` with ``workers`` workers until ``trials`` trials have been
    started and every trial has stopped (or the runner suggests nothing more and none runs).
    With ``noise``, each trial's curve has it added (:class:`Noise`), drawn from a generator seeded
    with ``seed``.

    Time: the sweep starts at ``runner.costs.sweep_s``; a trial started or resumed at ``t``
    ends its next epoch ``e`` at ``t + trial_s + epoch_s[e]``, and each further epoch adds its
    ``epoch_s``. Events at the same time are handled in the order they were scheduled. A run
    whose epoch is NaN in the table fails there (after that epoch's seconds).
    """
    out = Outcome()
    clock = runner.costs.sweep_s
    events: list[tuple[float, int, int, int]] = []  # (time, order, trial, epoch)
    order = itertools.count()
    runs: dict[int, Run] = {}
    done_epochs = out.epochs_run
    free = workers
    configs: set[tuple[Any, ...]] = set()
    rng = random.Random(seed)

    def start(trial: int, now: float) -> None:
        epoch = done_epochs[trial] + 1
        heapq.heappush(events, (now + runner.costs.trial_s + runs[trial].epoch_s[epoch - 1], next(order), trial, epoch))

    def fill(now: float) -> None:
        nonlocal free
        while free > 0:
            paused = runner.resume()
            if paused is not None:
                free -= 1
                start(paused, now)
                continue
            if out.trials >= trials:
                return
            config = runner.suggest(out.trials)
            if config is None:
                return
            trial = out.trials
            configs.add(table.key(config))
            runs[trial], done_epochs[trial] = _trial_run(table, config, noise, rng), 0
            out.distinct = len(configs)
            out.trials += 1
            free -= 1
            start(trial, now)

    fill(clock)
    while events:
        clock, _, trial, epoch = heapq.heappop(events)
        run = runs[trial]
        value = run.val_accuracy[epoch - 1]
        done_epochs[trial] = epoch
        out.epochs += 1
        if math.isnan(value):
            runner.end(trial, epoch, value)
            free += 1
        else:
            if value > out.best():
                out.trace.append((clock, out.epochs, value))
            decision = runner.result(trial, epoch, value)
            if epoch >= len(run.val_accuracy) or decision == STOP:
                runner.end(trial, epoch, value)
                free += 1
            elif decision == PAUSE:
                free += 1
            else:
                heapq.heappush(events, (clock + run.epoch_s[epoch], next(order), trial, epoch + 1))
        fill(clock)
        out.seconds = clock
    return out


def _trial_run(table: Table, config: Mapping[str, Any], noise: Noise | None, rng: random.Random) -> Run:
    """The run a new trial of ``config`` replays: the table's, with ``noise`` drawn from ``rng``."""
    run = table.run(config)
    return noise.apply(run, rng) if noise is not None else run


class SweeperRunner(Runner):
    """sweeper's searcher, scheduler and recorder on a SQLite study, called as Ray Tune calls them.

    Args:
        table: the benchmark (its grid is the search space: one ``values`` list per hyperparameter).
        seed: the sweep's ``seed``.
        workers: ``max_concurrent_trials``.
        trials: ``run_cap``.
        method: ``bayes`` or ``random``.
        scheduler: the spec's ``scheduler`` (``None``: no early stopping).
        folder: where the study's SQLite file goes.
        brackets: ASHA's brackets (Ray's ``ASHAScheduler(brackets=...)``, asynchronous Hyperband,
            Li et al. 2020), a candidate the spec does not offer yet; 1 is the spec's ASHA.
        sampler: ``TPESampler`` keyword arguments in place of :func:`sweeper.study.samplers.make_sampler`'s
            (a candidate's TPE settings); ``None``: sweeper's own.
    """

    costs = COSTS["sweeper"]

    def __init__(self, table: Table, seed: int, workers: int, trials: int, method: str,
                 scheduler: Mapping[str, Any] | None, folder: Path, brackets: int = 1,
                 sampler: Mapping[str, Any] | None = None):
        import optuna

        from sweeper.engine.recorder import StudyRecorder
        from sweeper.engine.scheduler import make_scheduler
        from sweeper.engine.searcher import StudySearcher
        from sweeper.spec import validate
        from sweeper.study.coordination import take_lease
        from sweeper.study.storage import open_storage
        from sweeper.study.studies import create_study

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self._table = table
        url = f"sqlite:///{folder / f'sim-{seed}.db'}"
        spec: dict[str, Any] = {
            "name": f"sim-{seed}", "method": method, "metric": {"name": METRIC, "goal": "maximize"},
            "run_cap": trials, "trainer": "cnn", "epochs": table.max_epochs, "max_concurrent_trials": workers,
            "storage": url, "seed": seed, "data": {"dataset": "digits", "image_size": 32},
            "parameters": {k: {"values": [_to_spec(k, v) for v in vs]} for k, vs in table.grid.items()},
        }
        if scheduler is not None:
            spec["scheduler"] = dict(scheduler)
        self.sweep = validate(spec)
        self.storage = open_storage(url, pool_size=1)
        study = create_study(self.sweep, workers, self.storage)
        if sampler is not None:  # a candidate's TPE settings in place of make_sampler's
            study.sampler = optuna.samplers.TPESampler(seed=seed, **sampler)
        self.searcher = StudySearcher(study, self.sweep, self.storage, take_lease(study))
        self.searcher.POLL_S = 0.0  # simulated time: read the study at every request
        self.scheduler = make_scheduler(self.sweep)
        if brackets > 1 and self.sweep.asha is not None:
            from sweeper.engine.scheduler import RecordingASHA

            self.scheduler = RecordingASHA(time_attr="epoch", metric=METRIC, mode="max", max_t=self.sweep.max_epochs,
                                           grace_period=self.sweep.asha.grace_period,
                                           reduction_factor=self.sweep.asha.reduction_factor, brackets=brackets)
        self.recorder = StudyRecorder(self.sweep, self.searcher, self.scheduler)
        self._trials: dict[int, _RayTrial] = {}

    def suggest(self, trial: int) -> dict[str, Any] | None:
        from ray.tune.search import Searcher

        trial_id = f"t{trial}"
        config = self.searcher.suggest(trial_id)
        if config is None or config == Searcher.FINISHED or not isinstance(config, dict):
            return None
        stub = self._trials[trial] = _RayTrial(trial_id, config)
        if self.scheduler is not None:
            self.scheduler.on_trial_add(None, stub)  # type: ignore[arg-type]
        self.recorder.on_trial_start(0, [], stub)  # type: ignore[arg-type]
        params = config["sweeper"]["params"]
        return {k: _from_spec(k, params[k]) for k in self._table.keys}

    def result(self, trial: int, epoch: int, value: float) -> str:
        stub = self._trials[trial]
        result = {"epoch": epoch, METRIC: value}
        stub.last_result = result
        decision = CONTINUE
        if self.scheduler is not None:
            decision = self.scheduler.on_trial_result(None, stub, result)  # type: ignore[arg-type]
        self.recorder.on_trial_result(0, [], stub, result)  # type: ignore[arg-type]
        return STOP if decision == "STOP" else CONTINUE

    def end(self, trial: int, epoch: int, value: float) -> None:
        from sweeper.trial.trainable import ERROR_KEY

        stub = self._trials.pop(trial)
        if math.isnan(value):
            stub.last_result = {ERROR_KEY: f"FloatingPointError: loss became NaN at epoch {epoch}"}
            if self.scheduler is not None:
                self.scheduler.on_trial_error(None, stub)  # type: ignore[arg-type]
        elif self.scheduler is not None:
            self.scheduler.on_trial_complete(None, stub, stub.last_result)  # type: ignore[arg-type]
        self.recorder.on_trial_complete(0, [], stub)  # type: ignore[arg-type]

    def close(self) -> None:
        self.storage.engine.dispose()


class PromotionRunner(SweeperRunner):
    """A candidate, not in sweeper yet: promotion-type ASHA (Li et al. 2020, Algorithm 2; Syne Tune's
    former ``HyperbandScheduler(type="promotion")``) on sweeper's searcher and recorder. A trial
    pauses at each rung (grace period x reduction factor^k epochs); a free worker first resumes the
    best paused trial that ranks in the top 1/reduction factor of its rung and has not been promoted
    from it, from the highest rung down, and only then starts a new configuration. A late bloomer
    is paused, not stopped, and can still be promoted when the rung fills.

    Args:
        table, seed, workers, trials, folder: as :class:`SweeperRunner` (``method: bayes``, no scheduler
            of its own: this class decides).
        grace_period, reduction_factor: as ASHA's.
    """

    def __init__(self, table: Table, seed: int, workers: int, trials: int, folder: Path, grace_period: int = 1,
                 reduction_factor: int = 3):
        super().__init__(table, seed, workers, trials, "bayes", {"type": "none"}, folder)
        self._rf, self._budget = reduction_factor, trials
        self._milestones: list[int] = []
        level = grace_period
        while level < self._table.max_epochs:
            self._milestones.append(level)
            level *= reduction_factor
        self._rungs: list[dict[int, float]] = [{} for _ in self._milestones]
        self._promoted: list[set[int]] = [set() for _ in self._milestones]
        self._paused: set[int] = set()

    def result(self, trial: int, epoch: int, value: float) -> str:
        super().result(trial, epoch, value)
        if epoch in self._milestones:
            self._rungs[self._milestones.index(epoch)][trial] = value
            self._paused.add(trial)
            return PAUSE
        return CONTINUE

    def suggest(self, trial: int) -> dict[str, Any] | None:
        self._started = trial + 1
        return super().suggest(trial)

    def resume(self) -> int | None:
        # Once every new trial has started, a rung's quota rounds up rather than down, so the
        # sweep ends by finishing its best trials instead of leaving them paused.
        spent = getattr(self, "_started", 0) >= self._budget
        for k in reversed(range(len(self._milestones))):
            rung = self._rungs[k]
            quota = -(-len(rung) // self._rf) if spent else len(rung) // self._rf
            ranked = sorted(rung, key=lambda t: -rung[t])[:quota]
            for trial in ranked:
                if trial not in self._promoted[k] and trial in self._paused:
                    self._promoted[k].add(trial)
                    self._paused.discard(trial)
                    return trial
        return None


@dataclass(eq=False)  # hashed by identity, as Ray's Trial: schedulers keep trials in sets and dicts
class _RayTrial:
    """What Ray Tune's controller hands schedulers and callbacks of a trial, as far as sweeper's read it."""

    trial_id: str
    config: dict[str, Any]
    last_result: dict[str, Any] = field(default_factory=dict)
    path: str | None = None


def _to_spec(key: str, value: Any) -> Any:
    return [int(v) for v in value.split("-")] if key == "filters" else value


def _from_spec(key: str, value: Any) -> Any:
    return "-".join(str(v) for v in value) if key == "filters" else value


class OptunaRunner(Runner):
    """Optuna alone: ``sampler`` and ``pruner`` through ask/tell, ``report`` and ``should_prune``
    (the loop ``Study.optimize(n_jobs=W)`` runs, with every parameter ``suggest_categorical``
    over the grid's values).

    Args:
        table: the benchmark.
        sampler: an Optuna sampler.
        pruner: an Optuna pruner (``NopPruner`` for none).
    """

    costs = COSTS["optuna"]

    def __init__(self, table: Table, sampler: Any, pruner: Any, name: str = "sim"):
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self._table = table
        self.study = optuna.create_study(direction="maximize", sampler=sampler, pruner=pruner, study_name=name)
        self._trials: dict[int, Any] = {}

    def suggest(self, trial: int) -> dict[str, Any] | None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            t = self._trials[trial] = self.study.ask()
            return {k: t.suggest_categorical(k, vs) for k, vs in self._table.grid.items()}

    def result(self, trial: int, epoch: int, value: float) -> str:
        t = self._trials[trial]
        t.report(value, epoch)
        return STOP if t.should_prune() else CONTINUE

    def end(self, trial: int, epoch: int, value: float) -> None:
        from optuna.trial import TrialState

        t = self._trials.pop(trial)
        if math.isnan(value):
            self.study.tell(t, state=TrialState.FAIL)
        elif epoch >= self._table.max_epochs:
            self.study.tell(t, value)
        else:
            self.study.tell(t, state=TrialState.PRUNED)


class RayRunner(Runner):
    """A Ray Tune searcher and scheduler, called as Tune's controller calls them
    (``tune_controller.py``: ``suggest``; per result the scheduler's ``on_trial_result``, then the
    searcher's unless stopped; at the end the scheduler's and the searcher's ``on_trial_complete``;
    on an error ``on_trial_error``).

    Args:
        table: the benchmark.
        seed: OptunaSearch's ``seed`` (the default searcher).
        grace_period, reduction_factor: the default scheduler's (``ASHAScheduler``; ``max_t`` is the
            table's epochs).
        searcher: a Ray ``Searcher`` in place of ``OptunaSearch`` (its default TPE) over the grid.
        scheduler: a Ray ``TrialScheduler`` in place of ``ASHAScheduler``.
    """

    costs = COSTS["ray"]

    def __init__(self, table: Table, seed: int, grace_period: int = 1, reduction_factor: float = 3,
                 searcher: Any = None, scheduler: Any = None):
        from ray import tune
        from ray.tune.schedulers import ASHAScheduler
        from ray.tune.search.optuna import OptunaSearch

        self._table = table
        if searcher is None:
            space = {k: tune.choice(vs) for k, vs in table.grid.items()}
            searcher = OptunaSearch(seed=seed)
            # What Tuner(param_space=...) does with the space (tune/search/search_generator.py).
            searcher.set_search_properties(METRIC, "max", space)
        self.searcher = searcher
        self.scheduler = scheduler or ASHAScheduler(
            time_attr="epoch", metric=METRIC, mode="max", max_t=table.max_epochs, grace_period=grace_period,
            reduction_factor=reduction_factor)
        self._trials: dict[int, _RayTrial] = {}

    def suggest(self, trial: int) -> dict[str, Any] | None:
        trial_id = f"t{trial}"
        config = self.searcher.suggest(trial_id)
        if not isinstance(config, dict):
            return None
        stub = self._trials[trial] = _RayTrial(trial_id, config)
        self.scheduler.on_trial_add(None, stub)  # type: ignore[arg-type]
        return {k: config[k] for k in self._table.keys}

    def result(self, trial: int, epoch: int, value: float) -> str:
        stub = self._trials[trial]
        stub.last_result = {"epoch": epoch, METRIC: value, "training_iteration": epoch}
        decision = self.scheduler.on_trial_result(None, stub, stub.last_result)  # type: ignore[arg-type]
        if decision != "STOP":
            self.searcher.on_trial_result(stub.trial_id, stub.last_result)
        return STOP if decision == "STOP" else CONTINUE

    def end(self, trial: int, epoch: int, value: float) -> None:
        stub = self._trials.pop(trial)
        if math.isnan(value):
            self.scheduler.on_trial_error(None, stub)  # type: ignore[arg-type]
            self.searcher.on_trial_complete(stub.trial_id, error=True)
            return
        self.scheduler.on_trial_complete(None, stub, stub.last_result)  # type: ignore[arg-type]
        self.searcher.on_trial_complete(stub.trial_id, result=stub.last_result)


class SyneRunner(Runner):
    """A Syne Tune scheduler through its ``TrialScheduler`` methods, as its ``Tuner`` calls them.

    Args:
        table: the benchmark.
        make: ``make(config_space, seed) -> TrialScheduler``.
        seed: the scheduler's ``random_seed``.
    """

    costs = COSTS["syne"]

    def __init__(self, table: Table, make: Callable[[dict[str, Any], int], Any], seed: int):
        from syne_tune.config_space import choice

        self._table = table
        space: dict[str, Any] = {k: choice(vs) for k, vs in table.grid.items()}
        space["epochs"] = table.max_epochs
        self.scheduler = make(space, seed)
        self._trials: dict[int, Any] = {}
        self._paused: list[int] = []

    def _new(self, trial: int, config: dict[str, Any]) -> None:
        import datetime

        from syne_tune.backend.trial_status import Trial

        t = self._trials[trial] = Trial(trial_id=trial, config=config, creation_time=datetime.datetime.now())
        self.scheduler.on_trial_add(t)

    def suggest(self, trial: int) -> dict[str, Any] | None:
        suggestion = self.scheduler.suggest()
        if suggestion is None or suggestion.config is None:
            return None
        if not suggestion.spawn_new_trial_id:
            raise NotImplementedError("resuming a paused trial through suggest()")
        self._new(trial, dict(suggestion.config))
        return {k: suggestion.config[k] for k in self._table.keys}

    def result(self, trial: int, epoch: int, value: float) -> str:
        t = self._trials[trial]
        decision = self.scheduler.on_trial_result(t, {"epoch": epoch, METRIC: value})
        return {"STOP": STOP, "PAUSE": PAUSE}.get(decision, CONTINUE)

    def end(self, trial: int, epoch: int, value: float) -> None:
        t = self._trials.pop(trial)
        if math.isnan(value):
            self.scheduler.on_trial_error(t)
        else:
            self.scheduler.on_trial_complete(t, {"epoch": epoch, METRIC: value})


def syne_backend_epochs(table: Table, name: str, seed: int, workers: int, trials: int) -> dict[int, int]:
    """The epochs each trial ran when Syne Tune's own ``Tuner`` replays ``table`` through its
    simulator backend (``UserBlackboxBackend`` on a ``BlackboxTabular`` of the table, every delay of
    ``SimulatorConfig`` zero, no start costs), for Syne Tune runner ``name``: the check that this
    module's clock makes the same decisions as Syne Tune's. Its Tuner starts a few trials past
    ``trials`` before its stopping criterion is read; only the first ``trials`` are compared."""
    import logging

    import numpy as np
    import pandas as pd
    from syne_tune import StoppingCriterion, Tuner
    from syne_tune.backend.simulator_backend.simulator_backend import SimulatorConfig
    from syne_tune.backend.simulator_backend.simulator_callback import SimulatorCallback
    from syne_tune.blackbox_repository import UserBlackboxBackend
    from syne_tune.blackbox_repository.blackbox_tabular import BlackboxTabular
    from syne_tune.config_space import choice, randint
    from syne_tune.experiments import load_experiment

    logging.getLogger("syne_tune").setLevel(logging.ERROR)
    runs, epochs = list(table.runs.values()), table.max_epochs
    evaluations = np.zeros((len(runs), 1, epochs, 2))
    for i, run in enumerate(runs):  # a diverged run scores 0 from its NaN epoch on
        pad = epochs - len(run.val_accuracy)
        evaluations[i, 0, :, 0] = [0.0 if math.isnan(v) else v for v in run.val_accuracy] + [0.0] * pad
        evaluations[i, 0, :, 1] = np.cumsum(list(run.epoch_s) + [run.epoch_s[-1]] * pad)
    space = {k: choice(vs) for k, vs in table.grid.items()}
    blackbox = BlackboxTabular(pd.DataFrame([r.config for r in runs]), configuration_space=space,
                               fidelity_space={"epoch": randint(1, epochs)}, objectives_evaluations=evaluations,
                               fidelity_values=np.arange(1, epochs + 1), objectives_names=[METRIC, "elapsed_time"])
    backend = UserBlackboxBackend(blackbox=blackbox, elapsed_time_attr="elapsed_time",
                                  simulator_config=SimulatorConfig(0, 0, 0, 0, 0))
    np.random.seed(seed)
    scheduler = _syne_scheduler(name, {**space, "epochs": epochs}, seed, epochs)
    tuner = Tuner(trial_backend=backend, scheduler=scheduler, stop_criterion=StoppingCriterion(
        max_num_trials_started=trials), n_workers=workers, sleep_time=0, wait_trial_completion_when_stopping=True,
        callbacks=[SimulatorCallback()], save_tuner=False, print_update_interval=1e9, results_update_interval=1e9)
    tuner.run()
    ran = load_experiment(tuner.name).results.groupby("trial_id")["epoch"].max()
    return {int(t): int(e) for t, e in ran.items() if int(t) < trials}


# --- the runners by name


def _optuna(sampler: str, pruner: str) -> Callable[[Table, int, int, int, Path], Runner]:
    def make(table: Table, seed: int, workers: int, trials: int, folder: Path) -> Runner:
        import optuna

        samplers = {"tpe": lambda: optuna.samplers.TPESampler(seed=seed),
                    "gp": lambda: optuna.samplers.GPSampler(seed=seed)}
        pruners = {"hyperband": lambda: optuna.pruners.HyperbandPruner(1, table.max_epochs, 3),
                   "sha": lambda: optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=3),
                   "median": lambda: optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=1)}
        # A named study: HyperbandPruner assigns brackets from the study's name and the trial's number.
        return OptunaRunner(table, samplers[sampler](), pruners[pruner](), name=f"sim-{seed}")
    return make


def _syne_scheduler(name: str, space: dict[str, Any], seed: int, max_t: int) -> Any:
    """Syne Tune's scheduler ``name`` (``syne-`` left off) over ``space``, maximising ``val_accuracy``
    with ``epoch`` as its resource, from its ``baselines`` with their defaults."""
    from syne_tune.optimizer import baselines
    from syne_tune.optimizer.schedulers.median_stopping_rule import MedianStoppingRule

    common = {"metric": METRIC, "do_minimize": False, "time_attr": "epoch", "max_t": max_t}
    if name == "asha":
        return baselines.ASHA(space, random_seed=seed, **common)
    if name == "hyperband":  # asynchronous Hyperband: ASHA with several brackets
        return baselines.ASHA(space, random_seed=seed, brackets=3, **common)
    if name == "bohb":
        return baselines.BOHB(space, random_seed=seed, **common)
    if name == "asha-bore":
        return baselines.ASHABORE(space, random_seed=seed, **common)
    if name == "asha-cqr":
        return baselines.ASHACQR(space, random_seed=seed, **common)
    if name == "median":
        inner = baselines.RandomSearch(space, metrics=[METRIC], do_minimize=False, random_seed=seed)
        return MedianStoppingRule(inner, time_attr="epoch", metric=METRIC, do_minimize=False, random_seed=seed)
    raise KeyError(name)


def _syne(name: str) -> Callable[[Table, int, int, int, Path], Runner]:
    def make(table: Table, seed: int, workers: int, trials: int, folder: Path) -> Runner:
        return SyneRunner(table, lambda space, s: _syne_scheduler(name, space, s, table.max_epochs), seed)
    return make


def _sweeper(method: str, scheduler: Mapping[str, Any] | None, brackets: int = 1,
             sampler: Mapping[str, Any] | None = None) -> Callable[[Table, int, int, int, Path], Runner]:
    def make(table: Table, seed: int, workers: int, trials: int, folder: Path) -> Runner:
        return SweeperRunner(table, seed, workers, trials, method, scheduler, folder, brackets, sampler)
    return make


def _at_optuna_costs(table: Table, seed: int, workers: int, trials: int, folder: Path) -> Runner:
    """sweeper's default search charged Optuna's start costs instead of its own (Ray's start, the
    trial actors'): what its decisions alone are worth against Optuna's."""
    runner = _sweeper("bayes", None)(table, seed, workers, trials, folder)
    runner.costs = COSTS["optuna"]
    return runner


def _ray(table: Table, seed: int, workers: int, trials: int, folder: Path) -> Runner:
    return RayRunner(table, seed)


RUNNERS: dict[str, Callable[[Table, int, int, int, Path], Runner]] = {
    "sweeper": _sweeper("bayes", None),  # the default: what `method: bayes` runs with no scheduler named
    "random": _sweeper("random", None),
    # Candidates for sweeper's default (issue 19, part 3): each changes one thing of "sweeper".
    "sweeper-random-asha": _sweeper("random", {"type": "asha"}),
    "sweeper-grace3": _sweeper("bayes", {"type": "asha", "grace_period": 3}),
    "sweeper-rf2": _sweeper("bayes", {"type": "asha", "reduction_factor": 2}),
    "sweeper-hyperband": _sweeper("bayes", {"type": "asha"}, brackets=3),
    "sweeper-no-stopping": _sweeper("bayes", {"type": "none"}),
    "sweeper-promotion": PromotionRunner,
    "sweeper-optuna-costs": _at_optuna_costs,
    # TPE's settings in parallel. sweeper's is Optuna 5's default for one objective: multivariate,
    # the constant liar, 10 startup trials (fewer for budgets under 30); each candidate turns one off.
    "sweeper-tpe-no-liar": _sweeper("bayes", {"type": "asha"}, sampler={"multivariate": True, "constant_liar": False,
                                                                       "n_startup_trials": 10}),
    "sweeper-tpe-independent": _sweeper("bayes", {"type": "asha"}, sampler={"multivariate": False,
                                                                           "constant_liar": True,
                                                                           "n_startup_trials": 10}),
    "sweeper-tpe-startup-4": _sweeper("bayes", {"type": "asha"}, sampler={"multivariate": True, "constant_liar": True,
                                                                         "n_startup_trials": 4}),
    "optuna-tpe-hyperband": _optuna("tpe", "hyperband"),
    "optuna-tpe-sha": _optuna("tpe", "sha"),
    "optuna-tpe-median": _optuna("tpe", "median"),
    "optuna-gp-hyperband": _optuna("gp", "hyperband"),
    "ray-asha": _ray,
    "syne-asha": _syne("asha"),
    "syne-hyperband": _syne("hyperband"),
    "syne-bohb": _syne("bohb"),
    "syne-asha-bore": _syne("asha-bore"),
    "syne-asha-cqr": _syne("asha-cqr"),
    "syne-median": _syne("median"),
}
# Not run, and why: Ray Tune's HyperBandScheduler (synchronous Hyperband) and its BOHB
# (HyperBandForBOHB) make their decisions through the TuneController (pause_trial, stop_trial,
# choose_trial_to_run over the controller's trial statuses), so they cannot be driven without
# Ray's controller, and TuneBOHB needs hpbandster and ConfigSpace. Syne Tune 0.16 no longer ships
# promotion-type ASHA, PASHA, DEHB or MOBSTER/Hyper-Tune; its ASHA with brackets > 1 is its
# asynchronous Hyperband.


def run_one(table: Table, name: str, seed: int, workers: int, trials: int, costs: Costs | None = None,
            ray_running: bool = False, noise: Noise | None = None) -> Outcome:
    """Simulate runner ``name`` once, with its own seed ``seed`` and ``costs`` in place of its tool's
    (with ``ray_running``, its tool's :data:`COSTS_RAY_RUNNING`), and ``noise`` added to each trial.
    The global NumPy and ``random`` states are seeded too: Syne Tune draws its ASHA brackets from
    NumPy's global state."""
    import numpy as np

    random.seed(seed)
    np.random.seed(seed)
    shm = Path("/dev/shm")  # sweeper's SQLite study in memory when the system has it: 2.5x faster here
    with tempfile.TemporaryDirectory(dir=shm if shm.is_dir() else None) as folder:
        runner = RUNNERS[name](table, seed, workers, trials, Path(folder))
        if ray_running:
            tool = next((tool for tool, c in COSTS.items() if c is runner.costs), None)
            if tool is None:
                raise ValueError(f"runner {name!r}: its start costs are none of COSTS', so none of "
                                 "COSTS_RAY_RUNNING's stands in for them")
            runner.costs = COSTS_RAY_RUNNING[tool]
        if costs is not None:
            runner.costs = costs
        try:
            return simulate(table, runner, workers, trials, noise, seed)
        finally:
            runner.close()


def quartiles(values: Sequence[float]) -> dict[str, float]:
    """Median and interquartile range (``q25``, ``median``, ``q75``; ``inf`` counts as the largest)."""
    xs = sorted(values)
    if len(xs) == 1:
        return {"q25": xs[0], "median": xs[0], "q75": xs[0]}
    q = statistics.quantiles(xs, n=4, method="inclusive") if all(math.isfinite(x) for x in xs) else [
        _rank(xs, 0.25), _rank(xs, 0.5), _rank(xs, 0.75)]
    return {"q25": q[0], "median": q[1], "q75": q[2]}


def _rank(xs: Sequence[float], p: float) -> float:
    return xs[min(len(xs) - 1, round(p * (len(xs) - 1)))]


def _seeds(text: str) -> list[int]:
    if "-" in text:
        lo, hi = text.split("-")
        return list(range(int(lo), int(hi) + 1))
    return [int(text)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=_seeds, default=_seeds("0-29"), help="a range such as 0-29, or one seed")
    parser.add_argument("--workers", type=int, nargs="+", default=[4, 16])
    parser.add_argument("--trials", type=int, nargs="+", default=[32, 64, 96])
    parser.add_argument("--runners", nargs="+", default=list(RUNNERS), choices=list(RUNNERS))
    parser.add_argument("--table", type=Path, default=TABLE)
    parser.add_argument("--json", type=Path, default=None,
                        help="write the figures (and every seed's) here; rows already in it for the same seeds "
                             "are kept, not run again, so a cut-short run goes on")
    parser.add_argument("--write", action="store_true", help="write the table into RESULTS.md and simulate.png "
                                                              "(simulate_ray_running.png with --ray-running, "
                                                              "simulate_noise.png with --noise)")
    parser.add_argument("--jobs", type=int, default=1, help="seeds simulated side by side (processes)")
    parser.add_argument("--ray-running", action="store_true",
                        help="the Ray tools join a Ray already up (COSTS_RAY_RUNNING) instead of starting their own")
    parser.add_argument("--noise", action="store_true",
                        help="add training noise to each trial, as measured between the table's two seeds (Noise)")
    args = parser.parse_args()
    table = Table.read(args.table)
    if len(table.runs) < math.prod(len(v) for v in table.grid.values()):
        raise SystemExit(f"{args.table}: {len(table.runs)} of {math.prod(len(v) for v in table.grid.values())} "
                         "configurations recorded; run python -m benchmarks.curves.record to finish it")
    targets = {"top1": table.threshold(0.01), "top5": table.threshold(0.05)}
    best = max(table.best_values())
    print(f"{len(table.runs)} configurations; top-1% {targets['top1']:.4f}, top-5% {targets['top5']:.4f}, "
          f"best {best:.4f}", flush=True)
    costs = {tool: dataclasses.asdict(c) for tool, c in costs_of(args.ray_running).items()}
    noise = Noise.measure(retime(load(args.table))[0]) if args.noise else None
    figures: dict[str, Any] = {"targets": targets, "best": best, "seeds": args.seeds, "results": {},
                               "syne_backend_check": {}, "ray_running": args.ray_running, "costs": costs,
                               "noise": dataclasses.asdict(noise) if noise is not None else None}
    if args.json is not None and args.json.exists():  # resumable: rows already in OUT for these seeds are kept
        _go_on_from(args.json, figures)
    for name in (n for n in args.runners if n.startswith("syne-") and n not in figures["syne_backend_check"]):
        seed, workers, trials = args.seeds[0], args.workers[0], args.trials[0]
        theirs = syne_backend_epochs(table, name[len("syne-"):], seed, workers, trials)
        mine = run_one(table, name, seed, workers, trials, costs=Costs(0.0, 0.0)).epochs_run
        same = sum(1 for t in mine if theirs.get(t) == mine[t])
        figures["syne_backend_check"][name] = {"same": same, "trials": len(mine)}
        print(f"{name}: Syne Tune's own simulator backend gives the same epochs for {same} of {len(mine)} trials "
              f"(seed {seed}, {workers} workers)", flush=True)
    for workers, trials, name in itertools.product(args.workers, args.trials, args.runners):
        if name in figures["results"].get(f"W{workers}", {}).get(f"T{trials}", {}):
            continue
        started = time.time()
        tasks = [(table, name, seed, workers, trials, None, args.ray_running, noise) for seed in args.seeds]
        if args.jobs > 1:
            import multiprocessing

            with multiprocessing.get_context("spawn").Pool(args.jobs) as pool:
                outcomes = pool.starmap(run_one, tasks)
        else:
            outcomes = [run_one(*task) for task in tasks]
        row = _row(outcomes, args.seeds, targets, best)
        figures["results"].setdefault(f"W{workers}", {}).setdefault(f"T{trials}", {})[name] = row
        print(f"W={workers:2d} T={trials:3d} {name:22s} top-1% {row['top1']['median']:8.0f} s "
              f"(IQR {row['top1']['q25']:.0f}-{row['top1']['q75']:.0f}), top-5% {row['top5']['median']:8.0f} s, "
              f"regret {row['final_regret']['median']:.4f}, {time.time() - started:.0f} s real", flush=True)
        if args.json is not None:  # after each row, so a long run leaves what it has
            args.json.write_text(json.dumps(_finite(figures)))
    if args.write:
        write_results(figures, args)


def _row(outcomes: Sequence[Outcome], seeds: Sequence[int], targets: Mapping[str, float],
         best: float) -> dict[str, Any]:
    """One runner's figures in one setting, as ``--json`` keeps them: quartiles of the seconds to
    each target, of the final regret (the table's ``best`` minus the incumbent), of the epochs and
    of the seconds, and every seed's figures and trace."""
    row: dict[str, Any] = {target: quartiles([o.time_to(v) for o in outcomes]) for target, v in targets.items()}
    row["final_regret"] = quartiles([best - o.best() for o in outcomes])
    row["epochs"] = quartiles([float(o.epochs) for o in outcomes])
    row["seconds"] = quartiles([o.seconds for o in outcomes])
    row["per_seed"] = [{"seed": s, "top1_s": o.time_to(targets["top1"]), "top5_s": o.time_to(targets["top5"]),
                        "best": o.best(), "seconds": o.seconds, "epochs": o.epochs, "distinct": o.distinct,
                        "trace": o.trace}
                       for s, o in zip(seeds, outcomes, strict=True)]
    return row


def costs_of(ray_running: bool) -> dict[str, Costs]:
    """Each tool's start costs: :data:`COSTS_RAY_RUNNING` when Ray is already running, else :data:`COSTS`."""
    return COSTS_RAY_RUNNING if ray_running else COSTS


def _go_on_from(path: Path, figures: dict[str, Any]) -> None:
    """Take the rows (and Syne Tune checks) of an earlier ``--json`` file into ``figures``.

    Raises:
        SystemExit: the file's seeds, targets, mode or start costs differ from ``figures``' (its
            rows were simulated otherwise: neither go on from them nor overwrite them).
    """
    earlier = json.loads(path.read_text())
    earlier.setdefault("ray_running", False)  # a file from before --ray-running
    earlier.setdefault("noise", None)  # ... or --noise
    differs = [key for key in ("seeds", "targets", "ray_running", "costs", "noise")
               if earlier.get(key) != figures[key]]
    if differs:
        raise SystemExit(f"{path}: its {', '.join(differs)} differ from this run's; name another --json file")
    figures["results"], figures["syne_backend_check"] = earlier["results"], earlier["syne_backend_check"]
    print(f"{path}: going on from {sum(len(r) for w in earlier['results'].values() for r in w.values())} "
          "rows already there", flush=True)


def _finite(value: Any) -> Any:
    """``value`` with every infinite or NaN float as ``None`` (JSON has neither)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def _seconds(value: float | None) -> str:
    """Seconds as written in the table; ``None`` (read back from the JSON) or infinite: never reached."""
    return "never" if value is None or not math.isfinite(value) else f"{value:,.0f}"


def _never_last(value: float | None) -> float:
    return math.inf if value is None else value


def write_results(figures: Mapping[str, Any], args: argparse.Namespace) -> None:
    """The section of ``benchmarks/RESULTS.md`` (a table of medians and interquartile ranges) and
    ``benchmarks/simulate.png`` (median regret against simulated time, one panel per workers x trials)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from benchmarks._results import machine, write_section

    results = {w: {t: {name: row for name, row in rows.items() if name in args.runners}  # only the rows
                       for t, rows in figures["results"][w].items() if int(t[1:]) in args.trials}  # the command names
               for w in figures["results"] if int(w[1:]) in args.workers}
    widths = sorted(results, key=lambda w: int(w[1:]))
    budgets = sorted({t for w in widths for t in results[w]}, key=lambda t: int(t[1:]))
    panels = [(w, t) for w in widths for t in budgets if t in results[w]]
    fig, axes = plt.subplots(len(widths), len(budgets), figsize=(5 * len(budgets), 3.6 * len(widths)),
                             squeeze=False)
    options = (f" --workers {' '.join(map(str, args.workers))} --trials {' '.join(map(str, args.trials))}"
               + (f" --runners {' '.join(args.runners)}" if list(args.runners) != list(RUNNERS) else "")
               + (" --ray-running" if args.ray_running else "") + (" --noise" if args.noise else ""))
    listed = ", ".join(f"{k} {c.sweep_s}, {c.trial_s}" for k, c in costs_of(args.ray_running).items())
    lines = [f"Machine that recorded the table: see benchmarks/curves/README.md. Simulated on {machine()}.",
             f"Start costs (sweep, trial; seconds): {listed}"
             + (" (the Ray tools join a Ray that is already running)." if args.ray_running else ".")
             + (f" Training noise added to each trial: {figures['noise']} (Noise)." if figures.get("noise") else ""),
             f"Command: `python -m benchmarks.simulate --seeds {args.seeds[0]}-{args.seeds[-1]}{options}`; "
             "targets: the table's "
             f"top-1% ({figures['targets']['top1']:.4f}) and top-5% ({figures['targets']['top5']:.4f}) best "
             f"val_accuracy; best {figures['best']:.4f}. Simulated seconds, median (q25-q75) over "
             f"{len(args.seeds)} seeds; 'never' when more than that share of seeds never reached it.", "",
             "| workers | trials | runner | to top-1% | seeds that reach it | to top-5% | final regret | epochs |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for w, t in panels:
        ax = axes[widths.index(w)][budgets.index(t)]
        rows = sorted(results[w][t].items(), key=lambda kv: (_never_last(kv[1]["top1"]["median"]),
                                                             _never_last(kv[1]["top5"]["median"])))
        for name, row in rows:
            q1, q5, r = row["top1"], row["top5"], row["final_regret"]
            reached = sum(1 for s in row["per_seed"] if s["top1_s"] is not None and math.isfinite(s["top1_s"]))
            lines.append(f"| {w[1:]} | {t[1:]} | {name} | {_seconds(q1['median'])} ({_seconds(q1['q25'])}-"
                         f"{_seconds(q1['q75'])}) | {reached}/{len(row['per_seed'])} | {_seconds(q5['median'])} | "
                         f"{r['median']:.4f} | "
                         f"{row['epochs']['median']:.0f} |")
            horizon = max(s["seconds"] for s in row["per_seed"])
            grid = [horizon * i / 200 for i in range(201)]
            regret = [statistics.median(figures["best"] - _best_at(s["trace"], x) for s in row["per_seed"])
                      for x in grid]
            ax.plot(grid, regret, label=name, lw=2.2 if name == "sweeper" else 1.0)
        ax.set(title=f"{w[1:]} workers, {t[1:]} trials", xlabel="simulated seconds", ylabel="median regret",
               yscale="log")
    axes.flat[0].legend(fontsize=6)
    fig.tight_layout()
    picture = f"simulate{'_ray_running' if args.ray_running else ''}{'_noise' if args.noise else ''}.png"
    fig.savefig(Path(__file__).with_name(picture), dpi=110)
    write_section(f"Simulated search on the curve table{', Ray already running' if args.ray_running else ''}"
                  f"{', with training noise' if args.noise else ''} ({time.strftime('%Y-%m-%d')})",
                  [*lines, "", f"![median regret against simulated time]({picture})"])


def _best_at(trace: Sequence[Sequence[float]], seconds: float) -> float:
    best = 0.0
    for t, _, value in trace:
        if t > seconds:
            break
        best = value
    return best


if __name__ == "__main__":
    main()
