"""Translate W&B parameter specs into Optuna distributions, and back into trial configs.

W&B's meanings (docs.wandb.ai, "Sweep configuration options"):

- ``int_uniform``: integers in [min, max];  ``uniform``: floats in [min, max];
- ``q_uniform``: ``round(X / q) * q`` with X uniform;
- ``log_uniform_values``: log-uniform between min and max;
- ``log_uniform``: ``exp(X)`` with X uniform in [min, max] (min/max are natural-log exponents);
- ``q_log_uniform_values``: ``round(X / q) * q`` with X log-uniform in [min, max].

Optuna has no log-scale-with-step distribution, so ``q_log_uniform_values`` is sampled
log-uniformly by Optuna and quantised when the trial's config is built (the Optuna param
keeps the raw draw, the trial's ``config`` user attribute the quantised value). List values
(a filters list) are one categorical choice each, stored in Optuna as their JSON text.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

from sweeper.errors import Problem
from sweeper.spec._schema import DISTRIBUTIONS, UNSUPPORTED_DISTRIBUTIONS, ParameterSpec

_PRIMITIVE = (bool, int, float, str, type(None))


@dataclass(frozen=True)
class Dimension:
    """One searched parameter.

    Attributes:
        name: the parameter's name (the trainer's, such as ``lr``).
        distribution: the Optuna distribution sampled for it.
        encoded: categorical choices are stored as JSON text (lists, mixed types).
        q: quantum applied after sampling (``q_log_uniform_values``), else ``None``.
        probabilities: W&B ``probabilities`` of the categorical choices, else ``None``.
    """

    name: str
    distribution: BaseDistribution
    encoded: bool = False
    q: float | None = None
    probabilities: tuple[float, ...] | None = None

    def decode(self, raw: Any) -> Any:
        """The trainer's value for the Optuna param value ``raw``."""
        if self.encoded:
            return json.loads(raw)
        if self.q is not None:
            value = round(raw / self.q) * self.q
            return int(value) if float(self.q).is_integer() else value
        return raw

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
        constants: ``value:`` parameters, passed to every trial unchanged.
    """

    dimensions: tuple[Dimension, ...]
    constants: Mapping[str, Any]

    @property
    def distributions(self) -> dict[str, BaseDistribution]:
        """``{name: distribution}``, as ``optuna.Study.ask(fixed_distributions=...)`` takes it."""
        return {d.name: d.distribution for d in self.dimensions}

    def config(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """The trainer's parameters for Optuna's ``trial.params``: constants + decoded values."""
        values = dict(self.constants)
        for d in self.dimensions:
            values[d.name] = d.decode(params[d.name])
        return values

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
    """Translate the spec's ``parameters`` into a :class:`SearchSpace`.

    Returns:
        the space (with the valid dimensions only, when there are problems) and every
        problem found, each naming ``parameters.<name>.<key>``.
    """
    dims: list[Dimension] = []
    constants: dict[str, Any] = {}
    problems: list[Problem] = []
    for name, spec in parameters.items():
        found = _translate(name, spec, problems)
        if isinstance(found, Dimension):
            dims.append(found)
        elif isinstance(found, _Constant):
            constants[name] = found.value
    return SearchSpace(tuple(dims), constants), problems


@dataclass(frozen=True)
class _Constant:
    value: Any


def _translate(name: str, spec: ParameterSpec, problems: list[Problem]) -> Dimension | _Constant | None:
    path = f"parameters.{name}"
    given = spec.model_fields_set
    forms = [k for k in ("value", "values", "min") if k in given]
    dist = spec.distribution
    if dist in UNSUPPORTED_DISTRIBUTIONS:
        problems.append(Problem(f"{path}.distribution", dist,
                                "is a W&B distribution sweeper does not support; use one of "
                                + ", ".join(DISTRIBUTIONS)))
        return None
    if "max" in given and "min" not in given:
        problems.append(Problem(f"{path}.min", None, "is required with max"))
        return None
    if len(forms) != 1:
        problems.append(Problem(path, sorted(given) or None,
                                "must have exactly one of: value, values, min/max"))
        return None
    if dist is not None and dist not in DISTRIBUTIONS:
        problems.append(Problem(f"{path}.distribution", dist, "must be one of " + ", ".join(DISTRIBUTIONS)))
        return None
    if forms == ["value"]:
        if dist not in (None, "constant"):
            problems.append(Problem(f"{path}.distribution", dist, "must be constant (or absent) with value"))
            return None
        return _Constant(spec.value)
    if forms == ["values"]:
        if dist not in (None, "categorical"):
            problems.append(Problem(f"{path}.distribution", dist, "must be categorical (or absent) with values"))
            return None
        return _categorical(name, spec, problems)
    return _range(name, spec, problems)


def _categorical(name: str, spec: ParameterSpec, problems: list[Problem]) -> Dimension | None:
    path = f"parameters.{name}"
    values = spec.values or []
    if not values:
        problems.append(Problem(f"{path}.values", values, "must list at least one value"))
        return None
    encoded = not all(isinstance(v, _PRIMITIVE) for v in values) or len({type(v) for v in values}) > 1
    choices = [json.dumps(v) for v in values] if encoded else list(values)
    if len(set(map(json.dumps, values))) != len(values):
        problems.append(Problem(f"{path}.values", values, "must not repeat a value"))
        return None
    probs: tuple[float, ...] | None = None
    if spec.probabilities is not None:
        p = spec.probabilities
        if len(p) != len(values):
            problems.append(Problem(f"{path}.probabilities", p, f"must have one entry per value ({len(values)})"))
            return None
        if any(x < 0 for x in p) or not math.isclose(sum(p), 1.0, abs_tol=1e-6):
            problems.append(Problem(f"{path}.probabilities", p, "must be non-negative and sum to 1"))
            return None
        probs = tuple(p)
    if spec.q is not None or spec.min is not None:
        problems.append(Problem(path, spec.q if spec.q is not None else spec.min,
                                "values cannot be combined with min/max/q"))
        return None
    return Dimension(name, CategoricalDistribution(choices), encoded=encoded, probabilities=probs)


def _range(name: str, spec: ParameterSpec, problems: list[Problem]) -> Dimension | None:
    path = f"parameters.{name}"
    lo, hi = spec.min, spec.max
    if hi is None:
        problems.append(Problem(f"{path}.max", None, "is required with min"))
        return None
    assert lo is not None
    if spec.probabilities is not None:
        problems.append(Problem(f"{path}.probabilities", spec.probabilities, "applies to values only"))
        return None
    both_int = isinstance(lo, int) and isinstance(hi, int)
    dist = spec.distribution or ("int_uniform" if both_int else "uniform")
    if dist in ("constant", "categorical"):
        problems.append(Problem(f"{path}.distribution", dist, "needs value/values, not min/max"))
        return None
    if hi < lo or (hi == lo and dist != "int_uniform"):
        problems.append(Problem(f"{path}.max", hi, f"must be greater than min ({lo})"))
        return None
    quantised = dist in ("q_uniform", "q_log_uniform_values")
    if quantised:
        if spec.q is None or spec.q <= 0:
            problems.append(Problem(f"{path}.q", spec.q, f"must be a positive number for {dist}"))
            return None
    elif spec.q is not None:
        problems.append(Problem(f"{path}.q", spec.q, f"applies to q_uniform and q_log_uniform_values, not {dist}"))
        return None
    if dist == "int_uniform":
        if not both_int:
            problems.append(Problem(f"{path}.min", lo, "int_uniform needs integer min and max"))
            return None
        return Dimension(name, IntDistribution(int(lo), int(hi)))
    if dist == "uniform":
        return Dimension(name, FloatDistribution(float(lo), float(hi)))
    if dist == "q_uniform":
        q = spec.q
        assert q is not None
        if both_int and isinstance(q, int):
            top = lo + (hi - lo) // q * q
            return Dimension(name, IntDistribution(int(lo), int(top), step=int(q)))
        top = lo + math.floor((hi - lo) / q + 1e-9) * q
        return Dimension(name, FloatDistribution(float(lo), float(top), step=float(q)))
    if dist == "log_uniform":
        if hi > 700 or lo < -700:
            problems.append(Problem(f"{path}.max", hi, "log_uniform takes natural-log exponents; "
                                    "did you mean log_uniform_values?"))
            return None
        return Dimension(name, FloatDistribution(math.exp(lo), math.exp(hi), log=True))
    if lo <= 0:
        problems.append(Problem(f"{path}.min", lo, f"must be > 0 for {dist}"))
        return None
    if dist == "log_uniform_values":
        return Dimension(name, FloatDistribution(float(lo), float(hi), log=True))
    # q_log_uniform_values
    return Dimension(name, FloatDistribution(float(lo), float(hi), log=True), q=float(spec.q or 1))
