"""Live progress of a sweep in the terminal (rich), and the closing table of best trials (or,
with several objectives, of the Pareto front).

Both fit an 80-column terminal: the progress line drops words before it would be cut, and the
best trials are a table when it fits, else one block per trial, values never truncated.
No Ray here: ``sweeper show`` prints the same closing table.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from optuna.trial import FrozenTrial, TrialState
from rich.console import Console, ConsoleOptions, Group, RenderResult
from rich.live import Live
from rich.measure import Measurement
from rich.padding import Padding
from rich.table import Table
from rich.text import Text

from sweeper.engine.events import Notice, SweepEnded, TrialEnd
from sweeper.study import record
from sweeper.study.pareto import dominates, minimised

if TYPE_CHECKING:
    import optuna

    from sweeper.engine.events import Ending
    from sweeper.engine.searcher import StudySearcher
    from sweeper.spec import Sweep

_STYLE = {TrialState.COMPLETE: "green", TrialState.PRUNED: "yellow", TrialState.FAIL: "red"}


@dataclass(frozen=True)
class SweepStart:
    """What the progress display starts from: the concurrency, and the study's counts, best
    trial ``(value, number)`` and, in a multi-objective study, its Pareto front's minimised
    values (a resumed study has some)."""

    concurrency: int
    counts: dict[TrialState, int]
    best: tuple[float, int] | None
    front: tuple[tuple[float, ...], ...] = ()

    @classmethod
    def of(cls, study: optuna.Study, concurrency: int) -> SweepStart:
        """Read ``study``."""
        counts = record.counts(study.get_trials(deepcopy=False, states=record.FINISHED))
        if len(study.directions) > 1:
            goals = [d.name.lower() for d in study.directions]
            return cls(concurrency, counts, None,
                       tuple(minimised(t.values, goals) for t in best_trials(study, None)))
        best = best_trials(study, 1)
        return cls(concurrency, counts, (best[0].value, best[0].number) if best and best[0].value is not None
                   else None)


class SweepProgress:
    """Counts (finished / running / pruned / failed), best so far and elapsed time, live.

    One line is printed as each trial ends, so a log (CI, ``nohup``) keeps the story too.
    """

    def __init__(self, sweep: Sweep, console: Console | None = None):
        self.sweep = sweep
        self.console = console or Console()
        self.counts = {TrialState.COMPLETE: 0, TrialState.PRUNED: 0, TrialState.FAIL: 0}
        self.best: tuple[float, int] | None = None
        self.front: list[tuple[float, ...]] = []  # minimised values of the Pareto front (several objectives)
        self.started = time.time()
        self.concurrency = 0
        self._running: Callable[[], int] = lambda: 0
        self._live: Live | None = None

    def start(self, searcher: StudySearcher, concurrency: int) -> None:
        """Begin the live display once Ray runs (``run_sweep``'s ``on_start``)."""
        self.begin(SweepStart.of(searcher.study, concurrency), running=lambda: len(searcher.running))

    def begin(self, start: SweepStart, running: Callable[[], int]) -> None:
        """Begin the live display from what the study holds; ``running`` counts the running trials."""
        self.concurrency, self._running = start.concurrency, running
        self.started = time.time()
        self.counts.update(start.counts)  # a resumed study starts from what it holds already
        self.best = start.best
        self.front = list(start.front)
        self.console.print(
            f"sweep [bold]{self.sweep.name}[/]: {self.sweep.spec.method} search, budget "
            f"{self.sweep.budget} finished trials, up to {self.sweep.max_epochs} epochs each, "
            f"{start.concurrency} at a time"
            + (f", {self.sweep.spec.resources_per_trial.gpu:g} GPU each" if self.sweep.spec.resources_per_trial.gpu
               else " on the CPU")
            + (f", {'MO-' if self.sweep.multi_objective else ''}ASHA grace {self.sweep.asha.grace_period}"
               f" / reduction {self.sweep.asha.reduction_factor:g}"
               if self.sweep.asha else f", {self.sweep.scheduler_line}")
        )
        self._live = Live(get_renderable=self._render, console=self.console, refresh_per_second=2, transient=True)
        self._live.start()

    def trial_ended(self, end: TrialEnd) -> None:
        """Count a trial's end and print its line (``run_sweep``'s ``on_end``)."""
        self.counts[end.state] = self.counts.get(end.state, 0) + 1
        maximize = self.sweep.spec.metric.goal == "maximize"
        objectives = self.sweep.objectives
        if self.sweep.multi_objective:
            if end.state == TrialState.COMPLETE and end.values is not None:
                self._add_to_front(minimised(end.values, [m.goal for m in objectives]))
        elif end.state == TrialState.COMPLETE and end.value is not None and (
            self.best is None or (end.value > self.best[0] if maximize else end.value < self.best[0])
        ):
            self.best = (end.value, end.number)
        params = self.sweep.space.values(end.params) if end.params else {}
        shown = " ".join(f"{k}={_fmt(v)}" for k, v in params.items() if k in end.params)
        values = end.values or ((end.value,) if end.value is not None else ())
        value = "  ".join(f"{m.name} {_metric(v)}" for m, v in zip(objectives, values, strict=False))
        reason = f"  [red]{end.reason}[/]" if end.reason else ""
        self.console.print(
            f"trial {end.number:>3} [{_STYLE[end.state]}]{end.state.name:<8}[/] epoch {end.epochs_run}/{end.epochs}"
            f"  {value}  {shown}{reason}", highlight=False,
        )

    def _add_to_front(self, point: tuple[float, ...]) -> None:
        """Add a COMPLETE trial's minimised values to the front, if nothing there dominates it,
        and drop what it dominates."""
        if not any(dominates(q, point) for q in self.front):
            self.front = [q for q in self.front if not dominates(point, q)] + [point]

    def stop(self) -> None:
        """End the live display."""
        if self._live is not None:
            self._live.stop()
            self._live = None

    def _render(self) -> Text:
        return self.line(self.console.width)

    def line(self, width: int) -> Text:
        """The live line, in ``width`` columns: the full words when they fit, else the short ones."""
        running = self._running()
        elapsed = time.time() - self.started
        done = self.counts[TrialState.COMPLETE] + self.counts[TrialState.PRUNED]
        complete, pruned, failed = (self.counts[s] for s in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL))
        metric = self.sweep.spec.metric.name
        best = (f"  Pareto front {len(self.front)} trials" if self.sweep.multi_objective else
                f"  best {metric} {f'{self.best[0]:.4f} (trial {self.best[1]})' if self.best else '-'}")
        full = Text.assemble(
            (f"{done}/{self.sweep.budget} finished", "bold"), f"  complete {complete}  running {running}  ",
            (f"pruned {pruned}", "yellow"), "  ", (f"failed {failed}", "red"), best, f"  elapsed {elapsed:.0f}s",
        )
        if full.cell_len <= width:
            return full
        return Text.assemble(
            (f"{done}/{self.sweep.budget} done", "bold"), f" run {running} ", (f"pruned {pruned}", "yellow"), " ",
            (f"fail {failed}", "red"),
            f" front {len(self.front)}" if self.sweep.multi_objective else
            f" best {f'{self.best[0]:.4f} #{self.best[1]}' if self.best else '-'}",
            f" {elapsed:.0f}s",
        )


def best_trials(study: optuna.Study, k: int | None = 5) -> list[FrozenTrial]:
    """The ``k`` best COMPLETE trials (all with ``None``), best first; in a multi-objective study,
    the Pareto front (:func:`sweeper.study.results.ranked_trials`). PRUNED and FAIL trials are never "best"."""
    from sweeper.study.results import ranked_trials

    return ranked_trials(study)[:k]


def summary(study: optuna.Study, sweep: Sweep, wall_s: float | None, top: int = 5,
            ending: Ending | None = None) -> Group:
    """State counts (and the run's wall time), the best trials (with several objectives: the
    Pareto front, up to ``2 * top`` of it) with their parameters, the duplicate draws re-sampled,
    and how the sweep ended when it ended before its budget (``ending``: the trial that reached
    ``metric.target``, or that no new configuration was left)."""
    trials = study.get_trials(deepcopy=False)
    counts = record.counts(trials)
    duplicates = record.duplicate_draws_of(study.user_attrs)
    warm = sum(record.origin(t) == "warm start" for t in trials)
    head = Text(
        f"study {study.study_name}: {counts[TrialState.COMPLETE]} complete, {counts[TrialState.PRUNED]} pruned, "
        f"{counts[TrialState.FAIL]} failed" + (f" in {wall_s:.0f}s" if wall_s is not None else "")
        + (f"; {duplicates} duplicate draw(s) re-sampled, none run" if duplicates else "")
        + (f"; {warm} warm-start trial(s) from an earlier study, not counted" if warm else "")
    )
    if ending is not None and ending.kind == "exhausted":
        head = Text.assemble(head, "\n", (f"search space exhausted: {ending.reason}; the sweep ends with what it has",
                                           "bold"))
    if sweep.bounds:
        from sweeper.study.results import infeasible_trials

        head = Text.assemble(head, f"; {len(infeasible_trials(trials))} infeasible (constraints: "
                             + ", ".join(f"{b.metric} {'<=' if b.kind == 'max' else '>='} {b.limit:g}"
                                         for b in sweep.bounds) + ")")
    front = best_trials(study, None)
    best = front[:2 * top] if sweep.multi_objective else front[:top]
    if not best:
        from sweeper.study.constraints import broken
        from sweeper.study.results import least_violating

        nearest = least_violating(study) if sweep.bounds else None
        if nearest is not None:
            return Group(head, Text(f"no trial meets the constraints; the least violating is #{nearest.number} "
                                    f"({', '.join(broken(nearest))})", style="red"))
        return Group(head, Text("no trial completed", style="red"))
    names = [d.name for d in sweep.space.dimensions]
    rows = []
    for t in best:
        config = sweep.space.values(t.params)
        rows.append((t.number, tuple(float(v) for v in t.values), str(record.epochs_run_of(t, 0)),
                     [(n, _fmt(config[n]) if n in config else "-") for n in names]))
    objectives = [(m.name, m.goal) for m in sweep.objectives]
    first = best[0]
    if ending is not None and ending.kind == "target":
        head = Text.assemble(head, "\n", (f"{ending.reason}: the sweep stopped there (W&B's metric.target)", "bold"))
    if sweep.multi_objective:
        more = f" ({len(front) - len(best)} more: `sweeper export {study.study_name} --pareto`)" if len(front) > len(
            best) else ""
        closing = Text(f"Pareto front: {len(front)} trial(s), none better in every objective{more}; "
                       "export one with --trial N", style="bold green")
    else:
        closing = Text(f"best trial: #{first.number} with {sweep.spec.metric.name} = {first.values[0]:.4f}",
                       style="bold green")
    return Group(head, BestTrials(objectives, names, rows), closing)


@dataclass(frozen=True)
class BestTrials:
    """The best trials (or a Pareto front) as a table when it fits the console's width, else one
    block per trial (its number, values and epochs, then its parameters as ``name=value``, wrapped
    between parameters), so that no value is ever cut.

    Attributes:
        objectives: the sweep's ``(metric, goal)`` pairs, one for a single objective.
        names: the searched parameters, in spec order.
        rows: per trial, ``(number, values, epochs run, [(parameter, shown value), ...])``.
    """

    objectives: Sequence[tuple[str, str]]
    names: list[str]
    rows: list[tuple[int, tuple[float, ...], str, list[tuple[str, str]]]]

    @property
    def title(self) -> str:
        """``best trials by val_accuracy (maximize)``, or ``Pareto front: a (maximize), b (minimize)``."""
        shown = ", ".join(f"{m} ({g})" for m, g in self.objectives)
        return f"Pareto front: {shown}" if len(self.objectives) > 1 else f"best trials by {shown}"

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        table = Table(title=self.title)
        metrics = [m for m, _ in self.objectives]
        for col in ("trial", *metrics, "epochs", *self.names):
            table.add_column(col, justify="right" if col != "trial" else "left", no_wrap=True)
        for number, values, epochs, params in self.rows:
            table.add_row(str(number), *[_metric(v) for v in values], epochs, *[shown for _, shown in params])
        # Measured without the console's bound (a measurement is clamped to the width it is given).
        if Measurement.get(console, options.update_width(10**6), table).maximum <= options.max_width:
            yield table
            return
        yield Text(self.title, style="italic")
        yield from self._blocks()

    def _blocks(self) -> Iterator[Text | Padding]:
        for number, values, epochs, params in self.rows:
            shown = "  ".join(f"{m} {_metric(v)}" for (m, _), v in zip(self.objectives, values, strict=True))
            yield Text.assemble((f"#{number}", "bold"), f"  {shown}  epochs {epochs}")
            yield Padding(Text("  ".join(f"{name}={shown}" for name, shown in params), overflow="fold"), (0, 0, 0, 4))


def front_table(study: str, front: list[dict[str, Any]]) -> Table | Text:
    """The Pareto front (:func:`sweeper.study.results.pareto_front`) as a table: trial, each objective,
    epochs, parameters; a line when it is empty."""
    if not front:
        return Text(f"study {study!r} has no COMPLETE trial: its Pareto front is empty")
    table = Table(title=f"Pareto front of {study}: {len(front)} trial(s); export one with --trial N")
    metrics = list(front[0]["values"])
    params = list(dict.fromkeys(k for row in front for k in row["params"]))  # a conditional one may be absent
    for col in ("trial", *metrics, "epochs", *params):
        table.add_column(col, justify="left" if col == "trial" else "right")
    for row in front:
        table.add_row(str(row["trial"]), *(_metric(row["values"][m]) for m in metrics), str(row["epochs_run"]),
                      *(_fmt(row["params"][k]) if k in row["params"] else "-" for k in params))
    return table


def _metric(value: float) -> str:
    """A metric's value: 4 decimals (accuracies, losses), or 4 significant digits beyond that
    range (``param_count`` 1.234e+06, ``inference_ms`` 0.0123)."""
    return f"{value:.4f}" if 0.01 <= abs(value) < 1e4 or value == 0 else f"{value:.4g}"


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def rendered(event: Notice | SweepEnded) -> Group:
    """What the terminal shows for an event of :func:`sweeper.engine.launch.launch`: a notice's line, or
    the closing :func:`summary` of an ended sweep."""
    if isinstance(event, Notice):
        return Group(Text(event.line))
    return summary(event.study, event.sweep, event.wall_s, ending=event.ending)
