"""Report speed: a 5,000-trial SQLite study through `sweeper report` vs Optuna's plots read directly.

Builds a study of ``--trials`` trials (COMPLETE / PRUNED / FAIL, 4 parameters, curves of up to
10 epochs, the user attributes a sweep records) in a temporary SQLite file, then times:

- sweeper: :func:`sweeper.views.report.compute` + :func:`sweeper.views.report.render` (one bulk read, the
  Optuna plots on an in-memory copy), i.e. what ``sweeper report`` runs;
- baseline: the same Optuna plots (history, intermediate values, parallel coordinates, fANOVA
  importances, slices, timeline) each called on the SQLite-backed study, as a user would.

Target: under 30 s for 5,000 trials. Usage: ``python -m benchmarks.report_speed [--trials 5000]``.
Appends its figures to ``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import optuna
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState, create_trial


def build(n: int, url: str) -> optuna.Study:
    """A study of ``n`` synthetic trials shaped like a sweep's, written to ``url``."""
    rng = np.random.default_rng(0)
    dists = {"lr": FloatDistribution(1e-4, 1e-1, log=True), "dropout": FloatDistribution(0.0, 0.5),
             "dense_units": IntDistribution(64, 256, step=64), "activation": CategoricalDistribution(["relu", "gelu"])}
    start = dt.datetime(2026, 1, 1)
    trials = []
    for i in range(n):
        params = {"lr": float(10 ** rng.uniform(-4, -1)), "dropout": float(rng.uniform(0, 0.5)),
                  "dense_units": int(rng.choice([64, 128, 192, 256])), "activation": str(rng.choice(["relu", "gelu"]))}
        state = [TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL][int(rng.choice(3, p=[0.3, 0.65, 0.05]))]
        epochs = 10 if state == TrialState.COMPLETE else int(rng.integers(1, 10))
        curve = {e: float(1 - np.exp(-e * params["lr"] * 30) + rng.normal(0, 0.01)) for e in range(1, epochs + 1)}
        began = start + dt.timedelta(seconds=i * 3)
        trials.append(create_trial(
            state=state, value=curve[epochs] if state != TrialState.FAIL else None, params=params, distributions=dists,
            intermediate_values=curve,
            user_attrs={"epochs_run": epochs, "worker": f"node:{i % 4}", "config": {"epochs": 10, "params": params}},
        ))
        trials[-1].datetime_start, trials[-1].datetime_complete = began, began + dt.timedelta(seconds=epochs)
    study = optuna.create_study(storage=url, study_name="bench", direction="maximize")
    study.set_user_attr("sweeper_spec", {"metric": {"name": "val_accuracy", "goal": "maximize"}})
    study.add_trials(trials)
    return study


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=5000)
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    import optuna.visualization as vis

    from sweeper.study.storage import open_storage
    from sweeper.views.report import compute, render

    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'bench.db'}"
        began = time.perf_counter()
        build(args.trials, url)
        built_s = time.perf_counter() - began

        began = time.perf_counter()
        study = optuna.load_study(study_name="bench", storage=open_storage(url))
        page = render(compute(study))
        sweeper_s = time.perf_counter() - began

        began = time.perf_counter()
        study = optuna.load_study(study_name="bench", storage=url)
        for plot in (vis.plot_optimization_history, vis.plot_intermediate_values, vis.plot_parallel_coordinate,
                     vis.plot_slice, vis.plot_timeline):
            plot(study)
        vis.plot_param_importances(study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0))
        baseline_s = time.perf_counter() - began
    print(f"{args.trials} trials: built in {built_s:.1f} s; sweeper report {sweeper_s:.1f} s "
          f"({len(page) / 1e6:.1f} MB); Optuna's plots on the SQLite study {baseline_s:.1f} s")
    results = Path(__file__).with_name("RESULTS.md")
    with results.open("a") as f:
        f.write(f"\n## Report speed ({dt.date.today().isoformat()})\n\n"
                f"Machine: {platform.platform()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
                f"optuna {optuna.__version__}. Command: `python -m benchmarks.report_speed --trials {args.trials}`.\n\n"
                "| trials | sweeper report (compute + render) s | Optuna's plots on the SQLite study s | target |\n"
                "| --- | --- | --- | --- |\n"
                f"| {args.trials} | {sweeper_s:.1f} | {baseline_s:.1f} | < 30 s |\n")


if __name__ == "__main__":
    main()
