"""The search space: the searched dimensions (Optuna distributions) and the constants of a sweep,
and the trial configs made from Optuna's parameters.

Each W&B parameter is translated by :mod:`sweeper.spec._params`. Nested W&B parameters
(``parameters:`` inside a parameter, at any depth) are named in Optuna by their dotted path
(``optimizer.lr``) and handed to the trainer nested again (``{"optimizer": {"lr": ...}}``).

A parameter with ``when:`` is conditional: it exists in a trial only when every parameter it
names has one of the given values (and exists itself). Such a space is sampled define-by-run
(:meth:`SearchSpace.suggest`, Optuna's ``trial.suggest_*`` in an order where conditions come
first), so the trial's params hold only the parameters that exist, and Optuna's samplers see
the conditional structure; its grid holds only the combinations that exist.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

from sweeper.errors import Problem
from sweeper.spec._problems import did_you_mean
from sweeper.spec._schema import ParameterSpec

if TYPE_CHECKING:
    import optuna

    from sweeper.spec._params import Quantile

@dataclass(frozen=True)
class Dimension:
    """One searched parameter.

    Attributes:
        name: the parameter's name (the trainer's, such as ``lr``).
        distribution: the Optuna distribution sampled for it.
        encoded: categorical choices are stored as JSON text (lists, mixed types).
        q: quantum applied after sampling (``round(x / q) * q``), else ``None``.
        probabilities: W&B ``probabilities`` of the categorical choices, else ``None``.
        quantile: for W&B distributions that Optuna lacks (normal, log-normal, beta), the
            distribution (a :class:`sweeper.spec._params.Quantile`) whose inverse CDF maps the
            searched quantile ``u`` in (0, 1) to the value; ``None`` otherwise.
    """

    name: str
    distribution: BaseDistribution
    encoded: bool = False
    q: float | None = None
    probabilities: tuple[float, ...] | None = None
    quantile: Quantile | None = None

    def decode(self, raw: Any) -> Any:
        """The trainer's value for the Optuna param value ``raw``."""
        if self.encoded:
            return json.loads(raw)
        value = raw if self.quantile is None else self.quantile.ppf(float(raw))
        if self.q is not None:
            value = round(value / self.q) * self.q
            return int(value) if float(self.q).is_integer() else value
        return value

    def grid_values(self) -> list[Any] | None:
        """Every value of a discrete dimension (Optuna's representation), ``None`` if continuous."""
        dist = self.distribution
        if isinstance(dist, CategoricalDistribution):
            return list(dist.choices)
        if isinstance(dist, IntDistribution) and not dist.log:
            return list(range(dist.low, dist.high + 1, dist.step))
        if isinstance(dist, FloatDistribution) and dist.step is not None:
            n = round((dist.high - dist.low) / dist.step)
            return [round(dist.low + i * dist.step, 12) for i in range(n + 1)]
        return None

    def candidates(self) -> list[Any]:
        """Trainer values to check against the trainer's declaration: choices, or the bounds."""
        dist = self.distribution
        if isinstance(dist, CategoricalDistribution):
            return [self.decode(c) for c in dist.choices]
        assert isinstance(dist, (IntDistribution, FloatDistribution))
        return [self.decode(dist.low), self.decode(dist.high)]


@dataclass(frozen=True)
class SearchSpace:
    """The searched dimensions and the constants of a sweep.

    Attributes:
        dimensions: searched parameters, in spec order.
        constants: ``value:`` parameters, passed to every trial unchanged (by dotted name).
        paths: the nested place of each parameter whose name is a dotted path (``optimizer.lr``
            → ``("optimizer", "lr")``); a name not here is a top-level key.
        conditions: ``{parameter: {other parameter: allowed trainer values}}`` for the
            parameters with ``when:`` (validated: known parameters, values they take, no cycle).
    """

    dimensions: tuple[Dimension, ...]
    constants: Mapping[str, Any]
    paths: Mapping[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)
    conditions: Mapping[str, Mapping[str, tuple[Any, ...]]] = dataclasses.field(default_factory=dict)

    @property
    def distributions(self) -> dict[str, BaseDistribution]:
        """``{name: distribution}``, as ``optuna.Study.ask(fixed_distributions=...)`` takes it."""
        return {d.name: d.distribution for d in self.dimensions}

    @property
    def conditional(self) -> bool:
        """True when some parameter has ``when:``."""
        return bool(self.conditions)

    def _holds(self, name: str, values: Mapping[str, Any]) -> bool:
        """Whether ``name`` exists given the trainer values decided so far (a parameter named by
        a condition but absent fails it)."""
        return all(other in values and values[other] in allowed
                   for other, allowed in self.conditions.get(name, {}).items())

    @functools.cached_property
    def _order(self) -> list[str]:
        """Every parameter name (constants first, then dimensions in spec order), each after
        the parameters its conditions name (computed once: every config and duplicate check uses it)."""
        names = [*self.constants, *(d.name for d in self.dimensions)]
        done: list[str] = []

        def visit(name: str, seen: tuple[str, ...]) -> None:
            if name in done or name in seen:
                return
            for other in self.conditions.get(name, {}):
                visit(other, (*seen, name))
            done.append(name)

        for name in names:
            visit(name, ())
        return done

    def suggest(self, trial: optuna.Trial) -> None:
        """Sample the trial's parameters define-by-run (Optuna's ``trial.suggest_*``), each only
        when its conditions hold; a queued trial's fixed parameters are taken as Optuna takes them."""
        dims = {d.name: d for d in self.dimensions}
        values: dict[str, Any] = {}
        for name in self._order:
            if not self._holds(name, values):
                continue
            if name in self.constants:
                values[name] = self.constants[name]
                continue
            d = dims[name]
            dist = d.distribution
            if isinstance(dist, CategoricalDistribution):
                raw = trial.suggest_categorical(name, dist.choices)
            elif isinstance(dist, IntDistribution):
                raw = trial.suggest_int(name, dist.low, dist.high, step=dist.step, log=dist.log)
            else:
                assert isinstance(dist, FloatDistribution)
                raw = trial.suggest_float(name, dist.low, dist.high, step=dist.step, log=dist.log)
            values[name] = d.decode(raw)

    def existing(self, params: Mapping[str, Any]) -> set[str]:
        """The dimensions that exist in a trial with Optuna params ``params``: those whose
        conditions hold on the values of the parameters it has (all, without conditions)."""
        dims = {d.name: d for d in self.dimensions}
        values: dict[str, Any] = {}
        out: set[str] = set()
        for name in self._order:
            if not self._holds(name, values):
                continue
            if name in self.constants:
                values[name] = self.constants[name]
            else:
                out.add(name)
                if name in params:
                    values[name] = dims[name].decode(params[name])
        return out

    def values(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """Constants and decoded values by dotted name, for Optuna's ``trial.params`` (a
        conditional parameter that does not exist in the trial is left out)."""
        decoded = {d.name: d.decode(params[d.name]) for d in self.dimensions if d.name in params}
        values: dict[str, Any] = {}
        for name in self._order:
            if name in self.constants and self._holds(name, values):
                values[name] = self.constants[name]
            elif name in decoded:
                values[name] = decoded[name]
        return {name: values[name] for name in [*self.constants, *(d.name for d in self.dimensions)] if name in values}

    def config(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """The trainer's parameters for Optuna's ``trial.params``: :meth:`values`, nested ones nested."""
        out: dict[str, Any] = {}
        for name, value in self.values(params).items():
            *parents, leaf = self.paths.get(name, (name,))
            node = out
            for part in parents:
                node = node.setdefault(part, {})
            node[leaf] = value
        return out

    def candidates(self) -> dict[str, list[Any]]:
        """``{name: values to check}`` for every parameter: a constant's value, a dimension's
        choices or bounds (see :meth:`Dimension.candidates`)."""
        values: dict[str, list[Any]] = {name: [v] for name, v in self.constants.items()}
        for d in self.dimensions:
            values[d.name] = d.candidates()
        return values

    def grid(self) -> list[dict[str, Any]] | None:
        """Every grid point (Optuna representation), in a fixed order; ``None`` if a dimension is
        continuous. With conditions, only the combinations that exist: a point holds the
        parameters whose conditions hold in it."""
        axes = {d.name: d.grid_values() for d in self.dimensions}
        if any(a is None for a in axes.values()):
            return None
        if not self.conditional:
            names = list(axes)
            return [dict(zip(names, combo, strict=True)) for combo in itertools.product(*axes.values())]  # type: ignore[arg-type]
        dims = {d.name: d for d in self.dimensions}
        points: list[tuple[dict[str, Any], dict[str, Any]]] = [({}, {})]  # (Optuna params, trainer values)
        for name in self._order:
            grown = []
            for params, values in points:
                if not self._holds(name, values):
                    grown.append((params, values))
                elif name in self.constants:
                    grown.append((params, {**values, name: self.constants[name]}))
                else:
                    grown += [({**params, name: raw}, {**values, name: dims[name].decode(raw)})
                              for raw in axes[name] or []]
            points = grown
        order = [d.name for d in self.dimensions]
        return [{n: params[n] for n in order if n in params} for params, _ in points]

    def size(self) -> int | None:
        """Number of distinct configurations, ``None`` when a dimension is continuous."""
        if self.conditional:
            grid = self.grid()
            return None if grid is None else len(grid)
        sizes = [d.grid_values() for d in self.dimensions]
        return None if any(v is None for v in sizes) else math.prod(len(v or []) for v in sizes)


def build_space(parameters: Mapping[str, ParameterSpec]) -> tuple[SearchSpace, list[Problem]]:
    """Translate the spec's ``parameters`` (nested ones at any depth) into a :class:`SearchSpace`.

    Returns:
        the space (with the valid dimensions only, when there are problems) and every
        problem found, each naming ``parameters.<name>.<key>`` (``parameters.optimizer.lr.min``
        for a nested one).
    """
    from sweeper.spec._params import Constant, translate

    dims: list[Dimension] = []
    constants: dict[str, Any] = {}
    paths: dict[str, tuple[str, ...]] = {}
    problems: list[Problem] = []

    def walk(params: Mapping[str, ParameterSpec], prefix: tuple[str, ...]) -> None:
        for key, spec in params.items():
            path = (*prefix, key)
            name = ".".join(path)
            if len(path) > 1:
                paths[name] = path
            if spec.parameters is not None:
                if spec.model_fields_set - {"parameters"}:
                    problems.append(Problem(f"parameters.{name}", sorted(spec.model_fields_set),
                                            "holds nested parameters: it takes `parameters` alone"))
                elif not spec.parameters:
                    problems.append(Problem(f"parameters.{name}.parameters", {}, "must hold at least one parameter"))
                walk(spec.parameters, path)
                continue
            found = translate(name, spec, problems)
            if isinstance(found, Dimension):
                dims.append(found)
            elif isinstance(found, Constant):
                constants[name] = found.value

    walk(parameters, ())
    conditions = _conditions(parameters, dims, constants, problems)
    return SearchSpace(tuple(dims), constants, paths, conditions), problems


def _conditions(parameters: Mapping[str, ParameterSpec], dims: list[Dimension], constants: Mapping[str, Any],
                problems: list[Problem]) -> dict[str, dict[str, tuple[Any, ...]]]:
    """The ``when:`` conditions by parameter, checked: each names a parameter of the sweep with a
    list of values (a constant, ``values``, ``int_uniform`` or a range with a step), each value is
    one it can take, and no parameter depends on itself through its conditions."""
    specs: dict[str, ParameterSpec] = {}

    def flatten(params: Mapping[str, ParameterSpec], prefix: str) -> None:
        for key, spec in params.items():
            if spec.parameters is not None:
                flatten(spec.parameters, f"{prefix}{key}.")
            else:
                specs[f"{prefix}{key}"] = spec

    flatten(parameters, "")
    takes: dict[str, list[Any] | None] = {name: [value] for name, value in constants.items()}
    for d in dims:
        raw = d.grid_values()
        takes[d.name] = None if raw is None else [d.decode(r) for r in raw]
    conditions: dict[str, dict[str, tuple[Any, ...]]] = {}
    for name, spec in specs.items():
        for other, wanted in (spec.when or {}).items():
            path = f"parameters.{name}.when.{other}"
            # A list names several values, unless it is itself one of the values (a filters list).
            allowed = tuple(wanted) if isinstance(wanted, list) and wanted not in (takes.get(other) or []) else (
                wanted,)
            if other not in takes:
                problems.append(Problem(path, other, "names no parameter of this sweep"
                                        + did_you_mean(other, list(takes))))
            elif other == name:
                problems.append(Problem(path, other, "is the parameter itself: a condition names another one"))
            elif takes[other] is None:
                problems.append(Problem(path, other, "names a continuous parameter: a condition needs one with a "
                                        "list of values (value, values, int_uniform, or a range with a step)"))
            else:
                bad = [v for v in allowed if v not in (takes[other] or [])]
                if bad:
                    problems.append(Problem(path, bad[0], f"is not a value {other} can take: {takes[other]}"))
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
