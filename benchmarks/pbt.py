"""Population-based training against sweeper's default search, at the same compute, on real photos.

The same training function (:mod:`benchmarks.logged_cnn`, the ``cnn`` trainer logging each epoch)
on ``../shared/data/cifar10-5k`` (32 px, 10% of train held out, stratified), one architecture
(8-16-32-64-64, batch norm, ReLU, batch size 128, augmentation), and three hyperparameters over the
same ranges for both runners: ``lr`` (log-uniform 1e-4..1e-2), ``dropout`` (0..0.5) and
``weight_decay`` (log-uniform 1e-6..1e-3). Two trials at a time, one CPU thread each.

- ``pbt``: ``scheduler: {type: pbt}``, a population of 8 trials of 12 epochs, perturbation every 3
  epochs, quantile 0.25, all three hyperparameters mutating (Ray Tune's ``PopulationBasedTraining``
  through ``run_sweep``); epochs retrained after an exploit count as spent.
- ``tpe+asha``: sweeper's default search (``method: bayes``: TPE with ASHA at grace period 1,
  reduction factor 3), 32 trials of up to 12 epochs.

Compute is counted in epochs trained (the log's lines), so the figures do not depend on what else
the machine runs. Reported, per runner, median and range over seeds: best ``val_accuracy`` of any
epoch of any trial after 24, 48, 72 and 96 epochs trained, and after each runner's last epoch.

Usage: ``python -m benchmarks.pbt [--seeds 0 1 2]`` from the repository root. Writes its section
of ``benchmarks/RESULTS.md``; the raw logs go to ``benchmarks/pbt.json`` after each (runner, seed),
and a run skips the pairs already there.
"""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks._results import CIFAR_5K, RawLogs, cifar_data, start, write_section

HERE = Path(__file__).resolve().parent
RUNNERS = ("pbt", "tpe+asha")
EPOCHS, POPULATION, INTERVAL, TPE_TRIALS, CONCURRENCY = 12, 8, 3, 32, 2
BUDGETS = (24, 48, 72, 96)
FIXED = {"filters": "8-16-32-64-64", "activation": "relu", "batch_norm": True, "batch_size": 128,
         "augment": True, "kernel_size": 3, "dense_units": 128, "optimizer": "adam"}
RANGES = {"lr": {"min": 1e-4, "max": 1e-2, "distribution": "log_uniform_values"},
          "dropout": {"min": 0.0, "max": 0.5},
          "weight_decay": {"min": 1e-6, "max": 1e-3, "distribution": "log_uniform_values"}}


def spec(runner: str, seed: int, root: Path, tmp: Path, log: Path) -> dict[str, Any]:
    """The sweep spec of ``runner`` for ``seed``."""
    raw: dict[str, Any] = {
        "name": f"pbt-bench-{runner.replace('+', '-')}-{seed}", "metric": {"name": "val_accuracy", "goal": "maximize"},
        "seed": seed, "epochs": EPOCHS, "trainer": "benchmarks.logged_cnn:LOGGED_CNN", "data": cifar_data(root),
        "max_concurrent_trials": CONCURRENCY, "resources_per_trial": {"cpu": 1, "gpu": 0},
        "storage": f"sqlite:///{tmp / 'studies.db'}", "artifacts": str(tmp / "artifacts"),
        "parameters": {**RANGES, **{k: {"value": v} for k, v in FIXED.items()}, "log": {"value": str(log)}},
    }
    if runner == "pbt":
        return {**raw, "method": "random", "run_cap": POPULATION,
                "scheduler": {"type": "pbt", "perturbation_interval": INTERVAL, "quantile_fraction": 0.25,
                              "hyperparam_mutations": RANGES}}
    return {**raw, "method": "bayes", "run_cap": TPE_TRIALS}


def best_after(accuracies: list[float], budget: int) -> float | None:
    """Best of the first ``budget`` epochs trained (``None`` when fewer were)."""
    return float(max(accuracies[:budget])) if len(accuracies) >= budget else None


def write(raw: dict[str, Any]) -> None:
    """The RESULTS.md section from the raw logs."""
    seeds = sorted({int(k.split("|")[1]) for k in raw if "|" in k})
    header = ("| runner | seeds | " + " | ".join(f"best after {b} epochs" for b in BUDGETS)
              + " | epochs run | best at the end |")
    rows = [header, "|" + " --- |" * (len(BUDGETS) + 4)]

    def cell(values: list[float | None]) -> str:
        got = [v for v in values if v is not None]
        if len(got) < len(values) or not got:
            return "-"
        return f"{statistics.median(got):.3f} ({min(got):.3f}-{max(got):.3f})"

    for runner in RUNNERS:
        runs = [raw[f"{runner}|{s}"] for s in seeds if f"{runner}|{s}" in raw]
        if not runs:
            continue
        accs = [r["accuracies"] for r in runs]
        rows.append(f"| {runner} | {len(runs)} | " + " | ".join(cell([best_after(a, b) for a in accs]) for b in BUDGETS)
                    + f" | {statistics.median(len(a) for a in accs):.0f} | {cell([max(a) for a in accs])} |")
    medians = {runner: [statistics.median(v for v in vals) if all(v is not None for v in vals) else None
                        for vals in ([best_after(raw[f"{runner}|{s}"]["accuracies"], b) for s in seeds
                                      if f"{runner}|{s}" in raw] for b in BUDGETS)] for runner in RUNNERS}
    ratios = [f"{p / t:.3f}" if p is not None and t else "-" for p, t in zip(*medians.values(), strict=True)]
    rows.append("| pbt / tpe+asha (medians) | | " + " | ".join(ratios) + " | | |")
    meta = raw.get("_meta", {})
    body = [f"Run {meta.get('date')} on {meta.get('machine')}: `python -m benchmarks.pbt --seeds "
            f"{' '.join(map(str, seeds))}`. Population {POPULATION} x {EPOCHS} epochs, perturbation every "
            f"{INTERVAL} epochs, against TPE + ASHA (grace 1, rf 3) over {TPE_TRIALS} trials of up to {EPOCHS} "
            "epochs; cifar10-5k, 8-16-32-64-64, lr / dropout / weight decay searched (and mutated) over the same "
            "ranges. Best val_accuracy of any epoch, median (range) over seeds; compute in epochs trained.", "",
            *rows]
    write_section("Population-based training against TPE + ASHA (cifar10-5k)", body)


def main() -> None:
    args = start(__doc__.splitlines()[0], data=CIFAR_5K, extra=lambda p: (
        p.add_argument("--runners", nargs="+", default=list(RUNNERS), choices=RUNNERS),
        p.add_argument("--write-only", action="store_true", help="redo the section from the raw logs")))
    from sweeper.engine.launch import run_sweep
    from sweeper.spec import validate
    from trainers.base import DataConfig
    from trainers.data import load_data

    logs = RawLogs(HERE / "pbt.json")
    if args.write_only:
        write(logs.raw)
        return
    root = args.data.resolve()
    load_data(DataConfig(**cifar_data(root)))  # decode into the node cache once, before any runner
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        for seed, runner in logs.todo(args.runners, args.seeds):
            log = tmp / f"{runner.replace('+', '-')}-{seed}.jsonl"
            log.unlink(missing_ok=True)
            started = time.time()
            run_sweep(validate(spec(runner, seed, root, tmp, log)))
            lines = sorted((json.loads(x) for x in log.read_text().splitlines() if x.strip()), key=lambda r: r["t"])
            accuracies = [float(r["val_accuracy"]) for r in lines]
            logs.save(runner, seed, {"accuracies": accuracies, "wall_s": time.time() - started})
            print(f"seed {seed} {runner:<9} epochs {len(accuracies):4d}  best {max(accuracies):.4f}  "
                  f"best after 48 {best_after(accuracies, 48)}  wall {time.time() - started:.0f} s", flush=True)
    write(logs.raw)


if __name__ == "__main__":
    main()
