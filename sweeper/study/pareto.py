"""Pareto ranking of objective vectors: non-dominated sorting, crowding distance, hypervolume.

Pure Python on tuples of floats (no Ray, no Optuna), shared by multi-objective ASHA's rung
decisions (:class:`sweeper.engine.scheduler.MultiObjectiveASHA`), the readers' Pareto fronts and
the benchmarks. Every function takes *minimised* vectors: turn a study's values into them
with :func:`minimised` (a maximised objective is negated).

Sources: non-dominated sorting and crowding distance as in NSGA-II (Deb, Pratap, Agarwal and
Meyarivan 2002, "A fast and elitist multiobjective genetic algorithm: NSGA-II", sections
III-A and III-B), the ranking that MO-ASHA offers for its rungs (Schmucker, Donini, Zafar,
Salinas and Archambeau 2021, "Multi-objective Asynchronous Successive Halving").
"""

from __future__ import annotations

import math
from collections.abc import Sequence

Vector = tuple[float, ...]


def minimised(values: Sequence[float], goals: Sequence[str]) -> Vector:
    """``values`` as a vector to minimise: each value whose goal is ``maximize`` negated.

    Raises:
        ValueError: ``values`` and ``goals`` differ in length.
    """
    if len(values) != len(goals):
        raise ValueError(f"{len(values)} values for {len(goals)} goals")
    return tuple(-float(v) if g == "maximize" else float(v) for v, g in zip(values, goals, strict=True))


def dominates(a: Vector, b: Vector) -> bool:
    """True when ``a`` is no worse than ``b`` in every objective and better in one (minimising).
    A NaN is worse than any number."""
    a, b = _finite(a), _finite(b)
    return all(x <= y for x, y in zip(a, b, strict=True)) and any(x < y for x, y in zip(a, b, strict=True))


def non_dominated_fronts(points: Sequence[Vector]) -> list[list[int]]:
    """The indices of ``points`` sorted into fronts: the first holds the points no other point
    dominates, the second those dominated only by the first, and so on (Deb et al. 2002, III-A;
    O(M N^2) for N points of M objectives). Indices keep their order within a front."""
    n = len(points)
    dominated_by: list[list[int]] = [[] for _ in range(n)]  # i dominates each of dominated_by[i]
    count = [0] * n  # how many points dominate i
    for i in range(n):
        for j in range(i + 1, n):
            if dominates(points[i], points[j]):
                dominated_by[i].append(j)
                count[j] += 1
            elif dominates(points[j], points[i]):
                dominated_by[j].append(i)
                count[i] += 1
    fronts: list[list[int]] = []
    current = [i for i in range(n) if count[i] == 0]
    while current:
        fronts.append(current)
        following: list[int] = []
        for i in current:
            for j in dominated_by[i]:
                count[j] -= 1
                if count[j] == 0:
                    following.append(j)
        current = sorted(following)
    return fronts


def crowding_distances(points: Sequence[Vector], front: Sequence[int]) -> dict[int, float]:
    """Each front member's crowding distance (Deb et al. 2002, III-B): per objective, the gap
    between its two neighbours in that objective divided by the front's range there, summed;
    the two ends of each objective get infinity. Larger means a less crowded point."""
    distance = {i: 0.0 for i in front}
    if len(front) <= 2:
        return {i: math.inf for i in front}
    for m in range(len(points[front[0]])):
        ordered = sorted(front, key=lambda i: (_finite(points[i])[m], i))
        low, high = _finite(points[ordered[0]])[m], _finite(points[ordered[-1]])[m]
        distance[ordered[0]] = distance[ordered[-1]] = math.inf
        if high == low or not math.isfinite(high - low):
            continue
        for k in range(1, len(ordered) - 1):
            gap = _finite(points[ordered[k + 1]])[m] - _finite(points[ordered[k - 1]])[m]
            distance[ordered[k]] += gap / (high - low)
    return distance


def rank_order(points: Sequence[Vector]) -> list[int]:
    """The indices of ``points``, best first: by front (:func:`non_dominated_fronts`), then by
    crowding distance, largest first, within a front (NSGA-II's crowded-comparison order), then
    by index."""
    order: list[int] = []
    for front in non_dominated_fronts(points):
        crowding = crowding_distances(points, front)
        order += sorted(front, key=lambda i: (-crowding[i], i))
    return order


def hypervolume_2d(points: Sequence[Vector], reference: Vector) -> float:
    """The area dominated by ``points`` (two objectives, minimised) and bounded by ``reference``
    (the hypervolume indicator, Zitzler and Thiele 1998); points not better than the reference
    in both objectives add nothing.

    Raises:
        ValueError: a point or the reference is not two-dimensional.
    """
    if len(reference) != 2 or any(len(p) != 2 for p in points):
        raise ValueError("hypervolume_2d takes two objectives")
    inside = sorted(p for p in map(_finite, points) if p[0] < reference[0] and p[1] < reference[1])
    area, best_second = 0.0, reference[1]
    for first, second in inside:
        if second < best_second:
            area += (reference[0] - first) * (best_second - second)
            best_second = second
    return area


def _finite(point: Vector) -> Vector:
    return tuple(math.inf if math.isnan(x) else x for x in point)
