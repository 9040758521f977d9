"""Starting Ray for a sweep: its environment, joining a cluster, Ray Client addresses, concurrency.

The Ray Tune settings sweeper relies on are set in the environment when Ray is started
(:func:`init_ray`), for the driver and, through Ray's ``runtime_env``, for every worker: nothing
is set at import time.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sweeper.spec import Sweep

log = logging.getLogger(__name__)

# Ray Tune settings for a lean driver: no CSV/JSON/TensorBoard loggers per trial, trials
# keep the driver's working directory (relative paths keep working), results reach the driver
# one at a time, Tune's old-style (silenced) output, and results that lack the metric (a
# trainer's error) are not an error of Tune's. Each is read by Tune when a sweep runs, not at import.
# Tune's own experiment state (every trial's JSON, rewritten as a whole every 10 s or more, up to
# 5% of the driver's time, a cost growing with the trials run) is saved once an hour: sweeper
# resumes from the study, never from Tune's state. Ray keeps a record of every checkpoint of every
# trial (sweeper deletes the older checkpoints themselves, see StudyRecorder.on_checkpoint): each
# record keeps no metrics.
# The workers' output reaches the driver line by line as printed: Ray's log deduplication would
# hold lines that differ only in their numbers ("epoch 3 loss 0.21") as "[repeated 6x]" and print
# them after the sweep (read when Ray is imported: init_ray sets it first).
RAY_ENV = {
    "RAY_DEDUP_LOGS": "0",
    "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1",
    "RAY_CHDIR_TO_TRIAL_DIR": "0",
    "TUNE_RESULT_BUFFER_LENGTH": "1",
    "RAY_AIR_NEW_OUTPUT": "0",
    "TUNE_DISABLE_STRICT_METRIC_CHECKING": "1",
    "TUNE_GLOBAL_CHECKPOINT_S": "3600",
    "TUNE_ONLY_STORE_CHECKPOINT_SCORE_ATTRIBUTE": "1",
}

# Connections tried through Ray Client before giving up (see init_ray).
CLIENT_CONNECT_ATTEMPTS = 3


def set_ray_env() -> None:
    """Set :data:`RAY_ENV` in this process's environment (a value the user set is kept)."""
    for key, value in RAY_ENV.items():
        os.environ.setdefault(key, value)


def init_ray(address: str | None) -> None:
    """Start local Ray, or join the cluster at ``address`` (``auto``, ``HEAD_IP:6379``, or a Ray
    Client address ``ray://HEAD_IP:10001``; else ``RAY_ADDRESS``), with :data:`RAY_ENV` set here
    and in every worker.

    Under Ray Client this process only connects: :mod:`sweeper.client` runs the driver on the cluster.

    Raises:
        SweeperError: Ray could not start, or the cluster did not let this driver join (a wrong
            or missing token, a head that does not answer).
    """
    set_ray_env()  # before Ray is imported: it reads RAY_DEDUP_LOGS then
    import ray

    from sweeper.errors import SweeperError

    if not sys.stdout.isatty():  # a notebook, a file, CI: Ray's worker lines without ANSI colour codes
        os.environ.setdefault("RAY_COLOR_PREFIX", "0")
    if ray.is_initialized():
        return
    kwargs: dict[str, Any] = {
        "include_dashboard": False,
        # Ray's own warnings (token auth, metrics files we do not write) are not the user's business.
        "logging_level": logging.ERROR,
        "log_to_driver": True,
        "runtime_env": {"env_vars": {**RAY_ENV, "PYTHONPATH": _pythonpath()}},
    }
    target = address or os.environ.get("RAY_ADDRESS") or ""
    if is_client_address(target):
        # A Ray Client's working directory means nothing on the cluster (sweeper.client).
        kwargs["runtime_env"] = {"env_vars": dict(RAY_ENV)}
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


class WorkerOutput:
    """The workers' output as Ray forwards it to this driver (``log_to_driver``): Ray's log monitor
    reads the workers' files and publishes their new lines a moment after they were printed, so
    the last lines of a sweep may reach the driver after its end. :meth:`drain` waits for them.

    Under Ray Client the driver runs on the cluster and nothing is watched here.
    """

    def __init__(self) -> None:
        self.last = time.monotonic()
        self._dispatcher: Any = None
        with contextlib.suppress(Exception):  # Ray's dispatcher is internal: without it, no wait
            from ray._private.ray_logging import global_worker_stdstream_dispatcher

            global_worker_stdstream_dispatcher.add_handler("sweeper_worker_output", self._seen)
            self._dispatcher = global_worker_stdstream_dispatcher

    def _seen(self, data: Any) -> None:
        self.last = time.monotonic()

    def drain(self, quiet_s: float = 0.5, most_s: float = 3.0) -> None:
        """Return once no worker line has arrived for ``quiet_s`` seconds, or after ``most_s``
        seconds at most; then stop watching."""
        if self._dispatcher is None:
            return
        deadline = time.monotonic() + most_s
        while (now := time.monotonic()) < deadline and now - self.last < quiet_s:
            time.sleep(min(0.05, quiet_s))
        self.stop()

    def stop(self) -> None:
        """Stop watching (at once; again is harmless): a sweep that raised waits for nothing."""
        if self._dispatcher is None:
            return
        with contextlib.suppress(Exception):
            self._dispatcher.remove_handler("sweeper_worker_output")
        self._dispatcher = None


def quiet_logs() -> None:
    """Keep Ray Tune's and Optuna's own log lines (experiment-state snapshots, metrics files
    sweeper does not write, "A new study created") out of the user's terminal; call it in the
    process that runs the Tuner."""
    import optuna

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
