"""The ``when:`` conditions of a search space, checked (see :mod:`sweeper.spec._space`).

Membership is tested arithmetically (:meth:`sweeper.spec._space.Dimension.takes`): a condition on
an ``int_uniform`` of two billion values lists none of them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from sweeper.errors import Problem
from sweeper.spec._problems import did_you_mean
from sweeper.spec._schema import ParameterSpec

if TYPE_CHECKING:
    from sweeper.spec._space import Dimension


def conditions_of(parameters: Mapping[str, ParameterSpec], dims: list[Dimension], constants: Mapping[str, Any],
                  problems: list[Problem]) -> dict[str, dict[str, tuple[Any, ...]]]:
    """The ``when:`` conditions by parameter, checked: each names a parameter of the sweep with a
    list of values (a constant, ``values``, ``int_uniform`` or a range with a step), each value is
    one it can take, and no parameter depends on itself through its conditions. Appends what is
    wrong to ``problems``."""
    specs: dict[str, ParameterSpec] = {}

    def flatten(params: Mapping[str, ParameterSpec], prefix: str) -> None:
        for key, spec in params.items():
            if spec.parameters is not None:
                flatten(spec.parameters, f"{prefix}{key}.")
            else:
                specs[f"{prefix}{key}"] = spec

    flatten(parameters, "")
    by_name = {d.name: d for d in dims}
    known = [*constants, *by_name]

    def takes(other: str, value: Any) -> bool:
        if other in constants:
            return bool(constants[other] == value)
        return by_name[other].takes(value)

    def described(other: str) -> str:
        return repr([constants[other]]) if other in constants else _values_of(by_name[other])

    conditions: dict[str, dict[str, tuple[Any, ...]]] = {}
    for name, spec in specs.items():
        for other, wanted in (spec.when or {}).items():
            path = f"parameters.{name}.when.{other}"
            if other not in known:
                problems.append(Problem(path, other, "names no parameter of this sweep" + did_you_mean(other, known)))
                continue
            if other == name:
                problems.append(Problem(path, other, "is the parameter itself: a condition names another one"))
                continue
            if other in by_name and by_name[other].count() is None:
                problems.append(Problem(path, other, "names a continuous parameter: a condition needs one with a "
                                        "list of values (value, values, int_uniform, or a range with a step)"))
                continue
            # A list names several values, unless it is itself one of the values (a filters list).
            allowed = tuple(wanted) if isinstance(wanted, list) and not takes(other, wanted) else (wanted,)
            bad = [v for v in allowed if not takes(other, v)]
            if bad:
                problems.append(Problem(path, bad[0], f"is not a value {other} can take: {described(other)}"))
            else:
                conditions.setdefault(name, {})[other] = allowed
    for name in conditions:
        cycle = _cycle(name, conditions)
        if cycle and cycle[0] == min(cycle):  # one line per cycle, named from its first member
            problems.append(Problem(f"parameters.{name}.when", " -> ".join([*cycle, cycle[0]]),
                                    "the conditions form a cycle: each parameter would wait for the other"))
    return conditions


def _cycle(start: str, conditions: Mapping[str, Mapping[str, Any]]) -> list[str] | None:
    """The parameters on a cycle of conditions through ``start``, ``None`` if there is none."""
    def walk(name: str, path: list[str]) -> list[str] | None:
        for other in conditions.get(name, {}):
            if other == start:
                return path
            if other not in path:
                found = walk(other, [*path, other])
                if found:
                    return found
        return None

    return walk(start, [start])


def _values_of(d: Dimension) -> str:
    """The values of a discrete dimension for a message: listed when few, else the range."""
    from optuna.distributions import FloatDistribution, IntDistribution

    n = d.count()
    dist = d.distribution
    if n is not None and n <= 20:
        return repr([d.decode(v) for v in d.iter_values() or []])
    if isinstance(dist, (IntDistribution, FloatDistribution)):
        return f"{n} values from {dist.low} to {dist.high} in steps of {dist.step}"
    return f"{n} values"
