"""Live progress of a sweep in the terminal (rich), and the closing table of best trials.

Both fit an 80-column terminal: the progress line drops words before it would be cut, and the
best trials are a table when it fits, else one block per trial, values never truncated.
No Ray here: ``sweeper show`` prints the same closing table.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from optuna.trial import FrozenTrial, TrialState
from rich.console import Console, ConsoleOptions, Group, RenderResult
from rich.live import Live
from rich.measure import Measurement
from rich.padding import Padding
from rich.table import Table
from rich.text import Text

from sweeper import record

if TYPE_CHECKING:
    import optuna

    from sweeper.searcher import StudySearcher
    from sweeper.spec import Sweep

_STYLE = {TrialState.COMPLETE: "green", TrialState.PRUNED: "yellow", TrialState.FAIL: "red"}


@dataclass
class TrialEnd:
    """How one trial ended, as the progress display shows it.

    Attributes:
        number: the Optuna trial number.
        state: COMPLETE, PRUNED or FAIL.
        epochs_run: epochs it trained; ``epochs``: epochs it was configured for.
        value: its value (``None`` for FAIL).
        params: Optuna's ``trial.params``.
        reason: why it failed, for FAIL.
    """

    number: int
    state: TrialState
    epochs_run: int
    epochs: int
    value: float | None
    params: dict[str, Any]
    reason: str | None = None


@dataclass(frozen=True)
class SweepStart:
    """What the progress display starts from: the concurrency, and the study's counts and best
    trial ``(value, number)`` (a resumed study has some)."""

    concurrency: int
    counts: dict[TrialState, int]
    best: tuple[float, int] | None

    @classmethod
    def of(cls, study: optuna.Study, concurrency: int) -> SweepStart:
        """Read ``study``."""
        counts = {state: 0 for state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)}
        for trial in study.get_trials(deepcopy=False, states=tuple(counts)):
            counts[trial.state] += 1
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
        self.console.print(
            f"sweep [bold]{self.sweep.name}[/]: {self.sweep.spec.method} search, budget "
            f"{self.sweep.budget} finished trials, up to {self.sweep.max_epochs} epochs each, "
            f"{start.concurrency} at a time"
            + (f", ASHA grace {self.sweep.asha.grace_period} / reduction {self.sweep.asha.reduction_factor:g}"
               if self.sweep.asha else ", no early stopping")
        )
        self._live = Live(get_renderable=self._render, console=self.console, refresh_per_second=2, transient=True)
        self._live.start()

    def trial_ended(self, end: TrialEnd) -> None:
        """Count a trial's end and print its line (``run_sweep``'s ``on_end``)."""
        self.counts[end.state] = self.counts.get(end.state, 0) + 1
        maximize = self.sweep.spec.metric.goal == "maximize"
        if end.state == TrialState.COMPLETE and end.value is not None and (
            self.best is None or (end.value > self.best[0] if maximize else end.value < self.best[0])
        ):
            self.best = (end.value, end.number)
        params = self.sweep.space.values(end.params) if end.params else {}
        shown = " ".join(f"{k}={_fmt(v)}" for k, v in params.items() if k in end.params)
        value = f"{self.sweep.spec.metric.name} {end.value:.4f}" if end.value is not None else ""
        reason = f"  [red]{end.reason}[/]" if end.reason else ""
        self.console.print(
            f"trial {end.number:>3} [{_STYLE[end.state]}]{end.state.name:<8}[/] epoch {end.epochs_run}/{end.epochs}"
            f"  {value}  {shown}{reason}", highlight=False,
        )

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
        full = Text.assemble(
            (f"{done}/{self.sweep.budget} finished", "bold"), f"  complete {complete}  running {running}  ",
            (f"pruned {pruned}", "yellow"), "  ", (f"failed {failed}", "red"),
            f"  best {metric} {f'{self.best[0]:.4f} (trial {self.best[1]})' if self.best else '-'}"
            f"  elapsed {elapsed:.0f}s",
        )
        if full.cell_len <= width:
            return full
        return Text.assemble(
            (f"{done}/{self.sweep.budget} done", "bold"), f" run {running} ", (f"pruned {pruned}", "yellow"), " ",
            (f"fail {failed}", "red"), f" best {f'{self.best[0]:.4f} #{self.best[1]}' if self.best else '-'}",
            f" {elapsed:.0f}s",
        )


def best_trials(study: optuna.Study, k: int = 5) -> list[FrozenTrial]:
    """The ``k`` best COMPLETE trials, best first; PRUNED and FAIL trials are never "best"."""
    from sweeper.results import ranked_trials

    return ranked_trials(study)[:k]


def summary(study: optuna.Study, sweep: Sweep, wall_s: float | None, top: int = 5,
            reached: str | None = None) -> Group:
    """State counts (and the run's wall time), the best trials with their parameters, and, when
    ``reached`` says which trial reached ``metric.target``, that the sweep stopped there."""
    trials = study.get_trials(deepcopy=False)
    counts = {s: sum(t.state == s for t in trials) for s in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)}
    head = Text(
        f"study {study.study_name}: {counts[TrialState.COMPLETE]} complete, {counts[TrialState.PRUNED]} pruned, "
        f"{counts[TrialState.FAIL]} failed" + (f" in {wall_s:.0f}s" if wall_s is not None else "")
    )
    best = best_trials(study, top)
    if not best:
        return Group(head, Text("no trial completed", style="red"))
    names = [d.name for d in sweep.space.dimensions]
    rows = []
    for t in best:
        config = sweep.space.values(t.params)
        rows.append((t.number, float(t.value or 0.0), str(record.epochs_run_of(t, 0)),
                     [(n, _fmt(config[n])) for n in names]))
    first = best[0]
    if reached is not None:
        head = Text.assemble(head, "\n", (f"{reached}: the sweep stopped there (W&B's metric.target)", "bold"))
    return Group(head, BestTrials(sweep.spec.metric.name, sweep.spec.metric.goal, names, rows),
                 Text(f"best trial: #{first.number} with {sweep.spec.metric.name} = {first.value:.4f}",
                      style="bold green"))


@dataclass(frozen=True)
class BestTrials:
    """The best trials as a table when it fits the console's width, else one block per trial
    (its number, value and epochs, then its parameters as ``name=value``, wrapped between
    parameters), so that no value is ever cut.

    Attributes:
        metric, goal: the sweep's metric and ``maximize``/``minimize``.
        names: the searched parameters, in spec order.
        rows: per trial, ``(number, value, epochs run, [(parameter, shown value), ...])``.
    """

    metric: str
    goal: str
    names: list[str]
    rows: list[tuple[int, float, str, list[tuple[str, str]]]]

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        table = Table(title=f"best trials by {self.metric} ({self.goal})")
        for col in ("trial", self.metric, "epochs", *self.names):
            table.add_column(col, justify="right" if col != "trial" else "left", no_wrap=True)
        for number, value, epochs, params in self.rows:
            table.add_row(str(number), f"{value:.4f}", epochs, *[shown for _, shown in params])
        # Measured without the console's bound (a measurement is clamped to the width it is given).
        if Measurement.get(console, options.update_width(10**6), table).maximum <= options.max_width:
            yield table
            return
        yield Text(f"best trials by {self.metric} ({self.goal})", style="italic")
        yield from self._blocks()

    def _blocks(self) -> Iterator[Text | Padding]:
        for number, value, epochs, params in self.rows:
            yield Text.assemble((f"#{number}", "bold"), f"  {self.metric} {value:.4f}  epochs {epochs}")
            yield Padding(Text("  ".join(f"{name}={shown}" for name, shown in params), overflow="fold"), (0, 0, 0, 4))


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)
