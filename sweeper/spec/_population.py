"""Validating population-based training (``scheduler: {type: pbt | pb2}``): which parameters may
change during a run, in which forms, and what the rest of the spec must be for it."""

from __future__ import annotations

import math
from typing import Any

from sweeper.errors import Problem
from sweeper.spec._problems import did_you_mean
from sweeper.spec._schema import ParameterSpec, SweepSpec
from sweeper.spec._sweep import Population
from trainers.base import Trainer

# The distributions a mutated range may have: Ray Tune's uniform, loguniform and randint.
RANGE_DISTRIBUTIONS = ("uniform", "log_uniform_values", "int_uniform")


def population(spec: SweepSpec, trainer: Trainer | None, max_epochs: int,
               python_trainer: bool) -> tuple[Population | None, list[Problem]]:
    """The sweep's :class:`Population`, or ``None`` when its scheduler is not ``pbt``/``pb2``;
    with one problem per broken rule: the mutated parameters (named in ``parameters``, plain
    ones, ones the trainer can change in a resumed run, in a form the scheduler takes), the
    interval (below ``epochs``), and what PBT cannot do here (a program's trials, which cannot
    resume with other values; several metrics; constraints)."""
    scheduler = spec.scheduler
    if scheduler is None or scheduler.type not in ("pbt", "pb2"):
        return None, []
    kind = scheduler.type
    key = "hyperparam_mutations" if kind == "pbt" else "hyperparam_bounds"
    given = (scheduler.hyperparam_mutations if kind == "pbt" else scheduler.hyperparam_bounds) or {}
    other = "hyperparam_bounds" if kind == "pbt" else "hyperparam_mutations"
    problems: list[Problem] = []
    if getattr(scheduler, other):
        problems.append(Problem(f"scheduler.{other}", sorted(getattr(scheduler, other)),
                                f"is for {'pb2' if kind == 'pbt' else 'pbt'}; {kind} takes {key}"))
    if not given:
        problems.append(Problem(f"scheduler.{key}", None, f"is required for {kind}: the parameters that change "
                                "during a run, e.g. {lr: {min: 1e-4, max: 1e-1, distribution: log_uniform_values}}"))
    if not python_trainer:
        problems.append(Problem("scheduler.type", kind, "needs a Python trainer that resumes from its checkpoint; "
                                "a program (or W&B function) trial cannot continue another trial's run"))
    if spec.metrics:
        problems.append(Problem("scheduler.type", kind, "takes one metric; a sweep of several `metrics` "
                                "uses asha (multi-objective ASHA)"))
    if spec.constraints:
        problems.append(Problem("scheduler.type", kind, "does not take constraints yet; use asha"))
    if scheduler.perturbation_interval >= max_epochs:
        problems.append(Problem("scheduler.perturbation_interval", scheduler.perturbation_interval,
                                f"must be below epochs ({max_epochs}), or no trial is ever perturbed"))
    forms: dict[str, dict[str, Any]] = {}
    for name, form in given.items():
        where = f"scheduler.{key}.{name}"
        rule = _name_rule(name, spec, trainer)
        if rule is not None:
            problems.append(Problem(where, name, rule))
            continue
        form_problems = _form_problems(where, form, kind)
        problems += form_problems
        if not form_problems:
            forms[name] = form.model_dump(exclude_none=True, exclude={"when"})
    if problems:
        return None, problems
    return Population(kind, scheduler.perturbation_interval, scheduler.quantile_fraction,
                      scheduler.resample_probability, forms), []


def _name_rule(name: str, spec: SweepSpec, trainer: Trainer | None) -> str | None:
    """Why parameter ``name`` cannot mutate, or ``None`` when it can."""
    parameters = spec.parameters
    if name not in parameters:
        return "must be one of the spec's parameters" + did_you_mean(name, list(parameters))
    entry = parameters[name]
    if entry.parameters is not None or entry.when is not None:
        return "must be a plain parameter (not nested, not conditional with `when`)"
    if trainer is not None and trainer.mutable is not None and name not in trainer.mutable:
        return (f"cannot change during a run of trainer {trainer.name!r} (the model's shape or data depend on "
                f"it); it can change: {', '.join(sorted(trainer.mutable))}")
    return None


def _form_problems(where: str, form: ParameterSpec, kind: str) -> list[Problem]:
    """The problems of one mutation's form: ``values`` (a non-empty list; pbt only) or ``min``
    and ``max`` (finite, ``min < max``, with one of :data:`RANGE_DISTRIBUTIONS`)."""
    if form.values is not None:
        if kind == "pb2":
            return [Problem(f"{where}.values", form.values, "pb2 takes ranges only: {min, max}")]
        return [] if form.values else [Problem(f"{where}.values", form.values, "must list at least one value")]
    if form.min is None or form.max is None:
        return [Problem(where, form.model_dump(exclude_none=True), "must be {values: [...]} or {min, max}"
                        + ("" if kind == "pb2" else " with an optional distribution"))]
    if not all(math.isfinite(v) for v in (form.min, form.max)) or form.min >= form.max:
        return [Problem(where, [form.min, form.max], "must have finite min < max")]
    distribution = form.distribution or "uniform"
    if distribution not in RANGE_DISTRIBUTIONS or (kind == "pb2" and distribution != "uniform"):
        allowed = RANGE_DISTRIBUTIONS if kind == "pbt" else ("uniform",)
        return [Problem(f"{where}.distribution", distribution, "must be one of " + ", ".join(allowed))]
    if distribution == "log_uniform_values" and form.min <= 0:
        return [Problem(f"{where}.min", form.min, "must be > 0 for log_uniform_values")]
    return []
