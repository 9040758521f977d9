"""Writing a benchmark's section into ``benchmarks/RESULTS.md``."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

RESULTS_MD = Path(__file__).with_name("RESULTS.md")
# Real CIFAR-10 photos beside the repository (../shared/data/cifar10-5k: train/<class>/ 500 each,
# test/<class>/ 100 each, 32x32 JPEG); see that folder's README.
CIFAR_5K = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10-5k"


def cifar_data(root: Path) -> dict[str, Any]:
    """The ``data`` settings of the benchmarks that compare runners on ``root`` (cifar10-5k):
    an image folder at 32 px, 10% of train held out (stratified) for validation."""
    return {"dataset": "imagefolder", "root": str(root), "image_size": 32, "val_fraction": 0.1}


def machine() -> str:
    """One line naming this machine and the versions that matter to the figures."""
    import optuna
    import ray
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (f"{platform.platform()}, {os.cpu_count()} CPUs, {gpu}, Python {platform.python_version()}, "
            f"torch {torch.__version__}, ray {ray.__version__}, optuna {optuna.__version__}")


def start(description: str, data: Path | None = None,
          extra: Callable[[argparse.ArgumentParser], object] | None = None) -> argparse.Namespace:
    """A sweep benchmark's start: parse ``--seeds`` (default 0 1 2), given a default ``data``
    folder ``--data``, and what ``extra`` adds to the parser; quiet Optuna's log; start local Ray
    as ``sweeper launch`` does."""
    import optuna

    from sweeper.engine.ray_runtime import init_ray

    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    if data is not None:
        parser.add_argument("--data", type=Path, default=data)
    if extra is not None:
        extra(parser)
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    init_ray(None)
    return args


def write_section(title: str, body: list[str]) -> None:
    """Replace (or append) the section headed ``## {title}`` in RESULTS.md with ``body``."""
    head = f"## {title}\n"
    text = RESULTS_MD.read_text() if RESULTS_MD.exists() else (
        "# Benchmark results\n\nEach section is one run of one benchmark script, on the machine it names.\n")
    if head in text:
        start = text.index(head)
        end = text.find("\n## ", start + len(head))
        text = text[:start] + (text[end + 1:] if end != -1 else "")
    RESULTS_MD.write_text(text.rstrip("\n") + "\n\n" + head + "\n" + "\n".join(body).rstrip("\n") + "\n")


class RawLogs:
    """A benchmark's raw logs, one entry per (runner, seed) in one JSON file, saved after each
    pair, so that a run cut short goes on where it stopped.

    The file maps ``"{runner}|{seed}"`` to that pair's logs, and ``"_meta"`` to the settings the
    logs were made with (``meta``), the machine and the date. Logs made with other settings are
    set aside at load (git keeps them): the run starts afresh.
    """

    def __init__(self, path: Path, meta: dict[str, Any] | None = None) -> None:
        self.path, self.meta = path, dict(meta or {})
        self.raw: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
        stored = self.raw.get("_meta", {})
        if any(stored.get(k) != v for k, v in self.meta.items()):
            self.raw = {}

    def todo(self, runners: Iterable[str], seeds: Iterable[int]) -> Iterator[tuple[int, str]]:
        """The (seed, runner) pairs not yet logged, seed by seed."""
        runners = list(runners)
        for seed in seeds:
            yield from ((seed, r) for r in runners if f"{r}|{seed}" not in self.raw)

    def save(self, runner: str, seed: int, logs: Any) -> None:
        """Keep ``logs`` for (runner, seed) and write the file at once."""
        self.raw[f"{runner}|{seed}"] = logs
        self.raw["_meta"] = {**self.meta, "machine": machine(), "date": dt.date.today().isoformat()}
        self.path.write_text(json.dumps(self.raw))
