"""Search efficiency: ASHA + TPE vs random search without early stopping, in epochs.

The demo sweep (``search_spaces/mnist_demo.yaml``: the 5-block CNN on mnist5k, 16 trials of
up to 6 epochs, two at a time) runs as shipped (TPE, ASHA grace 1, reduction factor 3) and
as plain random search with every trial trained to the end, for several seeds. For each
seed, the target is the lower of the two sweeps' best ``val_accuracy`` (so both reach it);
a sweep's cost is the epochs it had trained, all trials together, in the order trials
finished, when a finished trial first scored at least the target. Target: ASHA + TPE needs
at most a third of random search's epochs.

Usage: ``python -m benchmarks.search_efficiency [--seeds 0 1 2]``; writes its section of
``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import tempfile
from pathlib import Path
from typing import Any

import optuna
import yaml

from benchmarks._results import machine, write_section

DEMO = Path(__file__).resolve().parents[1] / "search_spaces" / "mnist_demo.yaml"


def run(raw: dict[str, Any]) -> list[tuple[int, float | None]]:
    """Run a sweep; its finished trials as ``(epochs run, value or None)`` in the order they finished."""
    from sweeper.engine.launch import run_sweep
    from sweeper.spec import validate

    sweep = validate(raw)
    run_sweep(sweep)
    study = optuna.load_study(study_name=sweep.name, storage=raw["storage"])
    done = [t for t in study.trials if t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)]
    done.sort(key=lambda t: t.datetime_complete)  # type: ignore[arg-type,return-value]
    return [(int(t.user_attrs["epochs_run"]), t.value if t.state == optuna.trial.TrialState.COMPLETE else None)
            for t in done]


def epochs_to_reach(trials: list[tuple[int, float | None]], target: float) -> int | None:
    spent = 0
    for epochs, value in trials:
        spent += epochs
        if value is not None and value >= target:
            return spent
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    from sweeper.engine.ray_runtime import init_ray

    init_ray(None)
    base = yaml.safe_load(DEMO.read_text())
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            common = {**base, "seed": seed, "storage": f"sqlite:///{Path(tmp) / 'studies.db'}",
                      "artifacts": str(Path(tmp) / "artifacts")}
            asha = run({**common, "name": f"asha-tpe-{seed}"})
            plain = {k: v for k, v in common.items() if k != "scheduler"}
            random_full = run({**plain, "name": f"random-{seed}", "method": "random"})
            best_asha = max(v for _, v in asha if v is not None)
            best_random = max(v for _, v in random_full if v is not None)
            target = min(best_asha, best_random)
            need_asha, need_random = epochs_to_reach(asha, target), epochs_to_reach(random_full, target)
            assert need_asha is not None and need_random is not None
            rows.append((seed, best_asha, best_random, target, need_asha, need_random,
                         sum(e for e, _ in asha), sum(e for e, _ in random_full)))
            print(rows[-1], flush=True)
    ratios = [r[4] / r[5] for r in rows]
    write_section(f"Search efficiency: ASHA + TPE vs random search ({dt.date.today().isoformat()})", [
        f"Machine: {machine()}. Command: `python -m benchmarks.search_efficiency --seeds "
        f"{' '.join(map(str, args.seeds))}`. The demo sweep (mnist5k, 16 trials of up to 6 epochs); target = the "
        "lower of the two sweeps' best val_accuracy; cost = epochs trained by all trials until a finished trial "
        "first reached it. Target: ASHA + TPE needs at most a third of random search's epochs.",
        "",
        "| seed | best, ASHA + TPE | best, random (no early stopping) | target | epochs to target, ASHA + TPE | "
        "epochs to target, random | ratio | whole sweep epochs, ASHA + TPE / random |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
        *[f"| {s} | {ba:.4f} | {br:.4f} | {t:.4f} | {na} | {nr} | {na / nr:.2f} | {ta} / {tr} |"
          for s, ba, br, t, na, nr, ta, tr in rows],
        "",
        f"Mean ratio over seeds: {statistics.fmean(ratios):.2f} (median {statistics.median(ratios):.2f}).",
    ])


if __name__ == "__main__":
    main()
