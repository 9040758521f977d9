"""The Ray Tune trainable: one trial of a trainer, in a Ray worker process.

Kept apart from :mod:`sweeper.execution` so that a worker imports only Ray Tune and the
trainer (not Optuna, SQLAlchemy or the spec): a new worker starts faster.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from typing import Any


def run_trial(config: dict[str, Any]) -> None:
    """Ray Tune function trainable: run one trial's trainer, reporting each epoch.

    ``config["sweeper"]`` is the trial's training config (see
    :meth:`sweeper.spec.Sweep.trial_config`). Each report carries the trainer's metrics plus
    ``epoch`` (from 1), ``node``, ``worker`` (``host:pid``) and ``device`` (``cpu`` or
    ``cuda:<Ray's GPU id>``). Torch uses as many threads as the trial's CPUs.
    """
    import ray
    import torch
    from ray import tune

    from trainers import get_trainer
    from trainers.base import DataConfig, TrainConfig

    cfg = config["sweeper"]
    cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 1.0)
    torch.set_num_threads(max(1, int(cpus)))
    gpu_ids = ray.get_gpu_ids()
    device = "cuda" if gpu_ids and torch.cuda.is_available() else "cpu"
    where = {
        "node": socket.gethostname(),
        "worker": f"{socket.gethostname()}:{os.getpid()}",
        "device": f"cuda:{gpu_ids[0]}" if device == "cuda" else "cpu",
    }
    trainer = get_trainer(cfg["trainer"])
    train_config = TrainConfig(
        params=cfg["params"], data=DataConfig(**cfg["data"]), epochs=int(cfg["epochs"]),
        seed=int(cfg["seed"]), device=device,
    )

    def report(epoch: int, metrics: Mapping[str, float]) -> None:
        tune.report({**{k: float(v) for k, v in metrics.items()}, "epoch": int(epoch), **where})

    trainer.fit(train_config, report)
