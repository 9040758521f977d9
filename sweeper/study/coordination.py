"""Coordinating the drivers of one study: driver leases, zombie trials, and the study lock.

A driver (a ``sweeper launch`` or ``resume`` process) holds a lease on its study: a study user
attribute renewed every :data:`LEASE_RENEW_S` seconds, and every trial it asks carries its
driver id. A trial is a zombie when it is RUNNING and its driver's lease is dead: on this
host, the driver process is gone (checked at once, by pid and process start time); elsewhere,
the lease was not renewed for :data:`LEASE_TTL_S` seconds. Drivers count the study's trials and
ask a new one under :func:`study_lock`, so several drivers share one budget and one grid.

Why not Optuna's own heartbeat (``RDBStorage(heartbeat_interval=..., grace_period=...)`` with
``optuna.storages.fail_stale_trials``): its heartbeat is written by a thread that only
``Study.optimize`` starts, one per trial (``Study.ask`` warns that heartbeats are meant for
``optimize``), and stale trials are only failed from inside ``optimize``. sweeper asks and tells
through Ray Tune, so it would have to write every running trial's heartbeat itself, which is
what one lease per driver already does with one write. Optuna's has no equivalent for what
the lease adds: the same-host process check (a driver killed on this machine is known dead at
once, not after a grace period), the shared budget and grid (counted under the study lock),
and telling a trial whose driver was lost (``fail_kind: driver``, its parameters queued again)
from one that failed by itself. So the leases stay ours; the study's storage, its retries and
its trial states are Optuna's.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
import socket
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState
from sqlalchemy.engine import make_url

from sweeper.study import record
from sweeper.study.storage import RETRY_FOR_S, retrying, sqlite_path

LEASE_RENEW_S = 10.0
LEASE_TTL_S = 60.0
# A driver waiting out a storage fault renews its lease after at most RETRY_FOR_S more: its lease
# must outlast that, or another driver would take its live trials for a dead driver's.
if LEASE_TTL_S <= RETRY_FOR_S + LEASE_RENEW_S:
    raise RuntimeError("LEASE_TTL_S must exceed storage.RETRY_FOR_S + LEASE_RENEW_S")


@dataclass(frozen=True)
class Lease:
    """A driver's claim on a study.

    Attributes:
        driver_id: random id, also stored on every trial the driver asks.
        host: the driver's hostname.
        pid: the driver's process id on ``host``.
        pid_started: the process's start time (from /proc), so a reused pid is not mistaken
            for the driver.
        heartbeat: when the lease was last renewed (seconds since the epoch).
        released: the driver ended cleanly.
    """

    driver_id: str
    host: str
    pid: int
    pid_started: str
    heartbeat: float
    released: bool = False

    def alive(self, now: float | None = None) -> bool:
        """Whether the driver still runs (see the module docstring)."""
        if self.released:
            return False
        if self.host == socket.gethostname():
            return _process_start(self.pid) == self.pid_started
        return (now or time.time()) - self.heartbeat < LEASE_TTL_S


def _process_start(pid: int) -> str:
    """Start time of process ``pid`` in clock ticks since boot ("" when it does not exist)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        try:
            os.kill(pid, 0)
        except OSError:
            return ""
        return "unknown"  # no /proc (macOS): alive, start time unknown
    return stat.rsplit(")", 1)[1].split()[19]


def take_lease(study: optuna.Study) -> Lease:
    """Register this process as a driver of ``study``; renew with :func:`renew_lease`."""
    lease = Lease(uuid.uuid4().hex[:12], socket.gethostname(), os.getpid(), _process_start(os.getpid()), time.time())
    record.write_lease(study, lease.driver_id, dataclasses.asdict(lease))
    return lease


def renew_lease(study: optuna.Study, lease: Lease, *, released: bool = False) -> Lease:
    """Write a fresh heartbeat (or the release) of ``lease``."""
    renewed = dataclasses.replace(lease, heartbeat=time.time(), released=released)
    record.write_lease(study, renewed.driver_id, dataclasses.asdict(renewed))
    return renewed


def leases(study: optuna.Study) -> dict[str, Lease]:
    """Every driver lease recorded on the study, by driver id."""
    return {driver: Lease(**value) for driver, value in record.read_leases(study.user_attrs).items()}


def zombie_trials(study: optuna.Study, trials: list[FrozenTrial] | None = None) -> list[FrozenTrial]:
    """RUNNING trials whose driver is gone (or unknown): nobody will ever tell how they end."""
    live = {driver for driver, lease in leases(study).items() if lease.alive()}
    trials = trials if trials is not None else study.get_trials(deepcopy=False)
    return [t for t in trials if t.state == TrialState.RUNNING and record.driver_of(t) not in live]


def _advisory_lock(storage: optuna.storages.RDBStorage, key: int) -> Any:
    """A connection holding PostgreSQL's session advisory lock ``key`` (waits for it)."""
    from sqlalchemy import text

    conn = storage.engine.connect()
    try:
        conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": key})
    except BaseException:
        conn.close()
        raise
    return conn


@contextlib.contextmanager
def study_lock(storage: optuna.storages.RDBStorage, url: str, study_name: str) -> Iterator[None]:
    """Serialise the drivers of one study while one of them counts trials and asks a new one.

    PostgreSQL: a session advisory lock on the study's name (drivers on any machine), taken
    again when its connection drops (the server releases a dead session's locks, so a lock
    lost while held can let one other driver in: at worst one trial more than ``run_cap``
    runs); SQLite: an exclusive ``flock`` on ``<database>.lock`` (one machine's anyway).
    """
    backend = make_url(url).get_backend_name()
    if backend == "postgresql":
        from sqlalchemy import text
        from sqlalchemy.exc import DBAPIError

        key = int.from_bytes(hashlib.sha256(study_name.encode()).digest()[:8], "big", signed=True)
        conn = retrying(lambda _self: _advisory_lock(storage, key))(None)
        try:
            yield
        finally:
            # A lock whose connection died was released by the server with its session.
            with contextlib.suppress(DBAPIError):
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": key})
                conn.commit()
            with contextlib.suppress(DBAPIError):
                conn.close()
        return
    import fcntl

    path = sqlite_path(url)
    assert path is not None
    with open(f"{path}.lock", "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
