"""Time to accuracy: sweeper against the tools its users would pick instead, on real photos.

The same training function (:mod:`benchmarks.logged_cnn`: sweeper's ``cnn`` trainer, logging
each epoch) runs inside every runner, on ``../shared/data/cifar10-5k`` (real CIFAR-10 photos,
32 px; 10% of train held out, stratified, for validation, by the seed's split, the same for every
runner of a seed; the test split only for the retrain),
over the same search space, with the same trial budget, two trials at a time, one CPU thread each.
The space is the curve table's grid (:data:`benchmarks.curves.table.GRID`: 256 configurations,
kernel 3 and 128 dense units fixed), so that the real runs check what the simulator
(:mod:`benchmarks.simulate`) found on the same configurations:

- ``sweeper``: ``run_sweep`` (what ``sweeper launch`` runs) on ``method: bayes`` with no
  scheduler named: sweeper's default search (TPE + ASHA at grace period 1 and reduction factor 3,
  no configuration twice), SQLite study, reused actors;
- ``random (sweeper, no ES)``: ``method: random``, ``scheduler: none``: every trial to the end;
- ``Ray Tune``: ``tune.Tuner`` with ``OptunaSearch`` (its default TPE) and ``ASHAScheduler``
  (grace period 1, reduction factor 3, ``max_t`` = epochs), ``reuse_actors=True``;
- ``Optuna``: ``study.optimize(n_jobs=2)`` (threads) with ``TPESampler`` and ``HyperbandPruner``
  (min resource 1, reduction factor 3, max resource = epochs).

Figures, per runner, median and range over seeds: best ``val_accuracy`` reported so far (any
epoch of any trial) against wall seconds from the runner's call (Ray already started) and
against epochs trained; then each runner's best config (its own tool's notion of best) retrained
by :func:`sweeper.retrain.retrain` (train + validation, tested on the test split), the procedure
of ``sweeper retrain``. Targets (issue 15): sweeper reaches random search's final best with at
most a third of the epochs random search needed for it (median over seeds), and at every
wall-clock point sweeper's median best is at least each peer's median best.

Usage: ``python -m benchmarks.time_to_accuracy [--seeds 0 1 2] [--trials 32] [--epochs 27]``
from the repository root (``pip install -e ".[bench]"`` for matplotlib). Writes its section of
``benchmarks/RESULTS.md`` and ``benchmarks/time_to_accuracy.png``; the raw logs go to
``benchmarks/time_to_accuracy.json`` after each (runner, seed), and a run of the same trials and
epochs skips the pairs already there: cut short, it goes on where it stopped (about an hour per
seed for the four runners on a 2-core CPU).
"""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks._results import CIFAR_5K, RawLogs, cifar_data, machine, start, write_section
from benchmarks.curves.table import FIXED, GRID
from benchmarks.logged_cnn import cnn_params

HERE = Path(__file__).resolve().parent
CONCURRENCY = 2
RUNNERS = ("sweeper", "random (sweeper, no ES)", "Ray Tune", "Optuna")
SPACE = "curve-table grid"  # recorded with the raw logs: a run on another space starts them afresh
# ... and so is the validation split: every runner of seed s on split s (until 2026-12-07 the peers took split 0).
SPLIT = "the seed's"



def sweeper_parameters(log: Path) -> dict[str, Any]:
    """The search space in the spec's (W&B's) format: the curve table's grid."""
    return {**{k: {"values": list(v)} for k, v in GRID.items()}, **{k: {"value": v} for k, v in FIXED.items()},
            "log": {"value": str(log)}}


def sweeper_spec(seed: int, trials: int, epochs: int, root: Path, tmp: Path, log: Path, *,
                 early_stopping: bool) -> dict[str, Any]:
    """The spec of sweeper's runner (``early_stopping``: its default search, else its random
    search to the end), its study in ``tmp``."""
    raw: dict[str, Any] = {
        "name": f"tta-{'asha' if early_stopping else 'random'}-{seed}",
        "method": "bayes" if early_stopping else "random", "run_cap": trials, "epochs": epochs,
        "metric": {"name": "val_accuracy", "goal": "maximize"}, "seed": seed,
        "trainer": "benchmarks.logged_cnn:LOGGED_CNN", "data": cifar_data(root),
        "max_concurrent_trials": CONCURRENCY, "resources_per_trial": {"cpu": 1, "gpu": 0},
        "storage": f"sqlite:///{tmp / 'studies.db'}", "artifacts": str(tmp / "artifacts"),
        "parameters": sweeper_parameters(log),
    }
    if not early_stopping:
        raw["scheduler"] = {"type": "none"}
    return raw


def run_sweeper(seed: int, trials: int, epochs: int, root: Path, tmp: Path, log: Path, *,
                early_stopping: bool) -> dict[str, Any]:
    """A sweep through ``run_sweep``; its best config in ``sweeper export``'s format."""
    from sweeper.engine.launch import run_sweep
    from sweeper.spec import validate
    from sweeper.study.results import export_config

    raw = sweeper_spec(seed, trials, epochs, root, tmp, log, early_stopping=early_stopping)
    outcome = run_sweep(validate(raw))
    return export_config(outcome.study, raw["storage"])


def peer_data(root: Path, seed: int) -> dict[str, Any]:
    """A peer's ``data`` in seed ``seed``: :func:`~benchmarks._results.cifar_data` with the
    train/validation split of that seed, the split sweeper gives a sweep of seed ``seed`` (the
    split's seed is the sweep's), so that every runner of a seed is scored on the same validation
    images. (Until 2026-12-07 the peers took the default split, seed 0, in every seed.)"""
    return {**cifar_data(root), "seed": seed}


def run_ray_tune(seed: int, trials: int, epochs: int, root: Path, tmp: Path, log: Path) -> dict[str, Any]:
    """Ray Tune's documented API: ``Tuner`` + ``OptunaSearch`` + ``ASHAScheduler``, reused actors."""
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.optuna import OptunaSearch

    data = peer_data(root, seed)

    def trainable(config: dict[str, Any]) -> None:
        from benchmarks.logged_cnn import LOGGED_CNN
        from trainers.base import DataConfig, TrainConfig

        params = {**LOGGED_CNN.defaults(), **config}
        LOGGED_CNN.fit(TrainConfig(params=params, data=DataConfig(**data), epochs=epochs, seed=seed, threads=1),
                       lambda epoch, metrics, checkpoint=None: tune.report(dict(metrics)))

    space = {**{k: tune.choice(list(v)) for k, v in GRID.items()}, **FIXED, "log": str(log)}
    tuner = tune.Tuner(
        tune.with_resources(trainable, {"cpu": 1}),
        param_space=space,
        tune_config=tune.TuneConfig(
            search_alg=OptunaSearch(metric="val_accuracy", mode="max", seed=seed),
            scheduler=ASHAScheduler(metric="val_accuracy", mode="max", max_t=epochs, grace_period=1,
                                    reduction_factor=3),
            num_samples=trials, max_concurrent_trials=CONCURRENCY, reuse_actors=True),
        run_config=tune.RunConfig(storage_path=str(tmp / "tune"), name=f"tta-tune-{seed}", verbose=0),
    )
    best = tuner.fit().get_best_result(metric="val_accuracy", mode="max", scope="all")
    return _config("Ray Tune", dict(best.config or {}), data, epochs, seed)


def run_optuna(seed: int, trials: int, epochs: int, root: Path, log: Path) -> dict[str, Any]:
    """Optuna's documented API: ``TPESampler`` + ``HyperbandPruner``, ``optimize(n_jobs=2)`` (threads)."""
    import optuna

    from benchmarks.logged_cnn import LOGGED_CNN
    from trainers.base import DataConfig, TrainConfig

    data = peer_data(root, seed)

    def objective(trial: optuna.Trial) -> float:
        chosen = {k: trial.suggest_categorical(k, list(v)) for k, v in GRID.items()}
        params = {**LOGGED_CNN.defaults(), **FIXED, **chosen, "log": str(log)}
        best = 0.0

        def report(epoch: int, metrics: Any, checkpoint: Any = None) -> None:
            nonlocal best
            best = max(best, float(metrics["val_accuracy"]))
            trial.report(float(metrics["val_accuracy"]), epoch)
            if trial.should_prune():
                raise optuna.TrialPruned()

        LOGGED_CNN.fit(TrainConfig(params=params, data=DataConfig(**data), epochs=epochs, seed=seed + trial.number,
                                   threads=1), report)
        return best

    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed),
                                pruner=optuna.pruners.HyperbandPruner(min_resource=1, max_resource=epochs,
                                                                      reduction_factor=3))
    study.optimize(objective, n_trials=trials, n_jobs=CONCURRENCY)
    return _config("Optuna", study.best_trial.params, data, epochs, seed)


def run_runner(runner: str, seed: int, trials: int, epochs: int, root: Path, tmp: Path, log: Path) -> dict[str, Any]:
    """Run one of :data:`RUNNERS`; its best config in ``sweeper export``'s format."""
    if runner == "sweeper":
        return run_sweeper(seed, trials, epochs, root, tmp, log, early_stopping=True)
    if runner == "random (sweeper, no ES)":
        return run_sweeper(seed, trials, epochs, root, tmp, log, early_stopping=False)
    if runner == "Ray Tune":
        return run_ray_tune(seed, trials, epochs, root, tmp, log)
    return run_optuna(seed, trials, epochs, root, log)


def _config(runner: str, params: dict[str, Any], data: dict[str, Any], epochs: int, seed: int) -> dict[str, Any]:
    """A peer's best params in ``sweeper export``'s format, for the same retrain."""
    return {"trainer": "benchmarks.logged_cnn:LOGGED_CNN", "params": dict(params), "data": data, "epochs": epochs,
            "seed": seed, "provenance": {"runner": runner}}


def retrain_test_accuracy(config: dict[str, Any], out: Path) -> float:
    """``sweeper retrain``'s procedure on ``config`` (train + validation, one seed, two threads):
    the test split's accuracy."""
    from sweeper.retrain import retrain

    plain = {**config, "trainer": "cnn", "params": cnn_params(config["params"]), "threads": CONCURRENCY}
    return float(retrain(plain, out, log=lambda line: None)["accuracy_mean"])


def read_log(log: Path, started: float) -> list[tuple[float, float]]:
    """The log's reports as ``(seconds since started, val_accuracy)``, in time order."""
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    return sorted((row["t"] - started, row["val_accuracy"]) for row in lines)


# A runner's progress in one seed: (seconds, epochs trained, best so far) after each report, shape (R,) each.
Curve = tuple[np.ndarray, np.ndarray, np.ndarray]


def best_curve(reports: list[tuple[float, float]]) -> Curve:
    """``(seconds, epochs trained, best so far)`` after each report, shape ``(R,)`` each."""
    t = np.array([r[0] for r in reports])
    best = np.maximum.accumulate(np.array([r[1] for r in reports]))
    return t, np.arange(1, len(reports) + 1), best


def best_at(xs: np.ndarray, best: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """Best so far at each ``grid`` point (0 before the first report), shape ``grid.shape``."""
    idx = np.searchsorted(xs, grid, side="right") - 1
    return np.where(idx >= 0, best[np.clip(idx, 0, None)], 0.0)


def epochs_to(epochs: np.ndarray, best: np.ndarray, target: float) -> int | None:
    """Epochs trained when the best first reached ``target`` (``None``: never)."""
    hit = np.flatnonzero(best >= target - 1e-12)
    return int(epochs[hit[0]]) if len(hit) else None


def epochs_ratio(sweeper: Curve, random: Curve) -> tuple[float, int | None, int | None]:
    """The target "random search's final best with at most a third of its epochs", in one seed:
    (sweeper's epochs to random's final best / random's epochs to it, ``inf`` when sweeper never
    reached it; random's epochs to it; sweeper's)."""
    target = float(random[2][-1])
    need_random, need_sweeper = epochs_to(random[1], random[2], target), epochs_to(sweeper[1], sweeper[2], target)
    return (need_sweeper / need_random) if need_sweeper and need_random else float("inf"), need_random, need_sweeper


def medians_against(ours: Sequence[Curve], theirs: Sequence[Curve], grid: np.ndarray,
                    axis: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Two runners' median best so far over seeds at each ``grid`` point, up to where the longer
    of the two ended (its longest seed; a runner that ended keeps its best: the user has that
    model). ``axis``: 0 for seconds, 1 for epochs trained.

    Returns:
        (the grid points kept, ours, theirs, the end), the arrays of shape ``(P,)``.
    """
    last = max(float(c[axis][-1]) for c in (*ours, *theirs))
    keep = grid <= last

    def median(curves: Sequence[Curve]) -> np.ndarray:
        return np.median([best_at(c[axis].astype(float), c[2], grid) for c in curves], axis=0)[keep]

    return grid[keep], median(ours), median(theirs), last


def grids(curves: Iterable[Curve]) -> tuple[np.ndarray, np.ndarray]:
    """The points at which runners are compared: 400 of time up to the last report of any curve,
    and each epoch up to the most any curve trained."""
    curves = list(curves)
    return (np.linspace(0, max(float(c[0][-1]) for c in curves), 400),
            np.arange(1, max(int(c[1][-1]) for c in curves) + 1))


def main() -> None:
    args = start(__doc__.splitlines()[0], data=CIFAR_5K, extra=lambda p: (
        p.add_argument("--trials", type=int, default=32), p.add_argument("--epochs", type=int, default=27),
        p.add_argument("--runners", nargs="+", default=list(RUNNERS), choices=RUNNERS),
        p.add_argument("--write-only", action="store_true", help="redo the table and picture from the raw logs")))
    from trainers.base import DataConfig
    from trainers.data import load_data

    logs = RawLogs(HERE / "time_to_accuracy.json",
                   {"trials": args.trials, "epochs": args.epochs, "space": SPACE, "split": SPLIT})
    if args.write_only:
        write(logs.raw)
        return
    root = args.data.resolve()
    load_data(DataConfig(**cifar_data(root)))  # decode into the node cache once, before any runner
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        for seed, runner in logs.todo(args.runners, args.seeds):
            log = tmp / f"{runner.split()[0]}-{seed}.jsonl"
            log.unlink(missing_ok=True)
            started = time.time()
            config = run_runner(runner, seed, args.trials, args.epochs, root, tmp, log)
            wall = time.time() - started
            test_acc = retrain_test_accuracy(config, tmp / f"retrain-{runner.split()[0]}-{seed}")
            reports = read_log(log, started)
            # When it ran: the time axis compares runs of one sitting only (the machine's speed moves).
            logs.save(runner, seed, {"reports": reports, "wall_s": wall, "test_accuracy": test_acc,
                                     "best_params": config["params"], "started": round(started)})
            print(f"seed {seed} {runner:<24} wall {wall:6.1f} s  epochs {len(reports)}"
                  f"  best val {max(a for _, a in reports):.4f}  test {test_acc:.4f}", flush=True)
    write(logs.raw)


def write(raw: dict[str, Any]) -> None:
    """The figure, the table and the reading of the targets from the raw logs."""
    runners = [r for r in RUNNERS if any(k.startswith(f"{r}|") for k in raw)]
    seeds = finished_seeds(raw, runners)
    curves = {(r, s): best_curve([tuple(x) for x in raw[f"{r}|{s}"]["reports"]]) for r in runners for s in seeds}
    t_grid, e_grid = grids(curves.values())
    by_time = {r: np.array([best_at(curves[r, s][0], curves[r, s][2], t_grid) for s in seeds]) for r in runners}
    by_epoch = {r: np.array([best_at(curves[r, s][1].astype(float), curves[r, s][2], e_grid) for s in seeds])
                for r in runners}
    _plot(t_grid, e_grid, by_time, by_epoch, curves, seeds)

    ratio_lines, ratios = (_ratio_lines(curves, seeds) if {"sweeper", "random (sweeper, no ES)"} <= set(runners)
                          else ([], []))
    wins = _comparison_lines(curves, seeds, runners, t_grid, e_grid) if "sweeper" in runners else []
    meta = raw.get("_meta", {})
    write_section(f"Time to accuracy against the peers on CIFAR-10 photos ({meta.get('date')})", [
        f"Machine: {meta.get('machine', machine())}. Command: `python -m benchmarks.time_to_accuracy --seeds "
        f"{' '.join(map(str, seeds))} --trials {meta.get('trials')} --epochs {meta.get('epochs')}`. "
        "Data: `cifar10-5k` (5,000 train photos, 10% held out for validation by the seed's split, the same for "
        "every runner of a seed; 1,000 test photos), 32 px. "
        f"Each runner: {meta.get('trials')} trials of up to {meta.get('epochs')} epochs, {CONCURRENCY} at a time, "
        "1 CPU thread each, the same training function and search space (the curve table's grid of 256 "
        "configurations: filters, activation, batch norm, dropout, lr, batch size, augment). Wall seconds "
        "from the runner's call, Ray already "
        "started. Median (min-max) over seeds. Picture: `benchmarks/time_to_accuracy.png`.",
        "",
        "| runner | best val_accuracy | wall s | epochs trained | s to 90% / 95% / 100% of the seed's top | "
        "test accuracy, best config retrained |",
        "| --- | --- | --- | --- | --- | --- |",
        *_summary_rows(raw, curves, runners, seeds),
        "",
        "Epochs sweeper needed to reach random search's final best (target: at most a third of random "
        "search's epochs to it, median over seeds):",
        "",
        "| seed | random search's final best | random's epochs to it (of all) | sweeper's epochs to it | ratio |",
        "| --- | --- | --- | --- | --- |",
        *ratio_lines,
        "",
        f"Median ratio: {statistics.median(ratios):.2f}." if ratios else "",
        "",
        "Best so far, median over seeds, at each point of time (400 points) and of epochs trained (each epoch), "
        "up to where the longer of the two runners (its longest seed) ended; a runner that ended keeps its best:",
        "",
        *wins,
    ])


def _summary_rows(raw: Mapping[str, Any], curves: Mapping[tuple[str, int], Curve], runners: list[str],
                  seeds: list[int]) -> list[str]:
    """The summary table's rows, one per runner: its best, wall seconds, epochs and retrained test
    accuracy as median (min-max) over seeds, and the median seconds to 90%, 95% and 100% of the
    best that any runner reached in the seed."""

    def rng(xs: list[float], fmt: str) -> str:
        return f"{statistics.median(xs):{fmt}} ({min(xs):{fmt}}-{max(xs):{fmt}})"

    def seconds_to(r: str, frac: float) -> float:
        need = []
        for s in seeds:
            top = max(float(curves[q, s][2][-1]) for q in runners)
            hit = np.flatnonzero(curves[r, s][2] >= frac * top - 1e-12)
            need.append(float(curves[r, s][0][hit[0]]) if len(hit) else float("inf"))
        return statistics.median(need)

    rows = []
    for r in runners:
        logs = [raw[f"{r}|{s}"] for s in seeds]
        rows.append(f"| {r} | {rng([float(curves[r, s][2][-1]) for s in seeds], '.4f')} | "
                    f"{rng([log['wall_s'] for log in logs], '.0f')} | "
                    f"{rng([float(curves[r, s][1][-1]) for s in seeds], '.0f')} | "
                    f"{' / '.join(_seconds(seconds_to(r, frac)) for frac in (0.9, 0.95, 1.0))} | "
                    f"{rng([log['test_accuracy'] for log in logs], '.4f')} |")
    return rows


def finished_seeds(raw: Mapping[str, Any], runners: Iterable[str]) -> list[int]:
    """The seeds of the raw logs that every one of ``runners`` has finished (a run cut short
    leaves some pairs for the next)."""
    runners = list(runners)
    return sorted(s for s in {int(k.split("|")[1]) for k in raw if "|" in k}
                  if all(f"{r}|{s}" in raw for r in runners))


def _ratio_lines(curves: Mapping[tuple[str, int], Curve], seeds: list[int]) -> tuple[list[str], list[float]]:
    """The table rows of the epochs sweeper needed to reach random search's final best, and the
    ratios, seed by seed (:func:`epochs_ratio`)."""
    lines, ratios = [], []
    for s in seeds:
        random = curves["random (sweeper, no ES)", s]
        ratio, need_random, need_sweeper = epochs_ratio(curves["sweeper", s], random)
        ratios.append(ratio)
        lines.append(f"| {s} | {float(random[2][-1]):.4f} | {need_random} of {int(random[1][-1])} | "
                     f"{need_sweeper if need_sweeper else 'not reached'} | {ratio:.2f} |")
    return lines, ratios


def _comparison_lines(curves: Mapping[tuple[str, int], Curve], seeds: list[int], runners: list[str],
                      t_grid: np.ndarray, e_grid: np.ndarray) -> list[str]:
    """One line per axis and peer: at how many points sweeper's median best is at or above the
    peer's (:func:`medians_against`), and where and by how much it is behind."""
    lines = []
    for axis, grid, unit in ((0, t_grid, "s"), (1, e_grid, "epochs")):
        for r in (r for r in runners if r != "sweeper"):
            points, ours, theirs, last = medians_against([curves["sweeper", s] for s in seeds],
                                                         [curves[r, s] for s in seeds], grid, axis)
            behind = np.flatnonzero(ours < theirs - 1e-12)
            lines.append(f"- {('time', 'epochs')[axis]}, against {r}: sweeper's median best >= theirs at "
                         f"{len(ours) - len(behind)} of {len(ours)} points up to {last:.0f} {unit}"
                         + (f"; behind between {points[behind[0]]:.0f} and {points[behind[-1]]:.0f} {unit}, "
                            f"by at most {float(np.max(theirs[behind] - ours[behind])):.4f}" if len(behind) else "")
                         + ".")
    return lines


def _seconds(value: float) -> str:
    return "not reached" if value == float("inf") else f"{value:.0f}"


def _plot(t_grid: np.ndarray, e_grid: np.ndarray, by_time: dict[str, np.ndarray], by_epoch: dict[str, np.ndarray],
          curves: dict[tuple[str, int], Any], seeds: list[int]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(13, 4.8), sharey=True)
    colors = dict(zip(RUNNERS, ("#d62728", "#7f7f7f", "#1f77b4", "#2ca02c"), strict=True))
    for r, values in by_time.items():
        ends = [curves[r, s][0][-1] for s in seeds]
        keep = t_grid <= max(ends)
        axes[0].plot(t_grid[keep], np.median(values, axis=0)[keep], color=colors[r], label=r, lw=2.2 if r == "sweeper"
                     else 1.5)
        axes[0].fill_between(t_grid[keep], values.min(axis=0)[keep], values.max(axis=0)[keep], color=colors[r],
                             alpha=0.12)
    for r, values in by_epoch.items():
        last = max(int(curves[r, s][1][-1]) for s in seeds)
        keep = e_grid <= last
        axes[1].plot(e_grid[keep], np.median(values, axis=0)[keep], color=colors[r], label=r, lw=2.2 if r == "sweeper"
                     else 1.5)
        axes[1].fill_between(e_grid[keep], values.min(axis=0)[keep], values.max(axis=0)[keep], color=colors[r],
                             alpha=0.12)
    axes[0].set(xlabel="wall seconds since the sweep started", ylabel="best val_accuracy so far",
                title="Best model so far against time")
    axes[1].set(xlabel="epochs trained (all trials)", title="... against epochs trained")
    low = min(float(np.median(v, axis=0)[np.median(v, axis=0) > 0].min()) for v in by_time.values())
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.set_ylim(bottom=max(0.0, low - 0.02))
    axes[1].legend(loc="lower right")
    fig.suptitle(f"CIFAR-10 photos (cifar10-5k, 32 px): median and range over {len(seeds)} seeds", fontsize=11)
    fig.tight_layout()
    fig.savefig(HERE / "time_to_accuracy.png", dpi=110)


if __name__ == "__main__":
    main()
