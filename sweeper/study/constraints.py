"""Outcome constraints (the spec's ``constraints:``): the most accurate model that fits.

A constraint bounds one metric a trial reports or sweeper measures (``param_count``,
``inference_ms``, ``train_s``, ``gpu_hours``) by ``max``, ``min`` or both. Each bound becomes one
Optuna constraint value (Optuna 5's ``Trial.set_constraint``): ``value - max`` or ``min - value``,
feasible when 0 or less. Optuna stores them as the trial's ``constraints:<key>`` system
attributes, where its samplers (TPE's c-TPE, Watanabe & Hutter 2023; GP; NSGA-II), its
``best_trial``/``best_trials``, its plots and optuna-dashboard all read them.

Two kinds of bound, told apart for early stopping:

- **final** once violated: ``param_count`` and ``inference_ms`` (measured once, after the first
  epoch, and never changed by training) under either bound, and ``train_s`` and ``gpu_hours``
  (which only grow) under ``max``. A trial that violates one is stopped at once and recorded
  PRUNED with the reason ``infeasible: ...``.
- **may recover**: any bound on a metric the trainer reports per epoch (``val_loss``, a
  metric of yours), and ``min`` on ``train_s``/``gpu_hours``. Such a trial trains on; at an ASHA
  rung it ranks below every feasible trial (its value is replaced by :data:`INFEASIBLE`, made
  worse by its violation), so ASHA judges feasible trials first.

Only Optuna and the standard library are imported: the readers use this module too.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from optuna.trial import FrozenTrial

# Measured once (after epoch 1) and fixed for the rest of training.
FIXED_METRICS = ("param_count", "inference_ms")
# Only grow as training goes on: a spent `max` cannot come back.
SPENT_METRICS = ("train_s", "gpu_hours")
# What an infeasible trial's value is judged as at an ASHA rung, in the direction of "worse"
# (then made worse still by its violation, so the least violating ranks first among them).
INFEASIBLE = 1e30


@dataclass(frozen=True)
class Bound:
    """One bound of one constraint: ``metric <= limit`` (``kind`` ``max``) or ``metric >= limit`` (``min``)."""

    metric: str
    kind: str  # "max" | "min"
    limit: float

    @property
    def key(self) -> str:
        """The Optuna constraint key (``param_count.max``), the suffix of ``constraints:<key>``."""
        return f"{self.metric}.{self.kind}"

    @property
    def final(self) -> bool:
        """True when a violation can never recover (see the module docstring)."""
        return self.metric in FIXED_METRICS or (self.metric in SPENT_METRICS and self.kind == "max")

    def violation(self, value: float) -> float:
        """Optuna's constraint value for ``value``: positive by how much it breaks the bound, else <= 0."""
        return value - self.limit if self.kind == "max" else self.limit - value

    def describe(self, value: float) -> str:
        """``param_count 3.21e+06 > max 2e+06``: the bound as broken by ``value``."""
        return f"{self.metric} {value:.4g} {'>' if self.kind == 'max' else '<'} {self.kind} {self.limit:.4g}"


def bounds_of(constraints: Iterable[Mapping[str, object]]) -> tuple[Bound, ...]:
    """The bounds of the spec's ``constraints`` entries (``{name, max}``, ``{name, min}`` or both),
    in their order, ``max`` before ``min``."""
    out = []
    for c in constraints:
        for kind in ("max", "min"):
            limit = c.get(kind)
            if limit is not None:
                out.append(Bound(str(c["name"]), kind, float(limit)))  # type: ignore[arg-type]
    return tuple(out)


def violations(bounds: Sequence[Bound], row: Mapping[str, float]) -> dict[str, float]:
    """Optuna's constraint values of ``row`` (one epoch's metrics) by key, for the bounds whose
    metric the row holds."""
    return {b.key: b.violation(float(row[b.metric])) for b in bounds
            if b.metric in row and not math.isnan(float(row[b.metric]))}


def told_row(history: Sequence[Mapping[str, float]], complete: bool) -> Mapping[str, float]:
    """The epoch whose values a trial's end is told with: its last, or for a COMPLETE trial whose
    trainer kept its best epoch's weights (``best_epoch``), that epoch (``{}`` without history)."""
    row = history[-1] if history else {}
    if complete and "best_epoch" in row:
        row = next((r for r in history if r["epoch"] == row["best_epoch"]), row)
    return row


def constraint_values(bounds: Sequence[Bound], row: Mapping[str, float]) -> dict[str, float]:
    """:func:`violations` of ``row`` for every bound: a bound whose metric the row lacks (a trainer or
    program that never reported it) counts as broken, by infinity, so a limit the sweep cannot
    check never passes as met."""
    return {**{b.key: math.inf for b in bounds}, **violations(bounds, row)}


def final_violation(bounds: Sequence[Bound], row: Mapping[str, float]) -> str | None:
    """``infeasible: <bound as broken>`` when ``row`` breaks a bound that cannot recover, else ``None``."""
    broken = [b.describe(float(row[b.metric])) for b in bounds
              if b.final and b.metric in row and b.violation(float(row[b.metric])) > 0]
    return "infeasible: " + "; ".join(broken) if broken else None


def judged(bounds: Sequence[Bound], row: Mapping[str, float], value: float, maximize: bool) -> float:
    """The value ASHA ranks ``row`` by: ``value`` when the row meets every bound it has a metric
    for, else :data:`INFEASIBLE` in the worse direction, less its summed violation."""
    excess = sum(v for v in violations(bounds, row).values() if v > 0)
    if excess <= 0:
        return value
    worst = INFEASIBLE * (1.0 + excess)
    return -worst if maximize else worst


def excess(trial: FrozenTrial) -> float:
    """How much ``trial`` breaks its constraints: the sum of its positive constraint values (0 when
    it meets them all or has none; Optuna's own measure in its samplers)."""
    return sum(v for v in trial.constraints.values() if v > 0)


def is_feasible(trial: FrozenTrial) -> bool:
    """True when every constraint value Optuna holds for ``trial`` is 0 or less (or it has none)."""
    return excess(trial) <= 0


def broken(trial: FrozenTrial) -> list[str]:
    """The constraints ``trial`` breaks, each as ``key +excess`` (``param_count.max +1.2e+06``), from
    the constraint values Optuna holds for it."""
    return [f"{key} {value:+.4g}" for key, value in trial.constraints.items() if value > 0]
