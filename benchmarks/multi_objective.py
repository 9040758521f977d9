"""Multi-objective ASHA vs the same sweep without early stopping: hypervolume against epochs.

A random search of the 5-block CNN on real photos (CIFAR-10, ``../shared/data/cifar10-5k/train``,
32x32, 20% held out for validation) with two objectives, ``val_accuracy`` (maximise) and
``param_count`` (minimise; deterministic, where ``inference_ms`` on a shared 2-core CPU is
noise), runs twice per seed: under multi-objective ASHA (grace period 1, reduction factor 3,
up to 6 epochs; :class:`sweeper.engine.scheduler.MultiObjectiveASHA`) with a budget of 16 trials,
and with every trial trained to 6 epochs with a budget of 8. With the same seed both draw
the same configurations in the same order.

After each finished trial (in the order trials finished) the epochs spent so far by all
trials and the hypervolume of the Pareto front of the COMPLETE trials so far are recorded.
Hypervolume (Zitzler and Thiele 1998; :func:`sweeper.study.pareto.hypervolume_2d`) is computed on
(1 - val_accuracy, log10 param_count), bounded by the reference point (1, log10 of the largest
model either sweep of that seed built + 0.1): larger is better. The table gives the
hypervolume each sweep had reached by 15, 30 and 45 epochs and at its end.

Usage: ``python -m benchmarks.multi_objective [--seeds 0 1 2] [--data PATH]``; writes its section
of ``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import datetime as dt
import math
import statistics
import tempfile
from pathlib import Path
from typing import Any

import optuna

from benchmarks._results import CIFAR_5K, machine, start, write_section
from sweeper.study.pareto import hypervolume_2d, non_dominated_fronts

DATA = CIFAR_5K / "train"
BUDGETS = (15, 30, 45)
EPOCHS = 6


def spec(name: str, seed: int, data: Path, tmp: Path) -> dict[str, Any]:
    """The benchmark's sweep, with multi-objective ASHA."""
    return {
        "name": name, "method": "random", "seed": seed, "trainer": "cnn", "epochs": EPOCHS, "run_cap": 16,
        "metrics": [{"name": "val_accuracy", "goal": "maximize"}, {"name": "param_count", "goal": "minimize"}],
        "data": {"dataset": "imagefolder", "root": str(data), "image_size": 32, "val_fraction": 0.2},
        "scheduler": {"type": "asha", "grace_period": 1, "reduction_factor": 3},
        "max_concurrent_trials": 2, "resources_per_trial": {"cpu": 1, "gpu": 0},
        "storage": f"sqlite:///{tmp / 'studies.db'}", "artifacts": str(tmp / "artifacts"), "keep_checkpoints": 0,
        "parameters": {
            "filters": {"values": [[4, 8, 8, 8, 8], [8, 8, 16, 16, 16], [8, 16, 32, 32, 32],
                                   [16, 32, 64, 64, 64]]},
            "dense_units": {"values": [32, 128]},
            "lr": {"min": 0.0003, "max": 0.01, "distribution": "log_uniform_values"},
            "batch_size": {"values": [64, 128]},
            "dropout": {"min": 0.0, "max": 0.3},
        },
    }


def run(raw: dict[str, Any]) -> tuple[list[tuple[int, tuple[float, float] | None]], float]:
    """Run a sweep; its finished trials in the order they finished, as ``(epochs run, (1 -
    accuracy, log10 parameters) or None for a PRUNED trial)``, and its wall seconds."""
    from sweeper.engine.launch import run_sweep
    from sweeper.spec import validate

    outcome = run_sweep(validate(raw))
    study = optuna.load_study(study_name=raw["name"], storage=raw["storage"])
    done = [t for t in study.trials if t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)]
    done.sort(key=lambda t: t.datetime_complete)  # type: ignore[arg-type,return-value]
    return [(int(t.user_attrs["epochs_run"]), (1 - t.values[0], math.log10(t.values[1])) if t.values else None)
            for t in done], outcome.wall_s


def hypervolume_by_epochs(trials: list[tuple[int, tuple[float, float] | None]],
                          reference: tuple[float, float]) -> list[tuple[int, float]]:
    """``(epochs spent, hypervolume of the COMPLETE front so far)`` after each finished trial."""
    spent, points, out = 0, [], []
    for epochs, point in trials:
        spent += epochs
        if point is not None:
            points.append(point)
        front = [points[i] for i in non_dominated_fronts(points)[0]] if points else []
        out.append((spent, hypervolume_2d(front, reference)))
    return out


def at(curve: list[tuple[int, float]], budget: int) -> float:
    """The hypervolume reached within ``budget`` epochs (0 before the first COMPLETE trial)."""
    return max((hv for spent, hv in curve if spent <= budget), default=0.0)


def main() -> None:
    args = start(__doc__.splitlines()[0], DATA)
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        for seed in args.seeds:
            asha, asha_s = run(spec(f"moasha-{seed}", seed, args.data, tmp))
            full_spec = {k: v for k, v in spec(f"full-{seed}", seed, args.data, tmp).items() if k != "scheduler"}
            full, full_s = run({**full_spec, "run_cap": 8})
            largest = max(p[1] for _, p in asha + full if p is not None)
            reference = (1.0, largest + 0.1)
            curves = hypervolume_by_epochs(asha, reference), hypervolume_by_epochs(full, reference)
            rows.append((seed, *[(curve, sum(e for e, _ in trials), sum(p is not None for _, p in trials),
                                  len(trials), wall) for curve, trials, wall in
                                 zip(curves, (asha, full), (asha_s, full_s), strict=True)]))
            print(seed, [(at(c, b)) for c in curves for b in BUDGETS], flush=True)
    lines = []
    for seed, a, f in rows:
        for label, (curve, epochs, complete, trials, wall) in (("MO-ASHA", a), ("no early stopping", f)):
            lines.append(f"| {seed} | {label} | {trials} ({complete} COMPLETE) | {epochs} | "
                         + " | ".join(f"{at(curve, b):.3f}" for b in BUDGETS) + f" | {curve[-1][1]:.3f} | {wall:.0f} |")
    ratio = {b: statistics.fmean(at(a[0], b) / at(f[0], b) for _, a, f in rows if at(f[0], b) > 0) for b in BUDGETS}
    write_section(f"Multi-objective ASHA vs no early stopping ({dt.date.today().isoformat()})", [
        f"Machine: {machine()}. Command: `python -m benchmarks.multi_objective --seeds "
        f"{' '.join(map(str, args.seeds))}`. Random search of the 5-block CNN on cifar10-5k/train (32x32, 20% "
        "validation), objectives val_accuracy (max) and param_count (min), up to 6 epochs, 2 trials at a time; "
        "MO-ASHA (grace 1, reduction factor 3) with 16 trials vs every trial to 6 epochs with 8. Hypervolume "
        "of the COMPLETE trials' front on (1 - val_accuracy, log10 param_count) to the reference (1, log10 of the "
        "seed's largest model + 0.1): larger is better.",
        "",
        "| seed | sweep | trials | epochs spent | HV by 15 epochs | HV by 30 | HV by 45 | HV at the end | wall s |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        *lines,
        "",
        "Mean ratio MO-ASHA / no early stopping of the hypervolume reached by the same epochs: "
        + ", ".join(f"{b} epochs {ratio[b]:.2f}" for b in BUDGETS) + ".",
    ])


if __name__ == "__main__":
    main()
