"""Where studies live: storage URLs, opening them, and the study's stored metadata.

SQLite (the default, a file beside the user) and PostgreSQL through Optuna's ``RDBStorage``.
The study is the one source of truth: the validated spec and the code version are stored
as study user attributes, so a study can be resumed, reported and exported without the
YAML file.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import functools
import hashlib
import logging
import os
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna
from sqlalchemy import event
from sqlalchemy.engine import Engine, make_url

import sweeper
from sweeper.errors import InputError, Problem

if TYPE_CHECKING:
    from optuna.trial import FrozenTrial

log = logging.getLogger(__name__)

STUDY_SPEC_ATTR = "sweeper_spec"
STUDY_VERSION_ATTR = "sweeper_version"
STUDY_CODE_ATTR = "code_version"
STUDY_CREATED_ATTR = "created_at"


def redact(url: str) -> str:
    """``url`` with its password replaced by ``***`` (safe to print or store)."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "<unparsable storage URL>"


def _sqlite_path(url: str) -> Path | None:
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or not parsed.database:
        return None
    return Path(parsed.database)


def open_storage(url: str, pool_size: int = 4) -> optuna.storages.RDBStorage:
    """An Optuna RDB storage on ``url``; creates the SQLite file or the tables if needed.

    PostgreSQL connections are checked before use (``pool_pre_ping``), pooled for
    ``pool_size`` concurrent trials (the driver's writers plus a few readers), and every
    storage call that hits a dropped connection or a restarting server is retried with
    exponential backoff for up to :data:`RETRY_FOR_S` seconds (:class:`RetryingRDBStorage`).

    Raises:
        InputError: the database does not answer (the message names host and port, never
            the password), within about 5 seconds.
    """
    from sqlalchemy.exc import OperationalError

    parsed = make_url(url)
    engine_kwargs: dict[str, Any] = {"pool_pre_ping": True}
    if parsed.get_backend_name() == "postgresql":
        engine_kwargs.update(connect_args={"connect_timeout": 5, "application_name": "sweeper"},
                             pool_size=pool_size + 2, max_overflow=pool_size)
    else:
        # The driver is the only writer; a generous timeout covers readers (dashboard).
        engine_kwargs["connect_args"] = {"timeout": 30}
    try:
        storage = RetryingRDBStorage(url, engine_kwargs=engine_kwargs)
    except OperationalError as err:
        where = f"{parsed.host or 'localhost'}:{parsed.port or 5432}" if parsed.host is not None else redact(url)
        reason = str(err.orig).strip().splitlines()[0] if err.orig else "connection failed"
        raise InputError(Problem("storage", redact(url), f"does not answer at {where}: {reason}")) from None
    if parsed.get_backend_name() == "sqlite":
        _use_wal(storage.engine)
    return storage


RETRY_FOR_S = 120.0


def _retrying(method: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(method)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        delay, deadline = 0.25, time.monotonic() + RETRY_FOR_S
        retried = False
        while True:
            try:
                return method(self, *args, **kwargs)
            except optuna.exceptions.UpdateFinishedTrialError:
                if retried:  # the attempt whose connection dropped had committed the trial's end
                    return True
                raise
            except Exception as err:
                # Optuna wraps errors raised at commit in StorageInternalError: look down the chain.
                cause = _transient_cause(err)
                if cause is None or time.monotonic() + delay > deadline:
                    raise
                log.warning("storage: %s; retrying in %.1f s", cause, delay)
                retried = True
                time.sleep(delay)
                delay = min(delay * 2, 10.0)

    return wrapper


def _transient_cause(err: BaseException) -> str | None:
    """The first line of a transient database error in ``err``'s chain, else ``None``."""
    from sqlalchemy.exc import DBAPIError, PendingRollbackError

    seen: BaseException | None = err
    for _ in range(10):
        if seen is None:
            return None
        if isinstance(seen, DBAPIError) and (
            seen.connection_invalidated or type(seen.orig).__name__ in _TRANSIENT
        ):
            return str(seen.orig).strip().splitlines()[0] if str(seen.orig).strip() else type(seen.orig).__name__
        if isinstance(seen, PendingRollbackError):
            # A statement failed earlier in the same session (Optuna caught it and went on):
            # the connection is gone, and a fresh session succeeds.
            return "the session's connection was lost"
        seen = seen.__cause__ or seen.__context__
    return None


# psycopg / sqlite3 exception class names that mean "try again": the server went away or is
# restarting, or another connection holds the SQLite write lock.
_TRANSIENT = {"OperationalError", "InterfaceError", "AdminShutdown", "CannotConnectNow", "ConnectionTimeout"}


class RetryingRDBStorage(optuna.storages.RDBStorage):
    """Optuna's ``RDBStorage`` whose calls survive a dropped connection or a server restart.

    Each public storage method is retried on transient database errors with exponential
    backoff (0.25 s doubling to 10 s, for up to ``RETRY_FOR_S``). Pooled connections that
    died are replaced before use (``pool_pre_ping``). A retried write that had in fact been
    committed is harmless for every method but ``create_new_trial``, which may then leave one
    extra RUNNING trial that no driver owns: the next look for dead drivers' trials marks it FAIL.
    """


for _name in (
    "create_new_study", "delete_study", "set_study_user_attr", "set_study_system_attr", "get_study_id_from_name",
    "get_study_name_from_id", "get_study_directions", "get_study_user_attrs", "get_study_system_attrs",
    "get_all_studies", "create_new_trial", "set_trial_param", "get_trial_id_from_study_id_trial_number",
    "set_trial_state_values", "set_trial_intermediate_value", "set_trial_user_attr", "set_trial_system_attr",
    "get_trial", "get_all_trials", "get_n_trials", "get_best_trial", "get_trial_param",
    # What Optuna's _CachedStorage calls directly on its backend:
    "_get_trials", "_create_new_trial", "_set_trial_param", "_get_best_trial_id",
):
    setattr(RetryingRDBStorage, _name, _retrying(getattr(optuna.storages.RDBStorage, _name)))


def _use_wal(engine: Engine) -> None:
    """SQLite in write-ahead-log mode: readers (a dashboard, a report) never block the sweep's
    one writer, and commits need no fsync of the main file (``synchronous=NORMAL`` stays
    durable across application crashes; see sqlite.org/wal.html)."""

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    engine.dispose()  # connections opened while Optuna created its tables get the pragmas too


def study_names(url: str) -> list[str]:
    """Names of the studies in the storage; empty, and nothing created, for a missing SQLite file."""
    path = _sqlite_path(url)
    if path is not None and not path.exists():
        return []
    import optuna

    return optuna.study.get_all_study_names(storage=open_storage(url))


def ensure_new_study(name: str, url: str) -> None:
    """Refuse to create a study that exists: ``launch`` never overwrites or silently extends one.

    Raises:
        InputError: the study exists; the message names ``sweeper resume``.
    """
    if name in study_names(url):
        raise InputError(
            f"study: {name!r} already exists in {redact(url)}; continue it with "
            f"`sweeper resume {name}` or choose another name with --study"
        )


def stored_spec(url: str, name: str) -> dict[str, Any]:
    """The spec stored with study ``name`` (as :meth:`sweeper.spec.Sweep.stored` wrote it),
    with ``storage`` set back to ``url`` (the stored one has its password redacted).

    Raises:
        InputError: no such study, or it was not created by sweeper.
    """
    if name not in study_names(url):
        raise InputError(f"study: {name!r} does not exist in {redact(url)}; "
                         f"studies there: {', '.join(study_names(url)) or 'none'}")
    storage = open_storage(url)
    attrs = storage.get_study_user_attrs(storage.get_study_id_from_name(name))
    spec = attrs.get(STUDY_SPEC_ATTR)
    if not isinstance(spec, dict):
        raise InputError(f"study: {name!r} in {redact(url)} was not created by sweeper (it has no stored spec)")
    return {**spec, "storage": url}


def code_version() -> str:
    """sweeper's version, plus the git commit of the working directory's checkout when there is one."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5, check=False
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return f"sweeper {sweeper.__version__}" + (f" (git {commit})" if commit else "")


def record_study_metadata(study: optuna.Study, spec: dict[str, Any]) -> None:
    """Store the validated spec (storage password redacted), versions and creation time with the study."""
    study.set_user_attr(STUDY_SPEC_ATTR, {**spec, "storage": redact(str(spec.get("storage", "")))})
    study.set_user_attr(STUDY_VERSION_ATTR, sweeper.__version__)
    study.set_user_attr(STUDY_CODE_ATTR, code_version())
    study.set_user_attr(STUDY_CREATED_ATTR, dt.datetime.now(dt.UTC).isoformat(timespec="seconds"))


# --- driver leases -----------------------------------------------------------------------
#
# Optuna's heartbeat covers study.optimize only, not ask/tell, so a killed driver would leave
# its trials RUNNING forever. Each sweeper driver holds a lease on its study (a study user
# attribute renewed while it runs); every trial it asks carries its driver id. A trial is a
# zombie when it is RUNNING and its driver's lease is dead: on this host, the driver process
# is gone; elsewhere, the lease was not renewed for LEASE_TTL_S.

LEASE_PREFIX = "lease:"
DRIVER_ATTR = "driver_id"
LEASE_RENEW_S = 10.0
LEASE_TTL_S = 60.0


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
        """Whether the driver still runs (see the section comment)."""
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
    _write_lease(study, lease)
    return lease


def renew_lease(study: optuna.Study, lease: Lease, *, released: bool = False) -> Lease:
    """Write a fresh heartbeat (or the release) of ``lease``."""
    renewed = dataclasses.replace(lease, heartbeat=time.time(), released=released)
    _write_lease(study, renewed)
    return renewed


def _write_lease(study: optuna.Study, lease: Lease) -> None:
    study.set_user_attr(LEASE_PREFIX + lease.driver_id, dataclasses.asdict(lease))


def leases(study: optuna.Study) -> dict[str, Lease]:
    """Every driver lease recorded on the study, by driver id."""
    return {
        key[len(LEASE_PREFIX):]: Lease(**value)
        for key, value in study.user_attrs.items()
        if key.startswith(LEASE_PREFIX) and isinstance(value, dict)
    }


def zombie_trials(study: optuna.Study, trials: list[FrozenTrial] | None = None) -> list[FrozenTrial]:
    """RUNNING trials whose driver is gone (or unknown): nobody will ever tell how they end."""
    from optuna.trial import TrialState

    live = {driver for driver, lease in leases(study).items() if lease.alive()}
    trials = trials if trials is not None else study.get_trials(deepcopy=False)
    return [t for t in trials if t.state == TrialState.RUNNING and t.user_attrs.get(DRIVER_ATTR) not in live]


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
        conn = _retrying(lambda _self: _advisory_lock(storage, key))(None)
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

    path = _sqlite_path(url)
    assert path is not None
    with open(f"{path}.lock", "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
