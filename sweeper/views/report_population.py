"""The report's figures of a population-based sweep (``scheduler: {type: pbt | pb2}``): the
population's lineage and each mutated parameter's schedule, read from the trials' schedules
(:func:`sweeper.study.record.schedule_of`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import plotly.graph_objects as go
from optuna.trial import FrozenTrial

from sweeper.study import record


def _steps(trials: Sequence[FrozenTrial]) -> dict[int, list[dict[str, Any]]]:
    return {t.number: steps for t in trials if (steps := record.schedule_of(t))}


def schedule_values(steps: Sequence[dict[str, Any]], name: str, epochs: int) -> list[float | None]:
    """Parameter ``name``'s value at each epoch ``1..epochs`` under a schedule whose later steps
    name only what they change (``None`` where it is unknown), shape ``(epochs,)``."""
    values: list[float | None] = []
    current: Any = None
    starts = {int(s["epoch"]): s["params"] for s in steps}
    for epoch in range(1, epochs + 1):
        if epoch in starts and name in starts[epoch]:
            current = starts[epoch][name]
        values.append(float(current) if isinstance(current, int | float) and not isinstance(current, bool) else None)
    return values


def population_figures(trials: Sequence[FrozenTrial]) -> dict[str, go.Figure]:
    """``Population lineage`` (each copy: an arrow from the copied trial at the checkpoint's epoch
    to the trial that continued from it) and ``Schedule of <parameter>`` for each parameter an
    explore step changed (its value per epoch, one line per trial); empty for a sweep without
    schedules."""
    schedules = _steps(trials)
    if not schedules:
        return {}
    lineage = go.Figure()
    # Each copy once, drawn at the trial that made it (a step inherited with a checkpoint keeps its `by`).
    made = {(s.get("by", n), s["epoch"], str(s["source"])): (s.get("by", n), s)
            for n, steps in schedules.items() for s in steps[1:]}
    copies = sorted(made.values(), key=lambda c: (c[1]["epoch"], c[0]))
    for number, step in copies:
        source = step["source"] or {}
        lineage.add_annotation(x=step["epoch"], y=number, ax=source.get("epoch", step["epoch"] - 1),
                               ay=source.get("trial", number), xref="x", yref="y", axref="x", ayref="y",
                               showarrow=True, arrowhead=2, opacity=0.7)
    last = {n: max((int(e) for s in steps for e, _ in s.get("curve") or []), default=1)
            for n, steps in schedules.items()}
    lineage.add_scatter(x=[1] * len(last), y=list(last), mode="markers", name="first epoch")
    lineage.add_scatter(x=[copy["epoch"] for _, copy in copies], y=[n for n, _ in copies], mode="markers",
                        name="continued from a copy", hovertext=[str(copy["params"]) for _, copy in copies])
    lineage.update_layout(title=f"Population lineage: {len(copies)} exploit(s); an arrow runs from the trial "
                          "copied, at its checkpoint's epoch, to the trial that went on from it",
                          xaxis_title="epoch", yaxis_title="trial", xaxis={"range": [0, max(last.values()) + 1]})
    out = {"Population lineage": lineage}
    mutated = sorted({name for _, step in copies for name in step["params"]})
    epochs = max(last.values())
    for name in mutated:
        figure = go.Figure()
        for number, steps in sorted(schedules.items()):
            figure.add_scatter(x=list(range(1, epochs + 1)), y=schedule_values(steps, name, epochs), mode="lines",
                               line={"shape": "hv"}, name=f"trial {number}")
        figure.update_layout(title=f"Schedule of {name}: the value each trial's weights were trained with, by epoch",
                             xaxis_title="epoch", yaxis_title=name)
        out[f"Schedule of {name}"] = figure
    return out
