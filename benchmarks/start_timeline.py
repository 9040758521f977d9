"""Where the start of a sweep goes: a timeline from the command's start to the first epoch.

:mod:`benchmarks.first_epoch` gives one figure per tool; this splits it. Each tool runs as a new
process, as there, on the same work (2 trials of 1 epoch of the ``cnn`` trainer, ``[16]x5``
filters, on cifar10-5k at 32 px, warm data cache, ``--concurrency`` at a time), and marks the
time of each stage, in seconds from the command's start:

- ``sweeper launch`` (the CLI, local Ray, SQLite): the CLI's imports, the spec's validation, Ray's
  start (:func:`sweeper.engine.ray_runtime.init_ray`), the study's opening, Ray Tune's start
  (``Tuner.fit``) and its first ask;
- Ray Tune: ``ray.init()``, then ``Tuner.fit`` with ``OptunaSearch`` and reused actors;
- Optuna alone: ``create_study`` and ``optimize(n_jobs=concurrency)`` in threads.

and, in the process that trains (a Ray worker, or Optuna's own process): when it was created,
when the training function was entered (the worker's imports done) and when the first epoch
started. The driver's stages are marked by wrapping sweeper's functions in the child process;
nothing in sweeper is changed for it.

Usage: ``python -m benchmarks.start_timeline [--repeats 3] [--concurrency 2]`` from the
repository root; writes its section of ``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import yaml

from benchmarks._results import CIFAR_5K, cifar_data, machine, write_section
from benchmarks.first_epoch import ROOT, child_optuna, child_ray_tune, write_spec
from benchmarks.logged_cnn import LOGGED_CNN
from benchmarks.logged_cnn import fit as logged_fit
from trainers.base import Report, TrainConfig

TOOLS = ("sweeper launch", "Ray Tune, reuse_actors", "Optuna, threads")


def timed_fit(config: TrainConfig, report: Report) -> dict[str, float]:
    """:func:`benchmarks.logged_cnn.fit`, after a line in ``<log>.start``: when this process was
    created, when the training function was entered, and when torch was ready in it (unix seconds;
    torch is imported here when the process has not imported it yet, as the trainer would)."""
    import psutil

    entered = time.time()
    import torch  # noqa: F401  (already imported by the worker, or now, by the trainer's loop)

    with open(f"{config.params.get('log')}.start", "a", encoding="utf-8") as f:
        f.write(json.dumps({"pid": os.getpid(), "created": psutil.Process().create_time(), "entered": entered,
                            "torch": time.time()}) + "\n")
    return logged_fit(config, report)


TIMED_CNN = dataclasses.replace(LOGGED_CNN, name="benchmarks.start_timeline:TIMED_CNN", fit=timed_fit)


def _marking(marks: list[tuple[str, float]], started: float) -> Callable[[str], None]:
    return lambda stage: marks.append((stage, time.time() - started))


def _wrap(owner: Any, name: str, mark: Callable[[str], None], label: str) -> None:
    """Mark ``label`` start and end around ``owner.name`` (called through the attribute)."""
    inner = getattr(owner, name)

    def wrapped(*args: Any, **kwargs: Any) -> Any:
        mark(f"{label}: began")
        try:
            return inner(*args, **kwargs)
        finally:
            mark(f"{label}: done")

    setattr(owner, name, wrapped)


def child_sweeper(spec: Path, mark: Callable[[str], None]) -> None:
    """``sweeper launch SPEC`` in this process, its stages marked."""
    import sweeper.cli as cli

    mark("imports (sweeper's CLI)")
    import sweeper.engine.launch as launch
    import sweeper.spec
    from sweeper.engine.searcher import StudySearcher

    _wrap(sweeper.spec, "validate", mark, "validate the spec")
    _wrap(launch, "init_ray", mark, "start Ray")
    _wrap(launch, "_open_study", mark, "open the study")
    _wrap(launch, "_fit", mark, "Ray Tune's run")
    asked = StudySearcher.suggest

    def suggest(self: StudySearcher, trial_id: str) -> Any:
        config = asked(self, trial_id)
        if isinstance(config, dict):
            mark("a trial asked")
        return config

    StudySearcher.suggest = suggest  # type: ignore[method-assign]
    sys.argv = ["sweeper", "launch", str(spec)]
    try:
        cli.main()
    except SystemExit as exit_:
        if exit_.code:
            raise


def timeline(tool: str, concurrency: int) -> list[tuple[str, float]]:
    """One run of ``tool`` as a new process: its stages (name, seconds from the command's start),
    the first of each name, in order of time."""
    import psutil

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        log, marks = tmp / "log.jsonl", tmp / "marks.json"
        spec = write_spec(tmp, log, CIFAR_5K, concurrency)
        raw = yaml.safe_load(spec.read_text())
        raw["trainer"] = TIMED_CNN.name
        spec.write_text(yaml.safe_dump(raw))
        started = time.time()
        child = subprocess.Popen([sys.executable, "-m", "benchmarks.start_timeline", "--child", tool, "--log", str(log),
                                  "--marks", str(marks), "--spec", str(spec), "--started", repr(started),
                                  "--concurrency", str(concurrency)], cwd=ROOT,
                                 env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True)
        # A process's creation time is counted from the boot time, which Linux gives in whole
        # seconds: the child's own, taken as created when it was started, corrects the workers'.
        offset = psutil.Process(child.pid).create_time() - started
        _, stderr = child.communicate()
        if child.returncode != 0:
            raise RuntimeError(f"{tool} exited {child.returncode}: {stderr[-2000:]}")
        stages = [(name, t) for name, t in json.loads(marks.read_text())]
        workers = [json.loads(line) for line in Path(f"{log}.start").read_text().splitlines()]
        stages += [("a training process created", min(w["created"] for w in workers) - offset - started),
                   ("training function entered", min(w["entered"] for w in workers) - started),
                   ("torch imported in the training process", min(w["torch"] for w in workers) - started)]
        epochs = [json.loads(line) for line in log.read_text().splitlines()]
        stages.append(("first epoch started", min(r["t"] - r["epoch_s"] for r in epochs) - started))
    first: dict[str, float] = {}
    for name, t in stages:
        first.setdefault(name, t)
    return sorted(first.items(), key=lambda stage: stage[1])


def _child(args: argparse.Namespace) -> None:
    marks: list[tuple[str, float]] = []
    mark = _marking(marks, args.started)
    mark("Python and this module loaded")
    try:
        if args.child == TOOLS[0]:
            child_sweeper(args.spec, mark)
        else:
            log = args.log
            if args.child == TOOLS[1]:
                import ray

                _wrap(ray, "init", mark, "start Ray")
                from ray import tune

                _wrap(tune.Tuner, "fit", mark, "Ray Tune's run")
                mark("imports (Ray, Ray Tune)")
                child_ray_tune(log, CIFAR_5K, args.concurrency, trainer=TIMED_CNN)
            else:
                import optuna

                mark("imports (Optuna)")
                _wrap(optuna.Study, "optimize", mark, "Optuna's optimize")
                child_optuna(log, CIFAR_5K, args.concurrency, trainer=TIMED_CNN)
    finally:
        args.marks.write_text(json.dumps(marks))


def main() -> None:
    """Time each tool ``--repeats`` times (or, with ``--child``, be one tool's run) and write the
    section of RESULTS.md: each stage's median (min-max) in seconds from the command's start."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=2, choices=(1, 2))
    parser.add_argument("--child", choices=TOOLS, help=argparse.SUPPRESS)  # the tool run by this process
    for path in ("--log", "--marks", "--spec"):
        parser.add_argument(path, type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--started", type=float, help=argparse.SUPPRESS)  # the parent's clock at the start
    args = parser.parse_args()
    if args.child:
        _child(args)
        return
    from trainers.base import DataConfig
    from trainers.data import load_data

    load_data(DataConfig(**cifar_data(CIFAR_5K)))  # a warm data cache, as first_epoch's warm runs
    runs: dict[str, list[dict[str, float]]] = {tool: [] for tool in TOOLS}
    for _ in range(args.repeats):
        for tool in TOOLS:
            stages = timeline(tool, args.concurrency)
            runs[tool].append(dict(stages))
            print(tool, " ".join(f"{name}={t:.2f}" for name, t in stages), flush=True)
    write_section(f"Where the start goes: command start to first epoch, stage by stage ({dt.date.today()})",
                  _section(runs, args))


def _section(runs: Mapping[str, list[dict[str, float]]], args: argparse.Namespace) -> list[str]:
    lines = [
        f"Machine: {machine()}. Command: `python -m benchmarks.start_timeline --repeats {args.repeats} "
        f"--concurrency {args.concurrency}`. Each tool as a new process: 2 trials of 1 epoch of the `cnn` trainer "
        f"([16]x5 filters) on cifar10-5k at 32 px, {args.concurrency} at a time, warm data cache; each stage in "
        f"seconds from the command's start, median (min-max) of {args.repeats} runs, in order of the median.", ""]
    for tool, stages in runs.items():
        lines += [f"| {tool} | s |", "| --- | --- |"]
        names = {name for run in stages for name in run}
        medians = {name: statistics.median(run[name] for run in stages if name in run) for name in names}
        for name in sorted(names, key=medians.__getitem__):
            seen = [run[name] for run in stages if name in run]
            lines.append(f"| {name} | {medians[name]:.2f} ({min(seen):.2f}-{max(seen):.2f}) |")
        lines.append("")
    return lines


if __name__ == "__main__":
    main()
