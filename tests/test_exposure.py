"""Nothing exposed (issue 22, part 4): a config read back from a study is untrusted and checked
before it runs; storage URLs come from SWEEPER_STORAGE with one precedence; a password in the
URL reaches no output, no log file and no stored attribute."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import optuna
import pytest
from sqlalchemy.engine import make_url
from typer.testing import CliRunner

from sweeper.cli import app
from sweeper.defaults import DEFAULT_STORAGE, default_storage
from sweeper.spec import raw_spec, validate
from sweeper.study import record
from sweeper.study.studies import create_study
from tests.conftest import POSTGRES_ENV, postgres_url, write_spec

runner = CliRunner()


def _one_trial_study(tmp_path: Path, spec: dict[str, Any]) -> tuple[str, optuna.Study, int]:
    """A study made by sweeper with one COMPLETE trial and its stored config (no Ray)."""
    sweep = validate(spec)
    study = create_study(sweep, 1)
    trial = study.ask(fixed_distributions=sweep.space.distributions)
    record.write_asked(trial, sweep.trial_config(trial.params, trial.number), "driver0", "ray0")
    trial.report(0.5, 1)
    study.tell(trial, 0.5)
    return str(spec["storage"]), study, trial._trial_id


def _plant(url: str, trial_id: int, change: Any) -> None:
    """Rewrite a trial's stored config as anyone who can write the database can (in SQL: Optuna's
    API refuses to change a finished trial)."""
    import json

    from sqlalchemy import create_engine, text

    engine = create_engine(url)
    with engine.begin() as connection:
        query = "trial_user_attributes WHERE trial_id = :t AND key = :k"
        config = json.loads(connection.execute(text(f"SELECT value_json FROM {query}"),
                                               {"t": trial_id, "k": record.CONFIG}).scalar_one())
        connection.execute(text(f"UPDATE {query.replace('WHERE', 'SET value_json = :v WHERE')}"),
                           {"t": trial_id, "k": record.CONFIG, "v": json.dumps(change(config))})
    engine.dispose()


def test_a_planted_config_is_refused_before_it_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A program sweep's trial config rewritten in the database (another command, an unknown key,
    another trainer) is refused by export and retrain with one line naming the trial, exit 2,
    nothing written and nothing run."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "train.py").write_text("print('score=1')\n")
    url = f"sqlite:///{tmp_path / 'p.db'}"
    spec = {"name": "planted", "method": "random", "program": "train.py", "metric": {"name": "score"}, "epochs": 2,
            "storage": url, "artifacts": str(tmp_path / "art"), "parameters": {"lr": {"values": [0.1, 0.2]}}}
    url, _, trial_id = _one_trial_study(tmp_path, spec)
    good = tmp_path / "good.yaml"
    assert runner.invoke(app, ["export", "planted", "--storage", url, "-o", str(good)]).exit_code == 0
    pwned = tmp_path / "PWNED"
    plants = {
        "program.command": lambda c: {**c, "program": {**c["program"], "command": ["sh", "-c", f"touch {pwned}"]}},
        "program.env": lambda c: {**c, "program": {**c["program"], "env": {"LD_PRELOAD": "/tmp/x.so"}}},
        "trainer": lambda c: {**c, "trainer": "os:system"},
        "program": lambda c: {k: v for k, v in c.items() if k != "program"},
        "program.trial_timeout": lambda c: {**c, "program": {**c["program"], "trial_timeout": -1}},
        "params.lr": lambda c: {**c, "params": {**c["params"], "lr": 0.3}},  # valid, but not the trial's draw
        "data.root": lambda c: {**c, "data": {**c["data"], "root": str(tmp_path)}},  # valid, not the spec's data
    }
    for path, change in plants.items():
        _plant(url, trial_id, lambda c, change=change: change(c))
        for args in (["export", "planted", "--storage", url, "-o", str(tmp_path / "best.yaml")],
                     ["retrain", "planted", "--storage", url, "-o", str(tmp_path / "retrained")]):
            result = runner.invoke(app, args)
            assert result.exit_code == 2, (path, args[0], result.output)
            lines = result.output.strip().splitlines()
            assert len(lines) == 1 and lines[0].startswith(f"error: trial 0 of 'planted': {path}: "), lines
            assert "Traceback" not in result.output
        assert not (tmp_path / "best.yaml").exists() and not (tmp_path / "retrained").exists() and not pwned.exists()
        _plant(url, trial_id, lambda c: {k: v for k, v in __import__("yaml").safe_load(good.read_text()).items()
                                         if k != "provenance"})
    # the untouched config still exports, and its program is the spec's
    assert runner.invoke(app, ["export", "planted", "--storage", url, "-o", str(tmp_path / "best.yaml")]).exit_code == 0
    # marking the trial a warm-start copy (a trial attribute too) exempts nothing from the data check
    _plant(url, trial_id, lambda c: {**c, "data": {**c["data"], "dataset": "digits"}})
    from sqlalchemy import create_engine, text

    engine = create_engine(url)
    with engine.begin() as connection:
        connection.execute(text("INSERT INTO trial_user_attributes (trial_id, key, value_json) VALUES (:t, :k, :v)"),
                           {"t": trial_id, "k": "warm_start_from", "v": '"old#3"'})
    engine.dispose()
    assert record.warm_start_of(optuna.load_study(study_name="planted", storage=url).trials[0]) is not None
    result = runner.invoke(app, ["export", "planted", "--storage", url, "--trial", "0", "-o", str(tmp_path / "b.yaml")])
    assert result.exit_code == 2 and "trial 0 of 'planted': data.dataset: " in result.output, result.output
    assert not (tmp_path / "b.yaml").exists()


def test_a_relative_data_root_is_stored_as_the_folder_it_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                mnist_pngs: Path) -> None:
    """A spec's relative ``data.root`` is stored absolute: ``sweeper resume STUDY`` from another
    folder reads the same photos, and a config read back whose root is another folder with the
    same name is refused. A study stored before (a relative root) still resumes with its file."""
    import shutil

    from sweeper.spec import spec_differences
    from sweeper.study.studies import stored_spec

    for side in ("a", "b"):
        shutil.copytree(mnist_pngs, tmp_path / side / "imgs")
    monkeypatch.chdir(tmp_path / "a")
    url = f"sqlite:///{tmp_path / 'r.db'}"
    spec = {"name": "rel", "method": "random", "trainer": "tests.fake_trainers:CURVE", "epochs": 2, "storage": url,
            "artifacts": str(tmp_path / "art"), "data": {"dataset": "imagefolder", "root": "imgs"},
            "parameters": {"lr": {"values": [0.1, 0.2]}, "sleep_s": {"value": 0.0}}}
    _, _, trial_id = _one_trial_study(tmp_path, spec)
    here = str(tmp_path / "a" / "imgs")
    assert stored_spec(url, "rel")["data"]["root"] == here
    monkeypatch.chdir(tmp_path / "b")  # a resume from elsewhere: the stored folder, not ./imgs here
    assert validate(stored_spec(url, "rel")).data.root == here
    assert spec_differences(stored_spec(url, "rel"), validate(spec).stored()) == [
        f"data.root: {here!r} (stored) -> {str(tmp_path / 'b' / 'imgs')!r} (given)"]
    # b/imgs ends in the spec's `imgs` as a/imgs does: only the stored folder is accepted
    _plant(url, trial_id, lambda c: {**c, "data": {**c["data"], "root": str(tmp_path / "b" / "imgs")}})
    result = runner.invoke(app, ["export", "rel", "--storage", url, "-o", str(tmp_path / "best.yaml")])
    assert result.exit_code == 2 and "trial 0 of 'rel': data.root: " in result.output, result.output
    assert not (tmp_path / "best.yaml").exists()
    _plant(url, trial_id, lambda c: {**c, "data": {**c["data"], "root": here}})
    assert runner.invoke(app, ["export", "rel", "--storage", url, "-o", str(tmp_path / "best.yaml")]).exit_code == 0
    # a study stored before roots were stored absolute: its relative root matches by its tail
    old = {**stored_spec(url, "rel"), "data": {**stored_spec(url, "rel")["data"], "root": "imgs"}}
    assert spec_differences(old, validate(spec).stored()) == []
    assert spec_differences({**old, "data": {**old["data"], "root": "photos"}}, validate(spec).stored())
    # ... or by the folder it names from here: `.` (no tail), and a link the given root resolves through
    (tmp_path / "b" / "link").symlink_to(tmp_path / "a" / "imgs")
    monkeypatch.chdir(tmp_path / "b")
    linked = {**spec, "data": {**spec["data"], "root": "link"}}
    assert validate(linked).stored()["data"]["root"] == here
    assert spec_differences({**old, "data": {**old["data"], "root": "link"}}, validate(linked).stored()) == []
    monkeypatch.chdir(tmp_path / "a" / "imgs")
    dot = {**spec, "data": {**spec["data"], "root": "."}}
    given = validate(dot).stored()
    assert spec_differences({**old, "data": {**old["data"], "root": "."}}, given) == []
    monkeypatch.chdir(tmp_path / "b")  # `.` here is another folder
    assert spec_differences({**old, "data": {**old["data"], "root": "."}}, given)


def test_storage_precedence_is_flag_then_spec_then_environment_then_default(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = write_spec(tmp_path / "s.yaml", {"method": "random", "trainer": "tests.fake_trainers:plain_fit",
                                            "epochs": 2, "parameters": {"lr": {"values": [0.1]}}})
    with_storage = write_spec(tmp_path / "t.yaml", {**__import__("yaml").safe_load(spec.read_text()),
                                                     "storage": "sqlite:///from-spec.db"})
    monkeypatch.delenv("SWEEPER_STORAGE", raising=False)
    assert default_storage() == DEFAULT_STORAGE == raw_spec(spec)["storage"]
    monkeypatch.setenv("SWEEPER_STORAGE", "sqlite:///from-env.db")
    assert raw_spec(spec)["storage"] == "sqlite:///from-env.db" == default_storage()
    assert raw_spec(with_storage)["storage"] == "sqlite:///from-spec.db"
    assert raw_spec(with_storage, storage="sqlite:///from-flag.db")["storage"] == "sqlite:///from-flag.db"
    # the readers: --storage, else SWEEPER_STORAGE (an empty study list names the storage it read)
    monkeypatch.setenv("SWEEPER_STORAGE", f"sqlite:///{tmp_path / 'env.db'}")
    assert f"no studies in sqlite:///{tmp_path / 'env.db'}" in runner.invoke(app, ["studies"]).output
    flag = runner.invoke(app, ["studies", "--storage", f"sqlite:///{tmp_path / 'flag.db'}"]).output
    assert f"no studies in sqlite:///{tmp_path / 'flag.db'}" in flag


def _password_url(password: str) -> str:
    base = postgres_url()
    assert base is not None
    return make_url(base).set(password=password).render_as_string(hide_password=False)


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.skipif(postgres_url() is None, reason=f"{POSTGRES_ENV} is not set")
@pytest.mark.usefixtures("ray_local")
def test_a_password_in_the_storage_url_is_never_shown_logged_or_stored(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every command run with a password in the URL, through --storage and through SWEEPER_STORAGE:
    the password is in no output, no file under the run's folders (artifacts, exports, report, Ray's
    session logs) and no attribute stored in the database. (The test server trusts any password.)"""
    import ray

    password = f"pw-{uuid.uuid4().hex}"
    url = _password_url(password)
    name = f"exposed-{uuid.uuid4().hex[:8]}"
    monkeypatch.chdir(tmp_path)
    spec = write_spec(tmp_path / "s.yaml", {
        "name": name, "method": "random", "trainer": "tests.fake_trainers:CURVE", "epochs": 2, "run_cap": 2,
        "artifacts": str(tmp_path / "art"), "max_concurrent_trials": 1,
        "parameters": {"lr": {"min": 0.001, "max": 0.02}}})
    outputs: list[str] = []

    def run(args: list[str], via_env: bool) -> None:
        if via_env:
            monkeypatch.setenv("SWEEPER_STORAGE", url)
        else:
            monkeypatch.delenv("SWEEPER_STORAGE", raising=False)
            args = [*args, "--storage", url]
        result = runner.invoke(app, args)
        outputs.append(result.output)
        assert result.exit_code == 0, (args[0], result.output)

    run(["validate", str(spec)], via_env=True)
    assert "***@" in outputs[-1]
    run(["launch", str(spec)], via_env=True)
    run(["show", name], via_env=False)
    run(["show", name], via_env=True)
    run(["export", name, "-o", str(tmp_path / "best.yaml")], via_env=True)
    run(["export", name, "-o", str(tmp_path / "best2.yaml")], via_env=False)
    run(["report", name, "-o", str(tmp_path / "report.html")], via_env=True)
    run(["studies"], via_env=False)
    run(["resume", name], via_env=False)
    run(["resume", name], via_env=True)
    run(["launch", str(spec), "--resume"], via_env=False)
    monkeypatch.delenv("SWEEPER_STORAGE", raising=False)
    # a failure names the server, never the password
    broken = runner.invoke(app, ["show", name, "--storage", _password_url(password).replace(":5432", ":1")])
    assert broken.exit_code == 2
    outputs.append(broken.output)
    for output in outputs:
        assert password not in output
    assert any("***" in output for output in outputs)
    session = Path(ray._private.worker._global_node.get_session_dir_path())
    searched = 0
    for folder in (tmp_path, session / "logs"):
        for path in folder.rglob("*"):
            if path.is_file():
                assert password.encode() not in path.read_bytes(), path
                searched += 1
    assert searched > 10 and (tmp_path / "report.html").is_file() and (tmp_path / "best.yaml").is_file()
    from sqlalchemy import create_engine, text

    engine = create_engine(url)
    with engine.connect() as connection:
        for table in ("study_user_attributes", "study_system_attributes", "trial_user_attributes",
                      "trial_system_attributes", "studies"):
            hits = connection.execute(text(f"SELECT count(*) FROM {table} WHERE CAST({table} AS TEXT) LIKE :p"),
                                      {"p": f"%{password}%"}).scalar()
            assert hits == 0, table
        stored = connection.execute(text(
            "SELECT a.value_json FROM study_user_attributes a JOIN studies s USING (study_id) "
            "WHERE s.study_name = :n AND a.key = :k"), {"n": name, "k": record.STUDY_SPEC}).scalar()
    engine.dispose()
    assert stored is not None and ":***@" in stored
    finished = optuna.load_study(study_name=name, storage=url).trials
    assert sum(t.state.is_finished() for t in finished) == 2


def test_a_config_must_hold_its_trials_draw(tmp_path: Path) -> None:
    """The draw check of a config read back from a study: each searched parameter (nested ones
    by their path, a searched ``epochs`` at the config's top level) must be what the trial's
    Optuna parameters decode to; a file parameter's path may have been made absolute."""
    from sweeper.errors import InputError
    from sweeper.spec import check_trial_config, stored_space
    from sweeper.spec._problems import same_value as _same

    sweep = validate({"name": "draw", "method": "random", "trainer": "tests.fake_trainers:CURVE",
                      "storage": f"sqlite:///{tmp_path / 'd.db'}", "artifacts": str(tmp_path / "a"),
                      "parameters": {"lr": {"min": 0.001, "max": 0.1, "distribution": "log_uniform_values"},
                                     "epochs": {"values": [2, 3]}, "sleep_s": {"value": 0.0}}})
    drawn = {"lr": 0.0123, "epochs": 3}
    config = sweep.trial_config(drawn, 0)
    assert "epochs" not in config["params"] and config["epochs"] == 3
    space = stored_space(sweep.stored()["parameters"])
    assert space is not None
    check_trial_config(config, sweep.stored(), "trial 0", (space, drawn))  # as stored: accepted
    for change, key in (({"params": {**config["params"], "lr": 0.05}}, "params.lr"),
                        ({"epochs": 2}, "params.epochs"),
                        ({"params": {**config["params"], "sleep_s": 1.0}}, "params.sleep_s")):
        with pytest.raises(InputError, match=f"trial 0: {key}: .* differs from the trial's draw"):
            check_trial_config({**config, **change}, sweep.stored(), "trial 0", (space, drawn))
    # its data: what the stored spec gives every trial
    check_trial_config(config, sweep.stored(), "trial 0", (space, drawn), check_data=True)
    for key, value in (("dataset", "digits"), ("root", str(tmp_path)), ("seed", 7), ("val_fraction", 0.5),
                       ("train_on_val", True), ("image_size", 64), ("num_workers", 3),
                       ("cache_dir", str(tmp_path / "c"))):
        tampered = {**config, "data": {**config["data"], key: value}}
        check_trial_config(tampered, sweep.stored(), "trial 0", (space, drawn))
        with pytest.raises(InputError, match=f"trial 0: data.{key}: .* differs from the study's spec"):
            check_trial_config(tampered, sweep.stored(), "trial 0", (space, drawn), check_data=True)
    assert _same("/home/u/run/weights/b.pth", "weights/b.pth") and _same("/w/b.pth", "./b.pth")
    assert not _same("/home/u/other/a.pth", "weights/b.pth") and not _same("weights/b.pth", "/x/weights/b.pth")
    # a relative path is also the folder it names from here: `.` (no tail to match) and a link
    (tmp_path / "photos").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "photos")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(tmp_path / "photos")
        assert _same(str(tmp_path / "photos"), ".") and not _same(str(tmp_path / "a"), ".")
        mp.chdir(tmp_path)
        assert _same(str(tmp_path / "photos"), "link") and not _same(str(tmp_path / "photos"), ".")
        # a study stored with the relative root `.` (before roots were stored absolute): its trials' root
        old = {**sweep.stored(), "data": {**sweep.stored()["data"], "root": "."}}
        read_back = {**config, "data": {**config["data"], "root": str(tmp_path)}}
        check_trial_config(read_back, old, "trial 0", (space, drawn), check_data=True)
        with pytest.raises(InputError, match=r"trial 0: data.root: .* differs from the study's spec"):
            check_trial_config({**read_back, "data": {**read_back["data"], "root": str(tmp_path / "photos")}},
                               old, "trial 0", (space, drawn), check_data=True)
