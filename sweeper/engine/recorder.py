"""The recorder: a Ray Tune callback in the driver that follows each trial and decides how it ended.

It writes each epoch's metric as an Optuna intermediate value (``trial.report``), or in a
multi-objective study every objective's curve (:func:`sweeper.study.record.write_objective_curve`), keeps the
rest of each epoch (every metric, where the trial runs, its retries) in memory, and at the
trial's end decides its state and hands it, with those details, to
:meth:`sweeper.engine.searcher.StudySearcher.tell`:

- COMPLETE when the trial ran all its epochs (or its trainer's own early stopping ended it),
- PRUNED when ASHA stopped it earlier (Ray reports both as TERMINATED, so the scheduler's
  own STOP decisions are asked, see :class:`sweeper.engine.scheduler.RecordingASHA`),
- FAIL with the error's last line when the trainer raised or its worker was lost too often,
  or (kind ``driver``) when the sweep was interrupted before the trial's last epoch.

While a trial runs, only its newest checkpoint is kept (under PBT, all). Then it keeps the
checkpoints of the ``keep_checkpoints`` best COMPLETE trials only (under PBT and PB2 the others
go at the sweep's end, since a member may be copying one), and a
program trial's logs (``<artifacts>/<study>/programs/trial-N.*``) with them: a FAIL trial's logs
are kept (they say why), a PRUNED trial's and a COMPLETE one's that falls out of the best are
deleted once its process group has had time to go (:data:`LOG_PRUNE_DELAY_S`).

Who writes the study: the searcher asks each trial and tells its end (state, values, the
details gathered here); the recorder writes only what comes per epoch (intermediate values or
objective curves, and under PBT the member's state at each checkpoint), to the Optuna trial the
searcher asked (:meth:`~sweeper.engine.searcher.StudySearcher.trial_of`).
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from optuna.trial import TrialState
from ray import tune
from ray.tune.experiment import Trial

from sweeper.engine.events import TrialEnd
from sweeper.engine.population import PopulationScheduler
from sweeper.engine.scheduler import Scheduler
from sweeper.engine.searcher import StudySearcher
from sweeper.study import record
from sweeper.study.constraints import constraint_values, told_row
from sweeper.study.pareto import Vector, minimised, rank_order
from sweeper.trial.processes import KILL_GRACE_S
from sweeper.trial.trainable import ERROR_KEY
from trainers.base import EXTRA_METRICS, FOLD_METRIC_PREFIX

if TYPE_CHECKING:
    from sweeper.spec import Sweep

log = logging.getLogger(__name__)

# Seconds after a program trial's end before its logs may go: its process group gets
# KILL_GRACE_S to stop (sweeper.trial.processes) and its worker writes its output until then.
LOG_PRUNE_DELAY_S = KILL_GRACE_S + 2.0

# What the trainable (where the trial runs) and Ray Tune add to every result: never a trainer's metric.
_TUNE_KEYS = {"epoch", *record.WHERE, "training_iteration", "time_this_iter_s", "time_total_s", "timestamp", "pid",
              "done", "trial_id", "iterations_since_restore", "time_since_restore", "checkpoint_dir_name", "date",
              "hostname", "node_ip", "config", ERROR_KEY}


class StudyRecorder(tune.Callback):
    """Follows every trial's epochs and end, and tells the study through the searcher; driver only.

    Args:
        sweep: the validated spec (its metric, objectives, constraints, checkpoints to keep).
        searcher: the sweep's searcher: the Optuna trial of each Ray trial, and who tells its end.
        scheduler: the sweep's scheduler (asked whether it stopped a trial), ``None`` for FIFO.
        on_end: called in the driver with each trial's :class:`~sweeper.engine.events.TrialEnd`.
    """

    def __init__(self, sweep: Sweep, searcher: StudySearcher, scheduler: Scheduler | None,
                 on_end: Callable[[TrialEnd], None] | None = None):
        self.sweep = sweep
        self.searcher = searcher
        self.scheduler = scheduler
        self.on_end = on_end
        self._started: dict[str, float] = {}
        self._history: dict[str, list[dict[str, float]]] = {}
        self._where: dict[str, dict[str, str]] = {}
        self._retries: dict[str, int] = {}
        self._numbers: dict[str, int] = {}  # Ray trial id -> study trial number (a schedule's sources)
        self._reported: dict[str, set[int]] = {}  # epochs whose values the study has, per trial
        self._best: list[tuple[Vector, Path]] = []  # (minimised values, trial folder) of COMPLETE trials
        self._logs: dict[Path, Path] = {}  # trial folder -> its program's logs (their common stem)
        self._doomed_logs: list[tuple[float, Path]] = []  # (when, stem): logs to delete from then on
        self._doomed_checkpoints: list[Path] = []  # under PBT/PB2: trial folders to empty at the sweep's end

    def __getstate__(self) -> dict[str, Any]:
        return {}  # Ray pickles callbacks with its experiment state; the study stays here.

    def on_step_end(self, iteration: int, trials: list[Trial], **info: Any) -> None:
        self.searcher.renew_lease()
        if self._doomed_logs:
            self._delete_logs(time.monotonic())

    def on_experiment_end(self, trials: list[Trial], **info: Any) -> None:
        self._delete_logs(float("inf"))  # every trial has ended: no program writes any more
        for folder in self._doomed_checkpoints:  # no member copies from an ended trial any more
            _delete_checkpoints(folder)

    def on_trial_start(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        self._started.setdefault(trial.trial_id, time.time())

    def on_trial_recover(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        # Its worker died; Ray restarts it from the last checkpoint. The Optuna trial stays RUNNING.
        self._retries[trial.trial_id] = self._retries.get(trial.trial_id, 0) + 1
        log.warning("trial %s: worker lost, retrying from its last checkpoint (%s)", trial.trial_id,
                    _last_line(trial))

    def on_trial_result(self, iteration: int, trials: list[Trial], trial: Trial,
                        result: dict[str, Any], **info: Any) -> None:
        optuna_trial = self.searcher.trial_of(trial.trial_id)
        if optuna_trial is None or "epoch" not in result:
            return
        self._numbers[trial.trial_id] = optuna_trial.number
        sweep = self.sweep
        metric = sweep.spec.metric.name
        epoch = int(result["epoch"])
        # One write per epoch: the trial's worker waits for the driver at each report, so
        # every write here lengthens every trial. The rest of the epoch is kept in memory
        # and written with the trial's end.
        history = self._history.setdefault(trial.trial_id, [])
        # An epoch seen before (redone after a worker was lost or a PBT exploit, or a program's
        # last step coming again with its end) already has its intermediate value.
        reported = self._reported.setdefault(trial.trial_id, set())
        seen = epoch in reported
        reported.add(epoch)
        names = self._metric_names(result)
        row = {k: float(v) for k, v in result.items() if k in names and isinstance(v, (int, float))}
        while history and history[-1]["epoch"] >= epoch:  # epochs redone after a worker was lost
            history.pop()
        history.append({"epoch": epoch, **row})
        objectives = [m.name for m in sweep.objectives]
        if sweep.multi_objective:
            # No intermediate values in a multi-objective study (see sweeper.study.record): the curve
            # of every objective, rewritten whole, is the epoch's one write.
            if not seen and all(m in row for m in objectives):
                record.write_objective_curve(optuna_trial, {int(r["epoch"]): [r[m] for m in objectives]
                                                            for r in history if all(m in r for m in objectives)})
        elif metric in result and not seen:
            optuna_trial.report(float(result[metric]), step=epoch)
        if trial.trial_id not in self._where:
            self._where[trial.trial_id] = {key: str(result.get(key, "")) for key in record.WHERE}

    def _metric_names(self, result: dict[str, Any]) -> set[str]:
        declared = self.sweep.trainer.metrics
        if declared is not None:
            return {*declared, *EXTRA_METRICS, *(k for k in result if k.startswith(FOLD_METRIC_PREFIX))}
        return {k for k in result if k not in _TUNE_KEYS}

    def on_trial_complete(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        """Tell the trial's end: FAIL (trainer error), COMPLETE (all epochs, or the trainer's own early
        stopping), PRUNED (ASHA's stop)."""
        result = trial.last_result or {}
        history = self._history.get(trial.trial_id, [])
        epochs_run = int(history[-1]["epoch"]) if history else 0
        epochs = int(trial.config["sweeper"]["epochs"])
        if ERROR_KEY in result:
            self._tell(trial, TrialState.FAIL, epochs_run, reason=str(result[ERROR_KEY]))
        elif epochs_run >= epochs or result.get("early_stopped"):
            # The trainer's own early stopping (patience) ends a trial COMPLETE too.
            self._tell(trial, TrialState.COMPLETE, epochs_run)
        elif self.scheduler is not None and self.scheduler.stopped(trial.trial_id):
            self._tell(trial, TrialState.PRUNED, epochs_run, pruned=self.scheduler.infeasible(trial.trial_id))
        else:
            self._tell(trial, TrialState.FAIL, epochs_run, kind="driver",
                       reason=f"stopped after {epochs_run} of {epochs} epochs without a scheduler decision "
                              "(sweep interrupted)")

    def on_trial_error(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        # Only a worker that died more than max_failures times gets here: trainer errors are results.
        history = self._history.get(trial.trial_id, [])
        self._tell(trial, TrialState.FAIL, int(history[-1]["epoch"]) if history else 0,
                   reason=f"worker lost {self._retries.get(trial.trial_id, 0) + 1} times: {_last_line(trial)}")

    def _tell(self, trial: Trial, state: TrialState, epochs_run: int, reason: str | None = None,
              kind: record.FailKind = "trial", pruned: str | None = None) -> None:
        if self.searcher.trial_of(trial.trial_id) is None:
            return
        started = self._started.pop(trial.trial_id, None)
        self._reported.pop(trial.trial_id, None)
        details = record.TrialDetails(
            history=self._history.pop(trial.trial_id, []), epochs_run=epochs_run,
            where=self._where.pop(trial.trial_id, {}), wall_s=time.time() - started if started is not None else None,
            worker_retries=self._retries.pop(trial.trial_id, 0), fail_reason=reason, fail_kind=kind,
            pruned_reason=pruned, schedule=self._schedule(trial.trial_id))
        history = details.history
        optuna_trial, values = self.searcher.tell(trial.trial_id, state, details)
        bounds = self.sweep.bounds
        feasible = not bounds or all(v <= 0 for v in constraint_values(bounds, told_row(history, True)).values())
        # Only a feasible COMPLETE trial can be "best": an infeasible one keeps no checkpoint.
        self._prune_checkpoints(trial, state, values if state == TrialState.COMPLETE and feasible else None)
        if self.on_end is not None:
            self.on_end(TrialEnd(optuna_trial.number, state, epochs_run, int(trial.config["sweeper"]["epochs"]),
                                 values[0] if values else None, dict(optuna_trial.params), reason or pruned,
                                 tuple(values) if values else None))

    def on_checkpoint(self, iteration: int, trials: list[Trial], trial: Trial, checkpoint: Any, **info: Any) -> None:
        """Delete the trial's older checkpoints: a lost worker resumes from the newest one. Under
        PBT, where a trial may be copied from any past interval, keep them all, and keep in the
        study what resumes the trial from this checkpoint: its epoch, the checkpoint's folder, its
        values and its schedule so far (one write per interval).

        Ray's ``CheckpointConfig(num_to_keep=1)`` would delete them too, but it also makes Tune
        save its whole experiment state (every trial's JSON) at every checkpoint: at thousands of
        trials, a second of the driver's loop per epoch of each trial."""
        optuna_trial = self.searcher.trial_of(trial.trial_id)
        if not isinstance(self.scheduler, PopulationScheduler):
            newest = Path(checkpoint.path)
            for older in newest.parent.glob("checkpoint_*"):
                if older.name < newest.name:  # Ray numbers them checkpoint_000000, checkpoint_000001, ...
                    shutil.rmtree(older, ignore_errors=True)
            return
        if optuna_trial is None:
            return
        epoch = int((trial.last_result or {}).get("epoch", 0))
        record.write_population_state(optuna_trial, {
            "epoch": epoch, "checkpoint": str(checkpoint.path), "params": dict(trial.config["sweeper"]["params"]),
            "seed": int(trial.config["sweeper"]["seed"]), "schedule": self._schedule(trial.trial_id)})

    def _schedule(self, trial_id: str) -> list[dict[str, Any]] | None:
        """A population-based trial's effective schedule, its sources as study trial numbers (a
        step brought back by a resume has its number already)."""
        if not isinstance(self.scheduler, PopulationScheduler):
            return None
        steps = self.scheduler.schedule(trial_id)
        for step in steps:
            source = step["source"]
            if source is not None and isinstance(source["trial"], str):
                source["trial"] = self._numbers.get(source["trial"], -1)
            if isinstance(step.get("by"), str):
                step["by"] = self._numbers.get(step["by"], -1)
        return steps

    def _prune_checkpoints(self, trial: Trial, state: TrialState, values: list[float] | None) -> None:
        """Keep the checkpoints of the ``keep_checkpoints`` best COMPLETE trials (by
        :func:`sweeper.study.pareto.rank_order` with several objectives); delete the rest."""
        folder = Path(trial.path) if trial.path else None
        if folder is None:
            return
        program = trial.config["sweeper"].get("program")
        if program:
            self._logs[folder] = Path(program["logs"]) / str(program["run_id"])
        sweep = self.sweep
        keep = sweep.spec.keep_checkpoints
        doomed: list[Path] = []
        if state == TrialState.COMPLETE and values is not None and keep > 0:
            self._best.append((minimised(values, [m.goal for m in sweep.objectives]), folder))
            order = rank_order([point for point, _ in self._best])
            self._best = [self._best[i] for i in order]
            doomed = [f for _, f in self._best[keep:]]
            del self._best[keep:]
        else:
            doomed = [folder]
        for path in doomed:
            if isinstance(self.scheduler, PopulationScheduler):
                # A member may be copying this ended trial's checkpoint right now (an exploit decided
                # before the trial ended): deleting it then failed the copy ("does not exist on
                # storage anymore", seen in CI with PB2). Its checkpoints go at the sweep's end.
                self._doomed_checkpoints.append(path)
            else:
                _delete_checkpoints(path)
            stem = self._logs.pop(path, None)
            if stem is not None and state != TrialState.FAIL:  # a FAIL trial's logs say why: kept
                self._doomed_logs.append((time.monotonic() + LOG_PRUNE_DELAY_S, stem))

    def _delete_logs(self, now: float) -> None:
        """Delete the doomed program logs whose time has come (``trial-N.out``, ``.err``, their
        rotated ``.1``, ``.args.json``, ``.metrics.jsonl``, and a W&B function's ``trial-N/``)."""
        due = [stem for when, stem in self._doomed_logs if when <= now]
        self._doomed_logs = [(when, stem) for when, stem in self._doomed_logs if when > now]
        for stem in due:
            for path in stem.parent.glob(f"{stem.name}.*"):
                path.unlink(missing_ok=True)
            if stem.is_dir():
                shutil.rmtree(stem, ignore_errors=True)


def _delete_checkpoints(folder: Path) -> None:
    """Delete a trial folder's checkpoints (``checkpoint_*``), whatever is left of them."""
    for checkpoint in folder.glob("checkpoint_*"):
        shutil.rmtree(checkpoint, ignore_errors=True)


def _last_line(trial: Trial) -> str:
    """The last line of a failed trial's error: ``FloatingPointError: loss became NaN at epoch 3``.

    Read from the error Ray pickled in the driver's trial folder (its cause chain leads to
    the trainer's exception), else from the last line of Ray's error text file.
    """
    import cloudpickle

    with contextlib.suppress(Exception):  # an unreadable error file still fails the trial
        with open(trial.pickled_error_file or "", "rb") as f:
            exc: BaseException | None = cloudpickle.load(f)
        seen = 0
        while exc is not None and seen < 10:
            cause = getattr(exc, "cause", None) or exc.__cause__
            if cause is None:
                break
            exc, seen = cause, seen + 1
        if exc is not None and type(exc).__name__ not in ("RayTaskError", "StartTraceback"):
            message = str(exc).strip().splitlines()
            return f"{type(exc).__name__}: {message[-1] if message else ''}".rstrip(": ")
    text = ""
    with contextlib.suppress(Exception):
        text = Path(trial.error_file or "").read_text()
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[-1] if lines else "the trial's worker failed without an error message"
