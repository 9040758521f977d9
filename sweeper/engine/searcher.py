"""What to try next and how each trial ended: a Ray Tune ``Searcher`` that asks and tells the study.

The driver is the only process that writes to the study. :class:`StudySearcher` asks Optuna
for each new trial's parameters (``suggest``, Optuna's ``ask``) and tells Optuna how each
ended (:meth:`StudySearcher.tell`, the shape of Ray's ``Searcher.on_trial_complete``, called
by :class:`sweeper.engine.recorder.StudyRecorder`, which adds what it saw of the trial). It keeps
the sweep's live state: the trials it asked and has not told, the failures, the stop reason.

No configuration runs twice (``random`` and ``bayes``): a draw whose configuration (the
trainer's values, after decoding and quantisation) equals that of a trial finished, running or
queued is recorded as a duplicate draw (a FAIL trial of kind ``duplicate``, never run; the
study counts them) and drawn again; after :data:`~sweeper.study.duplicates.DUPLICATES_IN_A_ROW` such draws in a finite
space, the unseen configuration nearest the last draw (fewest parameters changed,
:func:`~sweeper.study.duplicates.nearest`) is queued instead. When every configuration of a finite space has finished or
runs, nothing is drawn: the searcher waits for the running trials (one may FAIL, freeing its
configuration), and once all have finished the sweep ends with what it has (an :class:`~sweeper.engine.events.Ending`
of kind ``exhausted``). A FAIL trial's configuration may run again.

Budget: it stops asking when the budget of finished trials (COMPLETE + PRUNED, every
driver's) is met or running (a failed trial frees its place, so the sweep ends with exactly
``budget`` finished trials), and, for grid search, when every grid point has finished or is
running; a point whose trial FAILed runs again. Several drivers of one study decide under
:func:`sweeper.study.coordination.study_lock`.
"""

from __future__ import annotations

import random
import time
from typing import TYPE_CHECKING, Any

import optuna
from optuna.trial import TrialState
from ray.tune.search import Searcher

from sweeper.engine.events import Ending, EndingKind
from sweeper.engine.population import resumed_member
from sweeper.study import record
from sweeper.study.constraints import constraint_values, is_feasible, told_row
from sweeper.study.coordination import LEASE_RENEW_S, Lease, renew_lease, study_lock, zombie_trials
from sweeper.study.duplicates import DUPLICATES_IN_A_ROW, MAX_DRAWS, config_key, finite_enumerated, nearest
from sweeper.study.index import TrialIndex

if TYPE_CHECKING:
    from sweeper.spec import Sweep

WAIT = "WAIT"


class StudySearcher(Searcher):
    """A Ray Tune searcher that asks the Optuna study for each trial's parameters and tells it their ends.

    Attributes:
        study: the Optuna study.
        sweep: the validated spec.
        storage: the study's storage (for the lock).
        lease: this driver's lease on the study.
        running: Ray trial id → the Optuna trial this driver asked for it (until it is told).
        failed: FAIL trials of this study that failed by themselves (not a lost driver).
        grid: grid points (Optuna's representation), for ``method: grid``.
        index: the study's trials as each ask needs them (:class:`~sweeper.study.index.TrialIndex`).
        ending: set once the sweep must end before its budget (:class:`~sweeper.engine.events.Ending`): no new
            trial is asked, and the running ones end.

    Args:
        study: the study to ask and tell (created or opened by :mod:`sweeper.study.studies`).
        sweep: the validated spec: metric and goal, budget, search space, seed.
        storage: the study's storage, for the study lock shared with other drivers.
        lease: this driver's lease (:func:`sweeper.study.coordination.take_lease`).
        grid: for ``method: grid``, the grid's points as Optuna values (``SearchSpace.grid()``).
    """

    # While waiting, Tune asks again at every step; the study is read at most this often.
    POLL_S = 1.0
    # Dead drivers' trials are looked for this often while the sweep runs.
    REAP_S = 30.0

    def __init__(self, study: optuna.Study, sweep: Sweep, storage: optuna.storages.RDBStorage, lease: Lease,
                 grid: list[dict[str, Any]] | None = None):
        mode = "max" if sweep.spec.metric.goal == "maximize" else "min"
        super().__init__(metric=sweep.spec.metric.name, mode=mode)
        self.study, self.sweep, self.storage, self.lease, self.grid = study, sweep, storage, lease, grid
        self.running: dict[str, optuna.Trial] = {}
        self.failed = 0
        self.ending: Ending | None = None
        self._renewed = 0.0
        self._waited_at = -1e9
        self._reaped_at = time.monotonic()
        self._ended_since_wait = True
        self._rng = random.Random(sweep.spec.seed)
        # What each ask reads of the study, kept current at a cost independent of its size.
        self.index = TrialIndex(storage, study, lambda params: config_key(sweep.space.values(params)))
        self._size = sweep.space.size() if grid is None else None  # once: counted, not listed

    def trial_of(self, trial_id: str) -> optuna.Trial | None:
        """The Optuna trial this driver asked for Ray trial ``trial_id``; ``None`` once it was told
        (or when another driver's)."""
        return self.running.get(trial_id)

    # --- the study's counts, leases and zombies

    def counts(self) -> tuple[int, int, set[int], set[int]]:
        """The study now: (finished, running) trials of every driver (COMPLETE + PRUNED, and
        RUNNING; warm-start copies left out), and the grid ids among them that finished and that
        run now. Reads only the trials that changed since the last call (:attr:`index`)."""
        self.index.refresh()
        running = self.index.running()
        running_points = {gid for t in running if (gid := record.grid_id_of(t)) is not None}
        return self.index.finished, len(running), set(self.index.done_points), running_points

    def renew_lease(self, force: bool = False) -> None:
        """Renew this driver's lease when it is older than ``LEASE_RENEW_S``."""
        now = time.monotonic()
        if force or now - self._renewed >= LEASE_RENEW_S:
            self.lease = renew_lease(self.study, self.lease)
            self._renewed = now

    def reap_zombies(self) -> list[int]:
        """Mark FAIL the RUNNING trials of drivers that are gone, and queue their parameters
        again (grid points are re-run by the grid itself; a trial whose driver died inside
        Optuna's ask, before its parameters were set, never ran and is not queued). Returns
        their numbers.

        Call it under :func:`sweeper.study.coordination.study_lock`: a trial is RUNNING a moment before
        its driver id is written, and that moment is inside the lock."""
        reaped = []
        for t in zombie_trials(self.study):
            if record.driver_of(t) == self.lease.driver_id:
                continue
            record.mark_driver_lost(self.storage, t._trial_id, "its driver stopped before the trial ended; the "
                                    "parameters run again")
            try:
                self.study.tell(t.number, state=TrialState.FAIL)
            except (ValueError, RuntimeError):
                continue  # another driver reaped it first
            if self.grid is None and t.params:  # one killed inside Optuna's ask has none: never ran
                record.queue_retry(self.study, t)
            reaped.append(t.number)
        return reaped

    def check_target(self, number: int | None = None, value: float | None = None) -> None:
        """Note when trial ``number``'s ``value`` reaches ``metric.target`` (>= when maximising,
        <= when minimising); without arguments, look for such a COMPLETE trial in the study
        (a resumed sweep whose target was reached asks no more trials)."""
        metric = self.sweep.spec.metric
        if metric.target is None or self.ending is not None:
            return
        maximize = metric.goal == "maximize"
        candidates = [(number, value)] if number is not None else [
            (t.number, t.values[0] if t.values else None)
            for t in self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            if record.ran_here(t) and is_feasible(t)]
        for n, v in candidates:
            if v is not None and (v >= metric.target if maximize else v <= metric.target):
                self.end("target", f"trial {n} reached metric.target: {metric.name} {v:.4f} "
                                   f"{'>=' if maximize else '<='} {metric.target:g}")
                return

    def end(self, kind: EndingKind, reason: str) -> None:
        """End the sweep before its budget (:attr:`ending`). The first ending stays, except that an
        early one (failures, an interrupt) replaces a successful one: it is what the user must see."""
        ending = Ending(kind, reason)
        if self.ending is None or (ending.early and not self.ending.early):
            self.ending = ending

    def count_failures(self) -> None:
        """Count the study's FAIL trials that failed by themselves (on resume)."""
        self.failed = sum(1 for t in self.study.get_trials(deepcopy=False, states=(TrialState.FAIL,))
                          if record.failed_by_itself(t))

    # --- ask

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:  # type: ignore[override]
        """Tune's request for a new trial: its config, ``None`` (not now) or ``FINISHED``.

        Renews the lease, looks for dead drivers' trials every ``REAP_S``, and decides and asks
        under the study lock, so drivers sharing the study never overrun the budget.
        """
        self.renew_lease()
        now = time.monotonic()
        if not self._ended_since_wait and now - self._waited_at < self.POLL_S:
            return None
        if self.ending is not None:
            return Searcher.FINISHED if not self.running else None
        with study_lock(self.storage, self.sweep.spec.storage, self.sweep.name):
            if now - self._reaped_at >= self.REAP_S:
                self._reaped_at = now
                self.reap_zombies()
                if self.storage.engine.name != "sqlite":  # a whole read now and then: see TrialIndex.reset
                    self.index.reset()
            decision, grid_id = self._decide()
            if decision == WAIT:
                return None
            if decision is not None:
                return decision
            if self.grid is not None:
                return self._ask(trial_id, grid_id)
            return self._ask_new(trial_id)

    def _decide(self) -> tuple[str | None, int | None]:
        """(``FINISHED`` | ``WAIT`` | ``None``, the grid point to run); under the study lock.

        ``None`` means: ask a trial now (for grid search, of the returned grid point)."""
        finished, running, done, running_points = self.counts()
        budget = self.sweep.budget
        if finished >= budget or finished + running >= budget:
            return self._wait(finished >= budget), None
        if self.grid is None:
            return None, None
        todo = [i for i in range(len(self.grid)) if i not in done and i not in running_points]
        if not todo:
            return self._wait(len(done) >= len(self.grid)), None
        return None, todo[0]

    def _hold(self) -> None:
        """Note a wait: the next suggest reads the study again only after ``POLL_S`` or a trial's end."""
        self._waited_at, self._ended_since_wait = time.monotonic(), False

    def _wait(self, budget_met: bool) -> str:
        self._hold()
        return Searcher.FINISHED if budget_met and not self.running else WAIT

    def _ask_new(self, trial_id: str) -> dict[str, Any] | str | None:
        """Ask a trial whose configuration has not run (see the module docstring); under the lock."""
        study, space = self.study, self.sweep.space
        seen = self.index.seen()  # read by _decide, under this lock
        size = self._size
        # Queued trials (retries) are asked first, whatever the counts: only an ask starts them.
        if finite_enumerated(size) and len(seen) >= size and not self.index.waiting():
            # Nothing new to draw. A running trial may yet FAIL and free its configuration: wait
            # for the running ones; the space is exhausted once every configuration has finished.
            if len(self.index.finished_keys) < size:
                self._hold()
                return None
            self.end("exhausted", f"every one of the search space's {size} configurations has run")
            return Searcher.FINISHED if not self.running else None
        wanted: dict[str, Any] = {}
        for draw in range(MAX_DRAWS):
            if draw == DUPLICATES_IN_A_ROW and finite_enumerated(size):
                unseen = [p for p in space.iter_grid() or () if config_key(space.values(p)) not in seen]
                if not unseen:
                    break
                study.enqueue_trial(nearest(unseen, wanted, self._rng), skip_if_exists=False)
            trial = self._new_trial()
            key = config_key(space.values(trial.params))
            twin = seen.get(key)
            if twin is None or twin == trial.number:  # a queued retry is its own twin
                return self._asked(trial_id, trial)
            wanted = dict(trial.params)
            record.write_failure(trial, f"duplicate draw: the configuration of trial {twin}", "duplicate")
            self.study.tell(trial, state=TrialState.FAIL)
            record.count_duplicate_draw(study)
        if finite_enumerated(size):  # the unseen ones were queued meanwhile (another driver)
            self._hold()
            return None
        self.end("exhausted", f"{MAX_DRAWS} draws in a row were configurations that had run ({len(seen)} distinct)")
        return Searcher.FINISHED if not self.running else None

    def _new_trial(self) -> optuna.Trial:
        space = self.sweep.space
        if space.conditional:
            trial = self.study.ask()  # define-by-run: only the parameters whose conditions hold
            space.suggest(trial)
            return trial
        return self.study.ask(fixed_distributions=space.distributions)

    def _asked(self, trial_id: str, trial: optuna.Trial) -> dict[str, Any]:
        population = self.sweep.population
        # Under PBT a checkpoint is kept only where a trial may be copied (every interval).
        every = population.perturbation_interval if population is not None else 1
        ray_config: dict[str, Any] = {
            "sweeper": self.sweep.trial_config(trial.params, trial.number), "trial_number": trial.number,
            "trial_timeout": self.sweep.spec.trial_timeout, "checkpoint_every": every}
        if population is not None:  # a lost driver's member goes on from its checkpoint
            ray_config = resumed_member(self.study, trial, ray_config)
        record.write_asked(trial, ray_config["sweeper"], self.lease.driver_id, trial_id)
        self.running[trial_id] = trial
        return ray_config

    def _ask(self, trial_id: str, grid_id: int | None) -> dict[str, Any]:
        study = self.study
        if self.grid is not None and grid_id is not None:
            # Under the study lock a queued grid point is asked at once; one still WAITING was
            # queued by a driver that stopped in between. Optuna's ask() would pop it instead of
            # the point chosen here (running a point twice), so it ends FAIL first.
            for stale in self.index.waiting():
                record.mark_driver_lost(self.storage, stale._trial_id,
                                        "queued by a driver that stopped before running it")
                self.storage.set_trial_state_values(stale._trial_id, TrialState.FAIL)
            record.queue_grid_point(study, self.grid[grid_id], grid_id)
        return self._asked(trial_id, self._new_trial())

    # --- tell

    def tell(self, trial_id: str, state: TrialState,
             details: record.TrialDetails) -> tuple[optuna.Trial, list[float] | None]:
        """Tell the study how the trial that Ray calls ``trial_id`` ended, with its details.

        COMPLETE takes the objectives' values at the last epoch, or at the best epoch when the
        trainer's own early stopping kept that epoch's weights (``best_epoch``); PRUNED takes the
        last intermediate value (Optuna's rule) in a single-objective study and no value in a
        multi-objective one (Optuna keeps none for PRUNED there; the returned values are then the
        last epoch's); FAIL has none. A FAIL of kind ``trial`` counts against
        ``max_failed_trials``; one more stops the sweep (an :class:`~sweeper.engine.events.Ending`
        of kind ``failures``).

        Returns:
            the Optuna trial and its objective values (in the study's order), ``None`` without.

        Raises:
            KeyError: this driver did not ask ``trial_id`` or has told it already.
        """
        trial = self.running.pop(trial_id)
        record.write_details(trial, details)
        names = [m.name for m in self.sweep.objectives]
        history = details.history
        values: list[float] | None = None
        feasible = True
        if state in (TrialState.COMPLETE, TrialState.PRUNED) and self.sweep.bounds and history:
            # Optuna's constraint values (constraints:<key> system attributes), from the epoch whose
            # values are told: its samplers, best_trial(s), plots and dashboard read them.
            for key, value in constraint_values(self.sweep.bounds,
                                                told_row(history, state == TrialState.COMPLETE)).items():
                trial.set_constraint(key, value)
                feasible = feasible and value <= 0
        if state == TrialState.COMPLETE:
            row = told_row(history, complete=True)
            values = [float(row[m]) for m in names] if all(m in row for m in names) else None
            self.study.tell(trial, values)
            if values is not None and feasible:  # an infeasible trial never reaches the target
                self.check_target(trial.number, values[0])
        elif state == TrialState.PRUNED:
            told = self.study.tell(trial, state=TrialState.PRUNED)
            if told.values is not None:
                values = list(told.values)
            elif history and all(m in history[-1] for m in names):
                values = [float(history[-1][m]) for m in names]
        else:
            self.study.tell(trial, state=TrialState.FAIL)
            if details.fail_kind == "trial":
                self.failed += 1
            if self.failed > self.sweep.max_failed:
                self.end("failures", f"{self.failed} trials failed, more than max_failed_trials "
                                     f"({self.sweep.max_failed}); the last: {details.fail_reason}")
        self._ended_since_wait = True  # counts changed: the next suggest reads the study
        return trial, values

    def fail_unfinished(self, reason: str) -> None:
        """Tell FAIL (kind ``driver``) for every trial this driver asked and never saw end (a crash,
        Ctrl-C), and queue its parameters again, so that the next run of the study (``sweeper
        resume``, another ``agent`` call) runs them first, as it does a lost driver's trials
        (grid points are re-run by the grid itself)."""
        for trial_id, trial in list(self.running.items()):
            record.write_failure(trial, reason, "driver")
            self.study.tell(trial, state=TrialState.FAIL)
            if self.grid is None:
                record.queue_retry(self.study, trial)
            del self.running[trial_id]

    def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False) -> None:
        # The recorder (a Tune callback, which sees the Trial, its curve and its error) calls tell().
        return None

    # The study is the state; nothing to save with Ray's experiment checkpoint.
    def save(self, checkpoint_path: str) -> None:
        return None

    def restore(self, checkpoint_path: str) -> None:
        return None

    def save_to_dir(self, checkpoint_dir: str, session_str: str = "default") -> None:
        return None

    def restore_from_dir(self, checkpoint_dir: str) -> None:
        return None

    def __getstate__(self) -> dict[str, Any]:
        # Ray pickles the Tuner's config (and so this searcher) into its experiment folder;
        # the live study connection stays behind.
        return {k: v for k, v in self.__dict__.items()
                if k not in ("study", "sweep", "storage", "lease", "running", "grid", "index")}
