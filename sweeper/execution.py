"""Running a sweep on Ray Tune: the trainable, the recorder, ASHA and the Tuner.

The trainable (:func:`sweeper.trainable.run_trial`) runs a trainer in a Ray actor. Actors
are reused between trials, so a worker process decodes its data once (see
:func:`trainers.data.load_data`).

The driver records every trial in the Optuna study (:class:`StudyRecorder`):

- each epoch's metric as an intermediate value (Optuna ``trial.report``),
- COMPLETE when the trial ran all its epochs,
- PRUNED when ASHA stopped it earlier (Ray reports both as TERMINATED, so the scheduler's
  own STOP decisions are recorded, see :class:`RecordingASHA`),
- FAIL with the error's last line when the trainer raised, or when the sweep was
  interrupted before the trial's last epoch.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from sweeper.cluster import check_nodes
from sweeper.errors import InputError, SweeperError
from sweeper.search import FAIL_KIND_ATTR, Ledger, StudySearcher, make_sampler
from sweeper.spec import Sweep, spec_differences, validate
from sweeper.storage import (
    ensure_new_study,
    open_storage,
    record_study_metadata,
    redact,
    renew_lease,
    stored_spec,
    study_lock,
    study_names,
    take_lease,
)
from sweeper.trainable import ERROR_KEY, run_trial
from trainers.base import EXTRA_METRICS, FOLD_METRIC_PREFIX

# Ray Tune settings for a lean driver: no CSV/JSON/TensorBoard loggers per trial, trials
# keep the driver's working directory (relative paths keep working).
_RAY_ENV = {
    "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1",
    "RAY_CHDIR_TO_TRIAL_DIR": "0",
    "TUNE_RESULT_BUFFER_LENGTH": "1",
    "RAY_AIR_NEW_OUTPUT": "0",
    "TUNE_DISABLE_STRICT_METRIC_CHECKING": "1",
}
for _k, _v in _RAY_ENV.items():
    os.environ.setdefault(_k, _v)

from ray import tune  # noqa: E402 - the environment above must be set before Tune is imported
from ray.tune.experiment import Trial  # noqa: E402
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, TrialScheduler  # noqa: E402

log = logging.getLogger(__name__)

# Connections tried through Ray Client before giving up (see init_ray).
CLIENT_CONNECT_ATTEMPTS = 3



class RecordingASHA(ASHAScheduler):
    """Ray's ASHA scheduler (Li et al. 2020) that remembers which trials it stopped, and
    can be given the learning curves of earlier trials.

    Ray marks a trial TERMINATED both when it finished and when a scheduler stopped it;
    the recorder asks :meth:`stopped` to tell PRUNED from COMPLETE. On resume,
    :meth:`replay` records the study's curves in ASHA's rungs, so the cut-offs are the ones
    the interrupted sweep had.
    """

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        self._stopped: set[str] = set()

    def on_trial_result(self, tune_controller: Any, trial: Trial, result: dict[str, Any]) -> str:
        decision: str = super().on_trial_result(tune_controller, trial, result)
        if decision == TrialScheduler.STOP:
            self._stopped.add(trial.trial_id)
        return decision

    def stopped(self, trial_id: str) -> bool:
        """True when this scheduler decided to stop the trial."""
        return trial_id in self._stopped

    def replay(self, curves: dict[str, dict[int, float]]) -> None:
        """Record earlier trials' curves (``{name: {epoch: metric value}}``) in the rungs.

        Each value reaches the rungs exactly as it did live: ASHA's bracket records a trial's
        metric at every milestone its epochs pass, whatever it decided.
        """
        for name, curve in curves.items():
            stand_in = _ReplayedTrial(name)
            for bracket in self._brackets:
                for epoch in sorted(curve):
                    bracket.on_result(stand_in, epoch, float(self._metric_op) * curve[epoch])  # type: ignore[arg-type]


@dataclass(frozen=True)
class _ReplayedTrial:
    trial_id: str


@dataclass
class TrialEnd:
    """How one trial ended, as the progress display shows it."""

    number: int
    state: TrialState
    epochs_run: int
    epochs: int
    value: float | None
    params: dict[str, Any]
    reason: str | None = None


class StudyRecorder(tune.Callback):
    """Writes every trial's curve and end into the Optuna study; runs in the driver only."""

    def __init__(self, ledger: Ledger, searcher: StudySearcher, scheduler: RecordingASHA | None,
                 on_end: Callable[[TrialEnd], None] | None = None):
        self.ledger = ledger
        self.searcher = searcher
        self.scheduler = scheduler
        self.on_end = on_end
        self._started: dict[str, float] = {}
        self._history: dict[str, list[dict[str, float]]] = {}
        self._where: dict[str, dict[str, str]] = {}
        self._retries: dict[str, int] = {}
        self._best: list[tuple[float, Path]] = []  # (score, trial folder) of COMPLETE trials

    def __getstate__(self) -> dict[str, Any]:
        return {}  # Ray pickles callbacks with its experiment state; the study stays here.

    def on_step_end(self, iteration: int, trials: list[Trial], **info: Any) -> None:
        self.ledger.renew_lease()

    def on_trial_start(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        self._started.setdefault(trial.trial_id, time.time())

    def on_trial_recover(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        # Its worker died; Ray restarts it from the last checkpoint. The Optuna trial stays RUNNING.
        self._retries[trial.trial_id] = self._retries.get(trial.trial_id, 0) + 1
        log.warning("trial %s: worker lost, retrying from its last checkpoint (%s)", trial.trial_id,
                    _last_line(trial))

    def on_trial_result(self, iteration: int, trials: list[Trial], trial: Trial,
                        result: dict[str, Any], **info: Any) -> None:
        optuna_trial = self.ledger.trials.get(trial.trial_id)
        if optuna_trial is None or "epoch" not in result:
            return
        metric = self.ledger.sweep.spec.metric.name
        epoch = int(result["epoch"])
        # One write per epoch: the trial's worker waits for the driver at each report, so
        # every write here lengthens every trial. The rest of the epoch is kept in memory
        # and written with the trial's end.
        if metric in result:
            optuna_trial.report(float(result[metric]), step=epoch)
        row = {k: float(v) for k, v in result.items()
               if k in self._metric_names(result) and isinstance(v, (int, float))}
        history = self._history.setdefault(trial.trial_id, [])
        while history and history[-1]["epoch"] >= epoch:  # epochs redone after a worker was lost
            history.pop()
        history.append({"epoch": epoch, **row})
        if trial.trial_id not in self._where:
            self._where[trial.trial_id] = {key: str(result.get(key, ""))
                                           for key in ("node", "node_id", "worker", "device")}

    def _metric_names(self, result: dict[str, Any]) -> set[str]:
        declared = self.ledger.sweep.trainer.metrics
        if declared is not None:
            return {*declared, *EXTRA_METRICS, *(k for k in result if k.startswith(FOLD_METRIC_PREFIX))}
        skip = {"epoch", "node", "node_id", "worker", "device", "training_iteration", "time_this_iter_s",
                "time_total_s",
                "timestamp", "pid", "done", "trial_id", "iterations_since_restore", "time_since_restore",
                "checkpoint_dir_name", "date", "hostname", "node_ip", "config", ERROR_KEY}
        return {k for k in result if k not in skip}

    def on_trial_complete(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        """Tell the trial's end: FAIL (trainer error), COMPLETE (all epochs), PRUNED (ASHA's stop)."""
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
            self._tell(trial, TrialState.PRUNED, epochs_run)
        else:
            self._tell(trial, TrialState.FAIL, epochs_run, kind="driver",
                       reason=f"stopped after {epochs_run} of {epochs} epochs without a scheduler decision "
                              "(sweep interrupted)")

    def on_trial_error(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        # Only a worker that died more than max_failures times gets here: trainer errors are results.
        history = self._history.get(trial.trial_id, [])
        self._tell(trial, TrialState.FAIL, int(history[-1]["epoch"]) if history else 0,
                   reason=f"worker lost {self._retries.get(trial.trial_id, 0) + 1} times: {_last_line(trial)}")

    def fail_unfinished(self, reason: str) -> None:
        """Tell FAIL for every trial this driver asked and never saw end (a crash, Ctrl-C)."""
        for trial_id, optuna_trial in list(self.ledger.trials.items()):
            optuna_trial.set_user_attr("fail_reason", reason)
            optuna_trial.set_user_attr(FAIL_KIND_ATTR, "driver")
            self.ledger.study.tell(optuna_trial, state=TrialState.FAIL)
            del self.ledger.trials[trial_id]

    def _tell(self, trial: Trial, state: TrialState, epochs_run: int, reason: str | None = None,
              kind: str = "trial") -> None:
        ledger = self.ledger
        optuna_trial = ledger.trials.pop(trial.trial_id, None)
        if optuna_trial is None:
            return
        started = self._started.pop(trial.trial_id, None)
        history = self._history.pop(trial.trial_id, [])
        attrs: dict[str, Any] = {"history": history, "epochs_run": epochs_run, **self._where.pop(trial.trial_id, {})}
        if started is not None:
            attrs["wall_s"] = round(time.time() - started, 3)
        if trial.trial_id in self._retries:
            attrs["worker_retries"] = self._retries.pop(trial.trial_id)
        if reason:
            attrs["fail_reason"] = reason
            attrs[FAIL_KIND_ATTR] = kind
        for key, attr in attrs.items():
            optuna_trial.set_user_attr(key, attr)
        metric = ledger.sweep.spec.metric.name
        value: float | None = None
        if state == TrialState.COMPLETE:
            # With early stopping the trainer keeps its best epoch's weights: that epoch scores.
            row = history[-1] if history else {}
            if "best_epoch" in row:
                row = next((r for r in history if r["epoch"] == row["best_epoch"]), row)
            value = float(row[metric]) if metric in row else None
            ledger.study.tell(optuna_trial, value)
        elif state == TrialState.PRUNED:
            value = ledger.study.tell(optuna_trial, state=TrialState.PRUNED).value
        else:
            ledger.study.tell(optuna_trial, state=TrialState.FAIL)
            if kind == "trial":
                ledger.failed += 1
            if ledger.failed > ledger.sweep.max_failed and ledger.stop_reason is None:
                ledger.stop_reason = (
                    f"{ledger.failed} trials failed, more than max_failed_trials ({ledger.sweep.max_failed}); "
                    f"the last: {reason}"
                )
        self.searcher.trial_ended()
        self._prune_checkpoints(trial, state, value)
        if self.on_end is not None:
            self.on_end(TrialEnd(optuna_trial.number, state, epochs_run, int(trial.config["sweeper"]["epochs"]),
                                 value, dict(optuna_trial.params), reason))

    def _prune_checkpoints(self, trial: Trial, state: TrialState, value: float | None) -> None:
        """Keep the checkpoints of the ``keep_checkpoints`` best COMPLETE trials; delete the rest."""
        folder = Path(trial.path) if trial.path else None
        if folder is None:
            return
        keep = self.ledger.sweep.spec.keep_checkpoints
        doomed: list[Path] = []
        if state == TrialState.COMPLETE and value is not None and keep > 0:
            sign = 1.0 if self.ledger.sweep.spec.metric.goal == "maximize" else -1.0
            self._best.append((sign * value, folder))
            self._best.sort(key=lambda item: item[0], reverse=True)
            doomed = [f for _, f in self._best[keep:]]
            del self._best[keep:]
        else:
            doomed = [folder]
        for path in doomed:
            for checkpoint in path.glob("checkpoint_*"):
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


@dataclass
class SweepOutcome:
    """What :func:`run_sweep` leaves behind.

    Attributes:
        study: the study (read it with ``optuna.load_study`` too).
        finished: COMPLETE + PRUNED trials in the study.
        failed: FAIL trials this run told.
        wall_s: seconds from Ray's start to the end of the sweep.
        stop_reason: why the sweep stopped early, if it did.
        interrupted: Ctrl-C stopped it (its running trials are FAIL "sweep interrupted").
    """

    study: optuna.Study
    finished: int
    failed: int
    wall_s: float
    stop_reason: str | None = None
    interrupted: bool = False


def create_study(sweep: Sweep, concurrency: int, storage: optuna.storages.RDBStorage | None = None) -> optuna.Study:
    """Create the sweep's study, with its spec and versions stored.

    Raises:
        InputError: a study of that name exists in the storage (``launch`` does not
            overwrite one; resuming is the way to continue it).
    """
    url = sweep.spec.storage
    ensure_new_study(sweep.name, url)
    study = optuna.create_study(
        storage=storage or open_storage(url, pool_size=concurrency), study_name=sweep.name,
        direction=sweep.spec.metric.goal, sampler=make_sampler(sweep, concurrency),
    )
    record_study_metadata(study, sweep.stored())
    return study


def load_study_to_resume(sweep: Sweep, concurrency: int,
                         storage: optuna.storages.RDBStorage | None = None) -> optuna.Study:
    """Open an existing study to continue it, with a sampler that does not replay its draws.

    Raises:
        InputError: the study does not exist in the storage.
    """
    url = sweep.spec.storage
    if sweep.name not in study_names(url):
        raise InputError(f"study: {sweep.name!r} does not exist in {redact(url)}; start it with `sweeper launch`")
    storage = storage or open_storage(url, pool_size=concurrency)
    done = len(storage.get_all_trials(storage.get_study_id_from_name(sweep.name), deepcopy=False))
    # A seeded sampler would draw the first trials' parameters again: seed it past them.
    reseeded = validate({**sweep.stored(), "seed": sweep.spec.seed + done, "storage": url})
    return optuna.load_study(study_name=sweep.name, storage=storage, sampler=make_sampler(reseeded, concurrency))


def continues_study(sweep: Sweep, resume: bool) -> bool:
    """Whether ``sweeper launch`` continues the study (``--resume`` and it exists) or creates it.

    Raises:
        InputError: the study exists and ``resume`` is off, or it exists with another spec
            (one line per difference).
    """
    url = sweep.spec.storage
    if resume and sweep.name in study_names(url):
        differences = spec_differences(stored_spec(url, sweep.name), sweep.stored())
        if differences:
            raise InputError([f"study: {sweep.name!r} in {redact(url)} was started with another spec; "
                              "resume it with `sweeper resume` or make the file match:", *differences])
        return True
    ensure_new_study(sweep.name, url)  # before Ray starts: exit 2, nothing written
    return False


def _trial_name(trial: Trial) -> str:
    return f"trial_{trial.config.get('trial_number', trial.trial_id)}"


def init_ray(address: str | None) -> None:
    """Start local Ray, or join the cluster at ``address`` (``auto``, ``HEAD_IP:6379``, or a Ray
    Client address ``ray://HEAD_IP:10001``; else ``RAY_ADDRESS``).

    Under Ray Client this process only connects: :mod:`sweeper.client` runs the driver on the cluster.

    Raises:
        SweeperError: Ray could not start, or the cluster did not let this driver join (a wrong
            or missing token, a head that does not answer).
    """
    import ray

    if ray.is_initialized():
        return
    kwargs: dict[str, Any] = {
        "include_dashboard": False,
        # Ray's own warnings (token auth, metrics files we do not write) are not the user's business.
        "logging_level": logging.ERROR,
        "log_to_driver": True,
        "runtime_env": {"env_vars": {**_RAY_ENV, "PYTHONPATH": _pythonpath()}},
    }
    target = address or os.environ.get("RAY_ADDRESS") or ""
    if is_client_address(target):
        # A Ray Client's working directory means nothing on the cluster (sweeper.client).
        kwargs["runtime_env"] = {"env_vars": dict(_RAY_ENV)}
    if address:
        kwargs["address"] = address
    attempts = CLIENT_CONNECT_ATTEMPTS if is_client_address(target) else 1
    for attempt in range(1, attempts + 1):
        try:
            ray.init(**kwargs)
            break
        except Exception as err:  # a cluster that does not answer, a token that does not match, ...
            lines = str(err).strip().splitlines()
            if isinstance(err, ConnectionAbortedError) and attempt < attempts:
                # The head's Ray Client server starts a server process per client; now and
                # then that process dies at birth (seen 1 in 12 here): a new connection works.
                log.warning("Ray Client: %s (attempt %d of %d); connecting again", lines[-1] if lines else err,
                            attempt, attempts)
                with contextlib.suppress(Exception):
                    ray.shutdown()
                time.sleep(1.0)
                continue
            raise SweeperError(f"Ray could not {'join ' + target if target else 'start'}: "
                               f"{type(err).__name__}: {lines[-1] if lines else ''}") from err
    quiet_logs()


def quiet_logs() -> None:
    """Keep Ray Tune's and Optuna's own log lines (experiment-state snapshots, metrics files
    sweeper does not write, "A new study created") out of the user's terminal; call it in the
    process that runs the Tuner."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    logging.getLogger("ray.tune").setLevel(logging.ERROR)
    # A trial's error is recorded in the study and printed once by sweeper, not as Ray's traceback.
    logging.getLogger("ray.tune.execution.tune_controller").setLevel(logging.CRITICAL)


def is_client_address(address: str | None) -> bool:
    """True for a Ray Client address (``ray://HOST:PORT``), where the driver must run on the cluster."""
    return bool(address) and str(address).startswith("ray://")


def client_address(address: str | None) -> str | None:
    """The Ray Client address a command connects to (``address``, else ``RAY_ADDRESS``), or ``None``."""
    target = address or os.environ.get("RAY_ADDRESS")
    return target if is_client_address(target) else None


def _pythonpath() -> str:
    # A user's own trainer (`mypkg.mod:fit`) next to the spec must import in the workers too.
    parts = [os.getcwd(), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    return os.pathsep.join(dict.fromkeys(parts))


def concurrency_for(sweep: Sweep) -> int:
    """Trials at once: ``max_concurrent_trials``, else what the cluster's CPUs/GPUs hold."""
    import ray

    if sweep.spec.max_concurrent_trials:
        return sweep.spec.max_concurrent_trials
    res = sweep.spec.resources_per_trial
    total = ray.cluster_resources()
    fits = int(total.get("CPU", 1) // res.cpu)
    if res.gpu > 0:
        fits = min(fits, int(total.get("GPU", 0) / res.gpu + 1e-9))
    return max(1, fits)


def run_sweep(
    sweep: Sweep,
    *,
    address: str | None = None,
    resume: bool = False,
    on_start: Callable[[Ledger, int], None] | None = None,
    on_end: Callable[[TrialEnd], None] | None = None,
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
        on_start: called with the ledger (study and live counts) and the concurrency once
            trials can start.
        on_end: called in the driver as each trial ends.

    Raises:
        InputError: the study exists already (or, with ``resume``, does not), or the storage
            does not answer.
        SweeperError: Ray could not start or the sweep broke.
    """
    init_ray(address)
    check_nodes(sweep)  # on a cluster: every node sees the data, weights and artifact folder
    started = time.time()
    concurrency = concurrency_for(sweep)
    storage = open_storage(sweep.spec.storage, pool_size=concurrency)
    study = (load_study_to_resume if resume else create_study)(sweep, concurrency, storage)
    ledger = Ledger(study, sweep, storage, take_lease(study),
                    grid=sweep.space.grid() if sweep.spec.method == "grid" else None)
    mode = "max" if sweep.spec.metric.goal == "maximize" else "min"
    metric = sweep.spec.metric.name
    scheduler: RecordingASHA | None = None
    if sweep.asha is not None:
        scheduler = RecordingASHA(
            time_attr="epoch", metric=metric, mode=mode, max_t=sweep.max_epochs,
            grace_period=sweep.asha.grace_period, reduction_factor=sweep.asha.reduction_factor,
        )
    if resume:
        with study_lock(storage, sweep.spec.storage, sweep.name):
            ledger.reap_zombies()
        ledger.failed = sum(1 for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,))
                            if t.user_attrs.get(FAIL_KIND_ATTR, "trial") == "trial")
        if scheduler is not None:
            scheduler.replay({f"study-trial-{t.number}": t.intermediate_values
                              for t in study.get_trials(deepcopy=False) if t.intermediate_values})
    searcher = StudySearcher(ledger, metric, mode)
    recorder = StudyRecorder(ledger, searcher, scheduler, on_end)
    res = sweep.spec.resources_per_trial
    trainable = tune.with_resources(run_trial, {"cpu": res.cpu, "gpu": res.gpu})
    tuner = tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(
            search_alg=searcher,
            scheduler=scheduler or FIFOScheduler(),
            num_samples=-1,
            max_concurrent_trials=concurrency,
            reuse_actors=True,
            trial_name_creator=_trial_name,
            trial_dirname_creator=_trial_name,
        ),
        run_config=tune.RunConfig(
            # One Ray experiment folder per driver: two drivers of a study never share one.
            name=f"{sweep.name.replace('/', '_')}/driver-{ledger.lease.driver_id}",
            storage_path=sweep.spec.artifacts,
            verbose=0,
            callbacks=[recorder],
            failure_config=tune.FailureConfig(max_failures=sweep.spec.max_failures),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
        ),
    )
    if on_start is not None:
        on_start(ledger, concurrency)
    try:
        tuner.fit()
    except KeyboardInterrupt:
        recorder.fail_unfinished("sweep interrupted (Ctrl-C)")
        raise
    except Exception as err:
        recorder.fail_unfinished(f"driver error: {err}")
        raise SweeperError(f"the sweep stopped: {err}") from err
    finally:
        with contextlib.suppress(Exception):  # a release that cannot be written expires on its own
            renew_lease(study, ledger.lease, released=True)
    finished = ledger.counts()[0]
    # Tune ends before the budget only when interrupted: its SIGINT handler (Ctrl-C) stops the
    # trials and returns.
    interrupted = ledger.stop_reason is None and finished < sweep.budget
    recorder.fail_unfinished("sweep interrupted (Ctrl-C)" if interrupted
                             else "the trial never reported an end to the driver")
    if interrupted:
        ledger.stop_reason = f"interrupted with {finished} of {sweep.budget} trials finished"
    return SweepOutcome(study, finished, ledger.failed, time.time() - started, ledger.stop_reason, interrupted)
