"""The study report: plain data objects computed from the trials, then one HTML page.

Every figure's data is computed first as a plain object (and tested); rendering turns the
objects into Plotly figures. Parallel coordinates, fANOVA parameter importances (Hutter et
al. 2014, as ``optuna.importance.FanovaImportanceEvaluator``) and slice plots are Optuna's
own visualisations, as is the Pareto front of a multi-objective study
(``optuna.visualization.plot_pareto_front``), to which the PRUNED and FAIL trials are added
at their last epoch's values, coloured by state. The trials are read from the storage once,
in bulk, and the Optuna plots run on an in-memory copy; learning curves and the timeline are
one trace per state, not per trial, so a study of thousands of trials reports in seconds.
"""

from __future__ import annotations

import datetime as dt
import html
import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import optuna
import plotly.graph_objects as go
import plotly.io as pio
from optuna.trial import FrozenTrial, TrialState

from sweeper.study import record
from sweeper.study.constraints import is_feasible
from sweeper.study.results import ranked_trials
from sweeper.views.report_population import population_figures

IMPORTANCE_TRIALS = 1000
IMPORTANCE_TREES = 32
STATE_COLOURS = {"COMPLETE": "#2ca02c", "PRUNED": "#ff7f0e", "FAIL": "#d62728", "RUNNING": "#1f77b4",
                 "WAITING": "#7f7f7f", "WARM START": "#9467bd", "INFEASIBLE": "#8c564b"}


def state_of(t: FrozenTrial) -> str:
    """The state a trial is drawn and counted as: ``WARM START`` for a copy, ``INFEASIBLE`` for a
    finished trial that breaks the sweep's constraints (:mod:`sweeper.study.constraints`), else Optuna's."""
    if record.origin(t) == "warm start":
        return "WARM START"
    return "INFEASIBLE" if not is_feasible(t) else t.state.name


@dataclass(frozen=True)
class History:
    """Optimisation history: each COMPLETE trial's value and the best so far, in trial order."""

    numbers: list[int]
    values: list[float]
    best_so_far: list[float]


@dataclass(frozen=True)
class Curve:
    """One trial's learning curve: ``values[i]`` is the metric after ``epochs[i]``."""

    number: int
    state: str
    epochs: list[int]
    values: list[float]


@dataclass(frozen=True)
class Span:
    """When one trial ran, where, and how it ended (for the timeline)."""

    number: int
    worker: str
    start: dt.datetime
    end: dt.datetime
    state: str


@dataclass(frozen=True)
class Accounting:
    """Compute spent against a search without early stopping.

    Attributes:
        epochs_run: epochs all trials trained.
        epochs_without_stopping: epochs the same trials would have trained without ASHA
            (each its configured epochs; FAIL trials count what they ran).
        saved_fraction: ``1 - epochs_run / epochs_without_stopping``.
        wall_s: first trial start to last trial end, seconds.
        trial_s: seconds of all trials added up.
        workers: distinct worker processes that ran trials.
        busy_fraction: ``trial_s / (wall_s * workers)``: how busy the workers were.
    """

    epochs_run: int
    epochs_without_stopping: int
    saved_fraction: float
    wall_s: float
    trial_s: float
    workers: int
    busy_fraction: float


@dataclass(frozen=True)
class TopRow:
    """One line of the top-trials table (of the Pareto front's table, with several objectives)."""

    rank: int
    number: int
    values: tuple[float, ...]
    epochs_run: int
    params: dict[str, Any]


@dataclass(frozen=True)
class ObjectivePoint:
    """Where one trial lies in objective space: its values (a COMPLETE trial's, else its last
    recorded epoch's), its state and whether it is on the Pareto front."""

    number: int
    state: str
    values: tuple[float, ...]
    on_front: bool


@dataclass
class ReportData:
    """Everything the report shows, computed from one bulk read of the study."""

    study: str
    metric: str
    goal: str
    objectives: list[tuple[str, str]]
    counts: dict[str, int]
    history: History
    curves: list[Curve]
    timeline: list[Span]
    accounting: Accounting
    top: list[TopRow]
    points: list[ObjectivePoint] = field(default_factory=list)
    figures: dict[str, go.Figure] = field(default_factory=dict)

    @property
    def multi_objective(self) -> bool:
        """True for a study of two or more objectives."""
        return len(self.objectives) > 1


def history_of(trials: Sequence[FrozenTrial], maximize: bool) -> History:
    """The values of feasible COMPLETE trials in trial order and the running best (of the first
    objective, with several)."""
    done = sorted((t for t in trials if t.state == TrialState.COMPLETE and t.values
                   and record.ran_here(t) and is_feasible(t)), key=lambda t: t.number)
    values = [float(t.values[0]) for t in done]
    best: list[float] = []
    for v in values:
        best.append(v if not best else (max(best[-1], v) if maximize else min(best[-1], v)))
    return History([t.number for t in done], values, best)


def curves_of(trials: Sequence[FrozenTrial]) -> list[Curve]:
    """The intermediate values (per epoch) of every trial that reported any; in a multi-objective
    study, the first objective's curve (:func:`sweeper.study.record.objective_curve_of`)."""
    out = []
    for t in trials:
        curve = dict(t.intermediate_values) or {e: v[0] for e, v in record.objective_curve_of(t).items()}
        if curve:
            out.append(Curve(t.number, state_of(t), sorted(curve), [curve[e] for e in sorted(curve)]))
    return out


def points_of(trials: Sequence[FrozenTrial], front: set[int]) -> list[ObjectivePoint]:
    """Every trial with objective values (:func:`sweeper.study.record.objective_values`), marked when its
    number is in ``front`` (the Pareto front of the COMPLETE trials)."""
    return [ObjectivePoint(t.number, state_of(t), tuple(values), t.number in front) for t in trials
            if t.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
            and (values := record.objective_values(t)) is not None]


def timeline_of(trials: Sequence[FrozenTrial]) -> list[Span]:
    """When each finished trial ran and on which worker (``host:pid``; ``node`` when unknown)."""
    spans = []
    for t in trials:
        if t.datetime_start is None or t.datetime_complete is None or record.origin(t) == "duplicate draw":
            continue
        spans.append(Span(t.number, record.worker_of(t), t.datetime_start, t.datetime_complete, state_of(t)))
    return spans


def accounting_of(trials: Sequence[FrozenTrial], spans: Sequence[Span]) -> Accounting:
    """Epochs run against epochs without early stopping; wall time and worker busy fraction."""
    run = planned = 0
    for t in trials:
        if record.origin(t) == "warm start":
            continue  # trained in an earlier study
        epochs_run = record.epochs_run_of(t)
        configured = record.configured_epochs(t, epochs_run)
        run += epochs_run
        planned += configured if t.state in (TrialState.COMPLETE, TrialState.PRUNED) else epochs_run
    if spans:
        wall = (max(s.end for s in spans) - min(s.start for s in spans)).total_seconds()
        busy = sum((s.end - s.start).total_seconds() for s in spans)
        workers = len({s.worker for s in spans})
    else:
        wall = busy = 0.0
        workers = 0
    return Accounting(run, planned, 1 - run / planned if planned else 0.0, wall, busy, workers,
                      busy / (wall * workers) if wall > 0 and workers else 0.0)


def top_of(ranked: list[FrozenTrial], multi_objective: bool, k: int = 10) -> list[TopRow]:
    """The ``k`` best COMPLETE trials (all the Pareto front, with several objectives) with the
    parameters their trainer got; ``ranked`` is :func:`sweeper.study.results.ranked_trials`."""
    rows = []
    for rank, t in enumerate(ranked if multi_objective else ranked[:k], start=1):
        rows.append(TopRow(rank, t.number, tuple(float(v) for v in t.values), record.epochs_run_of(t, 0),
                           record.trained_params(t)))
    return rows


def compute(study: optuna.Study) -> ReportData:
    """Read the study once and compute every figure's data (Optuna's plots included)."""
    trials = study.get_trials(deepcopy=False)
    objectives = record.stored_objectives(study.user_attrs) or [
        (f"objective {i}" if len(study.directions) > 1 else "value", d.name.lower())
        for i, d in enumerate(study.directions)]
    metric, goal = objectives[0]
    maximize = goal == "maximize"
    spans = timeline_of(trials)
    ranked = ranked_trials(study, trials)  # the best first; with several objectives, the front
    multi = len(objectives) > 1
    data = ReportData(
        study=study.study_name,
        metric=metric,
        goal=goal,
        objectives=objectives,
        # A duplicate draw (a FAIL that never ran) and a warm-start copy are counted apart.
        counts=dict(Counter("DUPLICATE DRAW" if record.origin(t) == "duplicate draw" else f"WARM START ({t.state.name})"
                            if record.origin(t) == "warm start" else f"INFEASIBLE ({t.state.name})"
                            if not is_feasible(t) else t.state.name for t in trials)),
        history=history_of(trials, maximize),
        curves=curves_of(trials),
        timeline=spans,
        accounting=accounting_of(trials, spans),
        top=top_of(ranked, multi),
        points=points_of(trials, {t.number for t in ranked}) if multi else [],
    )
    data.figures = {**_optuna_figures(study, trials, objectives, data.points), **population_figures(trials)}
    return data


def _optuna_figures(study: optuna.Study, trials: list[FrozenTrial], objectives: list[tuple[str, str]],
                    points: list[ObjectivePoint]) -> dict[str, go.Figure]:
    """Optuna's Pareto front (several objectives), parallel coordinates, fANOVA importances and
    slices, on an in-memory copy; with several objectives the last three show the first."""
    import optuna.visualization as vis

    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    metric = objectives[0][0]
    memory = optuna.create_study(directions=study.directions)
    memory.add_trials(complete)
    figures: dict[str, go.Figure] = {}
    target = (lambda t: t.values[0]) if len(objectives) > 1 else None
    if len(objectives) in (2, 3) and complete:
        # Optuna's plot of the feasible COMPLETE trials; the infeasible are one INFEASIBLE trace of ours.
        feasible = memory
        if not all(is_feasible(t) for t in complete):
            feasible = optuna.create_study(directions=study.directions)
            feasible.add_trials([t for t in complete if is_feasible(t)])
        figures["Pareto front plot"] = _pareto_figure(vis.plot_pareto_front(
            feasible, target_names=[name for name, _ in objectives]), points, len(objectives))
    if len(complete) < 2 or not complete[0].params:
        return figures
    figures["Parallel coordinates"] = vis.plot_parallel_coordinate(memory, target=target, target_name=metric)
    figures["Slices"] = vis.plot_slice(memory, target=target, target_name=metric)
    varied = {n for n in complete[0].params if len({repr(t.params.get(n)) for t in complete}) > 1}
    if varied:
        # fANOVA's forest dominates the report's time on large studies: fit it on at most
        # IMPORTANCE_TRIALS COMPLETE trials (a seeded sample) with IMPORTANCE_TREES trees
        # (Optuna's default is 64); on a 5,000-trial study the importances agree to 3 decimals.
        sample = complete if len(complete) <= IMPORTANCE_TRIALS else random.Random(0).sample(complete,
                                                                                              IMPORTANCE_TRIALS)
        subset = optuna.create_study(directions=study.directions)
        subset.add_trials(sample)
        evaluator = optuna.importance.FanovaImportanceEvaluator(n_trees=IMPORTANCE_TREES, seed=0)
        figures["Parameter importances (fANOVA)"] = vis.plot_param_importances(
            subset, evaluator=evaluator, target=target, target_name=metric)
    return figures


def _pareto_figure(figure: go.Figure, points: list[ObjectivePoint], dims: int) -> go.Figure:
    """Optuna's Pareto-front plot of the COMPLETE trials, recoloured by state (Optuna colours by
    trial number: the front in the COMPLETE colour, the dominated lighter), plus the PRUNED and
    FAIL trials of ``points`` (:func:`points_of`) at their last epoch's values, one trace per state."""
    front = {p.values[:dims] for p in points if p.on_front}
    for trace in figure.data:  # Optuna's traces are unnamed: the front is the one whose points all lie on it
        on_front = all(tuple(xyz) in front for xyz in zip(*(trace[axis] for axis in "xyz"[:dims]), strict=True))
        trace.update(name="COMPLETE, on the front" if on_front else "COMPLETE, dominated", showlegend=True,
                     marker={"color": STATE_COLOURS["COMPLETE"] if on_front else "#98df8a", "showscale": False,
                             "size": 10 if on_front else 7})
    for state in ("PRUNED", "FAIL", "INFEASIBLE"):
        shown = [p for p in points if p.state == state]
        if not shown:
            continue
        axes = {"xyz"[i]: [p.values[i] for p in shown] for i in range(dims)}
        kwargs = {"mode": "markers", "name": f"{state} (last epoch)", "opacity": 0.6,
                  "hovertext": [f"trial {p.number}" for p in shown],
                  "marker": {"color": STATE_COLOURS[state], "symbol": "x"}}
        figure.add_trace(go.Scatter3d(**axes, **kwargs) if dims == 3 else go.Scatter(**axes, **kwargs))
    figure.update_layout(title="Pareto front (COMPLETE trials; PRUNED and FAIL at their last epoch)")
    return figure


def figures(data: ReportData) -> dict[str, go.Figure]:
    """All the report's figures, in page order."""
    out: dict[str, go.Figure] = {}
    h = data.history
    history = go.Figure()
    history.add_scatter(x=h.numbers, y=h.values, mode="markers", name=data.metric)
    history.add_scatter(x=h.numbers, y=h.best_so_far, mode="lines", name="best so far")
    history.update_layout(title="Optimisation history (COMPLETE trials)", xaxis_title="trial", yaxis_title=data.metric)
    out["Optimisation history"] = history

    # One trace per state (curves separated by gaps), not one per trial: thousands of traces
    # make both the figure and the page slow.
    curves = go.Figure()
    for state in sorted({c.state for c in data.curves}):
        xs: list[float | None] = []
        ys: list[float | None] = []
        texts: list[str] = []
        for c in data.curves:
            if c.state == state:
                xs += [*c.epochs, None]
                ys += [*c.values, None]
                texts += [f"trial {c.number}"] * len(c.epochs) + [""]
        curves.add_scatter(x=xs, y=ys, mode="lines+markers", name=state, hovertext=texts, opacity=0.7,
                           line={"color": STATE_COLOURS.get(state, "#999")}, connectgaps=False)
    curves.update_layout(title="Learning curves by how the trial ended", xaxis_title="epoch", yaxis_title=data.metric)
    out["Learning curves"] = curves

    timeline = go.Figure()
    for state in sorted({s.state for s in data.timeline}):
        spans = [s for s in data.timeline if s.state == state]
        timeline.add_bar(base=[s.start.isoformat() for s in spans],
                         x=[(s.end - s.start).total_seconds() * 1000 for s in spans], y=[s.worker for s in spans],
                         orientation="h", name=state, marker_color=STATE_COLOURS.get(state, "#999"),
                         hovertext=[f"trial {s.number}" for s in spans])
    timeline.update_layout(title="Trials per worker over time", xaxis={"type": "date"}, barmode="overlay")
    out["Timeline"] = timeline
    out.update(data.figures)
    return out


def render(data: ReportData) -> str:
    """The report as one self-contained HTML page (plotly.js inlined: it opens offline)."""
    a = data.accounting
    rows = "".join(
        f"<tr><td>{r.rank}</td><td>{r.number}</td>{''.join(f'<td>{v:.4g}</td>' for v in r.values)}"
        f"<td>{r.epochs_run}</td>"
        f"<td>{html.escape(', '.join(f'{k}={_shown(v)}' for k, v in r.params.items()))}</td></tr>" for r in data.top)
    metrics = "".join(f"<th>{html.escape(m)}</th>" for m, _ in data.objectives)
    shown = ", ".join(f"{html.escape(m)} ({g})" for m, g in data.objectives)
    top = (f"<h2>Pareto front</h2><p>{len(data.top)} COMPLETE trial(s) that no other COMPLETE trial beats in "
           "every objective; export one with <code>sweeper export STUDY --trial N</code>.</p><table id='front'>"
           if data.multi_objective else "<h2>Top trials</h2><table id='top'>")
    counts = ", ".join(f"{html.escape(k)}: {v}" for k, v in sorted(data.counts.items()))
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'>",
        f"<title>sweeper report: {html.escape(data.study)}</title>",
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:4px 8px}</style></head><body>",
        f"<h1>Study {html.escape(data.study)}</h1>",
        f"<p id='counts'>Trials by state: {counts}. {'Objectives' if data.multi_objective else 'Metric'}: "
        f"{shown}.</p>",
        "<h2>Compute</h2><table id='accounting'>",
        f"<tr><td>epochs run</td><td>{a.epochs_run}</td></tr>",
        f"<tr><td>epochs without early stopping</td><td>{a.epochs_without_stopping}</td></tr>",
        f"<tr><td>saved by early stopping</td><td>{a.saved_fraction:.1%}</td></tr>",
        f"<tr><td>wall time</td><td>{a.wall_s:.0f} s</td></tr>",
        f"<tr><td>workers</td><td>{a.workers}</td></tr>",
        f"<tr><td>busy fraction of the workers</td><td>{a.busy_fraction:.1%}</td></tr></table>",
        f"{top}<tr><th>{'#' if data.multi_objective else 'rank'}</th><th>trial</th>{metrics}<th>epochs</th>"
        f"<th>parameters</th></tr>{rows}</table>",
    ]
    for i, (title, fig) in enumerate(figures(data).items()):
        parts.append(f"<h2>{html.escape(title)}</h2>")
        parts.append(pio.to_html(fig, include_plotlyjs=(i == 0), full_html=False))
    parts.append("</body></html>")
    return "\n".join(parts)


def _shown(value: Any) -> str:
    """A parameter's value in a table: floats to 4 significant digits."""
    return f"{value:.4g}" if isinstance(value, float) else str(value)
