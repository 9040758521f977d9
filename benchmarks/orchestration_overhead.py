"""Orchestration overhead: N fixed-length trials through sweeper vs the ideal and other tools.

Each trial reports ``EPOCHS`` times, sleeping ``epoch_s`` before each report, so a trial lasts
``EPOCHS * epoch_s`` seconds of "training". The ideal wall time is ``N * length / concurrency``.
Every runner is timed after Ray has started, for a small and a large N. Their difference
splits the excess over the ideal into a cost per trial (the slope) and a cost paid once per
sweep (the intercept: starting the worker processes, which import torch, and tearing down).

- sweeper: ``run_sweep`` (what ``sweeper launch`` runs), SQLite study, reused actors;
- Ray Tune + ``OptunaSearch`` with Tune's defaults, and with ``reuse_actors=True``, the latter
  also with a trainable that imports torch as sweeper's does (the fair anchor);
- Optuna alone, ``study.optimize(n_jobs=concurrency)`` in threads (no Ray).

Usage: ``python -m benchmarks.orchestration_overhead [--trials 20] [--epoch-s 0.1 1.0]``
from the repository root. Appends a table to ``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import tempfile
import time
from pathlib import Path

EPOCHS = 10
CONCURRENCY = 2


def run_sweeper(n: int, epoch_s: float, workdir: Path) -> float:
    from sweeper.engine.launch import run_sweep
    from sweeper.spec import validate

    name = f"overhead-{epoch_s}-{n}"
    sweep = validate({
        "name": name, "method": "random", "run_cap": n, "epochs": EPOCHS,
        "trainer": "benchmarks.fixed_trainer:FIXED", "max_concurrent_trials": CONCURRENCY,
        "storage": f"sqlite:///{workdir / f'{name}.db'}", "artifacts": str(workdir / "artifacts"),
        "parameters": {"x": {"min": 0.0, "max": 1.0}, "epoch_s": {"value": epoch_s}},
    })
    started = time.perf_counter()
    run_sweep(sweep)
    return time.perf_counter() - started


def _tune_trainable(config: dict) -> None:
    from ray import tune

    for epoch in range(1, EPOCHS + 1):
        time.sleep(config["epoch_s"])
        tune.report({"val_accuracy": config["x"] * epoch / EPOCHS, "epoch": epoch})


def _tune_trainable_torch(config: dict) -> None:
    import torch  # noqa: F401  (what a real trainable imports, as sweeper's does)

    _tune_trainable(config)


def run_tune_optuna(n: int, epoch_s: float, workdir: Path, reuse: bool, torch: bool = False) -> float:
    from ray import tune
    from ray.tune.search.optuna import OptunaSearch

    tuner = tune.Tuner(
        _tune_trainable_torch if torch else _tune_trainable,
        param_space={"x": tune.uniform(0.0, 1.0), "epoch_s": epoch_s},
        tune_config=tune.TuneConfig(search_alg=OptunaSearch(metric="val_accuracy", mode="max"),
                                    num_samples=n, max_concurrent_trials=CONCURRENCY, reuse_actors=reuse),
        run_config=tune.RunConfig(storage_path=str(workdir / "tune"), name=f"tune-{epoch_s}-{reuse}-{torch}-{n}",
                                  verbose=0),
    )
    started = time.perf_counter()
    tuner.fit()
    return time.perf_counter() - started


def run_optuna_threads(n: int, epoch_s: float) -> float:
    import optuna

    def objective(trial: optuna.Trial) -> float:
        x = trial.suggest_float("x", 0.0, 1.0)
        for epoch in range(1, EPOCHS + 1):
            time.sleep(epoch_s)
            trial.report(x * epoch / EPOCHS, epoch)
        return x

    study = optuna.create_study(direction="maximize")
    started = time.perf_counter()
    study.optimize(objective, n_trials=n, n_jobs=CONCURRENCY)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=20, help="the large N (the small one is 4)")
    parser.add_argument("--epoch-s", type=float, nargs="+", default=[0.1, 1.0])
    parser.add_argument("--no-baselines", action="store_true", help="measure sweeper and the ideal only")
    args = parser.parse_args()

    import optuna

    from sweeper.engine.ray_runtime import init_ray

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    init_ray(None)
    small, large = 4, args.trials
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        # Warm the disk cache (torch, Ray) so the first measured sweep is not a cold start.
        run_sweeper(2, 0.01, Path(tmp))
        for epoch_s in args.epoch_s:
            runners = {"sweeper (reused actors, SQLite study)": lambda n, e=epoch_s: run_sweeper(n, e, Path(tmp))}
            if not args.no_baselines:
                runners["Ray Tune + OptunaSearch, defaults"] = lambda n, e=epoch_s: run_tune_optuna(
                    n, e, Path(tmp), False)
                runners["Ray Tune + OptunaSearch, reuse_actors"] = lambda n, e=epoch_s: run_tune_optuna(
                    n, e, Path(tmp), True)
                runners["Ray Tune + OptunaSearch, reuse_actors, trainable imports torch"] = (
                    lambda n, e=epoch_s: run_tune_optuna(n, e, Path(tmp), True, torch=True))
                runners["Optuna alone, threads (no Ray)"] = lambda n, e=epoch_s: run_optuna_threads(n, e)
            for name, run in runners.items():
                ideal_small, ideal = (k * EPOCHS * epoch_s / CONCURRENCY for k in (small, large))
                wall_small, wall = run(small), run(large)
                per_trial_s = ((wall - wall_small) - (ideal - ideal_small)) * CONCURRENCY / (large - small)
                fixed_s = wall_small - ideal_small - small * per_trial_s / CONCURRENCY
                rows.append((epoch_s * EPOCHS, name, wall, ideal, wall / ideal, per_trial_s * 1000, fixed_s))
                _write(rows, large, small, final=False)
                print(f"{epoch_s * EPOCHS:>5.1f} s trials  {name:<42} {wall:7.2f} s  ideal {ideal:6.2f} s  "
                      f"{wall / ideal:5.2f}x  {per_trial_s * 1000:6.0f} ms/trial  {fixed_s:5.2f} s once",
                      flush=True)

    _write(rows, large, small, final=True)


def _write(rows: list[tuple], large: int, small: int, *, final: bool) -> None:
    """Write the section of this run to RESULTS.md (rewritten as each row is measured)."""
    head = f"\n## Orchestration overhead ({dt.date.today().isoformat()}, run started {_STARTED})\n"
    lines = [
        head,
        f"Machine: {platform.platform()}, {os.cpu_count()} CPUs, Python {platform.python_version()}. "
        f"{large} trials of {EPOCHS} reports, {CONCURRENCY} at a time, timed after Ray started; per-trial "
        f"and once-per-sweep costs from the difference between {small} and {large} trials. "
        "Command: `python -m benchmarks.orchestration_overhead`." + ("" if final else " (run in progress)") + "\n",
        "| trial length | runner | wall s | ideal s | x ideal | overhead per trial (ms) | once per sweep (s) |",
        "| --- | --- | --- | --- | --- | --- | --- |",
        *[f"| {length:.0f} s | {name} | {wall:.2f} | {ideal:.2f} | {ratio:.2f} | {ms:.0f} | {fixed:.2f} |"
          for length, name, wall, ideal, ratio, ms, fixed in rows],
        "",
    ]
    results_md = Path(__file__).with_name("RESULTS.md")
    text = results_md.read_text() if results_md.exists() else (
        "# Benchmark results\n\nEach section is one run of one benchmark script, on the machine it names.\n")
    if head in text:
        text = text[: text.index(head)]
    results_md.write_text(text + "\n".join(lines))


_STARTED = dt.datetime.now().strftime("%H:%M")


if __name__ == "__main__":
    main()
