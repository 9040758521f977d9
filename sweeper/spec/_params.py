"""The spec's parameters into a search space: one W&B parameter into an Optuna distribution
(every W&B form and distribution, W&B's meaning of each key), and :func:`build_space` for them all.

W&B's meanings (its ``sweeps`` library: ``config/schema.json`` for the keys and defaults,
``params.py`` for each distribution's inverse CDF):

- ``value``: a constant; ``values`` (``categorical``, or ``categorical_w_probabilities`` with
  ``probabilities``): one of the values;
- ``int_uniform``: integers in [min, max]; ``uniform``: floats in [min, max];
  ``q_uniform``: ``round(X / q) * q`` with X uniform in [min, max];
- ``log_uniform_values``: log-uniform in [min, max]; ``log_uniform``: ``exp(X)``, X uniform in
  [min, max] (natural-log exponents); ``q_log_uniform_values`` / ``q_log_uniform``: the same,
  rounded to a multiple of ``q``;
- ``inv_log_uniform``: ``exp(-X)``, X uniform in [min, max] (so log-uniform in [e^-max, e^-min]);
  ``inv_log_uniform_values``: 1/x log-uniform in [1/max, 1/min], which is x log-uniform in [min, max];
- ``normal`` (``mu`` 0, ``sigma`` 1), ``log_normal`` (``exp`` of that normal), ``beta`` (``a`` 1,
  ``b`` 1), and their ``q_`` forms rounded to a multiple of ``q``. ``q`` defaults to 1.

Uniform and log-uniform ones are Optuna's own ``IntDistribution``/``FloatDistribution``.
Optuna has no normal, log-normal or beta distribution: for these Optuna searches the quantile
``u`` in (0, 1) (:data:`U_LOW`, :data:`U_HIGH`) and the value is the distribution's inverse CDF
at ``u`` (SciPy's ``ppf``). Random search draws ``u`` uniformly, so the value follows W&B's
distribution exactly; TPE models ``u`` (a bounded space). Quantised values are rounded when the
trial's config is built: the Optuna param keeps the raw draw (or ``u``), the trial's ``config``
the value the trainer gets. List values (a filters list) are one categorical choice each,
stored in Optuna as their JSON text.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from sweeper.errors import Problem
from sweeper.spec._conditions import conditions_of
from sweeper.spec._schema import DISTRIBUTIONS, ParameterSpec
from sweeper.spec._space import Dimension, Quantile, SearchSpace

_PRIMITIVE = (bool, int, float, str, type(None))
# The searched quantile's range: the tails beyond are 1e-9 of the probability each.
U_LOW, U_HIGH = 1e-9, 1.0 - 1e-9

RANGE = ("int_uniform", "uniform", "q_uniform", "log_uniform", "log_uniform_values", "q_log_uniform",
         "q_log_uniform_values", "inv_log_uniform", "inv_log_uniform_values")
NORMAL_FAMILY = ("normal", "q_normal", "log_normal", "q_log_normal")
BETA_FAMILY = ("beta", "q_beta")
QUANTISED = ("q_uniform", "q_log_uniform", "q_log_uniform_values", "q_normal", "q_log_normal", "q_beta")


@dataclass(frozen=True)
class Constant:
    """A ``value:`` parameter."""

    value: Any


def translate(name: str, spec: ParameterSpec, problems: list[Problem]) -> Dimension | Constant | None:
    """The dimension (or constant) of parameter ``name``; appends what is wrong to ``problems``
    and returns ``None`` when it cannot be used."""
    path = f"parameters.{name}"
    given = spec.model_fields_set
    dist = spec.distribution
    problem = _key_problem(path, spec)
    if problem is not None:
        problems.append(problem)
        return None
    if dist in NORMAL_FAMILY or dist in BETA_FAMILY:
        return _quantile(name, spec, problems)
    if "max" in given and "min" not in given:
        problems.append(Problem(f"{path}.min", None, "is required with max"))
        return None
    forms = [k for k in ("value", "values", "min") if k in given]
    if len(forms) != 1:
        problems.append(Problem(path, sorted(given) or None, "must have exactly one of: value, values, min/max "
                                "(or a normal, log_normal or beta distribution, or nested parameters)"))
        return None
    if forms == ["value"]:
        if dist not in (None, "constant"):
            problems.append(Problem(f"{path}.distribution", dist, "must be constant (or absent) with value"))
            return None
        return Constant(spec.value)
    if forms == ["values"]:
        if dist not in (None, "categorical", "categorical_w_probabilities"):
            problems.append(Problem(f"{path}.distribution", dist, "must be categorical or categorical_w_probabilities "
                                    "(or absent) with values"))
            return None
        if dist == "categorical_w_probabilities" and spec.probabilities is None:
            problems.append(Problem(f"{path}.probabilities", None, "is required with categorical_w_probabilities"))
            return None
        return _categorical(name, spec, problems)
    return _range(name, spec, problems)


def _key_problem(path: str, spec: ParameterSpec) -> Problem | None:
    """The first key of the parameter at ``path`` that cannot be read: a number that is not
    finite, an unknown distribution, or a key of another distribution family."""
    given, dist = spec.model_fields_set, spec.distribution
    for key in ("min", "max", "q", "mu", "sigma", "a", "b", "value", "values", "probabilities"):
        if key in given and not _finite(getattr(spec, key)):
            return Problem(f"{path}.{key}", getattr(spec, key),
                           "must be a finite number (not NaN or infinity, at most 1.8e308 in size)"
                           if key not in ("value", "values", "probabilities")
                           else "must hold finite numbers only (not NaN or infinity)")
    if dist is not None and dist not in DISTRIBUTIONS:
        return Problem(f"{path}.distribution", dist, "must be one of " + ", ".join(DISTRIBUTIONS))
    for keys, family in ((("mu", "sigma"), NORMAL_FAMILY), (("a", "b"), BETA_FAMILY)):
        for key in keys:
            if key in given and dist not in family:
                return Problem(f"{path}.{key}", getattr(spec, key), f"applies to {', '.join(family)} only")
    if "q" in given and dist not in QUANTISED:
        return Problem(f"{path}.q", spec.q, f"applies to {', '.join(QUANTISED)} only, not {dist}")
    return None


def _finite(value: Any) -> bool:
    """Whether every number in ``value`` (a number, or lists and mappings of them) is finite."""
    if isinstance(value, (list, tuple)):
        return all(_finite(v) for v in value)
    if isinstance(value, dict):
        return all(_finite(v) for v in value.values())
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            return math.isfinite(float(value))
        except OverflowError:  # an integer beyond any float
            return False
    return True


def _quantised(name: str, spec: ParameterSpec, problems: list[Problem]) -> float | Literal[False] | None:
    """``q`` for a quantised distribution (W&B's default 1), ``None`` for another; ``False`` when invalid."""
    if spec.distribution not in QUANTISED:
        return None
    q = 1 if spec.q is None else spec.q
    if q <= 0:
        problems.append(Problem(f"parameters.{name}.q", spec.q, f"must be a positive number for {spec.distribution}"))
        return False
    return q


def _quantile(name: str, spec: ParameterSpec, problems: list[Problem]) -> Dimension | None:
    path = f"parameters.{name}"
    dist = spec.distribution
    stray = sorted(k for k in ("value", "values", "min", "max", "probabilities") if k in spec.model_fields_set)
    if stray:
        problems.append(Problem(f"{path}.{stray[0]}", getattr(spec, stray[0]),
                                f"does not apply to {dist}, which takes "
                                + ("mu and sigma" if dist in NORMAL_FAMILY else "a and b") + " (and q when quantised)"))
        return None
    q = _quantised(name, spec, problems)
    if q is False:
        return None
    if dist in NORMAL_FAMILY:
        first, second = 0.0 if spec.mu is None else spec.mu, 1.0 if spec.sigma is None else spec.sigma
        positive = {"sigma": second}
    else:
        first, second = 1.0 if spec.a is None else spec.a, 1.0 if spec.b is None else spec.b
        positive = {"a": first, "b": second}
    for key, number in positive.items():
        if number <= 0:
            problems.append(Problem(f"{path}.{key}", number, "must be greater than 0"))
            return None
    kind: Literal["normal", "log_normal", "beta"] = (
        "beta" if dist in BETA_FAMILY else "log_normal" if "log" in str(dist) else "normal")
    return Dimension(name, FloatDistribution(U_LOW, U_HIGH), q=q, quantile=Quantile(kind, float(first), float(second)))


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


def _bounds_problem(path: str, dist: str, lo: float, hi: float) -> Problem | None:
    """What is wrong with a range parameter's distribution or its ``min``/``max``, if anything."""
    if dist not in RANGE:
        return Problem(f"{path}.distribution", dist, "needs value/values, not min/max")
    if hi < lo or (hi == lo and dist != "int_uniform"):
        return Problem(f"{path}.max", hi, f"must be greater than min ({lo})")
    if not math.isfinite(float(hi) - float(lo)):
        return Problem(f"{path}.max", hi, f"is too far from min ({lo}): max - min must be a finite number")
    return None


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
    problem = _bounds_problem(path, dist, lo, hi)
    if problem is not None:
        problems.append(problem)
        return None
    q = _quantised(name, spec, problems)
    if q is False:
        return None
    if q is not None and not math.isfinite((hi - lo) / q):
        problems.append(Problem(f"{path}.q", q, f"is too small for the range {lo} to {hi}: it makes more steps "
                                "than a number can count"))
        return None
    if dist == "int_uniform":
        if not both_int:
            problems.append(Problem(f"{path}.min", lo, "int_uniform needs integer min and max"))
            return None
        return Dimension(name, IntDistribution(int(lo), int(hi)))
    if dist == "uniform":
        return Dimension(name, FloatDistribution(float(lo), float(hi)))
    if dist == "q_uniform":
        assert q is not None
        if both_int and isinstance(q, int):
            top = lo + (hi - lo) // q * q
            return Dimension(name, IntDistribution(int(lo), int(top), step=int(q)))
        top = lo + math.floor((hi - lo) / q + 1e-9) * q
        return Dimension(name, FloatDistribution(float(lo), float(top), step=float(q)))
    if dist in ("log_uniform", "q_log_uniform", "inv_log_uniform"):
        if hi > 700 or lo < -700:
            problems.append(Problem(f"{path}.max", hi, f"{dist} takes natural-log exponents; "
                                    f"did you mean {dist}_values?"))
            return None
        low, high = (math.exp(-hi), math.exp(-lo)) if dist == "inv_log_uniform" else (math.exp(lo), math.exp(hi))
        return Dimension(name, FloatDistribution(low, high, log=True), q=None if q is None else float(q))
    if lo <= 0:
        problems.append(Problem(f"{path}.min", lo, f"must be > 0 for {dist}"))
        return None
    # log_uniform_values, inv_log_uniform_values (1/x log-uniform is x log-uniform), q_log_uniform_values
    return Dimension(name, FloatDistribution(float(lo), float(hi), log=True), q=None if q is None else float(q))


def build_space(parameters: Mapping[str, ParameterSpec]) -> tuple[SearchSpace, list[Problem]]:
    """Translate the spec's ``parameters`` (nested ones at any depth) into a :class:`SearchSpace`.

    Returns:
        the space (with the valid dimensions only, when there are problems) and every
        problem found, each naming ``parameters.<name>.<key>`` (``parameters.optimizer.lr.min``
        for a nested one).
    """
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
    conditions = conditions_of(parameters, dims, constants, problems)
    return SearchSpace(tuple(dims), constants, paths, conditions), problems


def stored_space(parameters: Mapping[str, Any]) -> SearchSpace | None:
    """The search space of a stored spec's ``parameters`` (plain JSON, as the study keeps them);
    ``None`` when they do not build (a spec stored by another version)."""
    from pydantic import ValidationError

    try:
        space, problems = build_space({k: ParameterSpec.model_validate(v) for k, v in parameters.items()})
    except ValidationError:
        return None
    return None if problems else space
