"""Crashes and resumes with real processes and real servers.

`sweeper launch` runs as a user runs it (a subprocess with its own local Ray); the tests kill
it with SIGKILL, kill a trial's worker mid-epoch, cut its PostgreSQL connections, and run two
drivers on one study, then check the study: exact budget, no finished trial lost, every grid
point once, zombie trials marked FAIL.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.trial import FrozenTrial, TrialState
from typer.testing import CliRunner

from sweeper.cli import app
from sweeper.engine.scheduler import RecordingASHA
from sweeper.spec import validate
from sweeper.study import record
from sweeper.study.studies import create_study
from tests.conftest import POSTGRES_ENV, postgres_url, write_spec

REPO = Path(__file__).resolve().parents[1]
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)

GRID = {
    "method": "grid",
    "trainer": "tests.fake_trainers:CURVE",
    "epochs": 4,
    "max_concurrent_trials": 2,
    "scheduler": {"type": "asha", "grace_period": 1, "reduction_factor": 2},
    "parameters": {"lr": {"values": [0.002, 0.004, 0.008, 0.016, 0.03, 0.05]},
                   "sleep_s": {"values": [0.25, 0.35]}},
}


def start(args: list[str], cwd: Path, log: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """`python -m sweeper ARGS` in its own process group (its Ray too), with ``env`` added."""
    env = {**os.environ, **(env or {}), "PYTHONPATH": str(REPO)}
    with log.open("ab") as out:
        return subprocess.Popen([sys.executable, "-m", "sweeper", *args], cwd=cwd, env=env,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def kill(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL the driver, as an OOM killer or a lost machine would; then clear what its Ray left."""
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    time.sleep(0.5)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)


def trials_of(url: str, name: str) -> list[FrozenTrial]:
    """The study's trials as they are now (an empty list before the study exists)."""
    try:
        return optuna.load_study(study_name=name, storage=_polling_storage(url)).get_trials()
    except KeyError:
        return []


@functools.cache
def _polling_storage(url: str) -> optuna.storages.RDBStorage:
    # One storage per URL for the tests' polling, without a pool: a storage per poll keeps its
    # pooled connection until the garbage collector finds it, and hundreds of polls exhaust
    # PostgreSQL's max_connections (100).
    from sqlalchemy.pool import NullPool

    return optuna.storages.RDBStorage(url, engine_kwargs={"poolclass": NullPool})


def wait_until(what: Callable[[], bool], timeout_s: float, proc: subprocess.Popen[bytes] | None = None,
               log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if what():
            return
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"the driver ended (rc {proc.returncode}) too early:\n{log.read_text()[-3000:] if log else ''}")
        time.sleep(0.2)
    pytest.fail(f"timed out after {timeout_s} s:\n{log.read_text()[-3000:] if log else ''}")


def curve_spec(path: Path, name: str, url: str, *, run_cap: int, epochs: int, lrs: list[float],
               sleep_s: float) -> Path:
    """A random-search spec of the fake CURVE trainer, 2 trials at a time: each epoch sleeps ``sleep_s``;
    ``lr`` uniform between the smallest and the largest of ``lrs`` (a continuous range: no draw is a
    duplicate, so the sweep runs its whole ``run_cap``)."""
    return write_spec(path, {
        "name": name, "method": "random", "run_cap": run_cap, "trainer": "tests.fake_trainers:CURVE",
        "epochs": epochs, "storage": url, "artifacts": str(path.parent / "artifacts"), "max_concurrent_trials": 2,
        "parameters": {"lr": {"min": min(lrs), "max": max(lrs)}, "sleep_s": {"value": sleep_s}}})


def mid_sweep(url: str, name: str, complete: int) -> Callable[[], bool]:
    """True once ``complete`` trials are COMPLETE and another is RUNNING: a moment to interrupt."""
    def moment() -> bool:
        trials = trials_of(url, name)
        return (sum(t.state == TrialState.COMPLETE for t in trials) >= complete
                and any(t.state == TrialState.RUNNING for t in trials))
    return moment


def assert_finishes(proc: subprocess.Popen[bytes], log: Path, timeout_s: float) -> None:
    """The driver exits 0 within ``timeout_s``; otherwise fail with the end of its log."""
    try:
        rc = proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the driver hung for {timeout_s} s:\n{log.read_text()[-3000:]}")
    assert rc == 0, log.read_text()[-4000:]


def run_to_end(args: list[str], cwd: Path, log: Path, timeout_s: float = 300) -> None:
    proc = start(args, cwd, log)
    try:
        assert_finishes(proc, log, timeout_s)
    finally:
        if proc.poll() is None:
            kill(proc)


def storage_for(kind: str, tmp_path: Path) -> str:
    if kind == "sqlite":
        return f"sqlite:///{tmp_path / 'sweeps.db'}"
    url = postgres_url()
    assert url is not None
    return url


POSTGRES = pytest.mark.skipif(postgres_url() is None, reason=f"{POSTGRES_ENV} is not set")

KILLS = [
    pytest.param("sqlite", "grid", 1, id="sqlite-grid-after-1"),
    pytest.param("sqlite", "grid", 4, id="sqlite-grid-after-4"),
    pytest.param("sqlite", "random", 7, id="sqlite-random-after-7"),
    pytest.param("postgresql", "grid", 2, id="postgresql-grid-after-2", marks=[pytest.mark.postgres, POSTGRES]),
    pytest.param("postgresql", "random", 5, id="postgresql-random-after-5",
                 marks=[pytest.mark.postgres, POSTGRES]),
    # Multi-objective (val_accuracy up, model_ms down) under multi-objective ASHA.
    pytest.param("sqlite", "multi", 3, id="sqlite-multi-objective-after-3"),
    pytest.param("postgresql", "multi", 4, id="postgresql-multi-objective-after-4",
                 marks=[pytest.mark.postgres, POSTGRES]),
]


@pytest.mark.slow
@pytest.mark.parametrize(("storage_kind", "method", "after"), KILLS)
def test_sigkill_the_driver_then_resume(tmp_path: Path, study_name: str, storage_kind: str, method: str,
                                       after: int) -> None:
    url = storage_for(storage_kind, tmp_path)
    spec = {**GRID, "name": study_name, "storage": url, "artifacts": str(tmp_path / "artifacts")}
    if method in ("random", "multi"):
        spec = {**spec, "method": "random", "run_cap": 10, "parameters": {
            "lr": {"min": 0.002, "max": 0.05}, "sleep_s": {"value": 0.3}}}
    if method == "multi":
        spec = {**spec, "trainer": "tests.fake_trainers:MULTI", "metrics": [
            {"name": "val_accuracy", "goal": "maximize"}, {"name": "model_ms", "goal": "minimize"}],
            "parameters": {**spec["parameters"], "width": {"values": [2, 8, 32, 128]}}}
    budget = 12 if method == "grid" else 10
    path = write_spec(tmp_path / "spec.yaml", spec)
    log = tmp_path / "driver.log"
    driver = start(["launch", str(path)], tmp_path, log)

    def moment() -> bool:
        trials = trials_of(url, study_name)
        return (sum(t.state in FINISHED for t in trials) >= after
                and any(t.state == TrialState.RUNNING for t in trials))

    wait_until(moment, 240, driver, log)
    time.sleep(random.Random(after).uniform(0.0, 0.5))  # a kill moment of its own, repeatable
    kill(driver)
    before = {t.number: t for t in trials_of(url, study_name)}
    zombies = [n for n, t in before.items() if t.state == TrialState.RUNNING]
    assert zombies, "the kill should catch trials running"
    assert sum(t.state in FINISHED for t in before.values()) >= after

    run_to_end(["resume", study_name, "--storage", url], tmp_path, log)

    after_resume = {t.number: t for t in trials_of(url, study_name)}
    finished = [t for t in after_resume.values() if t.state in FINISHED]
    assert len(finished) == budget
    assert not [t for t in after_resume.values() if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    for number, old in before.items():  # nothing that had finished is lost or changed
        if old.state in FINISHED:
            new = after_resume[number]
            assert (new.state, new.values, new.intermediate_values, record.objective_curve_of(new)) == (
                old.state, old.values, old.intermediate_values, record.objective_curve_of(old))
    for number in zombies:  # the dead driver's trials are FAIL, and run again
        zombie = after_resume[number]
        assert zombie.state == TrialState.FAIL
        assert zombie.user_attrs["fail_reason"].startswith("driver lost")
        assert zombie.user_attrs["fail_kind"] == "driver"
        if method != "grid":
            again = [t for t in after_resume.values() if t.user_attrs.get("retry_of") == number]
            if zombie.params:
                assert len(again) == 1 and again[0].params == zombie.params
            else:  # killed inside Optuna's ask, before its parameters were set: it never ran
                assert not again
    if method == "grid":
        counts = collections.Counter(t.user_attrs["grid_id"] for t in finished)
        assert sorted(counts) == list(range(12)) and set(counts.values()) == {1}
    drivers = {t.user_attrs["driver_id"] for t in finished}
    assert len(drivers) == 2  # the killed driver's finished trials and the resumed driver's
    if method == "multi":
        study = optuna.load_study(study_name=study_name, storage=url)
        assert len(study.directions) == 2 and study.best_trials
        assert all(len(record.objective_curve_of(t)) == record.epochs_run_of(t) for t in finished)


def ctrl_c(proc: subprocess.Popen[bytes], log: Path) -> str:
    """Press Ctrl-C (SIGINT to the driver alone); the driver must exit 130 within 60 s. Returns its log."""
    proc.send_signal(signal.SIGINT)
    try:
        rc = proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        kill(proc)
        pytest.fail(f"the driver did not stop within 60 s of Ctrl-C:\n{log.read_text()[-3000:]}")
    text = log.read_text()
    assert rc == 130, text[-3000:]
    assert "interrupted: the trials that were running are marked FAIL in the study" in text
    assert "Traceback" not in text, text[-3000:]
    return text


def assert_interrupted_then_resumed(url: str, study_name: str, budget: int, cwd: Path, log: Path,
                                    env: dict[str, str] | None = None, resume_args: tuple[str, ...] = ()) -> None:
    """After Ctrl-C: the running trials are FAIL "sweep interrupted (Ctrl-C)" (kind driver, so
    they do not count as the trials' own failures), none RUNNING; a resume finishes the budget."""
    trials = trials_of(url, study_name)
    stopped = [t for t in trials if t.state == TrialState.FAIL]
    assert stopped, "Ctrl-C should catch trials running"
    assert all(t.user_attrs["fail_reason"] == "sweep interrupted (Ctrl-C)" for t in stopped)
    assert all(t.user_attrs["fail_kind"] == "driver" for t in stopped)
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    # Their parameters wait to run first when the study goes on (grid points are re-run by the grid).
    waiting = [t for t in trials if t.state == TrialState.WAITING]
    assert sorted(t.user_attrs["retry_of"] for t in waiting) == sorted(t.number for t in stopped) or all(
        "grid_id" in t.user_attrs for t in stopped)
    resumed = start(["resume", study_name, "--storage", url, *resume_args], cwd, log, env=env)
    try:
        assert_finishes(resumed, log, 300)
    finally:
        if resumed.poll() is None:
            kill(resumed)
    after = trials_of(url, study_name)
    assert sum(t.state in FINISHED for t in after) == budget
    assert not [t for t in after if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    for t in waiting:  # each interrupted configuration ran again, first
        assert after[t.number].state in FINISHED and after[t.number].params == after[t.user_attrs["retry_of"]].params


@pytest.mark.slow
def test_ctrl_c_marks_the_running_trials_fail_exits_130_and_resume_finishes(tmp_path: Path,
                                                                             study_name: str) -> None:
    """Ray Tune takes the first Ctrl-C and stops its trials; sweeper tells the study why and exits 130."""
    url = f"sqlite:///{tmp_path / 'sweeps.db'}"
    spec = curve_spec(tmp_path / "spec.yaml", study_name, url, run_cap=5, epochs=4, lrs=[0.002, 0.004, 0.008],
                      sleep_s=0.4)
    log = tmp_path / "driver.log"
    driver = start(["launch", str(spec)], tmp_path, log)
    wait_until(mid_sweep(url, study_name, 1), 240, driver, log)
    ctrl_c(driver, log)
    assert_interrupted_then_resumed(url, study_name, 5, tmp_path, log)


@pytest.mark.slow
def test_a_killed_worker_resumes_its_trial_from_the_checkpoint(tmp_path: Path, study_name: str) -> None:
    pids = tmp_path / "pids.log"
    url = f"sqlite:///{tmp_path / 'sweeps.db'}"
    spec = {"name": study_name, "method": "random", "run_cap": 2, "trainer": "tests.fake_trainers:CURVE",
            "epochs": 5, "max_concurrent_trials": 1, "storage": url,
            # Two configurations for the two trials: no configuration runs twice.
            "parameters": {"lr": {"values": [0.01, 0.02]}, "sleep_s": {"value": 1.0}, "log_to": {"value": str(pids)}}}
    path = write_spec(tmp_path / "spec.yaml", spec)
    log = tmp_path / "driver.log"
    driver = start(["launch", str(path)], tmp_path, log)
    try:
        wait_until(lambda: pids.exists() and pids.read_text().split("\n")[-2:-1] == [pids.read_text().split()[-2]
                                                                                    + " 3"], 120, driver, log)
        victim = int(pids.read_text().split()[-2])
        time.sleep(0.4)  # mid-epoch 3: epochs 1 and 2 are checkpointed
        os.kill(victim, signal.SIGKILL)
        assert_finishes(driver, log, 180)
    finally:
        if driver.poll() is None:
            kill(driver)
    lines = [tuple(map(int, line.split())) for line in pids.read_text().splitlines()]
    first_trial = lines[: lines.index(next(line for line in lines if line[0] != victim)) + 3]
    assert [epoch for _, epoch in first_trial] == [1, 2, 3, 3, 4, 5]  # the epoch counter continues
    assert len({pid for pid, _ in first_trial}) == 2
    trials = trials_of(url, study_name)
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.COMPLETE]
    assert sorted(trials[0].intermediate_values) == [1, 2, 3, 4, 5]
    assert [row["epoch"] for row in trials[0].user_attrs["history"]] == [1, 2, 3, 4, 5]
    assert trials[0].user_attrs["worker_retries"] == 1


@pytest.mark.slow
@pytest.mark.postgres
@POSTGRES
def test_cut_postgres_connections_lose_no_result(tmp_path: Path, study_name: str) -> None:
    from sqlalchemy import create_engine, text

    url = postgres_url()
    assert url is not None
    spec = {**GRID, "name": study_name, "storage": url, "artifacts": str(tmp_path / "artifacts"),
            "scheduler": {"type": "none"}}
    path = write_spec(tmp_path / "spec.yaml", spec)
    log = tmp_path / "driver.log"
    driver = start(["launch", str(path)], tmp_path, log)
    admin = create_engine(url)
    cuts = 0
    try:
        wait_until(lambda: sum(t.state in FINISHED for t in trials_of(url, study_name)) >= 1, 240, driver, log)
        for _ in range(8):  # as a server restart or a dropped network does, mid-sweep
            with admin.connect() as conn:
                cuts += len(conn.execute(text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE application_name = 'sweeper' AND pid <> pg_backend_pid()")).all())
            time.sleep(0.6)
        assert_finishes(driver, log, 240)
    finally:
        admin.dispose()
        if driver.poll() is None:
            kill(driver)
    assert cuts >= 1
    trials = trials_of(url, study_name)
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 12
    assert all(sorted(t.intermediate_values) == [1, 2, 3, 4] for t in trials)


@pytest.mark.slow
@pytest.mark.postgres
@POSTGRES
@pytest.mark.parametrize("variant", ["grid", "grid-two-objectives", "random-no-duplicates"])
def test_two_drivers_share_one_postgres_grid_study(tmp_path: Path, study_name: str, variant: str) -> None:
    """Two drivers of one study share its budget: a grid runs each point once; a random search
    of an all-categorical space of 10 configurations with run_cap 10 runs each once (the
    duplicate check is decided under the study's lock)."""
    url = postgres_url()
    assert url is not None
    spec = {**GRID, "name": study_name, "storage": url, "artifacts": str(tmp_path / "artifacts"),
            "max_concurrent_trials": 1, "scheduler": {"type": "none"}, "epochs": 3,
            "parameters": {"lr": {"values": [0.002, 0.004, 0.008, 0.016, 0.03]}, "sleep_s": {"values": [0.5, 0.6]}}}
    if variant == "random-no-duplicates":
        spec = {**spec, "method": "random", "run_cap": 10}
    if variant == "grid-two-objectives":
        spec = {**spec, "trainer": "tests.fake_trainers:MULTI", "metrics": [
            {"name": "val_accuracy", "goal": "maximize"}, {"name": "model_ms", "goal": "minimize"}]}
    path = write_spec(tmp_path / "spec.yaml", spec)
    first = start(["launch", str(path)], tmp_path, tmp_path / "first.log")
    second = None
    try:
        wait_until(lambda: len(trials_of(url, study_name)) >= 1, 120, first, tmp_path / "first.log")
        # The second machine: same file, --resume joins the running study.
        second = start(["launch", str(path), "--resume"], tmp_path, tmp_path / "second.log")
        assert_finishes(first, tmp_path / "first.log", 300)
        assert_finishes(second, tmp_path / "second.log", 300)
    finally:
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                kill(proc)
    trials = trials_of(url, study_name)
    finished = [t for t in trials if t.state in FINISHED]
    if variant == "random-no-duplicates":
        assert len({(t.params["lr"], t.params["sleep_s"]) for t in finished}) == 10
        assert all(t.state in FINISHED or record.is_duplicate_draw(t) for t in trials)
    else:
        counts = collections.Counter(t.user_attrs["grid_id"] for t in finished)
        assert sorted(counts) == list(range(10)) and set(counts.values()) == {1}
        assert all(t.state in FINISHED for t in trials)
    assert len(finished) == 10
    assert len({t.user_attrs["driver_id"] for t in finished}) == 2


def test_asha_rungs_rebuilt_from_the_study_decide_like_the_live_ones() -> None:
    """Replaying the stored curves gives ASHA the rungs the live run had, hence the same
    decisions for the trials after a resume (Ray calls on_trial_result each epoch and
    on_trial_complete at the end, as here)."""
    rng = random.Random(0)

    def curve() -> dict[int, float]:
        return {e: rng.uniform(0, 0.5) + 0.1 * e for e in range(1, 10)}

    def scheduler() -> RecordingASHA:
        return RecordingASHA(time_attr="epoch", metric="m", mode="max", max_t=9, grace_period=1, reduction_factor=3)

    class Stub:
        def __init__(self, trial_id: str):
            self.trial_id = trial_id

    def feed(s: RecordingASHA, name: str, values: dict[int, float]) -> dict[int, float]:
        """Run one trial through ``s`` as Tune does; returns the curve it ran (cut where stopped)."""
        trial: Any = Stub(name)
        s.on_trial_add(None, trial)
        ran: dict[int, float] = {}
        for epoch, value in sorted(values.items()):
            ran[epoch] = value
            if s.on_trial_result(None, trial, {"epoch": epoch, "m": value}) == "STOP":
                break
        s.on_trial_complete(None, trial, {"epoch": max(ran), "m": ran[max(ran)]})
        return ran

    live = scheduler()
    stored = {f"t{i}": feed(live, f"t{i}", curve()) for i in range(15)}  # what the study holds
    assert any(len(c) < 9 for c in stored.values()) and any(len(c) == 9 for c in stored.values())
    rebuilt = scheduler()
    rebuilt.replay(stored)
    assert [sorted(r.values()) for _, r in live._brackets[0]._rungs] == [
        sorted(r.values()) for _, r in rebuilt._brackets[0]._rungs]
    fresh = scheduler()  # what a resume without the rebuild would have
    newcomers = {f"n{i}": curve() for i in range(8)}
    ran_live = {n: feed(live, n, c) for n, c in newcomers.items()}
    ran_rebuilt = {n: feed(rebuilt, n, c) for n, c in newcomers.items()}
    ran_fresh = {n: feed(fresh, n, c) for n, c in newcomers.items()}
    assert ran_rebuilt == ran_live
    assert ran_fresh != ran_live  # the rebuild matters: forgotten rungs stop fewer trials


def test_launch_resume_with_another_spec_lists_the_differences(tmp_path: Path, study_name: str) -> None:
    url = f"sqlite:///{tmp_path / 'sweeps.db'}"
    spec = {**GRID, "name": study_name, "storage": url}
    create_study(validate(spec), concurrency=1)
    changed = write_spec(tmp_path / "changed.yaml", {**spec, "epochs": 6, "parameters": {
        **GRID["parameters"], "lr": {"values": [0.1, 0.2]}}})
    result = CliRunner().invoke(app, ["launch", str(changed), "--resume"])
    assert result.exit_code == 2, result.output
    assert "was started with another spec" in result.output
    assert "error: epochs: 4 (stored) -> 6 (given)" in result.output
    assert "error: parameters.lr.values: [0.002, 0.004, 0.008, 0.016, 0.03, 0.05] (stored) -> [0.1, 0.2] (given)" \
        in result.output


def test_resume_of_a_missing_study_is_one_line(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["resume", "nope", "--storage", f"sqlite:///{tmp_path / 'none.db'}"])
    assert result.exit_code == 2
    assert "study: 'nope' does not exist" in result.output
    assert not (tmp_path / "none.db").exists()


def test_an_unreachable_database_is_one_line_in_10_s_and_nothing_starts(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    spec = write_spec(tmp_path / "s.yaml", {**GRID, "name": "x"})
    started = time.monotonic()
    result = CliRunner().invoke(app, ["launch", str(spec), "--storage",
                                      "postgresql+psycopg://alice:pw-s3cret@127.0.0.1:1/db"])
    assert time.monotonic() - started < 10
    assert result.exit_code == 2, result.output
    assert result.output.startswith("error: storage: 'postgresql+psycopg://alice:***@127.0.0.1:1/db' does not "
                                    "answer at 127.0.0.1:1")
    assert "pw-s3cret" not in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.yaml"]


def test_a_grid_point_queued_by_a_dead_driver_is_not_run_twice(tmp_path: Path, study_name: str) -> None:
    """A driver killed between queueing a grid point and asking for it leaves a WAITING trial;
    the next driver fails it (instead of letting Optuna's ask() pop it in place of the point it
    chose) and every grid point still runs exactly once, with nothing left WAITING."""
    from sweeper.engine.searcher import StudySearcher
    from sweeper.study.coordination import take_lease
    from sweeper.study.record import GRID_ID as GRID_ID_ATTR
    from sweeper.study.record import TrialDetails
    from sweeper.study.storage import open_storage

    url = f"sqlite:///{tmp_path / 'grid.db'}"
    sweep = validate({**GRID, "name": study_name, "storage": url, "artifacts": str(tmp_path / "artifacts")})
    storage = open_storage(url, pool_size=1)
    study = create_study(sweep, 1, storage)
    grid = sweep.space.grid()
    study.enqueue_trial(grid[3], user_attrs={GRID_ID_ATTR: 3}, skip_if_exists=False)  # the dead driver's
    searcher = StudySearcher(study, sweep, storage, take_lease(study), grid=grid)
    ran = []
    for n in range(len(grid) + 1):
        config = searcher.suggest(f"t{n}")
        if config == StudySearcher.FINISHED:
            break
        assert isinstance(config, dict)
        trial = searcher.running[f"t{n}"]
        ran.append(int(trial.user_attrs[GRID_ID_ATTR]))
        assert trial.params == {k: v for k, v in grid[ran[-1]].items() if k in trial.params}
        searcher.tell(f"t{n}", TrialState.COMPLETE, TrialDetails([{"epoch": 1, "val_accuracy": 0.5}], epochs_run=1))
    assert sorted(ran) == list(range(len(grid)))  # each point once
    trials = study.get_trials()
    assert not [t for t in trials if t.state in (TrialState.WAITING, TrialState.RUNNING)]
    [stale] = [t for t in trials if t.state == TrialState.FAIL]
    assert stale.user_attrs["fail_reason"].startswith("driver lost")


def test_a_small_space_resumed_with_queued_retries_runs_them_then_ends_exhausted(tmp_path: Path,
                                                                               study_name: str) -> None:
    """A space of 4 configurations, budget 10: 2 trials finish, 2 are interrupted (Ctrl-C queues
    them again). The next driver runs the 2 queued retries first (the duplicate check counts
    them as seen, which must not stop them from being asked), then ends exhausted at 4."""
    from sweeper.engine.searcher import StudySearcher
    from sweeper.study.coordination import take_lease
    from sweeper.study.record import TrialDetails
    from sweeper.study.storage import open_storage

    url = f"sqlite:///{tmp_path / 'small.db'}"
    sweep = validate({"name": study_name, "method": "random", "trainer": "tests.fake_trainers:CURVE", "epochs": 1,
                      "run_cap": 10, "storage": url, "artifacts": str(tmp_path / "artifacts"),
                      "parameters": {"lr": {"values": [0.002, 0.004, 0.008, 0.016]}}})
    storage = open_storage(url, pool_size=1)
    study = create_study(sweep, 2, storage)
    curve = TrialDetails([{"epoch": 1, "val_accuracy": 0.5}], epochs_run=1)

    def run(searcher: StudySearcher, n: int) -> list[float]:
        ran = []
        for i in range(n):
            config = searcher.suggest(f"{id(searcher)}-{i}")
            if not isinstance(config, dict):
                return ran
            ran.append(searcher.running[f"{id(searcher)}-{i}"].params["lr"])
            searcher.tell(f"{id(searcher)}-{i}", TrialState.COMPLETE, curve)
        return ran

    first = StudySearcher(study, sweep, storage, take_lease(study))
    done = run(first, 2)
    for i in range(2):  # two more asked, then the driver is interrupted
        assert isinstance(first.suggest(f"cut-{i}"), dict)
    interrupted = sorted(t.params["lr"] for t in first.running.values())
    first.fail_unfinished("interrupted (Ctrl-C)")
    second = StudySearcher(study, sweep, storage, take_lease(study))
    second.POLL_S = 0.0
    retried = run(second, 5)
    assert sorted(retried) == interrupted and sorted(done + retried) == [0.002, 0.004, 0.008, 0.016]
    assert second.ending is not None and second.ending.kind == "exhausted"
    assert not study.get_trials(states=(TrialState.WAITING, TrialState.RUNNING))


def test_a_worker_stopped_by_ray_prints_no_traceback_but_real_errors_still_show() -> None:
    """sweeper.trial.trainable's unraisable hook, in a real interpreter: the SystemExit that Ray's
    SIGTERM handler raises inside a weakref callback when a sweep ends is not printed; any
    other exception ignored there still is."""
    import subprocess
    import sys

    script = (
        "import sys, weakref\n"
        "from sweeper.trial.trainable import _quiet_exit_in_callbacks\n"
        "sys.unraisablehook = _quiet_exit_in_callbacks\n"
        "class O: pass\n"
        "def stop(_): raise SystemExit(1)\n"
        "def broken(_): raise ValueError('a real problem')\n"
        "o = O(); r = weakref.ref(o, stop); del o\n"
        "o = O(); r2 = weakref.ref(o, broken); del o\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0
    assert "SystemExit" not in done.stderr and "ValueError: a real problem" in done.stderr
    assert done.stderr.count("Traceback") == 1
