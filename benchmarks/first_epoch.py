"""Command start to first epoch: how long a user waits, from pressing Enter, for training to begin.

Each tool runs as a new process, as a user runs it, on real photos (``../shared/data/cifar10-5k``,
32 px, 10% held out for validation): two trials of one epoch of the same training function
(:mod:`benchmarks.logged_cnn`, the ``cnn`` trainer with ``[16]x5`` filters), ``--concurrency``
at a time (2: this machine's two CPUs are the trials'; 1: one CPU to spare), one CPU thread
each. The first epoch's start is read from the training function's log (the first report's
time less that epoch's ``epoch_s``), so the figure holds the interpreter's start, the imports,
Ray's start, the study, the trial processes and loading the data, whatever each tool does:

- ``sweeper launch SPEC`` (the CLI, local Ray, SQLite study), as it decides on its node-cache
  warm-up (:func:`sweeper.engine.cluster.warm_data_cache`: only with a CPU to spare), and with the
  warm-up off (``SWEEPER_WARM_CACHE=0``);
- Ray Tune: ``ray.init()`` then ``Tuner`` + ``OptunaSearch``, ``reuse_actors=True``;
- Optuna alone: ``study.optimize(n_jobs=concurrency)`` in threads (no Ray).

Twice for each: with a cold data cache (a new, empty cache folder: the photos are decoded, as in
a node's first sweep) and a warm one (a later sweep on the node).

With ``--ray-running`` a Ray head of the benchmark's own is started once beforehand (``ray start
--head``, as on a cluster or a workstation that keeps Ray up; no other Ray on the machine is
touched), and the Ray tools join it (``sweeper launch --address HOST:PORT``;
``ray.init(address=...)``) instead of starting their own: what a sweep waits for when Ray is
already running. Optuna's runs are the same in both modes. Warm cache only: a running Ray's
workers have the environment Ray was started with, so a new cache folder named in the command's
environment would not reach them.

Usage: ``python -m benchmarks.first_epoch [--repeats 3] [--concurrency 2] [--ray-running]`` from
the repository root; writes its section of ``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from benchmarks._results import CIFAR_5K, cifar_data, machine, write_section

if TYPE_CHECKING:
    from trainers.base import Trainer

ROOT = Path(__file__).resolve().parents[1]
TOOLS = ("sweeper launch", "sweeper launch, SWEEPER_WARM_CACHE=0", "Ray Tune, reuse_actors", "Optuna, threads")
PARAMS = {"filters": "16-16-16-16-16", "batch_size": 128}



def write_spec(tmp: Path, log: Path, root: Path, concurrency: int) -> Path:
    """The sweep spec of the sweeper runs: 2 trials of 1 epoch, no early stopping."""
    spec = {
        "name": "first-epoch", "method": "random", "run_cap": 2, "epochs": 1,
        "metric": {"name": "val_accuracy", "goal": "maximize"},
        "trainer": "benchmarks.logged_cnn:LOGGED_CNN", "data": cifar_data(root),
        "max_concurrent_trials": concurrency, "resources_per_trial": {"cpu": 1, "gpu": 0},
        "storage": f"sqlite:///{tmp / 'study.db'}", "artifacts": str(tmp / "artifacts"),
        "scheduler": {"type": "none"},
        "parameters": {**{k: {"value": v} for k, v in PARAMS.items()}, "lr": {"values": [0.001, 0.003]},
                       "log": {"value": str(log)}},
    }
    path = tmp / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def child_ray_tune(log: Path, root: Path, concurrency: int, address: str | None = None, *,
                   trainer: Trainer | None = None) -> None:
    """Ray Tune's documented start: ``ray.init()`` (or ``ray.init(address)`` to join a running
    Ray), ``Tuner`` with ``OptunaSearch``, reused actors; ``trainer`` (default
    :data:`~benchmarks.logged_cnn.LOGGED_CNN`) trains."""
    import ray
    from ray import tune
    from ray.tune.search.optuna import OptunaSearch

    joined = {"address": address} if address else {"include_dashboard": False}
    ray.init(**joined, runtime_env={"env_vars": {"PYTHONPATH": str(ROOT)}})
    data = cifar_data(root)

    def trainable(config: dict[str, Any]) -> None:
        from benchmarks.logged_cnn import LOGGED_CNN
        from trainers.base import DataConfig, TrainConfig

        fitted = trainer or LOGGED_CNN
        params = {**fitted.defaults(), **PARAMS, **config, "log": str(log)}
        fitted.fit(TrainConfig(params=params, data=DataConfig(**data), epochs=1, threads=1),
                   lambda epoch, metrics, checkpoint=None: tune.report(dict(metrics)))

    tune.Tuner(tune.with_resources(trainable, {"cpu": 1}), param_space={"lr": tune.choice([0.001, 0.003])},
               tune_config=tune.TuneConfig(search_alg=OptunaSearch(metric="val_accuracy", mode="max"), num_samples=2,
                                           max_concurrent_trials=concurrency, reuse_actors=True),
               run_config=tune.RunConfig(storage_path=str(log.parent / "tune"), verbose=0)).fit()


def child_optuna(log: Path, root: Path, concurrency: int, *, trainer: Trainer | None = None) -> None:
    """Optuna's documented start: ``create_study`` and ``optimize(n_jobs=concurrency)``; ``trainer``
    (default :data:`~benchmarks.logged_cnn.LOGGED_CNN`) trains."""
    import optuna

    from benchmarks.logged_cnn import LOGGED_CNN
    from trainers.base import DataConfig, TrainConfig

    fitted = trainer or LOGGED_CNN

    def objective(trial: optuna.Trial) -> float:
        params = {**fitted.defaults(), **PARAMS, "lr": trial.suggest_categorical("lr", [0.001, 0.003]),
                  "log": str(log)}
        out = fitted.fit(TrainConfig(params=params, data=DataConfig(**cifar_data(root)), epochs=1, threads=1),
                         lambda epoch, metrics, checkpoint=None: None)
        return float(out["val_accuracy"])

    optuna.create_study(direction="maximize").optimize(objective, n_trials=2, n_jobs=concurrency)


def first_epoch_s(tool: str, root: Path, cold: bool, concurrency: int, address: str | None = None) -> float:
    """Seconds from starting ``tool``'s command to the start of its first epoch; with ``address``
    the Ray tools join the Ray running there instead of starting their own."""
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        log = tmp / "log.jsonl"
        cache = tmp / "cache" if cold else Path(os.environ.get("SWEEPER_CACHE_DIR") or "~/.cache/sweeper").expanduser()
        env = {**os.environ, "SWEEPER_CACHE_DIR": str(cache), "PYTHONPATH": str(ROOT)}
        if tool.startswith("sweeper"):
            command = [sys.executable, "-m", "sweeper", "launch", str(write_spec(tmp, log, root, concurrency))]
            if tool.endswith("=0"):
                env["SWEEPER_WARM_CACHE"] = "0"
            if address:
                command += ["--address", address]
        else:
            command = [sys.executable, "-m", "benchmarks.first_epoch", "--child", tool, "--log", str(log),
                       "--data", str(root), "--concurrency", str(concurrency)]
            if address and tool.startswith("Ray"):
                command += ["--address", address]
        started = time.time()
        done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"{tool} exited {done.returncode}: {done.stderr[-2000:]}")
        rows = [json.loads(line) for line in log.read_text().splitlines()]
        return min(row["t"] - row["epoch_s"] for row in rows) - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=2, choices=(1, 2))
    parser.add_argument("--data", type=Path, default=CIFAR_5K)
    parser.add_argument("--child", choices=TOOLS[2:], help=argparse.SUPPRESS)
    parser.add_argument("--log", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--address", help=argparse.SUPPRESS)
    parser.add_argument("--ray-running", action="store_true",
                        help="start Ray once beforehand (ray start --head) and let the Ray tools join it")
    args = parser.parse_args()
    root = args.data.resolve()
    if args.child:
        if args.child.startswith("Ray"):
            child_ray_tune(args.log, root, args.concurrency, args.address)
        else:
            child_optuna(args.log, root, args.concurrency)
        return
    from trainers.base import DataConfig
    from trainers.data import load_data

    load_data(DataConfig(**cifar_data(root)))  # the warm runs' cache
    times: dict[tuple[str, bool], list[float]] = {}
    with _ray_head(args.concurrency) if args.ray_running else contextlib.nullcontext() as address:
        for _ in range(args.repeats):
            for cold in (False,) if address else (True, False):
                for tool in TOOLS:
                    took = first_epoch_s(tool, root, cold, args.concurrency, address)
                    times.setdefault((tool, cold), []).append(took)
                    print(f"{tool:<30} {'cold' if cold else 'warm'} cache  {took:6.2f} s", flush=True)
    ray_mode = ", Ray already running" if address else ""
    title = (f"Command start to first epoch, {args.concurrency} trial(s) at a time{ray_mode} "
             f"({dt.date.today().isoformat()})")
    write_section(title, [
        f"Machine: {machine()}. Command: `python -m benchmarks.first_epoch --repeats {args.repeats} --concurrency "
        f"{args.concurrency}{' --ray-running' if address else ''}`. Each tool as a new process: 2 trials of 1 "
        f"epoch of the `cnn` trainer ([16]x5 filters) on cifar10-5k at 32 px, {args.concurrency} at a time, 1 CPU "
        "thread each; seconds from the command's start to the first epoch's start, median "
        f"(min-max) of {args.repeats} runs. Cold cache: a new cache folder (the 5,000 photos are decoded); warm: "
        "decoded by an earlier run."
        + (" Ray was started once before the runs (`ray start --head`), and the Ray tools joined it "
           "(`--address 127.0.0.1:PORT`)." if address else ""),
        "",
        "| tool | cold data cache (s) | warm data cache (s) |",
        "| --- | --- | --- |",
        *[f"| {tool} | {_fmt(times[tool, True]) if (tool, True) in times else 'not run'} | "
          f"{_fmt(times[tool, False])} |" for tool in TOOLS],
    ])


@contextlib.contextmanager
def _ray_head(cpus: int) -> Iterator[str]:
    """A Ray head of its own with ``cpus`` CPUs (``ray start --head --block``), as a cluster keeps
    one running; yields its address and stops it (its process group) at the end, touching no other
    Ray on the machine. It gets its own temp folder, a free port and a new token for Ray's token
    authentication (on by default for ``ray start``), all set in this process's environment, so
    that the commands it starts join it.

    Raises:
        RuntimeError: the head did not start within 60 s (the end of its log).
    """
    import secrets
    import signal
    import socket

    folder = tempfile.mkdtemp(prefix="rt", dir="/tmp")  # short: Ray's socket paths have a length limit
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    os.environ.update({"RAY_AUTH_MODE": "token", "RAY_TMPDIR": folder})
    os.environ.setdefault("RAY_AUTH_TOKEN", secrets.token_hex(16))
    log = Path(folder) / "head.log"
    with log.open("ab") as out:
        head = subprocess.Popen(["ray", "start", "--head", "--block", f"--port={port}", "--node-ip-address=127.0.0.1",
                                 f"--num-cpus={cpus}", "--include-dashboard=false", "--disable-usage-stats"],
                                env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while "Ray runtime started" not in log.read_text(errors="replace"):
            if head.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"ray start did not start a head: {log.read_text(errors='replace')[-2000:]}")
            time.sleep(0.5)
        yield f"127.0.0.1:{port}"
    finally:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(head.pid, sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                head.wait(timeout=30)
                break
        shutil.rmtree(folder, ignore_errors=True)


def _fmt(xs: list[float]) -> str:
    return f"{statistics.median(xs):.2f} ({min(xs):.2f}-{max(xs):.2f})"


if __name__ == "__main__":
    main()
