"""How much the curve table's ranking depends on its validation split: the table's best
configurations, and some spread over the rest, trained again on other train/validation splits.

    python -m benchmarks.curves.splits [--splits 1 2] [--workers 2] [--limit N] [--write]

The table scores every configuration on one split (split seed 0), while the real time-to-accuracy
benchmark scores seed ``s`` on split ``s`` (``benchmarks/time_to_accuracy.py``). This trains
:func:`chosen` configurations with the table's trainer seed (0) on splits 1 and 2, one file per
split beside the table (``cnn_cifar10_split1.csv.gz``, the table's columns), and compares each
configuration's best-epoch ``val_accuracy`` there with the table's: against the noise between
trainer seeds on split 0 (the table's replicas), and whether the table's best stay the best.

Resumable as ``benchmarks.curves.record``: a run already in its split's file is skipped.
``--write`` puts the comparison into ``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks._results import CIFAR_5K, machine, write_section
from benchmarks.curves.record import train
from benchmarks.curves.table import TABLE, Run, load
from benchmarks.curves.table import append as append_rows

TOP = 13  # the table's top 5% (README: 13 configurations at or above 0.646)
SPREAD = 7  # and this many more, at evenly spaced ranks below them


def split_file(split: int) -> Path:
    """The file of split ``split``'s runs: ``cnn_cifar10_split<split>.csv.gz`` beside the table."""
    return TABLE.with_name(f"cnn_cifar10_split{split}.csv.gz")


def best(run: Run) -> float:
    """A run's best-epoch ``val_accuracy`` (a diverged run's NaN epoch left out; 0.0 without any)."""
    finite = [v for v in run.val_accuracy if v == v]
    return max(finite, default=0.0)


def chosen() -> list[int]:
    """The configurations trained on the other splits: the table's :data:`TOP` best (seed 0, by
    best-epoch ``val_accuracy``), then :data:`SPREAD` at evenly spaced ranks of the rest."""
    runs = load(TABLE)
    ranked = sorted((cid for cid, seed in runs if seed == 0), key=lambda cid: -best(runs[cid, 0]))
    rest = ranked[TOP:]
    step = len(rest) / SPREAD
    return ranked[:TOP] + [rest[int(i * step + step / 2)] for i in range(SPREAD)]


def record(splits: list[int], workers: int, limit: int | None, data: Path) -> None:
    """Train the :func:`chosen` configurations missing from each split's file, ``workers`` side by side."""
    todo = [(cid, 0, str(data), split) for cid in chosen() for split in splits
            if (cid, 0) not in load(split_file(split))][:limit]
    print(f"{len(todo)} runs to train on splits {splits}", flush=True)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    started = time.time()
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        for i, (task, lines) in enumerate(pool.imap_unordered(_train, todo), start=1):
            append_rows(split_file(task[3]), lines)
            print(f"[{i}/{len(todo)}] split {task[3]} config {task[0]}: best {max(line[-4] for line in lines):.3f}, "
                  f"{(time.time() - started) / 60:.1f} min so far", flush=True)


def _train(task: tuple[int, int, str, int]) -> tuple[tuple[int, int, str, int], list[list[Any]]]:
    return task, train(task)


def spearman(a: list[float], b: list[float]) -> float:
    """Spearman's rank correlation of two equal-length lists (average ranks for ties)."""
    def ranks(xs: list[float]) -> list[float]:
        order = sorted(range(len(xs)), key=xs.__getitem__)
        out = [0.0] * len(xs)
        i = 0
        while i < len(order):
            j = i
            while j + 1 < len(order) and xs[order[j + 1]] == xs[order[i]]:
                j += 1
            for k in range(i, j + 1):
                out[order[k]] = (i + j) / 2
            i = j + 1
        return out
    return statistics.correlation(ranks(a), ranks(b))


def mean_difference(a: Run, b: Run) -> float:
    """The mean over epochs of ``a``'s ``val_accuracy`` minus ``b``'s (epochs NaN in either left
    out; NaN without a common one): what :class:`benchmarks.simulate.Noise` calls a run's offset."""
    diffs = [x - y for x, y in zip(a.val_accuracy, b.val_accuracy, strict=False) if x == x and y == y]
    return statistics.fmean(diffs) if diffs else float("nan")


def comparison(splits: list[int]) -> list[str]:
    """The section's lines: per split, each configuration's difference from the table (best epoch,
    and mean over epochs), the ranking it makes, and the split's own spread beyond the noise
    between trainer seeds (the table's replicas: trainer seed 1 against 0 on split 0)."""
    table = load(TABLE)
    pairs = [(table[cid, 1], table[cid, 0]) for cid, seed in table if seed == 1]
    replicas = [best(a) - best(b) for a, b in pairs]
    replica_var = statistics.pvariance([mean_difference(a, b) for a, b in pairs])
    top = chosen()[:TOP]
    lines = ["| validation split | configurations | best-epoch val_accuracy minus split 0's: mean | sd | largest | "
             "mean over epochs: sd | beyond the seeds' noise: sd | rank correlation with split 0 | "
             "split 0's best there | best there (split 0's rank) |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
             f"| 0, trainer seed 1 (the table's replicas) | {len(replicas)} | {statistics.mean(replicas):+.4f} | "
             f"{statistics.stdev(replicas):.4f} | {max(replicas, key=abs):+.3f} | {replica_var ** 0.5:.4f} | | | | |"]
    for split in splits:
        runs = load(split_file(split))
        ids = [cid for cid in chosen() if (cid, 0) in runs]
        if len(ids) < 3:
            continue
        here = {cid: best(runs[cid, 0]) for cid in ids}
        diffs = [here[cid] - best(table[cid, 0]) for cid in ids]
        offsets_var = statistics.pvariance([mean_difference(runs[cid, 0], table[cid, 0]) for cid in ids])
        ranked = sorted(ids, key=lambda cid: -here[cid])
        table_best = f"{here[top[0]]:.3f} (rank {ranked.index(top[0]) + 1} of {len(ids)})" if top[0] in here else "-"
        winner = ranked[0]
        rank = top.index(winner) + 1 if winner in top else "outside the top"
        correlation = spearman([best(table[cid, 0]) for cid in ids], [here[cid] for cid in ids])
        lines.append(f"| {split} | {len(ids)} | {statistics.mean(diffs):+.4f} | {statistics.stdev(diffs):.4f} | "
                     f"{max(diffs, key=abs):+.3f} | {offsets_var ** 0.5:.4f} | "
                     f"{max(0.0, offsets_var - replica_var) ** 0.5:.4f} | {correlation:.2f} | {table_best} | "
                     f"{here[winner]:.3f} ({rank}) |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--splits", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--limit", type=int, default=None, help="train at most this many runs, then stop")
    parser.add_argument("--data", type=Path, default=CIFAR_5K)
    parser.add_argument("--write", action="store_true", help="write the comparison into benchmarks/RESULTS.md")
    args = parser.parse_args()
    if not (args.data / "train").is_dir():
        sys.exit(f"--data {args.data}: no train/ folder (cifar10-5k is in ../shared/data)")
    record(args.splits, args.workers, args.limit, args.data)
    lines = comparison(args.splits)
    print("\n".join(lines), flush=True)
    if args.write:
        write_section(
            f"The curve table on other validation splits ({time.strftime('%Y-%m-%d')})",
            [f"Machine: {machine()}. Command: `python -m benchmarks.curves.splits --splits "
             f"{' '.join(map(str, args.splits))}`. The table's {TOP} best configurations (its top 5%) and {SPREAD} "
             "at evenly spaced ranks below them, trained as the table's (27 epochs, trainer seed 0, one torch "
             "thread, 2 side by side) on other train/validation splits of cifar10-5k; each configuration's "
             "best-epoch val_accuracy against the table's (split 0). The first row: the table's own replicas "
             "(trainer seed 1 on split 0), the noise the simulation's noise model is fitted to.", "", *lines])


if __name__ == "__main__":
    main()
