"""The grid of the curve table and the table itself: what was trained, and how to read it back.

The grid is the seeds' CNN space cut to a finite set (every point is trained, as in NAS-Bench-201):
2 filter layouts x 2 activations x batch norm on/off x 2 dropouts x 4 learning rates (log-spaced
over 1e-4..1e-2) x 2 batch sizes x augmentation on/off = 256 configurations, each trained for
``EPOCHS`` = 27 epochs (reduction factor 3 then has rungs at 1, 3, 9 and 27 epochs).

The table, ``cnn_cifar10.csv.gz``, has one row per (configuration, seed, epoch) with the columns
:data:`COLUMNS`. A run whose training loss became NaN ends with one row whose ``val_accuracy``,
``val_loss`` and ``train_loss`` are empty (NaN): the epoch at which it diverged, ``epoch_s`` the
seconds it ran in that epoch. The file is a concatenation of gzip members (one per training run,
header in the first), which gzip, pandas and every CSV reader that reads ``.gz`` accept.
"""

from __future__ import annotations

import dataclasses
import gzip
import io
import itertools
import math
import statistics
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

TABLE = Path(__file__).with_name("cnn_cifar10.csv.gz")
EPOCHS = 27
# The grid, in the order config_id counts it (the last key varies fastest).
GRID: dict[str, list[Any]] = {
    "filters": ["8-16-32-64-64", "16-32-64-128-128"],
    "activation": ["relu", "gelu"],
    "batch_norm": [True, False],
    "dropout": [0.0, 0.4],
    "lr": [1e-4, 4.6e-4, 2.2e-3, 1e-2],
    "batch_size": [32, 128],
    "augment": [False, True],
}
# Settings every configuration shares (the cnn trainer's defaults otherwise: Adam, kernel 3, 128 dense
# units, no schedule).
FIXED: dict[str, Any] = {"kernel_size": 3, "dense_units": 128, "optimizer": "adam"}
METRICS = ("val_accuracy", "val_loss", "train_loss", "epoch_s")
COLUMNS = ("config_id", "seed", "epoch", *GRID, "param_count", *METRICS)
# The hyperparameters that set an epoch's work (dropout and the learning rate do not change it).
COST_KEYS = ("filters", "activation", "batch_norm", "batch_size", "augment")
# A run whose training took this many times its cost class's median was slowed by other jobs on the
# CPUs (README, Status); :func:`retime` scales it back.
CONTENDED = 1.3
# How many configurations are trained a second time (seed 1) to measure the noise between seeds.
REPLICAS = 32


def configs() -> list[dict[str, Any]]:
    """Every configuration of the grid, indexed by ``config_id`` (0..255)."""
    keys = list(GRID)
    return [dict(zip(keys, values, strict=True)) for values in itertools.product(*GRID.values())]


def config_id(config: Mapping[str, Any]) -> int:
    """The ``config_id`` of a configuration of the grid (its grid values; other keys are ignored).

    Raises:
        KeyError: a value is not on the grid.
    """
    index = 0
    for key, values in GRID.items():
        matches = [i for i, v in enumerate(values) if v == config[key]]
        if not matches:
            raise KeyError(f"{key}={config[key]!r} is not on the grid ({values})")
        index = index * len(values) + matches[0]
    return index


def fmt(value: Any) -> str:
    """A cell as the CSV holds it: floats in ``repr`` (exact), booleans as ``true``/``false``, NaN empty."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return "" if math.isnan(value) else repr(value)
    return str(value)


def parse(column: str, text: str) -> Any:
    """One CSV cell back to its value (the grid's types; metrics as floats, empty = NaN)."""
    if column in ("config_id", "seed", "epoch", "batch_size"):
        return int(text)
    if column in ("batch_norm", "augment"):
        return text == "true"
    if column in ("filters", "activation"):
        return text
    return float(text) if text else math.nan


def complete_members(data: bytes) -> tuple[list[bytes], int]:
    """The decompressed gzip members of ``data`` that are whole, and the byte length they span
    (a member cut short by a killed writer, and what follows it, are left out)."""
    members: list[bytes] = []
    offset = 0
    while offset < len(data):
        inflater = zlib.decompressobj(wbits=31)
        try:
            text = inflater.decompress(data[offset:])
        except zlib.error:
            break
        if not inflater.eof:
            break
        members.append(text)
        offset = len(data) - len(inflater.unused_data)
    return members, offset


@dataclass(frozen=True)
class Run:
    """One training run of the table: a configuration, a seed and its curve.

    Attributes:
        config_id: index of the configuration in :func:`configs`.
        seed: the trainer's seed.
        config: the grid values.
        param_count: trainable parameters of the model.
        val_accuracy, val_loss, train_loss, epoch_s: per epoch, epoch 1 first; a diverged
            run's last entry is NaN (``epoch_s`` is then the seconds until it diverged).
    """

    config_id: int
    seed: int
    config: dict[str, Any]
    param_count: float
    val_accuracy: tuple[float, ...]
    val_loss: tuple[float, ...]
    train_loss: tuple[float, ...]
    epoch_s: tuple[float, ...]

    @property
    def diverged(self) -> bool:
        """The run's training loss became NaN (its last epoch is NaN)."""
        return bool(self.val_accuracy) and math.isnan(self.val_accuracy[-1])

    @property
    def best(self) -> float:
        """The best ``val_accuracy`` over its epochs (a diverged run's NaN epoch left out; 0.0 without any)."""
        return max((v for v in self.val_accuracy if not math.isnan(v)), default=0.0)

    def differences_from(self, other: Run) -> list[float]:
        """This run's ``val_accuracy`` minus ``other``'s, epoch by epoch, over the epochs both have
        and neither has NaN (fractions of 1, one per such epoch)."""
        return [a - b for a, b in zip(self.val_accuracy, other.val_accuracy, strict=False)
                if not (math.isnan(a) or math.isnan(b))]


def rows(path: Path = TABLE) -> Iterator[dict[str, Any]]:
    """The table's rows as dicts of :data:`COLUMNS` (whole members only)."""
    if not path.exists():
        return
    members, _ = complete_members(path.read_bytes())
    header: list[str] | None = None
    for member in members:
        for line in io.StringIO(member.decode("utf-8")):
            cells = line.rstrip("\n").split(",")
            if header is None or cells == header:
                header = cells
                continue
            yield {col: parse(col, cell) for col, cell in zip(header, cells, strict=True)}


def load(path: Path = TABLE) -> dict[tuple[int, int], Run]:
    """Every run recorded in ``path``, by ``(config_id, seed)``."""
    grouped: dict[tuple[int, int], list[dict[str, Any]]] = {}
    for row in rows(path):
        grouped.setdefault((row["config_id"], row["seed"]), []).append(row)
    runs: dict[tuple[int, int], Run] = {}
    for key, group in grouped.items():
        group.sort(key=lambda r: r["epoch"])
        runs[key] = Run(config_id=key[0], seed=key[1], config={k: group[0][k] for k in GRID},
                        param_count=group[0]["param_count"],
                        **{m: tuple(r[m] for r in group) for m in METRICS})
    return runs


def retime(runs: Mapping[tuple[int, int], Run],
           limit: float = CONTENDED) -> tuple[dict[tuple[int, int], Run], list[int]]:
    """``runs`` with the wall seconds of runs slowed by other jobs scaled back to an idle machine's.

    Runs whose configurations share :data:`COST_KEYS` do the same work per epoch, so their total
    training seconds differ only by noise (0.7-1.3 times their median on an idle machine) unless
    something else shared the CPUs (the table's README, Status: 1.5-3.1 times). A run whose total
    is above ``limit`` times its cost class's median (taken over the runs under that limit, after
    a first pass over all) has every ``epoch_s`` scaled by that median over its total; its curve
    is untouched.

    Returns:
        the runs, and the ``config_id`` of each run that was scaled (in ``runs``' order).
    """

    def cost(run: Run) -> tuple[Any, ...]:
        return tuple(run.config[k] for k in COST_KEYS)

    totals = {key: sum(run.epoch_s) for key, run in runs.items()}
    medians: dict[tuple[Any, ...], float] = {}
    for _ in range(2):
        classes: dict[tuple[Any, ...], list[float]] = {}
        for key, run in runs.items():
            median = medians.get(cost(run))
            if median is None or totals[key] <= limit * median:
                classes.setdefault(cost(run), []).append(totals[key])
        medians = {c: statistics.median(v) for c, v in classes.items()}
    out: dict[tuple[int, int], Run] = {}
    scaled: list[int] = []
    for key, run in runs.items():
        median = medians[cost(run)]
        if totals[key] > limit * median:
            factor = median / totals[key]
            run = dataclasses.replace(run, epoch_s=tuple(s * factor for s in run.epoch_s))
            scaled.append(run.config_id)
        out[key] = run
    return out, scaled


def append(path: Path, lines: list[list[Any]]) -> None:
    """Append rows (each in :data:`COLUMNS` order) to ``path`` as one gzip member; the header
    starts the file's first member."""
    text = io.StringIO()
    if not path.exists() or path.stat().st_size == 0:
        text.write(",".join(COLUMNS) + "\n")
    for line in lines:
        text.write(",".join(fmt(v) for v in line) + "\n")
    with open(path, "ab") as f:
        f.write(gzip.compress(text.getvalue().encode("utf-8"), mtime=0))
