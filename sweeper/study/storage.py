"""Where studies live: storage URLs, opening them, retries of dropped connections, SQLite's WAL.

SQLite (the default, a file beside the user) and PostgreSQL through Optuna's ``RDBStorage``.
What is stored in a study is :mod:`sweeper.study.record`'s business; coordinating the drivers that
share one (leases, the study lock) is :mod:`sweeper.study.coordination`'s.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Container, Mapping
from pathlib import Path
from typing import Any, Literal

import optuna
from optuna.trial import FrozenTrial, TrialState
from sqlalchemy import event
from sqlalchemy.engine import URL, Engine, make_url

from sweeper.errors import InputError, Problem, SweeperError

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


# libpq's connection parameters for PostgreSQL (postgresql.org/docs/current/libpq-connect.html):
# give up connecting after 5 s; TCP keepalives, so a connection to a server that vanished without
# closing it (a network cut, a killed VM) fails within about a minute instead of hanging; and
# lock_timeout, so no statement (the study's advisory lock included) waits on a lock for more
# than 30 s: it fails with SQLSTATE 55P03, which is retried (fault()).
PG_CONNECT_ARGS: dict[str, Any] = {
    "connect_timeout": 5, "application_name": "sweeper", "keepalives": 1, "keepalives_idle": 30,
    "keepalives_interval": 10, "keepalives_count": 3, "options": "-c lock_timeout=30000",
}


def open_storage(url: str, pool_size: int = 4, *, read_only: bool = False) -> optuna.storages.RDBStorage:
    """An Optuna RDB storage on ``url``; creates the SQLite file or the tables if needed, unless
    ``read_only``: then an SQLite file is opened read-only (nothing is created or written, and a
    file in a read-only folder can be read) and must already hold a study database.

    PostgreSQL connections are checked before use (``pool_pre_ping``), kept alive and bounded in
    their lock waits (:data:`PG_CONNECT_ARGS`), pooled for
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
        engine_kwargs.update(connect_args=PG_CONNECT_ARGS, pool_size=pool_size + 2, max_overflow=pool_size)
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


# How long a storage call is retried through a dropped connection or a restarting server. It stays
# shorter than a driver's lease (sweeper.study.coordination.LEASE_TTL_S, checked there): a driver that is
# waiting out a fault is never taken for dead by another driver, which would reap its live trials.
RETRY_FOR_S = 45.0


class StorageFault(SweeperError):
    """The study's database cannot be used now; what it holds is left as it was, and the sweep
    resumes (``sweeper resume``) once the cause is fixed. One line, naming the cause."""


class StorageUnwritable(StorageFault):
    """The database refuses writes in a way that waiting does not cure: the disk is full, the file
    or the server is read-only, or the disk failed a write. Raised at once, never retried."""


class StorageUnavailable(StorageFault):
    """The database did not answer (a dropped connection, a server down or restarting) for the
    whole retry window, :data:`RETRY_FOR_S` seconds."""


def retrying(method: Callable[..., Any]) -> Callable[..., Any]:
    """``method`` retried on transient database errors with exponential backoff (0.25 s doubling
    to 10 s, for up to :data:`RETRY_FOR_S` seconds, then :class:`StorageUnavailable`); a write that
    cannot succeed (:func:`fault` says ``unwritable``) raises :class:`StorageUnwritable` at once;
    other errors are raised at once, as they are."""

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
                kind, cause = fault(err)
                if kind == "unwritable":
                    raise StorageUnwritable(f"storage: {cause}; nothing more was written and the study is left "
                                            "as it was: fix that, then continue with `sweeper resume`") from None
                if kind != "transient":
                    raise
                if time.monotonic() + delay > deadline:
                    raise StorageUnavailable(f"storage: {cause}, for {RETRY_FOR_S:.0f} s; the study is left as it "
                                             "was: once the database answers, continue with `sweeper resume`") from err
                log.warning("storage: %s; retrying in %.1f s", cause, delay)
                retried = True
                time.sleep(delay)
                delay = min(delay * 2, 10.0)

    return wrapper


Fault = Literal["transient", "unwritable", "other"]


def fault(err: BaseException) -> tuple[Fault, str]:
    """What a database error in ``err``'s chain means for a caller, and its first line.

    By the database's own code, not the driver's exception class (in SQLite one class,
    ``OperationalError``, covers a busy lock and a full disk alike):

    - ``transient`` (retry): a connection that dropped or was invalidated; SQLite's ``SQLITE_BUSY``
      and ``SQLITE_LOCKED``; PostgreSQL's SQLSTATE class 08 (connection exception), 57P01-57P03
      (the server shutting down or starting), 40001/40P01 (serialisation failure, deadlock),
      55P03 (a lock not granted within ``lock_timeout``) and 53300 (too many connections); a
      session left in a failed transaction by an earlier statement;
    - ``unwritable`` (stop at once): SQLite's ``SQLITE_FULL``, ``SQLITE_READONLY`` and
      ``SQLITE_IOERR``; PostgreSQL's 53100 (disk full) and 25006 (a read-only transaction);
    - ``other``: anything else (a missing table, a bug), raised as it is.

    Sources: sqlite.org/rescode.html (primary result codes), PostgreSQL's "Appendix A. Error Codes".
    """
    from sqlalchemy.exc import DBAPIError, PendingRollbackError

    seen: BaseException | None = err
    for _ in range(10):
        if seen is None:
            break
        if isinstance(seen, PendingRollbackError):
            # A statement failed earlier in the same session (Optuna caught it and went on):
            # the connection is gone, and a fresh session succeeds.
            return "transient", "the session's connection was lost"
        if isinstance(seen, DBAPIError):
            orig = seen.orig
            line = (str(orig).strip().splitlines() or [type(orig).__name__])[0]
            code = getattr(orig, "sqlite_errorcode", None)
            state = getattr(orig, "sqlstate", None)
            if code is not None:
                primary = int(code) & 0xFF
                if primary in _SQLITE_UNWRITABLE:
                    return "unwritable", f"{_SQLITE_UNWRITABLE[primary]} ({line})"
                return ("transient" if primary in _SQLITE_TRANSIENT else "other"), line
            if state is not None:
                if state in _PG_UNWRITABLE:
                    return "unwritable", f"{_PG_UNWRITABLE[state]} ({line})"
                transient = state[:2] == "08" or state in _PG_TRANSIENT
                return ("transient" if transient else "other"), line
            if seen.connection_invalidated or type(orig).__name__ in _NO_CODE_TRANSIENT:
                return "transient", line  # the connection failed before the server said anything
            return "other", line
        seen = seen.__cause__ or seen.__context__
    return "other", (str(err).strip().splitlines() or [type(err).__name__])[0]


# SQLite's primary result codes (sqlite.org/rescode.html).
_SQLITE_TRANSIENT = {5, 6}  # SQLITE_BUSY, SQLITE_LOCKED: another connection holds the lock
_SQLITE_UNWRITABLE = {13: "the disk is full", 8: "the database is read-only", 10: "the disk failed a write"}
# PostgreSQL's SQLSTATEs (Appendix A); class 08 (connection exception) is transient as a whole.
_PG_TRANSIENT = {"57P01", "57P02", "57P03", "40001", "40P01", "55P03", "53300"}
_PG_UNWRITABLE = {"53100": "the server's disk is full", "25006": "the server is read-only"}
# Driver errors with neither code: the connection could not be made or was lost on the way.
_NO_CODE_TRANSIENT = {"OperationalError", "InterfaceError"}


class RetryingRDBStorage(optuna.storages.RDBStorage):
    """Optuna's ``RDBStorage`` whose calls survive a dropped connection or a server restart.

    Each public storage method is retried on transient database errors with exponential
    backoff (0.25 s doubling to 10 s, for up to ``RETRY_FOR_S``). Pooled connections that
    died are replaced before use (``pool_pre_ping``). A retried write that had in fact been
    committed is harmless for every method but ``create_new_trial``, which may then leave one
    extra RUNNING trial that no driver owns: the next look for dead drivers' trials marks it FAIL.
    """

    @retrying
    def set_trial_user_attrs(self, trial_id: int, attrs: Mapping[str, Any]) -> None:
        """Several user attributes of one running trial in one transaction of three statements;
        Optuna's ``set_trial_user_attr`` takes a transaction of three per attribute (about 1 ms
        apiece in SQLite, ten per trial). Stored as there (JSON in Optuna's own table).

        Raises:
            optuna.exceptions.UpdateFinishedTrialError: the trial has finished (as Optuna's).
        """
        import json

        from optuna.storages._rdb import models
        from optuna.storages._rdb.storage import _create_scoped_session
        from sqlalchemy import delete, insert

        table = models.TrialUserAttributeModel
        with _create_scoped_session(self.scoped_session) as session:
            self.check_trial_is_updatable(trial_id, models.TrialModel.find_or_raise_by_id(trial_id, session).state)
            session.execute(delete(table).where(table.trial_id == trial_id, table.key.in_(list(attrs))))
            session.execute(insert(table), [{"trial_id": trial_id, "key": key, "value_json": json.dumps(value)}
                                            for key, value in attrs.items()])

    @retrying
    def _get_trials(self, study_id: int, states: Container[TrialState] | None, included_trial_ids: set[int],
                    trial_id_greater_than: int) -> list[FrozenTrial]:
        """Optuna's incremental read (what its trial cache and :func:`trials_since` call): the
        study's trials whose ids are above ``trial_id_greater_than`` or in ``included_trial_ids``,
        by id. Optuna selects them with ``id IN (...) OR id > n``, which SQLite answers by reading
        every trial id of the study (its plan: ``SEARCH trials USING COVERING INDEX
        ix_trials_study_id (study_id=?)``), twice per ask. In SQLite the ids above ``n`` are found
        first through the index (a range), then the trials are read by id, Optuna's way: a cost
        of the trials returned. Large reads, and PostgreSQL (which plans the ``OR`` as two index
        scans), take Optuna's query."""
        included = {i for i in included_trial_ids if i <= trial_id_greater_than}
        if self.engine.name != "sqlite" or not included or trial_id_greater_than < 0:
            return super()._get_trials(study_id, states, included_trial_ids, trial_id_greater_than)
        from optuna.storages._rdb import models
        from optuna.storages._rdb.storage import _create_scoped_session
        from sqlalchemy import select
        from sqlalchemy.orm import selectinload

        trial = models.TrialModel
        with _create_scoped_session(self.scoped_session) as session:
            models.StudyModel.find_or_raise_by_id(study_id, session)  # KeyError for a study gone, as Optuna's
            newer = session.scalars(select(trial.trial_id).where(
                trial.study_id == study_id, trial.trial_id > trial_id_greater_than).limit(_READ_BY_ID + 1)).all()
            if len(newer) <= _READ_BY_ID:
                query = session.query(trial).options(*(selectinload(getattr(trial, name)) for name in (
                    "params", "values", "user_attributes", "system_attributes", "intermediate_values")))
                query = query.filter(trial.study_id == study_id, trial.trial_id.in_(sorted(included | set(newer))))
                if states is not None:
                    query = query.filter(trial.state.in_(list(states)))  # type: ignore[call-overload]
                return [self._build_frozen_trial_from_trial_model(t) for t in query.order_by(trial.trial_id).all()]
        return super()._get_trials(study_id, states, included_trial_ids, trial_id_greater_than)


# Trials read by id at most (RetryingRDBStorage._get_trials); a larger read takes Optuna's query.
_READ_BY_ID = 500


for _name in (
    "create_new_study", "delete_study", "set_study_user_attr", "set_study_system_attr", "get_study_id_from_name",
    "get_study_name_from_id", "get_study_directions", "get_study_user_attrs", "get_study_system_attrs",
    "get_all_studies", "create_new_trial", "set_trial_param", "get_trial_id_from_study_id_trial_number",
    "set_trial_state_values", "set_trial_intermediate_value", "set_trial_user_attr", "set_trial_system_attr",
    "get_trial", "get_all_trials", "get_n_trials", "get_best_trial", "get_trial_param",
    # What Optuna's _CachedStorage calls directly on its backend:
    "_create_new_trial", "_set_trial_param", "_get_best_trial_id",
):
    setattr(RetryingRDBStorage, _name, retrying(getattr(optuna.storages.RDBStorage, _name)))


def trials_since(storage: optuna.storages.RDBStorage, study_id: int, open_ids: set[int],
                 after_id: int) -> list[FrozenTrial]:
    """The study's trials whose storage ids are above ``after_id`` or in ``open_ids``, by id:
    Optuna's own incremental read (``RDBStorage._get_trials``, which its trial cache
    ``optuna.storages._CachedStorage`` calls with its highest finished id; retried here by
    :class:`RetryingRDBStorage`, which reads it through indexes). Its cost is that of the trials
    returned, not of the study."""
    return storage._get_trials(study_id, None, open_ids, after_id)


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
