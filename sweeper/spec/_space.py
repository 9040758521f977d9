"""The search space: the searched dimensions (Optuna distributions) and the constants of a sweep,
and the trial configs made from Optuna's parameters.

Each W&B parameter is translated by :mod:`sweeper.spec._params`. Nested W&B parameters
(``parameters:`` inside a parameter, at any depth) are named in Optuna by their dotted path
(``optimizer.lr``) and handed to the trainer nested again (``{"optimizer": {"lr": ...}}``).
"""

from __future__ import annotations

import dataclasses
import itertools
import json
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
from sweeper.spec._schema import ParameterSpec

if TYPE_CHECKING:
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
    """

    dimensions: tuple[Dimension, ...]
    constants: Mapping[str, Any]
    paths: Mapping[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)

    @property
    def distributions(self) -> dict[str, BaseDistribution]:
        """``{name: distribution}``, as ``optuna.Study.ask(fixed_distributions=...)`` takes it."""
        return {d.name: d.distribution for d in self.dimensions}

    def values(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """Constants and decoded values by dotted name, for Optuna's ``trial.params``."""
        values = dict(self.constants)
        for d in self.dimensions:
            values[d.name] = d.decode(params[d.name])
        return values

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
        """Every grid point (Optuna representation), in a fixed order; ``None`` if a dimension is continuous."""
        axes = [d.grid_values() for d in self.dimensions]
        if any(a is None for a in axes):
            return None
        names = [d.name for d in self.dimensions]
        return [dict(zip(names, combo, strict=True)) for combo in itertools.product(*axes)]  # type: ignore[arg-type]

    def size(self) -> int | None:
        """Number of distinct configurations, ``None`` when a dimension is continuous."""
        total = 1
        for d in self.dimensions:
            values = d.grid_values()
            if values is None:
                return None
            total *= len(values)
        return total


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
    return SearchSpace(tuple(dims), constants, paths), problems
