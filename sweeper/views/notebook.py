"""Live progress in Jupyter: one display that updates in place, not a scroll of lines.

In a terminal, :class:`sweeper.views.progress.SweepProgress` prints a line per trial under a live
status line (rich's ``Live``). In a notebook, :class:`NotebookProgress` runs the same object on a
recording console and shows what it wrote as one IPython display (``display_id``), updated as
trials end and once a second: the sweep's header, the live counts with the best so far, the
running trials with the epoch each has reached (read from the study), and the last
:data:`SHOWN_TRIALS` trial lines (how each ended, at which epoch: ASHA's rung decisions),
coloured as rich colours them. A saved notebook keeps the display's last state. No ipywidgets.
"""

from __future__ import annotations

import io
import threading
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.text import Text

from sweeper.views.progress import SweepProgress

if TYPE_CHECKING:
    from sweeper.engine.events import TrialEnd
    from sweeper.engine.searcher import StudySearcher
    from sweeper.spec import Sweep

SHOWN_TRIALS = 12
WIDTH = 120
RECORD_WIDTH = 400  # the lines as printed, unwrapped; the page wraps them
REFRESH_S = 1.0


class NotebookProgress:
    """:class:`sweeper.views.progress.SweepProgress` shown as one display that updates in place; it has
    the same ``start``, ``trial_ended`` and ``stop`` (``run_sweep``'s ``on_start``/``on_end``)."""

    def __init__(self, sweep: Sweep):
        # Not a terminal: the progress object's own live line (rich's Live) writes nothing here.
        self._record = Console(file=io.StringIO(), record=True, width=RECORD_WIDTH, force_terminal=False,
                               force_jupyter=False, color_system="truecolor", highlight=False)
        self.progress = SweepProgress(sweep, self._record)
        self._handle: Any = None
        self._study: Any = None
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, searcher: StudySearcher, concurrency: int) -> None:
        """Begin: the header and the counts, then a refresh each :data:`REFRESH_S` seconds."""
        from IPython.core.display import HTML
        from IPython.display import display

        self.progress.start(searcher, concurrency)
        self._study = searcher.study
        self._handle = display(HTML(self.html()), display_id=True)
        self._thread = threading.Thread(target=self._refresh, name="sweeper-progress", daemon=True)
        self._thread.start()

    def trial_ended(self, end: TrialEnd) -> None:
        """Count the trial's end and show it."""
        self.progress.trial_ended(end)
        self._update()

    def stop(self) -> None:
        """Stop refreshing and leave the last state shown."""
        self._stopped.set()
        self.progress.stop()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        self._update()

    def html(self) -> str:
        """What the display shows, as HTML: header, counts line, the last trial lines."""
        with self._lock:
            lines = self._record.export_text(clear=False, styles=True).splitlines()
        header, trials = lines[:1], [ln for ln in lines[1:] if ln.strip()]
        hidden = len(trials) - SHOWN_TRIALS
        shown = [Text.from_ansi(ln) for ln in header]
        shown.append(self.progress.line(WIDTH))
        running = self.running()
        if running:
            shown.append(Text("running: " + ", ".join(running), style="blue"))
        if hidden > 0:
            shown.append(Text(f"... {hidden} earlier trial(s)", style="dim"))
        shown += [Text.from_ansi(ln) for ln in trials[-SHOWN_TRIALS:]]
        page = Console(file=io.StringIO(), record=True, width=WIDTH, force_jupyter=False, highlight=False)
        for text in shown:
            page.print(text, soft_wrap=True)
        return page.export_html(inline_styles=True, code_format="<pre style=\"font-family:monospace;"
                                "line-height:1.3;margin:0\">{code}</pre>")

    def running(self) -> list[str]:
        """The study's RUNNING trials as ``#7 epoch 2/4 (val_accuracy 0.6125)``, by number; empty
        before the start, or when the study cannot be read this second."""
        from optuna.trial import TrialState

        if self._study is None:
            return []
        try:
            trials = self._study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        except Exception:  # a busy or dropped database: the display waits for the next second
            return []
        sweep, out = self.progress.sweep, []
        for t in sorted(trials, key=lambda t: t.number):
            epochs = sorted(t.intermediate_values)
            last = f" ({sweep.spec.metric.name} {t.intermediate_values[epochs[-1]]:.4f})" if epochs else ""
            out.append(f"#{t.number} epoch {epochs[-1] if epochs else 0}/{sweep.max_epochs}{last}")
        return out

    def _update(self) -> None:
        if self._handle is not None:
            from IPython.core.display import HTML

            self._handle.update(HTML(self.html()))

    def _refresh(self) -> None:
        while not self._stopped.wait(REFRESH_S):
            self._update()
