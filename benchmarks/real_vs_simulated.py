"""Real runs against the simulation: could the simulator's ranking have given what 3 real seeds gave?

:mod:`benchmarks.time_to_accuracy` trains for real (cifar10-5k, 2 trials at a time, 32 trials of
up to 27 epochs) and compares sweeper with each peer on a handful of seeds: the share of
wall-clock points (and of epoch points) where sweeper's median best so far is at or above the
peer's, and the epochs sweeper needs to reach random search's final best. The simulator
(:mod:`benchmarks.simulate`) replays the same search space on the curve table, in the same
setting, for many seeds. This script computes the real run's figures, then the same figures for
many draws of as many simulated seeds (the same seeds for every runner, as the real run uses),
and says where the real figures fall among the draws:

- a real figure inside the bulk of the draws: the real run agrees with the simulation, within
  what so few seeds can show;
- a real figure beyond nearly every draw: the simulation misses something of real training.

It also gives the chance, under the simulation, that a run of that many seeds meets each target
of issue 19 part 4 (at or above each peer at 90% of the wall-clock points; random search's final
best with at most a third of its epochs, median over seeds).

Usage: ``python -m benchmarks.real_vs_simulated [--real benchmarks/time_to_accuracy.json]
[--simulated benchmarks/simulate_w2_ray_running.json] [--draws 5000]`` from the repository root,
after both runs (the simulated one: ``python -m benchmarks.simulate --seeds 0-99 --workers 2
--trials 32 --runners sweeper random ray-asha optuna-tpe-hyperband --ray-running [--noise] --json
OUT``). Writes its section of ``benchmarks/RESULTS.md``; runs in seconds, without Ray or training.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.time_to_accuracy import HERE, Curve, best_curve, epochs_ratio, finished_seeds, grids, medians_against

# The real run's runners and the simulator's runners of the same search and early stopping.
SIMULATED = {"sweeper": "sweeper", "random (sweeper, no ES)": "random", "Ray Tune": "ray-asha",
             "Optuna": "optuna-tpe-hyperband"}
PEERS = ("Ray Tune", "Optuna", "random (sweeper, no ES)")


def figures(curves: Mapping[str, Sequence[Curve]]) -> dict[str, float]:
    """The real benchmark's figures for one set of seeds (each runner's curves, seed by seed, the
    same seeds for every runner): for each peer, the share of time points and of epoch points at
    which sweeper's median best is at or above the peer's (``time|peer``, ``epochs|peer``), and
    ``ratio``: the median over seeds of sweeper's epochs to random search's final best over
    random's (``inf`` when sweeper never reached it in most seeds)."""
    t_grid, e_grid = grids(c for runs in curves.values() for c in runs)
    out = {}
    for axis, grid in ((0, t_grid), (1, e_grid)):
        for peer in PEERS:
            _, ours, theirs, _ = medians_against(curves["sweeper"], curves[peer], grid, axis)
            out[f"{('time', 'epochs')[axis]}|{peer}"] = float(np.mean(ours >= theirs - 1e-12))
    out["ratio"] = statistics.median(epochs_ratio(s, r)[0] for s, r in zip(
        curves["sweeper"], curves["random (sweeper, no ES)"], strict=True))
    return out


def real_curves(raw: Mapping[str, Any]) -> dict[str, list[Curve]]:
    """Each runner's curves in the seeds every runner finished, from ``time_to_accuracy.json``."""
    seeds = finished_seeds(raw, SIMULATED)
    return {r: [best_curve([tuple(x) for x in raw[f"{r}|{s}"]["reports"]]) for s in seeds] for r in SIMULATED}


def simulated_curves(row: Mapping[str, Any]) -> list[Curve]:
    """One simulated runner's curves, seed by seed, from a ``--json`` row of benchmarks.simulate:
    its trace (simulated seconds, epochs trained, best so far, at each new best) closed at the
    sweep's end (its seconds and epochs, the best unchanged)."""
    out = []
    for seed in row["per_seed"]:
        trace = [*seed["trace"], [seed["seconds"], seed["epochs"], seed["trace"][-1][2]]]
        t, e, b = (np.array([p[i] for p in trace], dtype=float) for i in range(3))
        out.append((t, e.astype(int), b))
    return out


def draws(simulated: Mapping[str, list[Curve]], k: int, n: int, seed: int = 0) -> list[dict[str, float]]:
    """:func:`figures` for ``n`` random draws of ``k`` of the simulated seeds (without replacement
    within a draw, the same seeds for every runner)."""
    rng = np.random.default_rng(seed)
    size = len(next(iter(simulated.values())))
    out = []
    for _ in range(n):
        chosen = rng.choice(size, k, replace=False)
        out.append(figures({r: [c[i] for i in chosen] for r, c in simulated.items()}))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--real", type=Path, default=HERE / "time_to_accuracy.json")
    parser.add_argument("--simulated", type=Path, default=HERE / "simulate_w2_ray_running.json")
    parser.add_argument("--draws", type=int, default=5000)
    args = parser.parse_args()
    raw = json.loads(args.real.read_text())
    real = real_curves(raw)
    k = len(real["sweeper"])
    sim = json.loads(args.simulated.read_text())
    settings = [(w, t) for w, by_trials in sim["results"].items() for t in by_trials]
    if len(settings) != 1:
        raise SystemExit(f"{args.simulated}: holds {len(settings)} settings of workers and trials; simulate the "
                         "real benchmark's one (--workers 2 --trials 32) into a file of its own")
    (workers, trials), = settings
    rows = sim["results"][workers][trials]
    simulated = {r: simulated_curves(rows[name]) for r, name in SIMULATED.items()}
    observed, drawn = figures(real), draws(simulated, k, args.draws)
    setting = f"{workers[1:]} workers, {trials[1:]} trials"
    write(observed, drawn, k, len(simulated["sweeper"]), args, raw.get("_meta", {}), sim, setting, rows)


def write(observed: Mapping[str, float], drawn: Sequence[Mapping[str, float]], k: int, seeds: int,
          args: argparse.Namespace, meta: Mapping[str, Any], sim: Mapping[str, Any], setting: str,
          rows: Mapping[str, Any]) -> None:
    """The section of ``benchmarks/RESULTS.md``: each figure, real and among the draws."""
    from benchmarks._results import write_section

    def among(key: str) -> str:
        values = np.array([d[key] for d in drawn])
        below = float(np.mean(values < observed[key])) if key != "ratio" else float(np.mean(values > observed[key]))
        q05, q50, q95 = np.quantile(values, [0.05, 0.5, 0.95], method="nearest")  # a ratio may be inf
        fmt = "{:.2f}" if key == "ratio" else "{:.0%}"
        return (f"{fmt.format(observed[key])} | {fmt.format(q50)} ({fmt.format(q05)}-{fmt.format(q95)}) | "
                f"{below:.0%}")

    lines = [
        f"Real: `{args.real.name}` ({meta.get('date')}, {meta.get('trials')} trials of up to "
        f"{meta.get('epochs')} epochs, {k} seeds). Simulated: `{args.simulated.name}` ({setting}, {seeds} seeds, "
        f"start costs {_costs(sim)}"
        f"{', Ray already running' if sim.get('ray_running') else ''}"
        f"{f', training noise {_noise(sim)}' if sim.get('noise') else ', no training noise'}). Command: `python -m "
        f"benchmarks.real_vs_simulated --real {_shown(args.real)} --simulated {_shown(args.simulated)} "
        f"--draws {args.draws}`. "
        f"Each draw: {k} of the simulated seeds, the same for every runner, and the real benchmark's figures "
        "computed on them as on the real seeds.",
        "",
        "| figure | real | simulated draws: median (5%-95%) | draws less favourable to sweeper than the real run |",
        "| --- | --- | --- | --- |",
        *[f"| share of {axis} points where sweeper's median best >= {peer}'s | {among(f'{axis}|{peer}')} |"
          for axis in ("time", "epochs") for peer in PEERS],
        f"| median ratio, sweeper's epochs to random's final best / random's | {among('ratio')} |",
        "",
        f"Chance, under the simulation, that a run of {k} seeds meets each target of issue 19 part 4: "
        + "; ".join(f"at or above {peer} at 90% of the time points {_share(d[f'time|{peer}'] >= 0.9 for d in drawn)}"
                    for peer in PEERS)
        + f"; random's final best with at most a third of its epochs {_share(d['ratio'] <= 1 / 3 for d in drawn)}.",
    ]
    distinct = {r: statistics.median(s["distinct"] for s in rows[name]["per_seed"]) for r, name in SIMULATED.items()
                if all("distinct" in s for s in rows[name]["per_seed"])}
    if distinct:
        lines += ["", "Distinct configurations among a simulated sweep's trials, median over its seeds: "
                  + ", ".join(f"{r} {n:.0f}" for r, n in distinct.items()) + "."]
    write_section(f"Real runs against the simulation: {args.simulated.name} ({meta.get('date')} real)", lines)


def _shown(path: Path) -> str:
    """``path`` relative to the working folder when inside it (as a command is typed), else whole."""
    return os.path.relpath(path) if path.resolve().is_relative_to(Path.cwd()) else str(path)


def _noise(sim: Mapping[str, Any]) -> str:
    """The simulation's training noise (:class:`benchmarks.simulate.Noise`) in words."""
    noise = sim["noise"]
    return f"sd {noise['run_sd']} per trial and {noise['epoch_sd']} per epoch"


def _share(hits: Iterable[bool]) -> str:
    """The share of ``True`` among ``hits``, as a percentage."""
    flags = list(hits)
    return f"{sum(flags) / len(flags):.0%}"


def _costs(sim: Mapping[str, Any]) -> str:
    """The simulation's start costs, as its JSON records them (files from before 2026-12-07 do not)."""
    costs = sim.get("costs")
    if not costs:
        return "not recorded (before 2026-12-07: those of benchmarks.simulate then)"
    return ", ".join(f"{tool} {c['sweep_s']} s" for tool, c in costs.items())


if __name__ == "__main__":
    main()
