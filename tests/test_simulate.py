"""The curve table's reader and the simulator that replays it (benchmarks.curves, benchmarks.simulate):
the simulated clock's bookkeeping worked by hand, ASHA's decisions in the simulator equal to the
same scheduler run by Ray Tune on the same curves, and sweeper's own searcher and scheduler
driven without Ray processes on a real SQLite study."""

from __future__ import annotations

import gzip
import math
from pathlib import Path
from typing import Any

import pytest

from benchmarks.curves.table import Run, append, complete_members, config_id, configs, load, retime
from benchmarks.simulate import CONTINUE, PAUSE, STOP, Costs, Noise, RayRunner, Runner, SweeperRunner, Table, simulate


def _run(cid: int, config: dict[str, Any], values: list[float], seconds: list[float]) -> Run:
    return Run(cid, 0, config, 100.0, tuple(values), tuple(values), tuple(values), tuple(seconds))


class Scripted(Runner):
    """Suggests the table's configurations in a fixed order; stops or pauses where told."""

    costs = Costs(sweep_s=10.0, trial_s=1.0)

    def __init__(self, order: list[dict[str, Any]], stop: dict[int, int] | None = None,
                 pause: dict[int, int] | None = None):
        self.order, self.stop, self.pause = order, stop or {}, pause or {}
        self.ended: list[tuple[int, int, float]] = []
        self.paused: list[int] = []
        self.resumed: list[int] = []

    def suggest(self, trial: int) -> dict[str, Any] | None:
        return self.order[trial] if trial < len(self.order) else None

    def result(self, trial: int, epoch: int, value: float) -> str:
        if self.stop.get(trial) == epoch:
            return STOP
        if self.pause.get(trial) == epoch and trial not in self.resumed:
            self.paused.append(trial)
            return PAUSE
        return CONTINUE

    def end(self, trial: int, epoch: int, value: float) -> None:
        self.ended.append((trial, epoch, value))

    def resume(self) -> int | None:
        if self.paused and len(self.ended) >= 1:
            trial = self.paused.pop()
            self.resumed.append(trial)
            return trial
        return None


def _three() -> Table:
    return Table({
        (0, 0): _run(0, {"a": 0}, [0.1, 0.2, 0.3], [1, 2, 3]),
        (1, 0): _run(1, {"a": 1}, [0.5, 0.6, 0.7], [1, 1, 1]),
        (2, 0): _run(2, {"a": 2}, [0.4, 0.8, 0.9], [5, 5, 5]),
        (3, 0): _run(3, {"a": 3}, [0.2, math.nan], [1, 0.5]),
    })


def test_the_clock_adds_the_sweep_start_each_trial_start_and_the_tables_epoch_seconds() -> None:
    table = _three()
    runner = Scripted([{"a": 0}, {"a": 1}, {"a": 2}], stop={1: 2})
    out = simulate(table, runner, workers=2, trials=3)
    # t=10: trials 0 and 1 start (+1 s each); trial 1 stops after epoch 2 at 13 and trial 2 takes its
    # worker (13 + 1 + 5 = 19, then 24, 29); trial 0 runs 12, 14, 17.
    assert out.trace == [(12.0, 1, 0.1), (12.0, 2, 0.5), (13.0, 3, 0.6), (24.0, 7, 0.8), (29.0, 8, 0.9)]
    assert (out.seconds, out.epochs, out.trials) == (29.0, 8, 3)
    assert out.epochs_run == {0: 3, 1: 2, 2: 3}
    assert runner.ended == [(1, 2, 0.6), (0, 3, 0.3), (2, 3, 0.9)]
    assert out.time_to(0.7) == 24.0 and out.time_to(0.95) == math.inf
    assert out.best_at(23.9) == 0.6 and out.best() == 0.9
    assert table.threshold(0.01) == 0.9 and table.threshold(0.5) == 0.7


def test_a_diverged_run_fails_at_its_nan_epoch_and_frees_its_worker() -> None:
    runner = Scripted([{"a": 3}, {"a": 1}])
    out = simulate(_three(), runner, workers=1, trials=2)
    assert runner.ended[0][:2] == (0, 2) and math.isnan(runner.ended[0][2])
    # 10 + 1 + 1 + 0.5 = 12.5 when trial 0 fails; trial 1: 12.5 + 1 + 1 + 1 + 1 = 16.5
    assert out.seconds == 16.5 and out.epochs_run == {0: 2, 1: 3}


def test_a_paused_trial_resumes_where_it_stopped_and_pays_the_start_again() -> None:
    runner = Scripted([{"a": 1}, {"a": 0}], pause={0: 1})
    out = simulate(_three(), runner, workers=1, trials=2)
    # trial 0 pauses at 12; trial 1 runs 12 + 1 + 1, +2, +3 = 19; trial 0 resumes: 19 + 1 + 1 + 1 = 22
    assert runner.resumed == [0]
    assert out.seconds == 22.0 and out.epochs_run == {0: 3, 1: 3}


def test_training_noise_is_measured_between_two_seeds_and_drawn_afresh_for_each_trial() -> None:
    """Noise.measure: of two seeds' difference, the spread of its mean and of the rest, over sqrt(2);
    with noise each trial (a configuration run twice included) gets its own draw, the same for the
    same seed, and noise of 0 replays the table exactly."""
    runs = {(0, 0): _run(0, {"a": 0}, [0.1, 0.2, 0.3], [1] * 3), (0, 1): _run(0, {"a": 0}, [0.1, 0.2, 0.3], [1] * 3),
            (1, 0): _run(1, {"a": 1}, [0.5, 0.5, 0.5], [1] * 3), (1, 1): _run(1, {"a": 1}, [0.3, 0.4, 0.2], [1] * 3)}
    noise = Noise.measure(runs)  # differences: 0, 0, 0 (mean 0) and 0.2, 0.1, 0.3 (mean 0.2, rest -0.1..0.1)
    assert noise.run_sd == round(0.1 / math.sqrt(2), 4)
    assert noise.epoch_sd == round(math.sqrt((0.1**2 + 0.1**2) / 6) / math.sqrt(2), 4)
    with pytest.raises(ValueError, match="two seeds"):
        Noise.measure({k: v for k, v in runs.items() if k[1] == 0})

    table, order = _three(), [{"a": 1}, {"a": 1}, {"a": 2}]
    exact = simulate(table, Scripted(order), workers=1, trials=3)
    assert simulate(table, Scripted(order), workers=1, trials=3, noise=Noise(0.0, 0.0), seed=5) == exact
    assert exact.distinct == 2
    noisy = [simulate(table, Scripted(order), workers=1, trials=3, noise=Noise(0.05, 0.02), seed=s) for s in (1, 1, 2)]
    assert noisy[0] == noisy[1] and noisy[0].trace != noisy[2].trace
    assert noisy[0].trace != exact.trace and noisy[0].seconds == exact.seconds  # the clock is the table's


def test_the_split_benchmark_takes_the_tables_best_then_a_spread_and_ranks_ties_alike() -> None:
    """benchmarks.curves.splits on the committed table: its TOP best configurations in order, then
    SPREAD of the rest; Spearman's correlation with average ranks for ties."""
    from benchmarks.curves.splits import SPREAD, TOP, chosen, spearman
    from benchmarks.curves.table import TABLE, load

    runs, ids = load(TABLE), chosen()
    values = [runs[cid, 0].best for cid in ids]
    assert len(set(ids)) == TOP + SPREAD
    assert values[:TOP] == sorted(values[:TOP], reverse=True)
    assert values[0] == max(run.best for (_, seed), run in runs.items() if seed == 0)
    assert min(values[:TOP]) >= max(values[TOP:]) and values[TOP:] == sorted(values[TOP:], reverse=True)
    assert spearman([1.0, 2.0, 3.0], [10.0, 20.0, 30.0]) == pytest.approx(1.0)
    assert spearman([1.0, 1.0, 3.0], [3.0, 3.0, 1.0]) == pytest.approx(-1.0)  # tied ranks averaged


def test_a_splits_own_spread_is_what_another_split_adds_to_another_seeds_variance() -> None:
    """split_sd: the variance of (another split and seed) minus that of (another seed alone), mean
    differences over epochs; never below 0; and a bootstrap upper bound above the estimate."""
    from benchmarks.curves.splits import mean_difference, split_sd

    def pair(diff: float) -> tuple[Run, Run]:
        return (_run(0, {"a": 0}, [0.5 + diff, 0.6 + diff, math.nan], [1] * 3),
                _run(0, {"a": 0}, [0.5, 0.6, 0.7], [1] * 3))

    assert mean_difference(*pair(0.03)) == pytest.approx(0.03)  # the NaN epoch left out
    other_seed = [pair(d) for d in (0.01, -0.01, 0.01, -0.01)]  # variance 0.0001
    other_split = [pair(d) for d in (0.05, -0.05, 0.03, -0.03)]  # variance 0.0017
    sd, upper = split_sd(other_seed, other_split)
    assert sd == pytest.approx(math.sqrt(0.0017 - 0.0001))
    assert upper >= sd
    assert split_sd(other_split, other_seed)[0] == 0.0  # a split that moves less than the seed: nothing


def _cnn_table(grid: dict[str, list[Any]], seed: int) -> Table:
    """Every configuration of ``grid`` (``cnn`` trainer parameters), 9 epochs each, made-up
    curves rising to a top drawn with ``seed``."""
    import itertools
    import random

    rng = random.Random(seed)
    runs = {}
    for i, values in enumerate(itertools.product(*grid.values())):
        top = rng.uniform(0.3, 0.9)
        runs[(i, 0)] = _run(i, dict(zip(grid, values, strict=True)),
                            [round(top * (1 - math.exp(-e / 2)), 4) for e in range(1, 10)], [1.0] * 9)
    return Table(runs)


def test_with_ray_running_a_ray_tools_sweep_starts_earlier_and_decides_the_same(tmp_path: Path) -> None:
    from benchmarks.simulate import COSTS, COSTS_RAY_RUNNING, run_one

    table = _cnn_table({"lr": [1e-3, 1e-2], "batch_size": [32, 64], "dropout": [0.0, 0.4]}, seed=2)
    for name, tool in (("ray-asha", "ray"), ("sweeper", "sweeper"), ("optuna-tpe-sha", "optuna")):
        local = run_one(table, name, seed=0, workers=2, trials=6)
        running = run_one(table, name, seed=0, workers=2, trials=6, ray_running=True)
        shift = COSTS[tool].sweep_s - COSTS_RAY_RUNNING[tool].sweep_s
        assert (shift > 0) == (tool != "optuna")  # only the tools that start Ray save its start
        assert running.epochs_run == local.epochs_run  # the same decisions ...
        assert [(round(t + shift, 6), e, v) for t, e, v in running.trace] == [
            (round(t, 6), e, v) for t, e, v in local.trace]  # ... each epoch earlier by the start saved
        assert running.seconds == pytest.approx(local.seconds - shift)


def test_the_table_file_reads_back_exactly_and_a_cut_member_is_left_out(tmp_path: Path) -> None:
    path = tmp_path / "t.csv.gz"
    grid = configs()
    rows = [[7, 0, e, *grid[7].values(), 1234.0, 0.1 * e, 1.0 / e, 2.0 / e, 1.5] for e in (1, 2)]
    append(path, rows)
    append(path, [[8, 1, 1, *grid[8].values(), 99.0, math.nan, math.nan, math.nan, 0.25]])
    whole = path.stat().st_size
    import pandas as pd

    frame = pd.read_csv(path)  # readable without our code
    assert list(frame["epoch"]) == [1, 2, 1] and frame["val_accuracy"].isna().tolist() == [False, False, True]
    with open(path, "ab") as f:
        f.write(gzip.compress(b"9,0,1,half")[:10])  # a writer killed mid-member
    assert complete_members(path.read_bytes())[1] == whole
    runs = load(path)
    assert set(runs) == {(7, 0), (8, 1)}
    assert runs[(7, 0)].val_accuracy == (0.1, 0.2) and runs[(7, 0)].config == grid[7]
    assert runs[(7, 0)].param_count == 1234.0 and not runs[(7, 0)].diverged
    assert runs[(8, 1)].diverged and runs[(8, 1)].epoch_s == (0.25,)
    assert [config_id(c) for c in grid] == list(range(len(grid)))


def test_retime_scales_back_only_the_runs_slowed_far_beyond_their_cost_class() -> None:
    grid = configs()
    # Configurations 0, 4, ..., 28 differ only in lr and dropout: one cost class. 1 is another.
    totals = {0: 10.0, 4: 11.0, 8: 9.0, 12: 12.0, 16: 30.0, 20: 12.5, 1: 40.0}
    runs = {(cid, 0): Run(cid, 0, grid[cid], 1.0, (0.1, 0.2), (1.0, 0.9), (1.0, 0.9), (total / 4, 3 * total / 4))
            for cid, total in totals.items()}
    fixed, scaled = retime(runs)
    assert scaled == [16]  # 30 s against a median of 11.0 for its class; 12.5 (1.14x) is noise
    assert fixed[(16, 0)].epoch_s == pytest.approx((11.0 / 4, 3 * 11.0 / 4))  # the class median, same shape
    assert fixed[(16, 0)].val_accuracy == runs[(16, 0)].val_accuracy
    assert all(fixed[k] == runs[k] for k in runs if k != (16, 0))  # a class of one is its own median


def _curves(n: int, epochs: int) -> Table:
    import random

    rng = random.Random(5)
    runs = {}
    for i in range(n):
        top, speed = rng.uniform(0.3, 0.9), rng.uniform(0.5, 6)
        values = [round(top * (1 - math.exp(-e / speed)) + rng.uniform(-0.03, 0.03), 4) for e in range(1, epochs + 1)]
        runs[(i, 0)] = _run(i, {"i": i}, values, [1.0] * epochs)
    return Table(runs)


def _fixed_searcher(table: Table) -> Any:
    from ray.tune.search import Searcher

    class Fixed(Searcher):  # the table's configurations in order, each with its curve
        def __init__(self) -> None:
            super().__init__(metric="val_accuracy", mode="max")
            self.left = [{"i": r.config["i"], "curve": list(r.val_accuracy)} for r in table.runs.values()]

        def suggest(self, trial_id: str) -> dict[str, Any] | None:
            return self.left.pop(0) if self.left else Searcher.FINISHED

        def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False) -> None:
            return None

    return Fixed()


def _asha(kind: str) -> Any:
    from ray.tune.schedulers import ASHAScheduler

    from sweeper.engine.scheduler import RecordingASHA

    cls = RecordingASHA if kind == "sweeper" else ASHAScheduler
    return cls(time_attr="epoch", metric="val_accuracy", mode="max", max_t=9, grace_period=1, reduction_factor=3)


def _replay(config: dict[str, Any]) -> None:
    from ray import tune

    for epoch, value in enumerate(config["curve"], start=1):
        tune.report({"epoch": epoch, "val_accuracy": value})


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["ray", "sweeper"])
def test_asha_stops_the_same_trials_at_the_same_epochs_in_the_simulator_as_in_ray_tune(
        ray_local: None, tmp_path: Path, kind: str) -> None:
    from ray import tune

    table = _curves(12, 9)
    tuner = tune.Tuner(_replay, tune_config=tune.TuneConfig(
        search_alg=_fixed_searcher(table), scheduler=_asha(kind), num_samples=len(table.runs),
        max_concurrent_trials=1, reuse_actors=True), run_config=tune.RunConfig(storage_path=str(tmp_path), verbose=0))
    results = tuner.fit()
    through_ray = {int(r.config["i"]): int(r.metrics["epoch"]) for r in results}  # the last epoch reported
    out = simulate(table, RayRunner(table, 0, searcher=_fixed_searcher(table), scheduler=_asha(kind)),
                   workers=1, trials=len(table.runs))
    simulated = dict(out.epochs_run)  # trial numbers follow the table's order, as the searcher's
    assert simulated == through_ray
    assert sorted(set(simulated.values())) == [1, 3, 9]  # the curves reach every rung's decision


def test_sweepers_searcher_and_asha_run_without_ray_processes_on_a_real_study(tmp_path: Path) -> None:
    import optuna
    from optuna.trial import TrialState

    grid = {"lr": [1e-3, 1e-2], "batch_size": [32, 64], "dropout": [0.0, 0.4], "augment": [False, True]}
    table = _cnn_table(grid, seed=1)
    runner = SweeperRunner(table, seed=0, workers=2, trials=10, method="bayes", scheduler={"type": "asha"},
                           folder=tmp_path)
    out = simulate(table, runner, workers=2, trials=10)
    runner.close()
    study = optuna.load_study(study_name="sim-0", storage=f"sqlite:///{tmp_path / 'sim-0.db'}")
    finished = [t for t in study.trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(finished) == out.trials == 10
    pruned = [t for t in finished if t.state == TrialState.PRUNED]
    assert pruned and all(max(t.intermediate_values) in (1, 3) for t in pruned)
    for t in finished:  # each trial's curve in the study is the table's, as far as it ran
        curve = table.run({k: t.params[k] for k in grid}).val_accuracy
        reported = [t.intermediate_values[e] for e in sorted(t.intermediate_values)]
        assert reported == list(curve[:len(reported)])
    keys = [tuple(t.params[k] for k in grid) for t in finished]
    assert len(set(keys)) == len(keys)  # sweeper's duplicate check holds in the simulator too


def test_the_command_replays_a_table_file_and_writes_medians_and_quartiles(tmp_path: Path) -> None:
    import json
    import random
    import subprocess
    import sys

    rng = random.Random(3)
    path = tmp_path / "small.csv.gz"
    chosen = [(i, c) for i, c in enumerate(configs()) if c["filters"] == "8-16-32-64-64"
              and c["activation"] == "relu" and c["batch_norm"] and c["dropout"] == 0.0]
    for cid, config in chosen:  # 16 configurations: lr x batch_size x augment
        top = rng.uniform(0.3, 0.9)
        append(path, [[cid, 0, e, *config.values(), 1000.0, round(top * (1 - math.exp(-e / 3)), 4), 1.0, 1.0, 2.0]
                      for e in range(1, 10)])
    out = tmp_path / "figures.json"
    done = subprocess.run([sys.executable, "-m", "benchmarks.simulate", "--seeds", "0-2", "--workers", "2",
                           "--trials", "8", "--jobs", "2", "--runners", "sweeper", "random", "optuna-tpe-hyperband",
                           "ray-asha", "--table", str(path), "--json", str(out)],
                          capture_output=True, text=True, timeout=600, cwd=Path(__file__).resolve().parents[1])
    assert done.returncode == 0, done.stderr[-2000:]
    figures = json.loads(out.read_text())
    rows = figures["results"]["W2"]["T8"]
    assert set(rows) == {"sweeper", "random", "optuna-tpe-hyperband", "ray-asha"}
    for row in rows.values():
        assert len(row["per_seed"]) == 3
        times = sorted(s["top5_s"] if s["top5_s"] is not None else math.inf for s in row["per_seed"])
        assert row["top5"]["median"] in (times[1], None)
        assert row["top5"]["q25"] is None or row["top5"]["q25"] <= (row["top5"]["median"] or math.inf)
    # random search without early stopping trains every one of its 8 trials for all 9 epochs
    assert all(s["epochs"] == 72 for s in rows["random"]["per_seed"])
    # the file's rows were simulated with each sweep starting Ray: a --ray-running run neither goes
    # on from them nor overwrites them
    kept = out.read_text()
    refused = subprocess.run([sys.executable, "-m", "benchmarks.simulate", "--seeds", "0-2", "--workers", "2",
                              "--trials", "8", "--runners", "sweeper", "--ray-running", "--table", str(path),
                              "--json", str(out)],
                             capture_output=True, text=True, timeout=600, cwd=Path(__file__).resolve().parents[1])
    assert refused.returncode != 0 and "ray_running, costs differ" in refused.stderr
    assert out.read_text() == kept


def test_promotion_asha_pauses_at_each_rung_and_promotes_the_top_third(tmp_path: Path) -> None:
    import itertools
    import random

    from benchmarks.simulate import PromotionRunner

    grid = {"lr": [1e-3, 3e-3, 1e-2], "batch_size": [32, 64, 128]}
    rng = random.Random(2)
    runs = {}
    for i, values in enumerate(itertools.product(*grid.values())):
        top = rng.uniform(0.3, 0.9)
        runs[(i, 0)] = _run(i, dict(zip(grid, values, strict=True)),
                            [round(top * (1 - math.exp(-e / 2)), 4) for e in range(1, 10)], [1.0] * 9)
    table = Table(runs)
    runner = PromotionRunner(table, seed=0, workers=1, trials=9, folder=tmp_path)
    out = simulate(table, runner, workers=1, trials=9)
    runner.close()
    # Rungs at 1 and 3 epochs. Every trial pauses at each rung it reaches; a promotion is for good
    # (Li et al. 2020, Algorithm 2), so a rung may promote more than a third of its trials in the end.
    rung1, rung3 = runner._rungs
    assert set(rung1) == set(range(9)) and sorted(set(out.epochs_run.values())) == [1, 3, 9]
    assert {t for t, e in out.epochs_run.items() if e >= 3} == set(rung3) == runner._promoted[0]
    assert {t for t, e in out.epochs_run.items() if e == 9} == runner._promoted[1]
    # once the budget is spent, each rung's top third (rounded up) has been promoted, whenever it arrived
    assert set(sorted(rung1, key=lambda t: -rung1[t])[:3]) <= runner._promoted[0]
    assert set(sorted(rung3, key=lambda t: -rung3[t])[:math.ceil(len(rung3) / 3)]) <= runner._promoted[1]
    assert out.epochs == sum(out.epochs_run.values())


def test_the_real_benchmarks_figures_are_computed_alike_on_real_and_simulated_seeds() -> None:
    """benchmarks.real_vs_simulated: a simulated trace closed at the sweep's end; the share of points
    where sweeper's median best is at or above each peer's; the epochs ratio to random's best."""
    import numpy as np

    from benchmarks.real_vs_simulated import PEERS, draws, figures, simulated_curves

    row = {"per_seed": [{"trace": [[5.0, 1, 0.3], [10.0, 2, 0.6]], "seconds": 30.0, "epochs": 6}]}
    ((t, e, b),) = simulated_curves(row)
    assert list(t) == [5.0, 10.0, 30.0] and list(e) == [1, 2, 6] and list(b) == [0.3, 0.6, 0.6]
    ahead = (np.array([1.0, 2.0]), np.array([1, 2]), np.array([0.5, 0.7]))
    behind = (np.array([1.0, 4.0]), np.array([1, 2]), np.array([0.4, 0.6]))
    out = figures({"sweeper": [ahead], **{p: [behind] for p in PEERS}})
    assert all(out[f"{axis}|{p}"] == 1.0 for axis in ("time", "epochs") for p in PEERS)
    assert out["ratio"] == 1.0  # random's final best (0.6) at its 2nd epoch; sweeper's 2nd epoch beat it
    out = figures({"sweeper": [behind], **{p: [ahead] for p in PEERS}})
    # Only before the first report (t < 1 of 0..4: a quarter of the time points) are both at 0.
    assert all(0.2 < out[f"time|{p}"] < 0.3 for p in PEERS)
    assert all(out[f"epochs|{p}"] == 0.0 for p in PEERS) and out["ratio"] == math.inf
    drawn = draws({"sweeper": [ahead, behind], **{p: [behind, ahead] for p in PEERS}}, k=1, n=20)
    assert {d["time|Ray Tune"] for d in drawn} == {1.0, figures({"sweeper": [behind],
                                                                 **{p: [ahead] for p in PEERS}})["time|Ray Tune"]}


def test_every_runner_of_the_real_benchmark_is_scored_on_its_seeds_validation_split(tmp_path: Path,
                                                                                    mnist_pngs: Path) -> None:
    """benchmarks.time_to_accuracy: the data Ray Tune's and Optuna's trials get in seed ``s`` is the
    data sweeper gives each trial of its runners' sweeps of seed ``s``, split included (until
    2026-12-07 the peers took split 0 in every seed: their levels and sweeper's were not comparable)."""
    from benchmarks.time_to_accuracy import peer_data, sweeper_spec
    from sweeper.spec import validate
    from trainers.base import DataConfig

    for seed in (0, 2):
        for early_stopping in (True, False):
            sweep = validate(sweeper_spec(seed, 4, 3, mnist_pngs, tmp_path, tmp_path / "log.jsonl",
                                          early_stopping=early_stopping))
            given = sweep.trial_config(next(iter(sweep.space.iter_grid() or ())), 1)["data"]
            assert DataConfig(**given) == DataConfig(**peer_data(mnist_pngs, seed))
            assert DataConfig(**given).seed == seed
