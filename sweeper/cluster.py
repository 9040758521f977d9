"""Checks that a Ray cluster can run a sweep: every node sees the paths the trials need.

On a cluster, a trial may run on any node, so the data root, the artifact folder (where Ray
Tune writes checkpoints) and any file a trainer parameter names (pretrained weights) must be
at the same path on every node, and the artifact folder must be the *same* folder (shared
storage), not one of the same name on each disk. :func:`check_nodes` asks every alive node,
with one small task pinned to it, before the first trial starts.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

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

    nodes = [n for n in ray.nodes() if n.get("Alive") and n.get("Resources", {}).get("CPU", 0) > 0]
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
