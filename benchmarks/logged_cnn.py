"""The ``cnn`` trainer with a log of every epoch: the one training function of the time-to-accuracy
benchmark, run unchanged inside every runner (sweeper, Ray Tune, Optuna alone).

Each report appends one JSON line ``{"t": unix seconds, "run": id of this training run, "epoch",
"val_accuracy", "epoch_s", "pid"}`` to the file named by the ``log`` parameter, so that every runner's progress is
read the same way: best ``val_accuracy`` so far against wall seconds and against epochs trained.
``filters`` may also be given as a string such as ``"16-32-64-128-128"`` (Optuna's categorical
choices must be plain values).
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Mapping
from typing import Any

from trainers.base import Param, Report, TrainConfig, Trainer
from trainers.cnn import TRAINER as CNN


def filters_of(value: Any) -> list[int]:
    """``[16, 32, 64, 128, 128]`` from that list or from ``"16-32-64-128-128"``."""
    return [int(v) for v in value.split("-")] if isinstance(value, str) else [int(v) for v in value]


def cnn_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """The ``cnn`` trainer's parameters in ``params`` (``log`` dropped, ``filters`` as a list)."""
    out = {k: v for k, v in params.items() if k != "log"}
    if "filters" in out:
        out["filters"] = filters_of(out["filters"])
    return out


def fit(config: TrainConfig, report: Report) -> dict[str, float]:
    """Run the ``cnn`` trainer on ``config``, appending each epoch's report to ``params["log"]``."""
    import dataclasses

    log_path = str(config.params.get("log") or "")
    run = uuid.uuid4().hex[:12]

    def logged(epoch: int, metrics: Mapping[str, float], checkpoint: Mapping[str, Any] | None = None) -> None:
        if log_path:
            line = json.dumps({"t": time.time(), "run": run, "epoch": int(epoch),
                               "val_accuracy": float(metrics.get("val_accuracy", float("nan"))),
                               "epoch_s": float(metrics.get("epoch_s", float("nan"))), "pid": os.getpid()})
            with open(log_path, "a", encoding="utf-8") as f:
                f.write(line + "\n")
        report(epoch, metrics, checkpoint)

    return dict(CNN.fit(dataclasses.replace(config, params=cnn_params(config.params)), logged))


LOGGED_CNN = Trainer(
    name="benchmarks.logged_cnn:LOGGED_CNN",
    fit=fit,
    params={**{k: v for k, v in (CNN.params or {}).items() if k != "filters"},
            "filters": Param("str", "32-32-32-32-32", "filters of the 5 conv blocks, e.g. 16-32-64-128-128"),
            "log": Param("str", "", "file each epoch's report is appended to")},
    metrics=CNN.metrics,
    min_image_size=CNN.min_image_size,
)
