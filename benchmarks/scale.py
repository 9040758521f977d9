"""Cost per trial at scale: N near-instant trials through sweeper and through Ray Tune, side by side.

    python -m benchmarks.scale [--trials 100 1000 10000] [--method random bayes] [--write]

Each trial is 2 epochs of 0.02 s (``benchmarks.fixed_trainer``), 2 at a time, on local Ray:

- sweeper: ``run_sweep`` (what ``sweeper launch`` runs), SQLite study, reused actors;
- Ray Tune + ``OptunaSearch`` (the same sampler), ``reuse_actors=True``.

A run's cost per trial is read from the times its trials ended (sweeper: the study's
``datetime_complete``; Ray Tune: a callback's clock at each trial's end), as the slope between the
10th and 50th percentile of trials ("early") and between the 75th and 97.5th ("late"). Flat cost
means late = early. ``random`` measures the orchestration itself; ``bayes`` adds TPE's ask, which
grows with the study by design, reported apart. On the largest sweeper study it also times
``sweeper show``, ``sweeper report`` and the closing summary (the progress display's end).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

EPOCHS, EPOCH_S, CONCURRENCY = 2, 0.02, 2


def slopes(ends: list[float]) -> tuple[float, float]:
    """``(early, late)`` seconds per trial from the sorted end times ``ends`` (seconds): slopes
    between the 10th and 50th and between the 75th and 97.5th percentile of trials."""
    ends = sorted(ends)
    n = len(ends)

    def slope(lo: float, hi: float) -> float:
        i, j = int(lo * (n - 1)), int(hi * (n - 1))
        return (ends[j] - ends[i]) / max(1, j - i)

    return slope(0.10, 0.50), slope(0.75, 0.975)


def sweeper_ends(n: int, method: str, workdir: Path) -> tuple[list[float], str, str]:
    """End times (seconds after the first) of ``n`` sweeper trials; the study's name and URL."""
    import optuna

    from sweeper.engine.launch import run_sweep
    from sweeper.spec import validate

    name, url = f"scale-{method}-{n}", f"sqlite:///{workdir / f'scale-{method}-{n}.db'}"
    run_sweep(validate({
        "name": name, "method": method, "run_cap": n, "epochs": EPOCHS, "max_concurrent_trials": CONCURRENCY,
        "trainer": "benchmarks.fixed_trainer:FIXED", "storage": url, "artifacts": str(workdir / "artifacts"),
        "keep_checkpoints": 0, "parameters": {"x": {"min": 0.0, "max": 1.0}, "epoch_s": {"value": EPOCH_S}},
    }))
    trials = optuna.load_study(study_name=name, storage=url).get_trials(deepcopy=False)
    ends = sorted(t.datetime_complete.timestamp() for t in trials if t.datetime_complete is not None)
    return [e - ends[0] for e in ends], name, url


def _tune_trainable(config: dict[str, Any]) -> None:
    from ray import tune

    for epoch in range(1, EPOCHS + 1):
        time.sleep(config["epoch_s"])
        tune.report({"val_accuracy": config["x"] * epoch / EPOCHS, "epoch": epoch})


def tune_ends(n: int, method: str, workdir: Path) -> list[float]:
    """End times (seconds after the first) of ``n`` Ray Tune trials (OptunaSearch, random or TPE)."""
    import optuna
    from ray import tune
    from ray.tune.search.optuna import OptunaSearch

    ends: list[float] = []

    class Ends(tune.Callback):
        def on_trial_complete(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
            ends.append(time.perf_counter())

    sampler = optuna.samplers.RandomSampler() if method == "random" else optuna.samplers.TPESampler()
    tune.Tuner(_tune_trainable, param_space={"x": tune.uniform(0.0, 1.0), "epoch_s": EPOCH_S},
               tune_config=tune.TuneConfig(search_alg=OptunaSearch(metric="val_accuracy", mode="max",
                                                                   sampler=sampler),
                                           num_samples=n, max_concurrent_trials=CONCURRENCY, reuse_actors=True),
               run_config=tune.RunConfig(storage_path=str(workdir / "tune"), name=f"tune-{method}-{n}", verbose=0,
                                         callbacks=[Ends()])).fit()
    return [e - ends[0] for e in ends]


def _timed(*args: str) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "sweeper", *args], check=True, capture_output=True, timeout=3600)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, nargs="+", default=[100, 1000, 10000])
    parser.add_argument("--method", nargs="+", default=["random"], choices=["random", "bayes"])
    parser.add_argument("--write", action="store_true", help="write the table into benchmarks/RESULTS.md")
    args = parser.parse_args()
    import optuna

    from sweeper.engine.ray_runtime import init_ray

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    init_ray(None)
    lines = ["| method | trials | runner | ms per trial, early | late | late / early |",
             "| --- | --- | --- | --- | --- | --- |"]
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        for method in args.method:
            for n in args.trials:
                ours, name, url = sweeper_ends(n, method, workdir)
                for runner, ends in (("sweeper", ours), ("Ray Tune + OptunaSearch", tune_ends(n, method, workdir))):
                    early, late = slopes(ends)
                    lines.append(f"| {method} | {n} | {runner} | {early * 1000:.0f} | {late * 1000:.0f} | "
                                 f"{late / early:.2f} |")
                    print(lines[-1], flush=True)
        readers = [f"`sweeper show` {_timed('show', name, '--storage', url):.1f} s",
                   f"`sweeper report` {_timed('report', name, '--storage', url, '-o', str(workdir / 'r.html')):.1f} s"]
        print(f"on the {args.trials[-1]}-trial study: " + ", ".join(readers), flush=True)
    if args.write:
        from benchmarks._results import machine, write_section

        write_section(f"Cost per trial at scale ({time.strftime('%Y-%m-%d')})",
                      [f"Machine: {machine()}. Command: `python -m benchmarks.scale --trials "
                       f"{' '.join(map(str, args.trials))} --method {' '.join(args.method)}`. Trials of {EPOCHS} "
                       f"epochs of {EPOCH_S} s, {CONCURRENCY} at a time; ms per trial from the trials' end times.",
                       "", *lines, "", "Readers on the largest study: " + ", ".join(readers) + "."])


if __name__ == "__main__":
    main()
