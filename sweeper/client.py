"""Sweeps through Ray Client (``--address ray://HEAD_IP:10001``): the driver runs on the cluster.

Under Ray Client this process (a laptop, say) only holds a connection; Ray Tune runs its
controller on the cluster anyway (``Tuner.fit`` does so itself under Ray Client), away from a
study connection and a lease held here. So sweeper runs its whole driver, from validating the
spec to the last trial's end, as one task pinned to the head node (:func:`_drive`), and this
process shows the trials' ends as the driver streams them back through a Ray queue.

What follows from that:

- The spec's paths are the cluster's: ``data.root`` and ``artifacts`` must be absolute paths
  on the cluster's shared storage, checked there (with every node's check of
  :mod:`sweeper.engine.cluster`), not here.
- The study must live in a database server that the head reaches (PostgreSQL). A SQLite file
  would be written on the head, where ``sweeper report`` and ``sweeper resume`` from elsewhere
  cannot read it.
- The driver shares the client's fate. Ray ends a client's session, and the tasks it owns,
  once the client has been gone for the reconnect grace period (the client's
  ``RAY_CLIENT_RECONNECT_GRACE_PERIOD``, 30 s by default). The study's lease then expires,
  and ``sweeper resume`` from any machine marks the lost trials FAIL ("driver lost") and
  finishes the budget.
- The client and the cluster need the same Python, Ray and sweeper versions (Ray Client's rule),
  and a trainer named by module path must be importable on the cluster's nodes.

Source: Ray's "Ray Client" guide (docs.ray.io, cluster/running-applications/job-submission/
ray-client) for the address, the grace period and the version rule; Ray Tune's ``Tuner.fit``
(ray/tune/tuner.py) for the controller it runs on the cluster under Ray Client.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sweeper.engine.events import TrialEnd
from sweeper.errors import InputError, Problem, SweeperError

if TYPE_CHECKING:
    from rich.console import Console

    from sweeper.engine.searcher import StudySearcher
    from sweeper.spec import Sweep
    from sweeper.views.progress import SweepProgress, SweepStart

# How often the driver on the cluster sends the number of running trials, in seconds.
RUNNING_EVERY_S = 1.0


@dataclass(frozen=True)
class DriverJob:
    """What the driver on the cluster runs.

    Either ``raw`` (``sweeper launch``: the spec mapping with the options applied, not yet
    validated; ``resume`` is ``--resume``), or ``study`` and ``storage`` (``sweeper resume``:
    the spec stored with the study).
    """

    raw: dict[str, Any] | None = None
    resume: bool = False
    study: str | None = None
    storage: str | None = None


def client_problems(job: DriverJob) -> list[Problem]:
    """What a spec (or a resume) cannot have under Ray Client, checked before connecting.

    Returns:
        one problem per key: a SQLite (or missing) storage, and a relative ``artifacts`` or
        ``data.root``, or a program sweep's missing or relative ``workdir`` (each would be resolved
        in the head's working directory).
    """
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    from sweeper.defaults import DEFAULT_ARTIFACTS, DEFAULT_STORAGE

    raw = job.raw or {}
    problems = []
    url = job.storage if job.raw is None else raw.get("storage", DEFAULT_STORAGE)
    backend = ""
    with contextlib.suppress(ArgumentError, TypeError):
        backend = make_url(str(url)).get_backend_name()
    if backend == "sqlite":
        problems.append(Problem("storage", str(url), "cannot be SQLite through Ray Client (ray://): the driver runs "
                                "on the cluster's head node, so the study needs a database server both reach "
                                "(postgresql+psycopg://user@host/db)"))
    if job.raw is not None:
        data = raw.get("data")
        for key, value in (("artifacts", raw.get("artifacts", DEFAULT_ARTIFACTS)),
                           ("data.root", data.get("root") if isinstance(data, dict) else None)):
            if isinstance(value, str) and not Path(value).is_absolute():
                problems.append(Problem(key, value, "must be an absolute path through Ray Client (ray://): paths "
                                        "are the cluster's, on storage every node mounts at that path"))
        workdir = raw.get("workdir")
        if raw.get("program") is not None and not (isinstance(workdir, str) and Path(workdir).is_absolute()):
            problems.append(Problem("workdir", workdir, "must be an absolute path through Ray Client (ray://) for a "
                                    "program sweep: the folder the program runs in, on the cluster"))
    return problems


def run_through_client(job: DriverJob, address: str | None, console: Console,
                       warn: Callable[[str], None]) -> None:
    """Connect through Ray Client, run the driver on the head node, and show its progress and
    its closing summary here.

    Args:
        job: what to run.
        address: the ``ray://`` address (else ``RAY_ADDRESS`` holds it).
        console: where the live progress and each trial's line go.
        warn: called with each warning of the spec's validation.

    Raises:
        InputError: the spec or the study (checked on the cluster), or what Ray Client cannot
            take (:func:`client_problems`); nothing is written.
        SweeperError: the connection failed or was lost, the driver on the cluster failed, or
            the sweep stopped early or completed no trial (as :func:`sweeper.engine.launch.launch`).
        KeyboardInterrupt: after Ctrl-C, once the driver on the cluster has marked its running
            trials FAIL.
    """
    import ray
    from ray.util.queue import Empty, Queue
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from sweeper.engine.ray_runtime import init_ray

    problems = client_problems(job)
    if problems:
        raise InputError(problems)
    init_ray(address)
    events = Queue(actor_options={"num_cpus": 0})
    head = ray.get_runtime_context().get_node_id()  # the node of this client's server: the head
    drive = ray.remote(_drive).options(num_cpus=0, max_retries=0,
                                       scheduling_strategy=NodeAffinitySchedulingStrategy(head, soft=False))
    ref = drive.remote(job, events)
    view = _ClientView(console, warn)

    def follow(until_s: float | None = None) -> None:
        """Show events until the driver ends (or ``until_s`` passes), then the rest in the queue."""
        while until_s is None or time.monotonic() < until_s:
            try:
                view.show(events.get(timeout=0.5))
                continue
            except Empty:
                pass
            if ray.wait([ref], timeout=0)[0]:
                break
        while True:
            try:
                view.show(events.get_nowait())
            except Empty:
                return

    try:
        try:
            follow()
        except KeyboardInterrupt:
            # The driver on the cluster gets the Ctrl-C: it marks its running trials FAIL.
            ray.cancel(ref)
            _mute_worker_logs()
            with contextlib.suppress(Exception):
                follow(until_s=time.monotonic() + 60)
            raise
        _result(ref)
    except ConnectionError as err:
        raise SweeperError(f"lost the connection to the cluster ({err}); the driver on the cluster stops with "
                           "this client's session: continue with `sweeper resume`") from err
    finally:
        view.close()


@dataclass(frozen=True)
class Warned:
    """A warning of the spec's validation on the cluster."""

    line: str


@dataclass(frozen=True)
class Started:
    """Trials can start: the validated spec and what the study holds (the progress display's start)."""

    sweep: Sweep
    start: SweepStart


@dataclass(frozen=True)
class Running:
    """How many trials run now (sent every :data:`RUNNING_EVERY_S` seconds)."""

    count: int


@dataclass(frozen=True)
class Shown:
    """Something rendered on the head node for this terminal: a notice, or the closing summary
    (the study's storage may not be reachable from here)."""

    renderable: Any


# What the driver on the cluster sends through the Ray queue, in order: warnings, a start, trial
# ends and running counts as they come, and last what the engine emitted, rendered.
StreamEvent = Warned | Started | Running | TrialEnd | Shown


class _ClientView:
    """The driver's events (:data:`StreamEvent`, from :func:`_drive`) shown here: warnings, the
    live progress, each trial's line, and the closing summary."""

    def __init__(self, console: Console, warn: Callable[[str], None]):
        self.console, self.warn = console, warn
        self.progress: SweepProgress | None = None
        self.running = 0

    def show(self, event: StreamEvent) -> None:
        """Render one event."""
        from sweeper.views.progress import SweepProgress

        if isinstance(event, Warned):
            self.warn(event.line)
        elif isinstance(event, Started):
            self.progress = SweepProgress(event.sweep, self.console)
            self.progress.begin(event.start, running=lambda: self.running)
        elif isinstance(event, Running):
            self.running = event.count
        elif isinstance(event, TrialEnd):
            if self.progress is not None:
                self.progress.trial_ended(event)
        else:
            self.close()
            self.console.print(event.renderable)

    def close(self) -> None:
        """Stop the live progress (if it started)."""
        if self.progress is not None:
            self.progress.stop()


def _mute_worker_logs() -> None:
    """Stop streaming the cluster's worker output to this terminal (Ray Client's
    ``LogstreamClient.disable_logs``).

    Called after Ctrl-C: what the trial workers print then is Ray's own teardown, such as the
    ``SystemExit`` that Ray's SIGTERM handler raises inside a weakref callback, which Python
    prints as a traceback (seen in CI). The user's progress and summary come through the event
    queue, not this stream.
    """
    from ray.util.client import ray as client_ray

    with contextlib.suppress(Exception):  # a private path that may move between Ray versions
        client_ray.get_context().client_worker.log_client.disable_logs()


def _result(ref: Any) -> None:
    """Wait for the driver's end; raise its error as raised on the cluster (one line for the user)."""
    import ray

    try:
        ray.get(ref)
    except ray.exceptions.RayTaskError as err:
        cause = err.cause
        if isinstance(cause, SweeperError):
            raise cause from None
        lines = str(cause or err).strip().splitlines()
        raise SweeperError(f"the driver on the cluster failed: {type(cause or err).__name__}: "
                           f"{lines[-1] if lines else ''}") from err
    except ray.exceptions.RayError as err:  # its worker died (the head's memory, a killed process)
        lines = str(err).strip().splitlines()
        raise SweeperError(f"the driver on the cluster was lost: {type(err).__name__}: {lines[0] if lines else ''}; "
                           "continue with `sweeper resume`") from err


def _drive(job: DriverJob, events: Any) -> None:
    """The driver, run on the head node: validate, create or open the study, launch the sweep.

    Sends :data:`StreamEvent` s through ``events`` (a Ray queue) as the sweep goes; raises what
    :func:`sweeper.engine.launch.launch` raises.
    """
    from sweeper.engine.launch import launch
    from sweeper.engine.ray_runtime import quiet_logs
    from sweeper.spec import validate
    from sweeper.study.studies import continues_study, stored_spec
    from sweeper.views.progress import SweepStart, rendered

    quiet_logs()
    if job.raw is not None:
        sweep: Sweep = validate(job.raw)
        resume = continues_study(sweep, job.resume)
    else:
        assert job.study is not None and job.storage is not None
        sweep, resume = validate(stored_spec(job.storage, job.study)), True
    for line in sweep.warnings:
        events.put(Warned(line))
    done = threading.Event()

    def on_start(searcher: StudySearcher, concurrency: int) -> None:
        events.put(Started(sweep, SweepStart.of(searcher.study, concurrency)))

        def tell_running() -> None:
            while not done.wait(RUNNING_EVERY_S):
                with contextlib.suppress(Exception):  # a full or gone queue only costs the display
                    events.put(Running(len(searcher.running)), timeout=RUNNING_EVERY_S)

        threading.Thread(target=tell_running, name="sweeper-running", daemon=True).start()

    try:
        launch(sweep, lambda event: events.put(Shown(rendered(event))), resume=resume, on_start=on_start,
               on_end=events.put)
    except KeyboardInterrupt:
        # Only Ray Tune's own SIGINT handler ends a sweep so, and none reaches a task: say it as a stop.
        raise SweeperError("the sweep stopped early: it was interrupted on the cluster") from None
    finally:
        done.set()
