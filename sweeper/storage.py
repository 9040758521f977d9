"""Where studies live: storage URLs, opening them, retries of dropped connections, SQLite's WAL.

SQLite (the default, a file beside the user) and PostgreSQL through Optuna's ``RDBStorage``.
What is stored in a study is :mod:`sweeper.record`'s business; coordinating the drivers that
share one (leases, the study lock) is :mod:`sweeper.coordination`'s.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
from sqlalchemy import event
from sqlalchemy.engine import URL, Engine, make_url

from sweeper.errors import InputError, Problem

log = logging.getLogger(__name__)


def redact(url: str) -> str:
    """``url`` with its password replaced by ``***`` (safe to print or store), even when it does
    not parse: then everything between the user name and the last ``@`` is hidden."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        head, at, tail = url.rpartition("@")
        if not at:
            return url
        scheme, sep, credentials = head.rpartition("://")
        return f"{scheme}{sep}{credentials.split(':', 1)[0]}:***@{tail}"


def parse_url(url: str) -> URL:
    """The SQLAlchemy URL ``url``, parsed.

    Raises:
        InputError: it does not parse, or its port is not a number; the message shows the URL
            with its password hidden (:func:`redact`).
    """
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(url)
    except ValueError as err:  # the port: int() of what follows the host's colon
        raise InputError(Problem("storage", redact(url), f"has a port that is not a number ({err})")) from None
    except ArgumentError:
        raise InputError(Problem("storage", redact(url), "must be an SQLAlchemy URL such as sqlite:///sweeps.db "
                                 "or postgresql+psycopg://user:pass@host/db")) from None


def sqlite_path(url: str) -> Path | None:
    """The database file of an SQLite URL, ``None`` for another backend.

    Raises:
        InputError: the URL does not parse (see :func:`parse_url`).
    """
    parsed = parse_url(url)
    if parsed.get_backend_name() != "sqlite" or not parsed.database:
        return None
    return Path(parsed.database)


def unreadable(url: str, err: BaseException) -> InputError:
    """The one-line error for a database that cannot be read as a study storage (not a database,
    a truncated file, no Optuna tables, a read-only file one tried to write)."""
    cause: BaseException | None = err
    while cause is not None and getattr(cause, "orig", None) is None and cause.__cause__ is not None:
        cause = cause.__cause__
    orig = getattr(cause, "orig", None) or err
    reason = (str(orig).strip().splitlines() or [type(orig).__name__])[0]
    return InputError(Problem("storage", redact(url), f"cannot be read as a study database: {reason}"))


def open_storage(url: str, pool_size: int = 4, *, read_only: bool = False) -> optuna.storages.RDBStorage:
    """An Optuna RDB storage on ``url``; creates the SQLite file or the tables if needed, unless
    ``read_only``: then an SQLite file is opened read-only (nothing is created or written, and a
    file in a read-only folder can be read) and must already hold a study database.

    PostgreSQL connections are checked before use (``pool_pre_ping``), pooled for
    ``pool_size`` concurrent trials (the driver's writers plus a few readers), and every
    storage call that hits a dropped connection or a restarting server is retried with
    exponential backoff for up to :data:`RETRY_FOR_S` seconds (:class:`RetryingRDBStorage`).

    Raises:
        InputError: the URL does not parse; the database does not answer (the message names host
            and port, never the password), within about 5 seconds; or it is not a study database.
    """
    from sqlalchemy.exc import DatabaseError, OperationalError

    parsed = parse_url(url)
    engine_kwargs: dict[str, Any] = {"pool_pre_ping": True}
    sqlite = parsed.get_backend_name() == "sqlite"
    target = url
    if not sqlite:
        engine_kwargs.update(connect_args={"connect_timeout": 5, "application_name": "sweeper"},
                             pool_size=pool_size + 2, max_overflow=pool_size)
    else:
        # The driver is the only writer; a generous timeout covers readers (dashboard).
        engine_kwargs["connect_args"] = {"timeout": 30}
        if read_only and parsed.database:
            target = _read_only_url(Path(parsed.database).expanduser().resolve())
    try:
        storage = RetryingRDBStorage(target, engine_kwargs=engine_kwargs, skip_table_creation=read_only and sqlite)
    except OperationalError as err:
        if sqlite:
            raise unreadable(url, err) from None
        where = f"{parsed.host or 'localhost'}:{parsed.port or 5432}" if parsed.host is not None else redact(url)
        reason = str(err.orig).strip().splitlines()[0] if err.orig else "connection failed"
        raise InputError(Problem("storage", redact(url), f"does not answer at {where}: {reason}")) from None
    except (DatabaseError, optuna.exceptions.StorageInternalError) as err:
        raise unreadable(url, err) from None
    if sqlite and not read_only:
        _use_wal(storage.engine)
    return storage


def _read_only_url(path: Path) -> str:
    """SQLite's URI for reading ``path`` without writing it. In a folder one cannot write, a
    WAL database without its ``-wal`` file cannot change while it is read: it is opened immutable
    (SQLite would otherwise need to create its ``-shm`` file there)."""
    import os
    from urllib.parse import quote

    uri = f"file:{quote(str(path))}?mode=ro"
    if not os.access(path.parent, os.W_OK) and not Path(f"{path}-wal").exists():
        uri += "&immutable=1"
    return f"sqlite:///{uri}&uri=true"


RETRY_FOR_S = 120.0


def retrying(method: Callable[..., Any]) -> Callable[..., Any]:
    """``method`` retried on transient database errors with exponential backoff (0.25 s doubling
    to 10 s, for up to :data:`RETRY_FOR_S` seconds); other errors are raised at once."""

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
        ) and not any(text in str(seen.orig) for text in _PERMANENT):
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
# SQLite's OperationalErrors that waiting does not cure: a read-only file, a missing one, no tables.
_PERMANENT = ("readonly database", "unable to open database file", "no such table")


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
    setattr(RetryingRDBStorage, _name, retrying(getattr(optuna.storages.RDBStorage, _name)))


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


def study_names(url: str, *, read_only: bool = False) -> list[str]:
    """Names of the studies in the storage; empty, and nothing created, for a missing or empty
    SQLite file. ``read_only``: opened as :func:`open_storage` does, writing nothing.

    Raises:
        InputError: the URL does not parse, the database does not answer, or it is not a study database.
    """
    from sqlalchemy.exc import DatabaseError

    path = sqlite_path(url)
    if path is not None and (not path.exists() or (path.is_file() and path.stat().st_size == 0)):
        return []
    try:
        return optuna.study.get_all_study_names(storage=open_storage(url, read_only=read_only))
    except (DatabaseError, optuna.exceptions.StorageInternalError) as err:
        raise unreadable(url, err) from None
