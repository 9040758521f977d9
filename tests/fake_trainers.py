"""Trainers for orchestration tests: real trainer functions, cheap enough to run many trials.

``curve`` is a declared trainer whose ``val_accuracy`` is a known function of ``lr`` and
the epoch, so a test can tell what ASHA should stop; ``fail: true`` raises at epoch 2, as a
diverged trainer does.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Mapping
from typing import Any

from trainers.base import Param, Report, TrainConfig, Trainer


def curve_fit(config: TrainConfig, report: Report) -> dict[str, float]:
    """``val_accuracy = 1 - exp(-epoch * lr * 100)``; sleeps ``sleep_s`` per epoch.

    Checkpoints ``{"epoch": n}`` each epoch and resumes after it. With ``log_to`` set, appends
    ``pid epoch`` to that file as each epoch starts, so a test can find and kill the worker.
    """
    return _curve({**CURVE.defaults(), **config.params}, config, report)


def multi_fit(config: TrainConfig, report: Report) -> dict[str, float]:
    """Two objectives that trade off: ``val_accuracy = (1 - exp(-epoch * lr * 100)) * width /
    (width + 8)`` grows with ``width``, and so does ``model_ms = width / 10`` (a stand-in for a
    model's inference time); otherwise as :func:`curve_fit`."""
    return _curve({**MULTI.defaults(), **config.params}, config, report)


def _from_accuracy(acc: float) -> dict[str, float]:
    """The four epoch metrics of a fake trainer whose validation accuracy is ``acc`` (losses ``1 - acc``)."""
    return {"val_accuracy": acc, "val_loss": 1.0 - acc, "train_loss": 1.0 - acc, "train_accuracy": acc}


def _curve(p: Mapping[str, Any], config: TrainConfig, report: Report) -> dict[str, float]:
    metrics: dict[str, float] = {}
    first = int(config.resume_state["epoch"]) + 1 if config.resume_state else 1
    for epoch in range(first, config.epochs + 1):
        if p["log_to"]:
            with open(p["log_to"], "a") as log:
                log.write(f"{os.getpid()} {epoch}\n")
        time.sleep(float(p["sleep_s"]))
        if p["fail"] and epoch == 2:
            raise FloatingPointError(f"loss became NaN at epoch {epoch}")
        acc = 1.0 - math.exp(-epoch * float(p["lr"]) * 100)
        if "width" in p:
            acc *= int(p["width"]) / (int(p["width"]) + 8)
        metrics = _from_accuracy(acc)
        if "width" in p:
            metrics["model_ms"] = int(p["width"]) / 10
        report(epoch, metrics, {"epoch": epoch})
    return metrics


CURVE = Trainer(
    name="tests.fake_trainers:CURVE",
    fit=curve_fit,
    params={
        "lr": Param("float", 0.01, "learning rate", low=0.0, high=1.0),
        "fail": Param("bool", False, "raise at epoch 2"),
        "sleep_s": Param("float", 0.05, "seconds per epoch", low=0.0, high=10.0),
        "log_to": Param("str", "", "file to append 'pid epoch' lines to"),
    },
)


MULTI = Trainer(
    name="tests.fake_trainers:MULTI",
    fit=multi_fit,
    params={**CURVE.params, "width": Param("int", 8, "model width: more accurate, slower", low=1, high=1024)},
    metrics=(*CURVE.metrics, "model_ms") if CURVE.metrics else None,
)


def conditional_fit(config: TrainConfig, report: Report) -> dict[str, float]:
    """``val_accuracy`` as :func:`curve_fit`'s, plus ``momentum / 10`` with ``optimizer: sgd``: a
    trainer whose ``momentum`` means something for SGD only."""
    p: Mapping[str, Any] = {**CONDITIONAL.defaults(), **config.params}
    bonus = float(p["momentum"]) / 10 if p["optimizer"] == "sgd" else 0.0
    metrics: dict[str, float] = {}
    for epoch in range(1, config.epochs + 1):
        metrics = _from_accuracy(min(1.0, 1.0 - math.exp(-epoch * float(p["lr"]) * 100) + bonus))
        report(epoch, metrics)
    return metrics


CONDITIONAL = Trainer(
    name="tests.fake_trainers:CONDITIONAL",
    fit=conditional_fit,
    params={
        "lr": CURVE.params["lr"],
        "optimizer": Param("str", "adam", "optimizer", choices=("adam", "sgd")),
        "momentum": Param("float", 0.9, "SGD's momentum", low=0.0, high=1.0),
    },
)


def plain_fit(config: TrainConfig, report: Report) -> dict[str, float]:
    """An undeclared user trainer: a bare function."""
    report(1, {"score": 1.0})
    return {"score": 1.0}


def slash_metric(config: TrainConfig, report: Report) -> dict[str, float]:
    """An undeclared trainer whose metric is named as W&B users name theirs: ``val/acc`` = ``lr`` * epoch / 2."""
    metrics: dict[str, float] = {}
    for epoch in range(1, config.epochs + 1):
        metrics = {"val/acc": float(config.params["lr"]) * epoch / 2}
        report(epoch, metrics)
    return metrics


def wandb_function() -> None:
    """A W&B user's training function, as passed to ``wandb.agent(sweep_id, function=...)``: no
    arguments; its config comes from ``wandb.init()``; ``val_acc = lr * epoch``, logged each epoch."""
    import wandb

    run = wandb.init()
    lr = float(wandb.config["lr"])
    for epoch in range(1, int(wandb.config.get("epochs", 3)) + 1):
        time.sleep(0.05)
        wandb.log({"val_acc": lr * epoch, "nested": {"loss": 1.0 - lr * epoch}})
    run.finish()


def sized_fit(config: TrainConfig, report: Report) -> dict[str, float]:
    """A model whose size buys accuracy: ``val_accuracy`` as :func:`multi_fit`'s, and
    ``param_count = width * 1000`` reported with every epoch, as the real trainers report theirs
    (for outcome constraints)."""
    p: Mapping[str, Any] = {**SIZED.defaults(), **config.params}
    metrics: dict[str, float] = {}
    for epoch in range(1, config.epochs + 1):
        time.sleep(float(p["sleep_s"]))
        acc = (1.0 - math.exp(-epoch * float(p["lr"]) * 100)) * int(p["width"]) / (int(p["width"]) + 8)
        metrics = {**_from_accuracy(acc), "param_count": float(int(p["width"]) * 1000)}
        report(epoch, metrics, {"epoch": epoch})
    return metrics


SIZED = Trainer(
    name="tests.fake_trainers:SIZED",
    fit=sized_fit,
    params={"lr": CURVE.params["lr"], "sleep_s": CURVE.params["sleep_s"], "width": MULTI.params["width"]},
    metrics=(*CURVE.metrics, "param_count") if CURVE.metrics else None,
)


def loud_fit(config: TrainConfig, report: Report) -> dict[str, float]:
    """An undeclared trainer that prints, as users' trainers do: the same notice in every trial
    (as a "training on the CPU" line would be), then one line per epoch and one at its end."""
    print("loud trainer: the same notice in every trial", flush=True)
    metrics: dict[str, float] = {}
    for epoch in range(1, config.epochs + 1):
        print(f"loud trainer: seed {config.seed} epoch {epoch}", flush=True)
        metrics = {"val_accuracy": float(config.params["lr"]) * epoch}
        report(epoch, metrics)
    print(f"loud trainer: seed {config.seed} done", flush=True)
    return metrics
