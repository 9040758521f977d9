"""How much the curve table's ranking depends on its validation split: the table's best
configurations, and some spread over the rest, trained again on other train/validation splits.

    python -m benchmarks.curves.splits [--splits 1 2] [--seeds 0 1] [--workers 2] [--limit N] [--write]

The table scores every configuration on one split (split seed 0), while the real time-to-accuracy
benchmark scores seed ``s`` on split ``s`` (``benchmarks/time_to_accuracy.py``). This trains
:func:`chosen` configurations on splits 1 and 2 as the table's (27 epochs, one torch thread),
with trainer seed 0 (the table's: the same initial weights) and 1, one file per split beside the
table (``cnn_cifar10_split1.csv.gz``, the table's columns). It compares pairs of runs of the same
configurations: another trainer seed on the same split (training noise alone), another split
and another seed (the split and training noise), and separates what the split adds
(:func:`split_sd`).

Resumable as ``benchmarks.curves.record``: a run already in its split's file is skipped, and a
half-written last run is cut off. ``--write`` puts the comparison into ``benchmarks/RESULTS.md``
(replacing that section, its reading included).
"""

from __future__ import annotations

import argparse
import math
import multiprocessing
import os
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks._results import CIFAR_5K, machine, write_section
from benchmarks.curves.record import cut_partial, train
from benchmarks.curves.table import TABLE, Run, load
from benchmarks.curves.table import append as append_rows

TOP = 13  # the table's top 5% (README: 13 configurations at or above 0.646)
SPREAD = 7  # and this many more, at evenly spaced ranks below them


def split_file(split: int) -> Path:
    """The file of split ``split``'s runs: ``cnn_cifar10_split<split>.csv.gz`` beside the table."""
    return TABLE.with_name(f"cnn_cifar10_split{split}.csv.gz")


def chosen() -> list[int]:
    """The configurations trained on the other splits: the table's :data:`TOP` best (seed 0, by
    best-epoch ``val_accuracy``), then :data:`SPREAD` at evenly spaced ranks of the rest."""
    runs = load(TABLE)
    ranked = sorted((cid for cid, seed in runs if seed == 0), key=lambda cid: -runs[cid, 0].best)
    rest = ranked[TOP:]
    step = len(rest) / SPREAD
    return ranked[:TOP] + [rest[int(i * step + step / 2)] for i in range(SPREAD)]


def record(splits: list[int], seeds: list[int], workers: int, limit: int | None, data: Path) -> None:
    """Train, with each trainer seed of ``seeds``, the :func:`chosen` configurations missing from
    each split's file, ``workers`` side by side."""
    done: dict[int, set[tuple[int, int]]] = {}
    for split in splits:
        cut_partial(split_file(split))
        done[split] = set(load(split_file(split)))
    ids = chosen()
    todo = [(cid, seed, str(data), split) for seed in seeds for cid in ids for split in splits
            if (cid, seed) not in done[split]][:limit]
    print(f"{len(todo)} runs to train on splits {splits}, trainer seeds {seeds}", flush=True)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    started = time.time()
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        for i, (task, lines) in enumerate(pool.imap_unordered(_train, todo), start=1):
            append_rows(split_file(task[3]), lines)
            print(f"[{i}/{len(todo)}] split {task[3]} config {task[0]} seed {task[1]}: {len(lines)} epochs, "
                  f"{(time.time() - started) / 60:.1f} min so far", flush=True)


def _train(task: tuple[int, int, str, int]) -> tuple[tuple[int, int, str, int], list[list[Any]]]:
    return task, train(task)


def spearman(a: list[float], b: list[float]) -> float:
    """Spearman's rank correlation of two equal-length lists, ties given their average rank
    (SciPy's ``scipy.stats.spearmanr``)."""
    from scipy.stats import spearmanr

    return float(spearmanr(a, b).statistic)


def mean_difference(a: Run, b: Run) -> float:
    """The mean over epochs of ``a``'s ``val_accuracy`` minus ``b``'s (epochs NaN in either left
    out; NaN without a common one). Between two runs of a configuration that differ only in their
    trainer seed, its spread is that of :class:`benchmarks.simulate.Noise`'s per-trial offset
    times ``sqrt(2)``."""
    diffs = a.differences_from(b)
    return statistics.fmean(diffs) if diffs else float("nan")


def _pair_row(label: str, pairs: dict[int, tuple[Run, Run]], top: list[int]) -> str:
    """One row of the comparison: runs ``a`` minus runs ``b`` of the configurations in ``pairs``."""
    diffs = {cid: a.best - b.best for cid, (a, b) in pairs.items()}
    tops = [d for cid, d in diffs.items() if cid in top]
    rest = [d for cid, d in diffs.items() if cid not in top]
    means = [f"{statistics.fmean(g):+.4f}" if g else "" for g in (tops, rest)]
    offsets = [mean_difference(a, b) for a, b in pairs.values()]
    correlation = spearman([a.best for a, _ in pairs.values()], [b.best for _, b in pairs.values()])
    return (f"| {label} | {len(pairs)} | {means[0]} | {means[1]} | {statistics.pstdev(diffs.values()):.4f} | "
            f"{statistics.pstdev(offsets):.4f} | {correlation:.2f} |")


def split_sd(other_seed: list[tuple[Run, Run]], other_split: list[tuple[Run, Run]], draws: int = 2000,
             ) -> tuple[float, float]:
    """What a split adds to a configuration's score, as a standard deviation, and its bootstrap 95%
    upper bound (configurations resampled, ``draws`` times).

    Each item of both lists is one configuration, in the same order: ``other_seed`` pairs (split
    s, trainer seed 1) with (split s, trainer seed 0), which differ by training noise alone;
    ``other_split`` pairs the same (split s, seed 1) run with the table's (split 0, seed 0), which
    differ by the split and by training noise. Both pairs have independent initial weights, so the
    variance of the second's mean difference minus the first's is the split's (times 2: a
    difference of two splits)."""
    def estimate(ids: list[int]) -> float:
        same = statistics.pvariance([mean_difference(*other_seed[i]) for i in ids])
        moved = statistics.pvariance([mean_difference(*other_split[i]) for i in ids])
        return math.sqrt(max(0.0, moved - same))

    everyone = list(range(len(other_seed)))
    rng = random.Random(0)
    resampled = sorted(estimate([rng.choice(everyone) for _ in everyone]) for _ in range(draws))
    return estimate(everyone), resampled[int(0.95 * draws)]


def comparison(splits: list[int]) -> list[str]:
    """The section's lines: pairs of runs of the same configurations (another trainer seed, another
    split, both), their differences and rank correlations, and the split's own spread
    (:func:`split_sd`)."""
    table, order = load(TABLE), chosen()
    top = order[:TOP]
    lines = ["| runs (a minus b) | configurations | best-epoch val_accuracy, a minus b: mean over the 13 best | "
             "over the other 7 | sd | mean over epochs: sd | rank correlation of a and b |",
             "| --- | --- | --- | --- | --- | --- | --- |",
             _pair_row("split 0: trainer seed 1 minus seed 0 (the table's replicas, configurations of every kind)",
                       {cid: (table[cid, 1], table[cid, 0]) for cid, seed in table if seed == 1}, top)]
    notes = []
    for split in splits:
        runs = load(split_file(split))
        ids = [cid for cid in order if (cid, 0) in runs and (cid, 1) in runs]
        if len(ids) < 3:
            continue
        other_seed = {cid: (runs[cid, 1], runs[cid, 0]) for cid in ids}
        other_split = {cid: (runs[cid, 1], table[cid, 0]) for cid in ids}
        lines += [_pair_row(f"split {split}: trainer seed 1 minus seed 0", other_seed, top),
                  _pair_row(f"split {split} seed 1 minus the table (split 0, seed 0)", other_split, top),
                  _pair_row(f"split {split} seed 0 minus the table (the same initial weights)",
                            {cid: (runs[cid, 0], table[cid, 0]) for cid in ids}, top)]
        sd, upper = split_sd(list(other_seed.values()), list(other_split.values()))
        here = {cid: runs[cid, 1].best for cid in ids}
        ranked = sorted(ids, key=lambda cid: -here[cid])
        notes.append(f"Split {split}: the split's own sd per configuration {sd:.4f} (bootstrap 95% upper bound "
                     f"{upper:.4f}); with trainer seed 1 the table's best configuration ranks "
                     f"{ranked.index(top[0]) + 1} of {len(ids)} there ({here[top[0]]:.3f}), and the best there ranks "
                     f"{order.index(ranked[0]) + 1} in the table ({here[ranked[0]]:.3f}).")
    return [*lines, "", *notes]


def main() -> None:
    """Train what is missing (:func:`record`), print the comparison and, with ``--write``, put it
    into ``benchmarks/RESULTS.md``. Exits with a message when ``--data`` has no ``train/`` folder."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--splits", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1],
                        help="trainer seeds: 0 is the table's (its initial weights), 1 independent of them")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--limit", type=int, default=None, help="train at most this many runs, then stop")
    parser.add_argument("--data", type=Path, default=CIFAR_5K)
    parser.add_argument("--write", action="store_true", help="write the comparison into benchmarks/RESULTS.md")
    args = parser.parse_args()
    if not (args.data / "train").is_dir():
        sys.exit(f"--data {args.data}: no train/ folder (cifar10-5k is in ../shared/data)")
    record(args.splits, args.seeds, args.workers, args.limit, args.data)
    lines = comparison(args.splits)
    print("\n".join(lines), flush=True)
    if args.write:
        write_section(
            f"The curve table on other validation splits ({time.strftime('%Y-%m-%d')})",
            [f"Machine: {machine()}. Command: `python -m benchmarks.curves.splits --splits "
             f"{' '.join(map(str, args.splits))} --seeds {' '.join(map(str, args.seeds))}`. The table's {TOP} best "
             f"configurations (its top 5%) and {SPREAD} at evenly spaced ranks below them, trained as the table's "
             "(27 epochs, one torch thread, 2 side by side) on other train/validation splits of cifar10-5k, with "
             "trainer seeds 0 (the table's initial weights) and 1; pairs of runs of the same configurations "
             "compared by their best-epoch val_accuracy and by their mean difference over epochs.", "", *lines])


if __name__ == "__main__":
    main()
