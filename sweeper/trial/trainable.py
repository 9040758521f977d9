"""The Ray Tune trainable: one trial of a trainer, in a Ray worker process.

Kept apart from the driver's modules so that a worker imports only Ray Tune and the
trainer (not Optuna, SQLAlchemy or the spec): a new worker starts faster.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from typing import Any

CHECKPOINT_FILE = "trainer_state.pt"
# Seconds trained before the last checkpoint, kept in it so that train_s goes on after a restart.
TRAIN_S_KEY = "sweeper_train_s"
# A result carrying this key ends the trial as FAIL with its value as the reason.
ERROR_KEY = "sweeper_error"
# Ray logs each restore from a checkpoint at INFO ("Restored on ... from checkpoint"): under PBT
# that is every exploit, and the study records it. Set where the trainable is unpickled, before
# Ray restores the worker's first trial.
logging.getLogger("ray.tune.trainable.trainable").setLevel(logging.WARNING)


def _quiet_exit_in_callbacks(unraisable: Any, default: Any = sys.__unraisablehook__) -> None:
    """``sys.unraisablehook`` of a trial worker: a ``SystemExit`` raised where Python cannot raise
    it is the worker being stopped, not an error, so it is not printed; anything else is.

    When Ray Tune ends a sweep (its budget, Ctrl-C) it SIGTERMs the trial workers, and Ray's
    SIGTERM handler raises ``SystemExit``; when that lands inside a weakref callback, Python
    prints "Exception ignored in ..." with a traceback, which Ray streams to the user's terminal
    (seen in CI through Ray Client, at a sweep's normal end as after Ctrl-C).
    """
    if unraisable.exc_type is not None and issubclass(unraisable.exc_type, SystemExit):
        return
    default(unraisable)


def run_trial(config: dict[str, Any], function: Callable[..., Any] | None = None) -> None:
    """Ray Tune function trainable: run one trial's trainer, reporting each epoch.

    ``function``: the trainer itself, given to ``sweeper.agent(function=...)`` and shipped here
    by value (Ray's ``tune.with_parameters``, cloudpickle: a function defined in a notebook works);
    it replaces the trainer the config names. A zero-argument one is a W&B function, run by
    :func:`sweeper.trial.program.fit_function`; one of ``(config, report)`` is a plain trainer.

    ``config["sweeper"]`` is the trial's training config (see
    :meth:`sweeper.spec.Sweep.trial_config`). Each report carries the trainer's metrics plus
    ``epoch`` (from 1), and where it runs under the names :data:`sweeper.study.record.WHERE` stores:
    ``node`` (host name), ``node_id`` (Ray's), ``worker`` (``host:pid``) and ``device`` (``cpu`` or
    ``cuda:<Ray's GPU id>``). Torch uses the config's ``threads`` (the
    trial's CPUs).

    Every report also carries, unless the trainer reports them itself, ``train_s`` (wall
    seconds since the trial's trainer started, data loading included, summed over restarts
    after a lost worker) and ``gpu_hours`` (``train_s`` times the trial's GPU share, in hours:
    0 on the CPU, ``train_s / 3600 / 4`` for ``gpu: 0.25``).
    """
    import ray
    import torch
    from ray import tune

    from trainers import get_trainer
    from trainers.base import DataConfig, TrainConfig
    from trainers.device import CPU_NOTICE, silence

    # Ray logs every persisted checkpoint at INFO level; the study records the trial instead.
    logging.getLogger("ray.train").setLevel(logging.WARNING)
    sys.unraisablehook = _quiet_exit_in_callbacks
    cfg = config["sweeper"]
    assigned = ray.get_runtime_context().get_assigned_resources()
    cpus = assigned.get("CPU", 1.0)
    gpu_share = float(assigned.get("GPU", 0.0))
    threads = int(cfg.get("threads") or max(1, int(cpus)))
    gpu_ids = ray.get_gpu_ids()
    device = "cuda" if gpu_ids and torch.cuda.is_available() else "cpu"
    if not gpu_ids:  # a trial given no GPU: the progress header says so once, not each worker
        silence(CPU_NOTICE)
    where = {
        "node": socket.gethostname(),
        "node_id": ray.get_runtime_context().get_node_id(),
        "worker": f"{socket.gethostname()}:{os.getpid()}",
        "device": f"cuda:{gpu_ids[0]}" if device == "cuda" else "cpu",
    }
    trainer = get_trainer(cfg["trainer"]) if function is None else _given(function, cfg)
    # Ray's checkpoint (a lost worker, a PBT exploit), else a population member's last one, left
    # by a driver that was lost (sweeper.engine.population.resumed_member).
    resume_state = _load_checkpoint(tune.get_checkpoint() or (
        tune.Checkpoint.from_directory(config["resume_from"]) if config.get("resume_from") else None))
    train_config = TrainConfig(
        params=cfg["params"], data=DataConfig(**cfg["data"]), epochs=int(cfg["epochs"]),
        seed=int(cfg["seed"]), device=device, resume_state=resume_state,
        threads=threads, program=cfg.get("program"), measure_inference=bool(cfg.get("measure_inference", False)),
    )
    trained_before = float((resume_state or {}).get(TRAIN_S_KEY, 0.0))
    started = time.perf_counter()
    # A program trial stops its program at the timeout itself; another trainer (a W&B function
    # too) is stopped at its first report after the deadline.
    program = train_config.program or {}
    timeout = None if program.get("program") and not program.get("function") else config.get("trial_timeout")

    def report(epoch: int, metrics: Mapping[str, float], checkpoint: Mapping[str, Any] | None = None) -> None:
        if timeout and time.perf_counter() - started > timeout:
            raise TimeoutError(f"trial_timeout: ran longer than {timeout:g} s (stopped at epoch {epoch})")
        train_s = trained_before + time.perf_counter() - started
        result = {"train_s": train_s, "gpu_hours": train_s * gpu_share / 3600.0,
                  **{k: float(v) for k, v in metrics.items()}, "epoch": int(epoch), **where}
        every = int(config.get("checkpoint_every", 1))
        if checkpoint is not None and every > 1 and epoch % every and epoch < train_config.epochs:
            checkpoint = None  # population-based training keeps one where a trial may be copied
        if checkpoint is None:
            tune.report(result)
            return
        # Ray copies the folder into the trial's storage before report() returns.
        with tempfile.TemporaryDirectory(prefix="sweeper-ckpt-") as folder:
            torch.save({**checkpoint, TRAIN_S_KEY: train_s}, os.path.join(folder, CHECKPOINT_FILE))
            tune.report(result, checkpoint=tune.Checkpoint.from_directory(folder))

    try:
        trainer.fit(train_config, report)
    except Exception as err:  # a trainer's error fails its trial, never the sweep
        # Reported as a result, not raised: Ray retries raised errors (meant for dead workers),
        # and a diverged config fails the same way every time.
        lines = str(err).strip().splitlines()
        tune.report({ERROR_KEY: f"{type(err).__name__}: {lines[-1] if lines else ''}".rstrip(": ")})


def _given(function: Callable[..., Any], cfg: Mapping[str, Any]) -> Any:
    """The trainer of a function given by value: a W&B function runs through the program trainer."""
    from trainers.base import Trainer

    if (cfg.get("program") or {}).get("function"):
        from sweeper.trial.program import fit_function

        return Trainer(name="function", fit=lambda config, report: fit_function(function, config, report),
                       params=None, metrics=None)
    return Trainer(name="function", fit=function, params=None, metrics=None)


def _load_checkpoint(checkpoint: Any) -> dict[str, Any] | None:
    """The trainer state in a Ray checkpoint, read with ``torch.load(weights_only=True)``."""
    if checkpoint is None:
        return None
    import torch

    with checkpoint.as_directory() as folder:
        state: dict[str, Any] = torch.load(os.path.join(folder, CHECKPOINT_FILE), weights_only=True,
                                           map_location="cpu")
    return state
