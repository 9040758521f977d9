"""Launching a sweep: the Ray Tune run that joins the study, the searcher, ASHA and the recorder.

:func:`launch` is the one launch flow, called by ``sweeper launch``/``resume`` on this machine
and by the driver that :mod:`sweeper.client` runs on a cluster's head: run the sweep to its
budget (:func:`run_sweep`), show the closing summary, and turn how it ended into the command's
result (an error for a sweep that stopped early or completed no trial).

The trainable (:func:`sweeper.trial.trainable.run_trial`) runs a trainer in a Ray actor. Actors
are reused between trials, so a worker process decodes its data once (see
:func:`trainers.data.load_data`).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import optuna

from sweeper.engine.ray_runtime import WorkerOutput, concurrency_for, init_ray
from sweeper.errors import SweeperError

if TYPE_CHECKING:
    from ray import tune
    from ray.tune.experiment import Trial

    from sweeper.engine.events import Ending, Notice, SweepEnded, TrialEnd
    from sweeper.engine.recorder import StudyRecorder
    from sweeper.engine.scheduler import Scheduler
    from sweeper.engine.searcher import StudySearcher
    from sweeper.spec import Sweep
    from sweeper.study.storage import StorageFault
    from sweeper.study.warm_start import WarmStart


@dataclass
class SweepOutcome:
    """What :func:`run_sweep` leaves behind.

    Attributes:
        study: the study (read it with ``optuna.load_study`` too).
        finished: COMPLETE + PRUNED trials in the study.
        failed: FAIL trials that failed by themselves (this run's, and the study's before a resume).
        wall_s: seconds from Ray's start to the end of the sweep.
        ending: why it ended before its budget (:class:`sweeper.engine.events.Ending`), ``None`` when
            it ran its budget.
    """

    study: optuna.Study
    finished: int
    failed: int
    wall_s: float
    ending: Ending | None = None


def _cancelled(err: BaseException) -> bool:
    """Whether ``err`` is, or was caused by, the cancellation of a Ray task (Tune wraps a
    ``TaskCancelledError`` from its own ``ray.get`` as "Caught unexpected exception: Task ... was
    cancelled")."""
    from ray.exceptions import TaskCancelledError

    seen: BaseException | None = err
    for _ in range(20):  # a bounded walk down the chain of causes
        if seen is None:
            return False
        if isinstance(seen, TaskCancelledError) or "was cancelled" in str(seen):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _storage_fault(err: BaseException) -> StorageFault | None:
    """The :class:`~sweeper.study.storage.StorageFault` in ``err``'s chain (Tune wraps what a callback
    raised), if any."""
    from sweeper.study.storage import StorageFault

    seen: BaseException | None = err
    for _ in range(20):
        if seen is None or isinstance(seen, StorageFault):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def _trial_name(trial: Trial) -> str:
    return f"trial_{trial.config.get('trial_number', trial.trial_id)}"


def _tuner(sweep: Sweep, searcher: StudySearcher, scheduler: Scheduler | None, recorder: StudyRecorder,
           concurrency: int, function: Callable[..., Any] | None) -> tune.Tuner:
    """Ray Tune's ``Tuner`` for the sweep: the trainable with its resources, the study's searcher,
    the scheduler (FIFO when none), the recorder as its callback, and one experiment folder per driver."""
    from ray import tune

    from sweeper.engine.scheduler import Fifo
    from sweeper.trial.trainable import run_trial

    res = sweep.spec.resources_per_trial
    return tune.Tuner(
        tune.with_resources(run_trial if function is None else tune.with_parameters(run_trial, function=function),
                            {"cpu": res.cpu, "gpu": res.gpu}),
        tune_config=tune.TuneConfig(
            search_alg=searcher,
            scheduler=scheduler or Fifo(),
            num_samples=-1,
            max_concurrent_trials=concurrency,
            reuse_actors=True,
            trial_name_creator=_trial_name,
            trial_dirname_creator=_trial_name,
        ),
        run_config=tune.RunConfig(
            # One Ray experiment folder per driver: two drivers of a study never share one.
            name=f"{sweep.name.replace('/', '_')}/driver-{searcher.lease.driver_id}",
            storage_path=sweep.spec.artifacts,
            verbose=0,
            # Tune's terminal reporter (silent at verbose 0) in Jupyter too: Tune's notebook one
            # clears the cell's output, sweeper's progress display included.
            progress_reporter=tune.CLIReporter(),
            callbacks=[recorder],
            failure_config=tune.FailureConfig(max_failures=sweep.spec.max_failures),
            # Every checkpoint is kept by Ray: the recorder deletes a trial's older ones (except
            # under PBT, which copies a trial from a checkpoint of its past), see on_checkpoint.
            checkpoint_config=tune.CheckpointConfig(num_to_keep=None),
        ),
    )


def run_sweep(
    sweep: Sweep,
    *,
    address: str | None = None,
    resume: bool = False,
    on_start: Callable[[StudySearcher, int], None] | None = None,
    on_end: Callable[[TrialEnd], None] | None = None,
    warm_start: WarmStart | None = None,
    notice: Callable[[str], None] | None = None,
    function: Callable[..., Any] | None = None,
) -> SweepOutcome:
    """Run a sweep on Ray Tune to its budget: create the study, or continue it (``resume``).

    On resume, trials left RUNNING by a driver that is gone are marked FAIL ("driver lost")
    and their parameters queued again; COMPLETE and PRUNED trials count toward the budget;
    ASHA's rungs are rebuilt from the curves in the study. Trials of a driver that is still
    alive are left to it, and both drivers share the budget.

    Args:
        sweep: the validated spec.
        address: a Ray cluster to join; ``None`` starts Ray on this machine.
        resume: continue the existing study of that name instead of creating it.
        on_start: called with the searcher (the study and the running trials) and the
            concurrency once trials can start.
        on_end: called in the driver as each trial ends.
        warm_start: an earlier study whose fitting trials a new study starts with (checked
            already by :func:`sweeper.study.warm_start.check`; ignored when the study is continued).
        notice: called with one line each for what the user should know before trials start
            (the warm start's counts).
        function: the trainer as a Python object (``sweeper.agent(function=...)``), shipped to
            the workers by value; it replaces the trainer the spec names.

    Its steps: open the study (:func:`_open_study`), build Tune's tuner (:func:`_tuner`), run it
    (:func:`_fit`), close (:func:`_close`).

    Raises:
        InputError: the study exists already (or, with ``resume``, does not), or the storage
            does not answer.
        SweeperError: Ray could not start or the sweep broke.
    """
    init_ray(address)  # sets Ray Tune's environment before Tune is imported below
    output = WorkerOutput()

    from sweeper.engine.cluster import check_nodes, warm_data_cache
    from sweeper.engine.recorder import StudyRecorder

    try:
        check_nodes(sweep)  # on a cluster: every node sees the data, weights and artifact folder
        started = time.time()
        concurrency = concurrency_for(sweep)
        warm_data_cache(sweep, concurrency)  # nodes decode the data while the study opens and Tune starts trials
        searcher, scheduler = _open_study(sweep, concurrency, resume=resume, warm_start=warm_start, notice=notice)
        recorder = StudyRecorder(sweep, searcher, scheduler, on_end)
        tuner = _tuner(sweep, searcher, scheduler, recorder, concurrency, function)
        if on_start is not None:
            on_start(searcher, concurrency)
        _fit(tuner, searcher)
        finished = _close(sweep, searcher)
        output.drain()  # the trials' last printed lines come before the closing summary (not on Ctrl-C)
    finally:
        output.stop()  # a sweep that raised leaves no handler on Ray's dispatcher
    return SweepOutcome(searcher.study, finished, searcher.failed, time.time() - started, searcher.ending)


def _open_study(sweep: Sweep, concurrency: int, *, resume: bool, warm_start: WarmStart | None,
                notice: Callable[[str], None] | None) -> tuple[StudySearcher, Scheduler | None]:
    """The sweep's study, created or opened to resume (its zombies reaped, its failures counted),
    warm-started when asked, with this driver's searcher on it and the scheduler, whose rungs start
    from the study's curves when it has any."""
    from sweeper.engine.scheduler import make_scheduler
    from sweeper.engine.searcher import StudySearcher
    from sweeper.study.coordination import study_lock, take_lease
    from sweeper.study.storage import open_storage
    from sweeper.study.studies import create_study, load_study_to_resume

    storage = open_storage(sweep.spec.storage, pool_size=concurrency)
    study = (load_study_to_resume if resume else create_study)(sweep, concurrency, storage)
    if warm_start is not None and not resume:
        from sweeper.study.warm_start import add_warm_trials

        added, skipped = add_warm_trials(study, sweep, warm_start)
        if notice is not None:
            notice(f"warm start: {added} finished trial(s) of study {warm_start.study!r} added"
                   + (f"; {skipped} outside this search space skipped" if skipped else ""))
    searcher = StudySearcher(study, sweep, storage, take_lease(study),
                             grid=sweep.space.grid() if sweep.spec.method == "grid" else None)
    scheduler = make_scheduler(sweep)
    searcher.check_target()
    if resume:
        with study_lock(storage, sweep.spec.storage, sweep.name):
            searcher.reap_zombies()
        searcher.count_failures()
    if scheduler is not None and (resume or warm_start is not None):  # the rungs start from the study's curves
        scheduler.replay_study(study.get_trials(deepcopy=False))
    return searcher, scheduler


def _fit(tuner: tune.Tuner, searcher: StudySearcher) -> None:
    """Run Ray Tune until the searcher says the budget is met, then release this driver's lease.

    Raises:
        KeyboardInterrupt: Ctrl-C, here or (through Ray Client) in one of Tune's own calls; the
            running trials are marked FAIL.
        StorageFault: the database stopped answering (the trials left RUNNING are reaped on resume).
        SweeperError: any other error of the driver; the running trials are marked FAIL.
    """
    from sweeper.study.coordination import renew_lease

    storage_fault = None
    try:
        tuner.fit()
    except KeyboardInterrupt:
        searcher.fail_unfinished("sweep interrupted (Ctrl-C)")
        raise
    except Exception as err:
        storage_fault = _storage_fault(err)
        if storage_fault is not None:  # nothing more can be written: the trials left RUNNING are reaped on resume
            raise storage_fault from None
        if _cancelled(err):  # Ray Client's Ctrl-C (ray.cancel of the driver) landed in one of Tune's ray.get calls
            searcher.fail_unfinished("sweep interrupted (Ctrl-C)")
            raise KeyboardInterrupt from err
        searcher.fail_unfinished(f"driver error: {err}")
        raise SweeperError(f"the sweep stopped: {err}") from err
    finally:
        if storage_fault is None:  # else the database is gone: the lease expires on its own
            with contextlib.suppress(Exception):  # a release that cannot be written expires on its own
                renew_lease(searcher.study, searcher.lease, released=True)


def _close(sweep: Sweep, searcher: StudySearcher) -> int:
    """After Tune returned: the trials it left unfinished marked FAIL, an interrupted sweep's
    :class:`~sweeper.engine.events.Ending` set; the study's finished trials (COMPLETE + PRUNED)."""
    finished = searcher.counts()[0]
    # Tune ends before the budget only when interrupted: its SIGINT handler (Ctrl-C) stops the
    # trials and returns.
    interrupted = searcher.ending is None and finished < sweep.budget
    searcher.fail_unfinished("sweep interrupted (Ctrl-C)" if interrupted
                             else "the trial never reported an end to the driver")
    if interrupted:
        searcher.end("interrupted", f"interrupted with {finished} of {sweep.budget} trials finished")
    return finished


def launch(
    sweep: Sweep,
    emit: Callable[[Notice | SweepEnded], None],
    *,
    address: str | None = None,
    resume: bool = False,
    on_start: Callable[[StudySearcher, int], None] | None = None,
    on_end: Callable[[TrialEnd], None] | None = None,
    warm_start: WarmStart | None = None,
    function: Callable[..., Any] | None = None,
) -> SweepOutcome:
    """Run (or continue) the sweep (:func:`run_sweep`, starting a new study from ``warm_start``'s
    trials when given), ``emit`` a :class:`~sweeper.engine.events.Notice` for what the user should know
    before trials start and a :class:`~sweeper.engine.events.SweepEnded` for the closing summary (the views
    render them; this prints nothing), and end as the command ends.

    Raises:
        KeyboardInterrupt: Ctrl-C stopped the sweep (Ray Tune took it and stopped the trials,
            which are FAIL "sweep interrupted (Ctrl-C)"): the command exits 130 as for any Ctrl-C.
        SweeperError: the sweep stopped early (more than ``max_failed_trials`` failed), or no
            trial of the study completed.
        InputError: as :func:`run_sweep`.
    """
    from sweeper.engine.events import Notice, SweepEnded
    from sweeper.study.results import least_violating, ranked_trials

    outcome = run_sweep(sweep, address=address, resume=resume, on_start=on_start, on_end=on_end,
                        warm_start=warm_start, notice=lambda line: emit(Notice(line)), function=function)
    emit(SweepEnded(outcome.study, sweep, outcome.wall_s, outcome.ending))
    if outcome.ending is not None and outcome.ending.kind == "interrupted":
        raise KeyboardInterrupt
    if outcome.ending is not None and outcome.ending.early:
        raise SweeperError(f"the sweep stopped early: {outcome.ending.reason}")
    if not ranked_trials(outcome.study):
        if sweep.bounds and least_violating(outcome.study) is not None:
            raise SweeperError("no trial met the constraints (see the least violating above); loosen them or "
                               "search a space of smaller models")
        raise SweeperError("no trial completed; see the FAIL reasons above")
    return outcome
