"""No configuration runs twice: a configuration's identity, and where the duplicate check moves.

:class:`sweeper.engine.searcher.StudySearcher` records a draw whose configuration has run (finished,
running or queued) as a duplicate draw and draws again; after :data:`DUPLICATES_IN_A_ROW` such
draws in a finite space it queues the unseen configuration :func:`nearest` the last draw. The
simulator (``benchmarks/simulate.py``) showed why nearest and not random: TPE's draws after its
startup trials are mostly configurations it has run, and a random unseen one in their place
turned the search into random search.
"""

from __future__ import annotations

import json
import random
from collections.abc import Mapping
from typing import Any, TypeGuard

# Duplicate draws in a row before the nearest unseen configuration of a finite space is queued
# (1: at once; the sampler has shown the region it wants, and each draw is a FAIL row in the study).
DUPLICATES_IN_A_ROW = 1
# Duplicate draws in a row after which a continuous space counts as exhausted (never seen).
MAX_DRAWS = 200
# Above this many configurations a finite space is not enumerated: it is drawn from, as a continuous one.
ENUMERATED = 100_000


def nearest(points: list[dict[str, Any]], wanted: Mapping[str, Any], rng: random.Random) -> dict[str, Any]:
    """The point of ``points`` (Optuna's representation) that differs from ``wanted`` (the
    sampler's last draw, a configuration that had run) in the fewest parameters; ties drawn with
    ``rng``. The sampler wanted that region: the duplicate check moves to the closest
    configuration not yet run, not to a random one.

    Raises:
        ValueError: ``points`` is empty.
    """
    def distance(point: Mapping[str, Any]) -> int:
        return sum(point.get(k) != wanted.get(k) for k in {*point, *wanted})

    closest = min(map(distance, points))
    pool = [p for p in points if distance(p) == closest]
    return pool[rng.randrange(len(pool))]


def config_key(values: dict[str, Any]) -> str:
    """A configuration's identity: its trainer values as canonical JSON (lists and nested values
    compared as values)."""
    return json.dumps(values, sort_keys=True, default=str)


def finite_enumerated(size: int | None) -> TypeGuard[int]:
    """Whether a search space of ``size`` configurations (``None``: continuous) is listed for
    the duplicate check's nearest unseen configuration (at most :data:`ENUMERATED`)."""
    return size is not None and size <= ENUMERATED
