"""A trainer of known length for orchestration benchmarks: ``reports`` epochs of ``epoch_s`` seconds."""

from __future__ import annotations

import time

from trainers.base import Param, Report, TrainConfig, Trainer


def fit(config: TrainConfig, report: Report, checkpoint: bool = False) -> dict[str, float]:
    """Sleep ``epoch_s`` per epoch and report a value that depends only on ``x``; with
    ``checkpoint``, a checkpoint of a few bytes with each epoch, as a real trainer's."""
    metrics: dict[str, float] = {}
    for epoch in range(1, config.epochs + 1):
        time.sleep(float(config.params["epoch_s"]))
        metrics = {"val_accuracy": float(config.params["x"]) * epoch / config.epochs}
        report(epoch, metrics, {"epoch": epoch} if checkpoint else None)
    return metrics


def fit_with_checkpoints(config: TrainConfig, report: Report) -> dict[str, float]:
    """:func:`fit` reporting a checkpoint each epoch."""
    return fit(config, report, checkpoint=True)


FIXED = Trainer(
    name="benchmarks.fixed_trainer:FIXED",
    fit=fit,
    params={
        "x": Param("float", 0.5, "the score", low=0.0, high=1.0),
        "epoch_s": Param("float", 0.1, "seconds per epoch", low=0.0, high=60.0),
    },
    metrics=("val_accuracy",),
)

FIXED_CHECKPOINTS = Trainer(
    name="benchmarks.fixed_trainer:FIXED_CHECKPOINTS",
    fit=fit_with_checkpoints,
    params=FIXED.params,
    metrics=("val_accuracy",),
)
