"""Where studies live: storage URLs, opening them, and the study's stored metadata.

SQLite (the default, a file beside the user) and PostgreSQL through Optuna's ``RDBStorage``.
The study is the one source of truth: the validated spec and the code version are stored
as study user attributes, so a study can be resumed, reported and exported without the
YAML file.
"""

from __future__ import annotations

import datetime as dt
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import event
from sqlalchemy.engine import Engine, make_url

import sweeper
from sweeper.errors import InputError, Problem

if TYPE_CHECKING:
    import optuna

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


def open_storage(url: str) -> optuna.storages.RDBStorage:
    """An Optuna RDB storage on ``url``; creates the SQLite file or the tables if needed.

    Raises:
        InputError: the database does not answer (the message names host and port, never
            the password).
    """
    import optuna
    from sqlalchemy.exc import OperationalError

    engine_kwargs: dict[str, Any] = {"pool_pre_ping": True}
    if make_url(url).get_backend_name() == "postgresql":
        engine_kwargs["connect_args"] = {"connect_timeout": 5}
    else:
        # The driver is the only writer; a generous timeout covers readers (dashboard).
        engine_kwargs["connect_args"] = {"timeout": 30}
    try:
        storage = optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs, skip_compatibility_check=False)
    except OperationalError as err:
        parsed = make_url(url)
        where = f"{parsed.host or 'localhost'}:{parsed.port or 5432}" if parsed.host is not None else redact(url)
        raise InputError(Problem("storage", redact(url), f"does not answer at {where}: "
                                 f"{str(err.orig).splitlines()[0] if err.orig else 'connection failed'}")) from None
    if make_url(url).get_backend_name() == "sqlite":
        _use_wal(storage.engine)
    return storage


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
