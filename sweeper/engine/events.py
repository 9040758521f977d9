"""What the engine tells the views as a sweep runs: plain data, no display and no Ray.

The engine (:mod:`sweeper.engine.launch`, :mod:`sweeper.engine.recorder`) emits these and prints nothing; the
terminal (:mod:`sweeper.views.progress`), the notebook display (:mod:`sweeper.views.notebook`) and the Ray
Client stream (:mod:`sweeper.client`) each render them.

- :class:`Notice`: one line the user should know before trials start (a warm start's counts);
- :class:`TrialEnd`: how one trial ended (``run_sweep``'s ``on_end``);
- :class:`SweepEnded`: the sweep is over: its study, wall time and :class:`Ending`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from optuna.trial import TrialState

if TYPE_CHECKING:
    import optuna

    from sweeper.spec import Sweep


EndingKind = Literal["target", "exhausted", "failures", "interrupted"]


@dataclass(frozen=True)
class Ending:
    """Why a sweep ended before its budget (a sweep that ran its budget has none).

    Attributes:
        kind: ``target`` (a finished trial reached ``metric.target``: W&B's meaning, the sweep asks
            no new trials and ends successfully), ``exhausted`` (no new configuration was left: the
            sweep ends successfully with what it has), ``failures`` (more than ``max_failed_trials``
            failed) or ``interrupted`` (Ctrl-C; its running trials are FAIL "sweep interrupted").
        reason: one line that says which trial, how many, or what.
    """

    kind: EndingKind
    reason: str

    @property
    def early(self) -> bool:
        """The sweep stopped short of what it was asked (``failures``, ``interrupted``): the command fails."""
        return self.kind in ("failures", "interrupted")


@dataclass(frozen=True)
class Notice:
    """One line for the user before trials start (``warm start: 12 finished trial(s) ... added``)."""

    line: str


@dataclass
class TrialEnd:
    """How one trial ended, as the progress display shows it.

    Attributes:
        number: the Optuna trial number.
        state: COMPLETE, PRUNED or FAIL.
        epochs_run: epochs it trained; ``epochs``: epochs it was configured for.
        value: its value, the first objective's with several (``None`` for FAIL).
        params: Optuna's ``trial.params``.
        reason: why it failed, for FAIL; why it was pruned, for a PRUNED trial that broke a constraint.
        values: every objective's value, in the sweep's order (``None`` for FAIL).
    """

    number: int
    state: TrialState
    epochs_run: int
    epochs: int
    value: float | None
    params: dict[str, Any]
    reason: str | None = None
    values: tuple[float, ...] | None = None


@dataclass(frozen=True)
class SweepEnded:
    """The sweep is over: what its closing summary shows.

    Attributes:
        study: the study (read again by the views).
        sweep: the validated spec.
        wall_s: seconds from Ray's start to the sweep's end.
        ending: why it ended before its budget, ``None`` when it ran its budget.
    """

    study: optuna.Study
    sweep: Sweep
    wall_s: float
    ending: Ending | None


Event = Notice | TrialEnd | SweepEnded
