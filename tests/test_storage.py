"""The study's storage, one suite for every kind: SQLite and PostgreSQL (SWEEPER_TEST_POSTGRES_URL)."""

from __future__ import annotations

import time
from pathlib import Path

import optuna
import pytest
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
