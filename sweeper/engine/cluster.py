"""The nodes of a sweep: checks that every node sees the paths the trials need, and the data
cache filled on every node while the driver prepares the study.

On a cluster, a trial may run on any node, so the data root, the artifact folder (where Ray
Tune writes checkpoints) and any file a trainer parameter names (pretrained weights) must be
at the same path on every node, and the artifact folder must be the *same* folder (shared
storage), not one of the same name on each disk. :func:`check_nodes` asks every alive node,
with one small task pinned to it, before the first trial starts. :func:`warm_data_cache` then
starts, on every node, the decoding of the sweep's image folder into the node's cache
(:func:`trainers.cache.cached_image_folder`) and its train/validation split, so that both run
while the driver opens the study and Ray Tune starts the trial processes, instead of after
them in the first trial.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sweeper.errors import InputError, Problem

if TYPE_CHECKING:  # nodes unpickle `probe` from this module: it stays light to import
    from sweeper.spec import Sweep

MARKER_PREFIX = ".sweeper-node-check-"


@dataclass(frozen=True)
class NeededPath:
    """A path every node must see.

    Attributes:
        key: the spec key it comes from (``data.root``, ``artifacts``, ``parameters.weights``).
        path: the absolute path.
        kind: ``dir`` (must be a folder), ``file`` (must be a file) or ``shared`` (a folder
            holding the driver's marker file ``marker``: the same storage as the driver's).
        marker: for ``shared``, the marker's file name.
    """

    key: str
    path: str
    kind: str
    marker: str = ""


def probe(needed: list[NeededPath]) -> list[tuple[str, str, str]]:
    """Run on one node: ``(key, path, what is wrong)`` for each needed path it cannot use."""
    problems = []
    for item in needed:
        path = Path(item.path)
        if item.kind == "dir" and not path.is_dir():
            problems.append((item.key, item.path, "is not a folder there"))
        elif item.kind == "file" and not path.is_file():
            problems.append((item.key, item.path, "is not a file there"))
        elif item.kind == "shared":
            if not path.is_dir():
                problems.append((item.key, item.path, "is not a folder there"))
            elif not (path / item.marker).is_file():
                problems.append((item.key, item.path, "is another folder there (not storage shared with the "
                                 "driver: put it on NFS or similar, mounted at the same path on every node)"))
            elif not os.access(path, os.W_OK):
                problems.append((item.key, item.path, "is not writable there"))
    return problems


def needed_paths(sweep: Sweep, marker: str) -> list[NeededPath]:
    """The paths a sweep's trials read or write, as every node must see them."""
    needed = []
    if sweep.data.root:
        needed.append(NeededPath("data.root", sweep.data.root, "dir"))
    needed.append(NeededPath("artifacts", sweep.spec.artifacts, "shared", marker))
    declared = sweep.trainer.params or {}
    for name, candidates in sweep.space.candidates().items():
        param = declared.get(name)
        if param is None or not param.file:
            continue
        for value in candidates:
            if isinstance(value, str) and value not in (param.choices or ()):
                needed.append(NeededPath(f"parameters.{name}", str(param.resolve(value)), "file"))
    return needed


def alive_nodes(min_cpus: float = 0.0) -> list[dict[str, Any]]:
    """The connected Ray cluster's alive nodes that have CPUs, at least ``min_cpus`` of them
    (``ray.nodes()`` entries; the head of a cluster whose trials run elsewhere may have none)."""
    import ray

    return [n for n in ray.nodes()
            if n.get("Alive") and (cpus := n.get("Resources", {}).get("CPU", 0)) > 0 and cpus >= min_cpus]


def check_nodes(sweep: Sweep, timeout_s: float = 300.0) -> int:
    """Ask every alive node of the connected Ray cluster whether it sees the sweep's paths.

    A single-node cluster is not asked (the driver's own checks cover it).

    Returns:
        the number of nodes that were asked.

    Raises:
        InputError: one line per node and path it cannot use, naming the node's address, host
            name and the start of its Ray node ID (``artifacts: '/artifacts' on node 10.0.0.7
            (gpu-2, id 5adf8b06) is not a folder there``).
    """
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    nodes = alive_nodes()
    if len(nodes) < 2:
        return len(nodes)
    marker = f"{MARKER_PREFIX}{uuid.uuid4().hex}"
    artifacts = Path(sweep.spec.artifacts)
    artifacts.mkdir(parents=True, exist_ok=True)
    (artifacts / marker).write_text("sweeper checks that every node sees this folder\n")
    try:
        remote_probe = ray.remote(num_cpus=0)(probe)
        needed = needed_paths(sweep, marker)
        refs = [remote_probe.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False))
                .remote(needed) for n in nodes]
        answers = ray.get(refs, timeout=timeout_s)
    finally:
        (artifacts / marker).unlink(missing_ok=True)
    problems: list[Problem | str] = []
    for node, answer in zip(nodes, answers, strict=True):
        where = f"node {node.get('NodeManagerAddress')} ({node.get('NodeManagerHostname')}, id {node['NodeID'][:8]})"
        problems += [Problem(key, path, f"on {where} {reason}") for key, path, reason in answer]
    if problems:
        raise InputError(problems)
    return len(nodes)


def fill_cache(data: dict[str, Any]) -> None:
    """Run on one node: decode the image folder of ``data`` (a :class:`trainers.base.DataConfig`
    as a dict) into the node's cache and keep its train/validation split there, unless they are
    there already (:func:`trainers.data.load_data`)."""
    from trainers.base import DataConfig
    from trainers.data import load_data

    load_data(DataConfig(**data))


def warm_data_cache(sweep: Sweep, concurrency: int) -> list[Any]:
    """Start filling the data cache of every alive node that has a CPU to spare; do not wait.

    Only for ``data.dataset: imagefolder`` with a trainer's data (a W&B program reads its own
    data). A node has a CPU to spare when it holds at least one more than ``concurrency``
    trials take (``resources_per_trial.cpu`` each), so the decoding runs beside the trials'
    start-up instead of competing with it: measured on a 2-core machine running 2 one-CPU
    trials, a warm-up there made the first epoch start 1.8-3.6 s later, not earlier
    (``benchmarks/first_epoch.py``). ``SWEEPER_WARM_CACHE=1`` warms every node regardless,
    ``SWEEPER_WARM_CACHE=0`` none.

    The task takes none of the trials' CPUs (``num_cpus=0``), so trials start as usual; a
    trial that starts before the node's cache is filled waits on the cache's file lock instead
    of decoding the folder a second time. A failure (an unreadable folder) is the first trial's
    to report, as it would be without this: the task's result is never read.

    Returns:
        the tasks' object references, one per node warmed (empty when none is).
    """
    import dataclasses

    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    setting = os.environ.get("SWEEPER_WARM_CACHE", "")
    if sweep.program is not None or sweep.data.dataset != "imagefolder" or not sweep.data.root or setting == "0":
        return []
    taken = concurrency * sweep.spec.resources_per_trial.cpu
    nodes = alive_nodes(1 if setting == "1" else taken + 1)
    task = ray.remote(num_cpus=0, max_retries=0)(fill_cache)
    data = dataclasses.asdict(sweep.data)
    return [task.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False),
                         name="sweeper-fill-data-cache").remote(data) for n in nodes]
