"""Record the curve table: train every configuration of the grid (``benchmarks.curves.table``) for
27 epochs with the ``cnn`` trainer on cifar10-5k at 32 px, and append each run's curve to
``benchmarks/curves/cnn_cifar10.csv.gz``.

    python -m benchmarks.curves.record [--workers 2] [--limit N] [--data DIR] [--table FILE]

Resumable: a run already in the table is skipped, and a run cut short by a kill is trained again
from its start (its partial gzip member is cut off first). Runs are taken in a fixed shuffled
order, so a table that is still growing is a uniform sample of the grid. :data:`REPLICAS`
configurations are also trained with seed 1, one after every 8 first-seed runs, to measure the
noise between seeds.

Each worker is one process with one torch thread; the epochs' seconds in the table are measured
with ``--workers`` processes training side by side on this machine.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import random
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks._results import CIFAR_5K
from benchmarks.curves.table import (
    EPOCHS,
    FIXED,
    GRID,
    REPLICAS,
    TABLE,
    complete_members,
    configs,
    load,
)
from benchmarks.curves.table import append as append_rows

ORDER_SEED = 2026


def order() -> list[tuple[int, int]]:
    """The ``(config_id, seed)`` runs in recording order: every configuration with seed 0 in a
    fixed shuffled order, and the first :data:`REPLICAS` of that order again with seed 1, each
    after 8 more first-seed runs."""
    ids = list(range(len(configs())))
    random.Random(ORDER_SEED).shuffle(ids)
    runs: list[tuple[int, int]] = []
    for i, cid in enumerate(ids):
        runs.append((cid, 0))
        if i % 8 == 7 and i // 8 < REPLICAS:
            runs.append((ids[i // 8], 1))
    return runs


def cut_partial(path: Path) -> None:
    """Cut off the gzip member a killed run left half-written at the end of ``path`` (if any)."""
    if path.exists():
        whole = complete_members(path.read_bytes())[1]
        if whole < path.stat().st_size:
            os.truncate(path, whole)
            print(f"cut {path} back to its last whole run ({whole} bytes)", flush=True)


def train(task: tuple[int, int, str] | tuple[int, int, str, int]) -> list[list[Any]]:
    """Train configuration ``config_id`` with ``seed`` for :data:`EPOCHS` epochs on one thread,
    scored on validation split ``split`` (the 4th item; 0, the table's, without it); its rows in
    the table's column order."""
    config_id, seed, root, *rest = task
    split = int(rest[0]) if rest else 0
    from trainers.base import DataConfig, TrainConfig
    from trainers.cnn import TRAINER as CNN

    config = configs()[config_id]
    params = {**FIXED, **config, "filters": [int(v) for v in config["filters"].split("-")]}
    data = DataConfig(dataset="imagefolder", root=root, image_size=32, val_fraction=0.1, seed=split)
    out: list[list[Any]] = []
    started = time.perf_counter()
    count = [float("nan")]

    def report(epoch: int, metrics: Any, checkpoint: Any = None) -> None:
        nonlocal started
        count[0] = float(metrics["param_count"])
        out.append([config_id, seed, epoch, *config.values(), count[0],
                    *(float(metrics[m]) for m in ("val_accuracy", "val_loss", "train_loss", "epoch_s"))])
        started = time.perf_counter()

    try:
        CNN.fit(TrainConfig(params=params, data=data, epochs=EPOCHS, seed=seed, threads=1, device="cpu"), report)
    except FloatingPointError:
        nan = float("nan")
        out.append([config_id, seed, len(out) + 1, *config.values(), count[0], nan, nan, nan,
                    time.perf_counter() - started])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=2, help="runs trained side by side (processes)")
    parser.add_argument("--limit", type=int, default=None, help="train at most this many runs, then stop")
    parser.add_argument("--data", type=Path, default=CIFAR_5K)
    parser.add_argument("--table", type=Path, default=TABLE)
    args = parser.parse_args()
    if not (args.data / "train").is_dir():
        sys.exit(f"--data {args.data}: no train/ folder (cifar10-5k is in ../shared/data)")
    cut_partial(args.table)
    done = set(load(args.table))
    todo = [run for run in order() if run not in done][: args.limit]
    print(f"{len(done)} runs recorded, {len(todo)} to train ({len(configs())} configurations of "
          f"{' x '.join(str(len(v)) for v in GRID.values())}, {REPLICAS} replicas)", flush=True)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    started = time.time()
    with multiprocessing.get_context("spawn").Pool(args.workers) as pool:
        tasks = [(cid, seed, str(args.data)) for cid, seed in todo]
        for i, lines in enumerate(pool.imap_unordered(train, tasks), start=1):
            append_rows(args.table, lines)
            last = lines[-1]
            print(f"[{i}/{len(todo)}] config {last[0]} seed {last[1]}: {len(lines)} rows, last val_accuracy "
                  f"{last[-4]:.4f}, {sum(line[-1] for line in lines):.0f} s training, "
                  f"{(time.time() - started) / 3600:.2f} h so far", flush=True)


if __name__ == "__main__":
    main()
