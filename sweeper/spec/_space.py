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
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

if TYPE_CHECKING:
    import optuna

# The most points a grid sweep may have: a grid is queued point by point and fills the study.
GRID_POINTS_MAX = 1_000_000


@dataclass(frozen=True)
class Quantile:
    """A distribution that Optuna lacks, searched through its quantile (SciPy's inverse CDF).

    Attributes:
        kind: ``normal`` (``loc`` mu, ``scale`` sigma), ``log_normal`` (the exp of that normal:
            ``scipy.stats.lognorm(s=sigma, scale=exp(mu))``) or ``beta`` (``a``, ``b``).
        first, second: mu and sigma, or a and b.
    """

    kind: Literal["normal", "log_normal", "beta"]
    first: float
    second: float

    def ppf(self, u: float) -> float:
        """The value at quantile ``u`` (0 < u < 1)."""
        from scipy import stats

        if self.kind == "normal":
            return float(stats.norm.ppf(u, loc=self.first, scale=self.second))
        if self.kind == "log_normal":
            return float(stats.lognorm.ppf(u, s=self.second, scale=math.exp(self.first)))
        return float(stats.beta.ppf(u, a=self.first, b=self.second))


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
            distribution (a :class:`Quantile`) whose inverse CDF maps the
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

    def count(self) -> int | None:
        """How many values a discrete dimension takes (counted, not listed), ``None`` if continuous."""
        dist = self.distribution
        if isinstance(dist, CategoricalDistribution):
            return len(dist.choices)
        if isinstance(dist, IntDistribution) and not dist.log:
            return (dist.high - dist.low) // dist.step + 1
        if isinstance(dist, FloatDistribution) and dist.step is not None:
            return round((dist.high - dist.low) / dist.step) + 1
        return None

    def iter_values(self) -> Iterator[Any] | None:
        """Every value of a discrete dimension (Optuna's representation), one at a time; ``None`` if continuous."""
        dist = self.distribution
        if isinstance(dist, CategoricalDistribution):
            return iter(dist.choices)
        if isinstance(dist, IntDistribution) and not dist.log:
            return iter(range(dist.low, dist.high + 1, dist.step))
        if isinstance(dist, FloatDistribution) and dist.step is not None:
            low, step = dist.low, dist.step
            return (round(low + i * step, 12) for i in range(self.count() or 0))
        return None

    def grid_values(self) -> list[Any] | None:
        """Every value of a discrete dimension (Optuna's representation), ``None`` if continuous.
        Lists them all: check :meth:`count` first."""
        values = self.iter_values()
        return None if values is None else list(values)

    def takes(self, value: Any) -> bool:
        """Whether the trainer value ``value`` is one this (discrete) dimension gives, tested
        arithmetically for a range (nothing is listed); ``False`` for a continuous dimension."""
        dist = self.distribution
        if isinstance(dist, CategoricalDistribution):
            return any(self.decode(c) == value for c in dist.choices)
        n = self.count()
        if n is None or isinstance(value, str) or not isinstance(value, (int, float)):
            return False
        if not math.isfinite(value):
            return False
        assert isinstance(dist, (IntDistribution, FloatDistribution)) and dist.step is not None
        i = round((value - dist.low) / dist.step)
        if not 0 <= i < n:
            return False
        at = dist.low + i * dist.step if isinstance(dist, IntDistribution) else round(dist.low + i * dist.step, 12)
        return bool(at == value)

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
        parameters whose conditions hold in it. Lists them all: check :meth:`size` first (a
        grid sweep is refused above :data:`GRID_POINTS_MAX`)."""
        points = self.iter_grid()
        return None if points is None else list(points)

    def iter_grid(self) -> Iterator[dict[str, Any]] | None:
        """The points of :meth:`grid`, one at a time (nothing listed ahead), in the same order;
        ``None`` if a dimension is continuous."""
        if self.size() is None:
            return None
        if not self.conditional:
            names = [d.name for d in self.dimensions]
            axes = [d.grid_values() or [] for d in self.dimensions]  # each axis is at most the grid's size
            return (dict(zip(names, combo, strict=True)) for combo in itertools.product(*axes))
        return self._walk_conditional()

    def _walk_conditional(self) -> Iterator[dict[str, Any]]:
        """The conditional grid depth first: the parameters in :attr:`_order`, each one's values in turn."""
        dims = {d.name: d for d in self.dimensions}
        order = self._order
        spec_order = [d.name for d in self.dimensions]

        def walk(i: int, params: dict[str, Any], values: dict[str, Any]) -> Iterator[dict[str, Any]]:
            if i == len(order):
                yield {n: params[n] for n in spec_order if n in params}
                return
            name = order[i]
            if not self._holds(name, values):
                yield from walk(i + 1, params, values)
            elif name in self.constants:
                yield from walk(i + 1, params, {**values, name: self.constants[name]})
            else:
                for raw in dims[name].iter_values() or ():
                    yield from walk(i + 1, {**params, name: raw}, {**values, name: dims[name].decode(raw)})

        return walk(0, {}, {})

    def size(self) -> int | None:
        """Number of distinct configurations, ``None`` when a dimension is continuous. Counted, not
        listed: a product of counts, and with conditions a count per combination of the values
        that conditions name (each parameter's values grouped by which conditions they satisfy)."""
        counts = {d.name: d.count() for d in self.dimensions}
        if any(c is None for c in counts.values()):
            return None
        if not self.conditional:
            return math.prod(c or 0 for c in counts.values())
        return self._count_conditional({n: c or 0 for n, c in counts.items()})

    def _count_conditional(self, counts: Mapping[str, int]) -> int:
        # Which conditions name each parameter: its values matter only by which of them they satisfy.
        named: dict[str, list[tuple[str, tuple[Any, ...]]]] = {}
        for name, conds in self.conditions.items():
            for other, allowed in conds.items():
                named.setdefault(other, []).append((name, allowed))
        dims = {d.name: d for d in self.dimensions}

        def signature(other: str, value: Any) -> tuple[bool, ...]:
            return tuple(value in allowed for _, allowed in named[other])

        def classes(name: str) -> dict[tuple[bool, ...] | None, int]:
            """The dimension's values grouped by signature: those a condition names, and the rest."""
            d = dims[name]
            if isinstance(d.distribution, CategoricalDistribution):
                raws: list[Any] = list(d.distribution.choices)
            else:  # a range: only the values the conditions name are looked at
                mentioned = {v for _, allowed in named[name] for v in allowed if d.takes(v)}
                raws = list(mentioned)
            found: dict[tuple[bool, ...] | None, int] = {}
            for raw in raws:
                sig = signature(name, d.decode(raw) if isinstance(d.distribution, CategoricalDistribution) else raw)
                found[sig] = found.get(sig, 0) + 1
            rest = counts[name] - len(raws)
            if rest:
                none = tuple(False for _ in named[name])
                found[none] = found.get(none, 0) + rest
            return found

        # A state: the signature of each named parameter decided so far; its weight: the points that share it.
        states: dict[tuple[tuple[str, tuple[bool, ...]], ...], int] = {(): 1}
        for name in self._order:
            grown: dict[tuple[tuple[str, tuple[bool, ...]], ...], int] = {}
            for state, weight in states.items():
                sigs = dict(state)
                holds = all(other in sigs and sigs[other][[n for n, _ in named[other]].index(name)]
                            for other in self.conditions.get(name, {}))
                if not holds:
                    options: dict[tuple[bool, ...] | None, int] = {None: 1}
                elif name in self.constants:
                    options = {signature(name, self.constants[name]) if name in named else None: 1}
                elif name in named:
                    options = classes(name)
                else:
                    options = {None: counts[name]}
                for sig, times in options.items():
                    key = state if sig is None else tuple(sorted({**sigs, name: sig}.items()))
                    grown[key] = grown.get(key, 0) + weight * times
            states = grown
        return sum(states.values())
