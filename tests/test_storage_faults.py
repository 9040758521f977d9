"""Storage faults told apart, with real faults: a disk that fills (a file-size limit on the driver,
so SQLite's own write fails) and a PostgreSQL server of the test's own (``initdb`` + ``pg_ctl`` on
a free port) stopped and restarted under a sweep. A fault that waiting cures is retried; one that
it does not is one line at once, and the study resumes to its exact budget afterwards."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from sweeper.study import coordination, storage
from tests.conftest import POSTGRES_ENV, postgres_url

REPO = Path(__file__).resolve().parents[1]
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


def test_a_drivers_lease_outlasts_any_retry() -> None:
    """A driver waiting out a storage fault is never taken for a dead one (its live trials reaped)."""
    assert coordination.LEASE_TTL_S > storage.RETRY_FOR_S + coordination.LEASE_RENEW_S


def test_faults_are_told_apart_by_the_databases_own_code(tmp_path: Path) -> None:
    """Real SQLite errors, classified by their result code: a lock is retried, a read-only
    database is not, a missing table is neither (raised as it is)."""
    import sqlite3

    from sqlalchemy import create_engine, text
    from sqlalchemy.exc import OperationalError

    path = tmp_path / "f.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE t (x)")
    read_only = create_engine(f"sqlite:///file:{path}?mode=ro&uri=true")
    with pytest.raises(OperationalError) as err, read_only.begin() as conn:
        conn.execute(text("INSERT INTO t VALUES (1)"))
    assert storage.fault(err.value) == ("unwritable", "the database is read-only (attempt to write a readonly "
                                                      "database)")
    with pytest.raises(OperationalError) as err, read_only.begin() as conn:
        conn.execute(text("SELECT * FROM missing"))
    assert storage.fault(err.value) == ("other", "no such table: missing")
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    busy = create_engine(f"sqlite:///{path}", connect_args={"timeout": 0.1})
    with pytest.raises(OperationalError) as err, busy.begin() as conn:
        conn.execute(text("INSERT INTO t VALUES (1)"))
    holder.execute("ROLLBACK")
    assert storage.fault(err.value) == ("transient", "database is locked")


_FILL = """
import resource, signal, sys, time
from pathlib import Path
import optuna
from sweeper.study.storage import StorageUnwritable, open_storage

db = Path(sys.argv[1])
study = optuna.create_study(study_name="full", storage=open_storage(f"sqlite:///{db}"), direction="maximize")
for i in range(3):
    study.tell(study.ask(), float(i))
limit = max(p.stat().st_size for p in db.parent.iterdir()) + 100_000
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails (EFBIG), as on a full disk
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
started = time.monotonic()
try:
    for i in range(100_000):
        trial = study.ask()
        trial.set_user_attr("history", "x" * 5000)
        study.tell(trial, float(i))
except StorageUnwritable as err:
    print(f"{time.monotonic() - started:.1f}")
    print(err)
"""


def test_a_full_disk_is_one_line_at_once_and_the_study_stays_readable(tmp_path: Path) -> None:
    """The driver's writes hit a file-size limit (SQLite: a failed write, as on a full disk): the
    first write that fails is one line naming the cause and the way on, within seconds, not
    after the retry window; what was written before is intact."""
    db = tmp_path / "s.db"
    (tmp_path / "fill.py").write_text(_FILL)
    done = subprocess.run([sys.executable, "fill.py", str(db)], cwd=tmp_path, capture_output=True, text=True,
                          timeout=120, env={**os.environ, "PYTHONPATH": str(REPO)})
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 2, done.stdout + done.stderr
    assert float(lines[0]) < storage.RETRY_FOR_S / 3  # told at once, never retried
    assert lines[1].startswith("storage: the disk ") and "continue with `sweeper resume`" in lines[1]
    study = optuna.load_study(study_name="full", storage=f"sqlite:///{db}")
    told = [t for t in study.get_trials() if t.state == TrialState.COMPLETE]
    assert len(told) >= 3 and [t.value for t in told[:3]] == [0.0, 1.0, 2.0]


# --- a PostgreSQL server of the test's own ---------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """A throwaway PostgreSQL server: ``initdb`` in a temporary folder, ``pg_ctl`` on a free port,
    run as the ``postgres`` user when the tests run as root (``initdb`` refuses root)."""

    def __init__(self, folder: Path):
        self.data, self.port = folder / "pgdata", _free_port()
        self.prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        folder.mkdir(parents=True, exist_ok=True)
        if self.prefix:
            shutil.chown(folder, "postgres")
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync")

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str) -> None:
        subprocess.run([*self.prefix, *args], check=True, capture_output=True, timeout=120, cwd="/")

    def start(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-o", f"-p {self.port} -k /tmp -c listen_addresses=127.0.0.1",
                  "-l", str(self.data / "server.log"), "-w", "start")

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")


@pytest.fixture
def server() -> Iterator[Server]:
    if shutil.which("initdb") is None or shutil.which("pg_ctl") is None:
        if postgres_url() is not None:
            pytest.fail(f"{POSTGRES_ENV} is set but initdb/pg_ctl are not on PATH")
        pytest.skip("initdb and pg_ctl are not installed")
    # Not under pytest's tmp_path: its folders are private to root, and the server runs as postgres.
    folder = Path(tempfile.mkdtemp(prefix="sweeper-pg-"))
    folder.chmod(0o755)
    try:
        pg = Server(folder / "pg")
        pg.start()
        try:
            yield pg
        finally:
            with contextlib.suppress(subprocess.CalledProcessError):  # stopped already
                pg.stop()
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.postgres
def test_a_postgres_restart_is_waited_out_and_a_longer_outage_is_one_error(server: Server) -> None:
    """The server stops under a driver's storage: a call made while it is down waits for it to come
    back (a restart of a few seconds costs nothing but the wait); a server that stays down past
    the retry window ends in the driver's error, not a hang."""
    import threading

    store = storage.open_storage(server.url)
    study = optuna.create_study(study_name="restart", storage=store, direction="maximize")
    study.tell(study.ask(), 1.0)
    server.stop()
    threading.Timer(3.0, server.start).start()  # back within seconds, as a restart is
    started = time.monotonic()
    study.tell(study.ask(), 2.0)  # issued while the server is down
    assert 2.0 < time.monotonic() - started < storage.RETRY_FOR_S
    assert [t.value for t in study.get_trials()] == [1.0, 2.0]
    server.stop()
    original = storage.RETRY_FOR_S
    try:
        storage.RETRY_FOR_S = 4.0  # the window, shortened for the test
        started = time.monotonic()
        with pytest.raises(storage.StorageUnavailable, match=r"for 4 s; the study is left as it was"):
            study.tell(study.ask(), 3.0)
        assert time.monotonic() - started < 20
    finally:
        storage.RETRY_FOR_S = original


_SWEEP = """
import sys
from sweeper.errors import SweeperError
from sweeper.engine.launch import run_sweep
from sweeper.spec import validate

spec = {"name": sys.argv[3], "method": "random", "trainer": "tests.fake_trainers:CURVE", "epochs": 3, "run_cap": 10,
        "max_concurrent_trials": 2, "storage": sys.argv[1], "artifacts": sys.argv[2], "seed": 1,
        "parameters": {"lr": {"min": 0.001, "max": 0.05}, "sleep_s": {"value": 0.4}}}
resume = len(sys.argv) > 4
try:
    outcome = run_sweep(validate(spec), resume=resume)
    print("FINISHED", outcome.finished)
except SweeperError as err:
    print("ERROR", str(err).splitlines()[0])
"""


@pytest.mark.slow
@pytest.mark.postgres
def test_a_sweep_survives_a_server_restart_and_resumes_after_an_outage(server: Server, tmp_path: Path) -> None:
    """A sweep on the test's own PostgreSQL: the server restarts mid-sweep (down 3 s) and the sweep
    finishes its budget; then a sweep whose server stays down past the retry window stops with an
    error, and its resume finishes the exact budget with no finished trial lost or run twice."""
    script = tmp_path / "sweep.py"
    script.write_text(textwrap.dedent(_SWEEP))
    env = {**os.environ, "PYTHONPATH": str(REPO)}

    def launch(name: str, *extra: str) -> subprocess.Popen[str]:
        return subprocess.Popen([sys.executable, str(script), server.url, str(tmp_path / "art"), name, *extra],
                                cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def finished(name: str) -> list[optuna.trial.FrozenTrial]:
        study = optuna.load_study(study_name=name, storage=server.url)
        return [t for t in study.get_trials() if t.state in FINISHED]

    def wait_for(name: str, count: int) -> None:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and len(_safe(lambda: finished(name))) < count:
            time.sleep(0.5)

    proc = launch("restart")
    wait_for("restart", 3)
    server.stop()
    time.sleep(3.0)
    server.start()
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0 and "FINISHED 10" in out, out[-3000:]
    done = finished("restart")
    assert len(done) == 10 and len({t.params["lr"] for t in done}) == 10

    proc = launch("outage")
    wait_for("outage", 3)
    server.stop()  # down past the retry window
    out, _ = proc.communicate(timeout=storage.RETRY_FOR_S + 120)
    server.start()
    assert "ERROR storage: " in out and "continue with `sweeper resume`" in out, out[-3000:]
    before = {t.number: t.params for t in finished("outage")}
    assert len(before) >= 3
    out, _ = launch("outage", "resume").communicate(timeout=300)
    assert "FINISHED 10" in out, out[-3000:]
    done = finished("outage")
    assert len(done) == 10  # the exact budget
    assert all(any(t.number == n and t.params == p for t in done) for n, p in before.items())  # none lost
    assert len({t.params["lr"] for t in done}) == 10  # none run twice


def _safe(read: Callable[[], list[optuna.trial.FrozenTrial]]) -> list[optuna.trial.FrozenTrial]:
    """``read()`` while the sweep creates its study (nothing yet: empty)."""
    try:
        return read()
    except Exception:
        return []
