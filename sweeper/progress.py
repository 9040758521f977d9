"""Live progress of a sweep in the terminal (rich), and the closing table of best trials."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from optuna.trial import FrozenTrial, TrialState
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

if TYPE_CHECKING:
    import optuna

    from sweeper.execution import TrialEnd
    from sweeper.search import Ledger
    from sweeper.spec import Sweep

_STYLE = {TrialState.COMPLETE: "green", TrialState.PRUNED: "yellow", TrialState.FAIL: "red"}


@dataclass(frozen=True)
class SweepStart:
    """What the progress display starts from: the concurrency, and the study's counts and best
    trial ``(value, number)`` (a resumed study has some)."""

    concurrency: int
    counts: dict[TrialState, int]
    best: tuple[float, int] | None

    @classmethod
    def of(cls, ledger: Ledger, concurrency: int) -> SweepStart:
        """Read the study behind ``ledger``."""
        counts = {state: 0 for state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)}
        for trial in ledger.study.get_trials(deepcopy=False, states=tuple(counts)):
            counts[trial.state] += 1
        best = best_trials(ledger.study, 1)
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

    def start(self, ledger: Ledger, concurrency: int) -> None:
        """Begin the live display once Ray runs (``run_sweep``'s ``on_start``)."""
        self.begin(SweepStart.of(ledger, concurrency), running=lambda: len(ledger.trials))

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
        params = self.sweep.space.config(end.params) if end.params else {}
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
        running = self._running()
        elapsed = time.time() - self.started
        best = f"{self.best[0]:.4f} (trial {self.best[1]})" if self.best else "-"
        done = self.counts[TrialState.COMPLETE] + self.counts[TrialState.PRUNED]
        return Text.assemble(
            (f"{done}/{self.sweep.budget} finished", "bold"),
            f"  complete {self.counts[TrialState.COMPLETE]}  running {running}  ",
            (f"pruned {self.counts[TrialState.PRUNED]}", "yellow"), "  ",
            (f"failed {self.counts[TrialState.FAIL]}", "red"),
            f"  best {self.sweep.spec.metric.name} {best}  elapsed {elapsed:.0f}s",
        )


def best_trials(study: optuna.Study, k: int = 5) -> list[FrozenTrial]:
    """The ``k`` best COMPLETE trials, best first; PRUNED and FAIL trials are never "best"."""
    from sweeper.results import ranked_trials

    return ranked_trials(study)[:k]


def summary(study: optuna.Study, sweep: Sweep, wall_s: float | None, top: int = 5) -> Group:
    """State counts (and the run's wall time), and the best trials with their parameters."""
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
    table = Table(title=f"best trials by {sweep.spec.metric.name} ({sweep.spec.metric.goal})")
    for col in ("trial", sweep.spec.metric.name, "epochs", *names):
        table.add_column(col, justify="right" if col != "trial" else "left")
    for t in best:
        config = sweep.space.config(t.params)
        table.add_row(str(t.number), f"{t.value:.4f}", str(t.user_attrs.get("epochs_run", "")),
                      *[_fmt(config[n]) for n in names])
    first = best[0]
    return Group(head, table, Text(f"best trial: #{first.number} with {sweep.spec.metric.name} = {first.value:.4f}",
                                   style="bold green"))


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)
