"""The study's storage, one suite for every kind: SQLite and PostgreSQL (SWEEPER_TEST_POSTGRES_URL)."""

from __future__ import annotations

import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState
from sqlalchemy.engine import make_url

from sweeper.errors import InputError
from sweeper.spec import validate
from sweeper.study.record import STUDY_SPEC as STUDY_SPEC_ATTR
from sweeper.study.storage import open_storage, redact, study_names
from sweeper.study.studies import create_study, ensure_new_study
from tests.conftest import POSTGRES_ENV, postgres_url


def test_create_study_stores_spec_and_refuses_a_duplicate(storage_url: str, study_name: str) -> None:
    sweep = validate({"name": study_name, "method": "bayes", "storage": storage_url, "run_cap": 7,
                      "metric": {"name": "val_loss", "goal": "minimize"},
                      "parameters": {"lr": {"min": 0.001, "max": 0.1, "distribution": "log_uniform_values"}}})
    study = create_study(sweep, concurrency=2)
    assert study_name in study_names(storage_url)
    loaded = optuna.load_study(study_name=study_name, storage=storage_url)
    assert loaded.direction == optuna.study.StudyDirection.MINIMIZE
    stored = loaded.user_attrs[STUDY_SPEC_ATTR]
    assert stored["run_cap"] == 7 and stored["parameters"]["lr"]["distribution"] == "log_uniform_values"
    assert validate({**stored, "storage": storage_url}).space == sweep.space  # enough to rebuild the sweep
    assert "password" not in str(loaded.user_attrs) and ":***@" not in storage_url
    with pytest.raises(InputError, match=f"sweeper resume {study_name}"):
        ensure_new_study(study_name, storage_url)
    assert study.study_name == study_name


def test_missing_sqlite_file_is_not_created_by_a_lookup(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'none.db'}"
    assert study_names(url) == []
    assert not (tmp_path / "none.db").exists()


def test_password_is_never_stored_or_shown(tmp_path: Path, study_name: str) -> None:
    url = "postgresql+psycopg://alice:s3cr3t@127.0.0.1:1/db"
    assert redact(url) == "postgresql+psycopg://alice:***@127.0.0.1:1/db"
    sweep = validate({"name": study_name, "method": "random", "storage": url})
    assert "s3cr3t" not in str(sweep.warnings)
    started = time.monotonic()
    with pytest.raises(InputError) as info:
        open_storage(url)
    message = str(info.value)
    assert time.monotonic() - started < 10
    assert "127.0.0.1:1" in message and "s3cr3t" not in message


def test_stored_spec_has_the_password_redacted(tmp_path: Path, study_name: str) -> None:
    from sweeper.study.studies import record_study_metadata

    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 's.db'}", study_name=study_name)
    record_study_metadata(study, {"storage": "postgresql+psycopg://bob:hunter2@db/x", "name": study_name})
    assert study.user_attrs[STUDY_SPEC_ATTR]["storage"] == "postgresql+psycopg://bob:***@db/x"


@pytest.mark.postgres
@pytest.mark.skipif(postgres_url() is None, reason=f"{POSTGRES_ENV} is not set")
def test_postgres_server_named_by_ci_answers() -> None:
    """With SWEEPER_TEST_POSTGRES_URL set, the server must answer: this fails, never skips."""
    url = postgres_url()
    assert url is not None and make_url(url).get_backend_name() == "postgresql"
    open_storage(url)


def test_a_trials_attributes_are_written_in_one_transaction_and_read_back_as_optunas(
        storage_url: str, study_name: str) -> None:
    """``set_user_attrs`` on sweeper's storage writes every attribute at once (replacing a key
    already there), Optuna reads them back as its own, and a finished trial refuses the write."""
    from sqlalchemy import event

    from sweeper.study.record import set_user_attrs

    storage = open_storage(storage_url)
    study = optuna.create_study(study_name=study_name, storage=storage)
    trial = study.ask()
    trial.set_user_attr("epochs_run", 1)
    commits: list[int] = []
    event.listen(storage.engine, "commit", lambda conn: commits.append(1))
    attrs = {"epochs_run": 3, "history": [{"epoch": 1, "m": 0.5}], "where": {"node": "n"}, "note": None}
    set_user_attrs(trial, attrs)
    assert len(commits) == 1
    assert trial.user_attrs == attrs  # the trial's own view
    study.tell(trial, 1.0)
    assert optuna.load_study(study_name=study_name, storage=storage_url).trials[0].user_attrs == attrs
    with pytest.raises(optuna.exceptions.UpdateFinishedTrialError):
        storage.set_trial_user_attrs(trial._trial_id, {"late": 1})


def test_the_trial_index_reads_each_finished_trial_once_and_sees_another_drivers_trials(
        storage_url: str, study_name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The searcher's index of a study: counts, grid points and seen configurations equal a full
    read of the study, including trials another driver (another storage) adds, finishes or
    queues; a finished trial is read once, so a read after many trials reads only what changed."""
    from sweeper.study.index import TrialIndex
    from sweeper.study.record import queue_grid_point, write_failure

    storage, other = open_storage(storage_url), open_storage(storage_url)
    study = optuna.create_study(study_name=study_name, storage=storage)
    theirs = optuna.load_study(study_name=study_name, storage=other)
    dist = {"x": optuna.distributions.IntDistribution(0, 100)}
    index = TrialIndex(storage, study, lambda params: str(params.get("x")))
    states = [TrialState.COMPLETE] * 4 + [TrialState.PRUNED, TrialState.FAIL]
    for x, state in enumerate(states):  # alternately this driver's and the other's
        driver = study if x % 2 else theirs
        driver.enqueue_trial({"x": x})
        trial = driver.ask(dist)
        driver.tell(trial, float(x) if state == TrialState.COMPLETE else None, state=state)
    theirs.enqueue_trial({"x": 10})
    running = theirs.ask(dist)
    study.enqueue_trial({"x": 0})
    duplicate = study.ask(dist)
    write_failure(duplicate, "duplicate draw", "duplicate")
    study.tell(duplicate, state=TrialState.FAIL)
    queue_grid_point(study, {"x": 50}, grid_id=7)
    index.refresh()
    assert index.finished == 5
    assert [t.number for t in index.running()] == [running.number]
    assert [t.number for t in index.waiting()] == [8]
    assert index.seen() == {"0": 0, "1": 1, "2": 2, "3": 3, "4": 4, "10": 6, "50": 8}
    theirs.tell(running, 9.0)
    queued = study.ask(dist)  # pops the queued grid point
    study.tell(queued, 1.0)
    read: list[int] = []
    from sweeper.study import index as index_module

    real = index_module.trials_since

    def counted(*args: object) -> list[optuna.trial.FrozenTrial]:
        trials = real(*args)  # type: ignore[arg-type]
        read.extend(t.number for t in trials)
        return trials

    monkeypatch.setattr(index_module, "trials_since", counted)  # a spy: the real read, counted
    index.refresh()
    assert index.finished == 7 and index.done_points == {7} and not index.open
    assert sorted(read) == [running.number, queued.number]  # only what changed, not the 9 trials
    totals = (index.finished, set(index.done_points), dict(index.finished_keys))
    index.reset()  # the searcher's whole read now and then: the same totals from scratch
    index.refresh()
    assert (index.finished, index.done_points, index.finished_keys) == totals and len(read) == 2 + 9
    full = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
    assert set(index.finished_keys) == {str(t.params["x"]) for t in full}


def test_each_asks_read_of_a_sqlite_study_goes_through_indexes_and_equals_optunas(tmp_path: Path) -> None:
    """The read each ask makes twice (Optuna's trial cache, the searcher's index): the trials above
    the highest finished one plus the unfinished ones below it. It returns what Optuna's own query
    returns, and SQLite answers it through indexes: Optuna's ``OR`` of the two reads every trial id
    of the study (``SEARCH ... ix_trials_study_id (study_id=?)``), a cost growing with the study."""
    from sqlalchemy import event

    from sweeper.study.storage import trials_since

    storage = open_storage(f"sqlite:///{tmp_path / 'study.db'}")
    study = optuna.create_study(study_name="s", storage=storage)
    dist = {"x": optuna.distributions.FloatDistribution(0, 1)}
    for _ in range(20):
        study.tell(study.ask(dist), 0.5)
    slow = study.ask(dist)  # still running when later trials finish
    for _ in range(3):
        study.tell(study.ask(dist), 0.5)
    newest = study.ask(dist)
    finished = max(t._trial_id for t in study.get_trials(states=(TrialState.COMPLETE,)))
    plans: list[str] = []

    def explain(conn: object, cursor: object, statement: str, parameters: object, context: object,
                executemany: bool) -> None:
        if statement.lstrip().startswith("SELECT") and "FROM trials" in statement:
            rows = cursor.connection.execute(f"EXPLAIN QUERY PLAN {statement}", parameters).fetchall()  # type: ignore[attr-defined]
            plans.extend(str(row[3]) for row in rows)

    event.listen(storage.engine, "before_cursor_execute", explain)
    ours = trials_since(storage, study._study_id, {slow._trial_id, newest._trial_id}, finished)
    event.remove(storage.engine, "before_cursor_execute", explain)
    optunas = optuna.storages.RDBStorage._get_trials(storage, study._study_id, None,
                                                     {slow._trial_id, newest._trial_id}, finished)
    assert [t.number for t in ours] == [slow.number, newest.number] and ours == optunas
    trial_reads = [p for p in plans if p.split()[1:2] == ["trials"]]  # SEARCH trials ... / SCAN trials
    assert trial_reads and not [p for p in trial_reads if p.startswith("SCAN") or p.endswith("(study_id=?)")], plans


def test_a_large_incremental_read_takes_optunas_query_and_equals_it(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Above ``_READ_BY_ID`` new trials the read falls back to Optuna's own query (no ``IN`` list of
    thousands of ids), with the same result, state filter included."""
    from sqlalchemy import event

    from sweeper.study import storage as storage_module

    storage = open_storage(f"sqlite:///{tmp_path / 'study.db'}")
    study = optuna.create_study(study_name="s", storage=storage)
    dist = {"x": optuna.distributions.FloatDistribution(0, 1)}
    study.tell(study.ask(dist), 0.5)
    slow = study.ask(dist)
    study.tell(study.ask(dist), 0.5)
    finished = max(t._trial_id for t in study.get_trials(states=(TrialState.COMPLETE,)))
    newer = [study.ask(dist) for _ in range(5)]
    for trial in newer[:2]:
        study.tell(trial, 0.25)
    # 5 new ids: above the limit (3, 4), at it (5, read by id) and below it (500)
    for limit, optunas_query in ((3, True), (4, True), (5, False), (500, False)):
        monkeypatch.setattr(storage_module, "_READ_BY_ID", limit)
        for states in (None, (TrialState.RUNNING,)):
            statements: list[str] = []

            def keep(*args: object, statements: list[str] = statements) -> None:
                statements.append(str(args[2]))

            event.listen(storage.engine, "before_cursor_execute", keep)
            ours = storage._get_trials(study._study_id, states, {slow._trial_id}, finished)
            event.remove(storage.engine, "before_cursor_execute", keep)
            optunas = optuna.storages.RDBStorage._get_trials(storage, study._study_id, states, {slow._trial_id},
                                                             finished)
            assert ours == optunas
            assert [t.number for t in ours] == [slow.number, *[t.number for t in newer[2 if states else 0:]]]
            assert any(" OR " in s and "FROM trials" in s for s in statements) == optunas_query, statements
