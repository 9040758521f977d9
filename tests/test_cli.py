"""The CLI through Typer's CliRunner, and the README's main job as a user types it."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.trial import TrialState
from typer.testing import CliRunner

from sweeper.cli import app
from tests.conftest import write_spec

REPO = Path(__file__).resolve().parents[1]
runner = CliRunner()

TINY = {
    "name": "tiny",
    "method": "random",
    "run_cap": 3,
    "trainer": "tests.fake_trainers:CURVE",
    "epochs": 2,
    "max_concurrent_trials": 2,
    "parameters": {"lr": {"min": 0.001, "max": 0.02}},
}


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_help_lists_the_commands() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0, result.output
    for command in ("launch", "validate"):
        assert command in result.output
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.startswith("sweeper ")


def test_validate_prints_the_resolved_spec_and_space_size() -> None:
    result = runner.invoke(app, ["validate", str(REPO / "search_spaces" / "digits_grid.yaml")])
    assert result.exit_code == 0, result.output
    assert "method: grid" in result.output
    assert "val_fraction: 0.2" in result.output  # defaults filled in
    assert "8 distinct configuration(s)" in result.output
    assert "budget: 8 finished trials" in result.output


def test_bad_spec_exits_2_with_one_line_per_problem_and_writes_nothing(in_tmp: Path) -> None:
    spec = write_spec(in_tmp / "bad.yaml", {**TINY, "metric": {"goal": "up"}, "epochs": 0,
                                            "storage": "sqlite:///fresh.db"})
    for command in ("validate", "launch"):
        result = runner.invoke(app, [command, str(spec)])
        assert result.exit_code == 2, result.output
        lines = result.output.strip().splitlines()
        assert lines == ["error: metric.goal: 'up' input should be 'maximize' or 'minimize'",
                         "error: epochs: 0 input should be greater than or equal to 1"], lines
        assert "Traceback" not in result.output
    assert sorted(p.name for p in in_tmp.iterdir()) == ["bad.yaml"]  # no database, no artifacts


def test_set_overrides_are_validated_like_the_file(in_tmp: Path) -> None:
    spec = write_spec(in_tmp / "s.yaml", TINY)
    result = runner.invoke(app, ["validate", str(spec), "--set", "run_cap=9", "--set", "data.image_size=48"])
    assert result.exit_code == 0, result.output
    assert "run_cap: 9" in result.output and "image_size: 48" in result.output
    result = runner.invoke(app, ["validate", str(spec), "--set", "run_cap=-3"])
    assert result.exit_code == 2 and "run_cap: -3" in result.output


def test_missing_file_is_one_line(in_tmp: Path) -> None:
    result = runner.invoke(app, ["launch", "nope.yaml"])
    assert result.exit_code == 2
    assert result.output.startswith("error: nope.yaml: (missing) cannot be read")


@pytest.mark.slow
@pytest.mark.usefixtures("ray_local")
def test_launch_runs_the_sweep_and_refuses_a_second_time(in_tmp: Path) -> None:
    spec = write_spec(in_tmp / "tiny.yaml", TINY)
    result = runner.invoke(app, ["launch", str(spec), "--n-trials", "4", "--storage", "sqlite:///cli.db"])
    assert result.exit_code == 0, result.output
    assert "best trial: #" in result.output
    study = optuna.load_study(study_name="tiny", storage="sqlite:///cli.db")
    assert sum(t.state == TrialState.COMPLETE for t in study.trials) == 4
    again = runner.invoke(app, ["launch", str(spec), "--storage", "sqlite:///cli.db"])
    assert again.exit_code == 2
    assert "'tiny' already exists" in again.output and "sweeper resume tiny" in again.output
    assert len(optuna.load_study(study_name="tiny", storage="sqlite:///cli.db").trials) == 4


@pytest.mark.slow
@pytest.mark.usefixtures("ray_local")
def test_a_sweep_where_every_trial_fails_exits_1(in_tmp: Path) -> None:
    spec = write_spec(in_tmp / "failing.yaml", {**TINY, "name": "failing", "max_failed_trials": 1,
                                                "parameters": {"fail": {"value": True}}})
    result = runner.invoke(app, ["launch", str(spec)])
    assert result.exit_code == 1, result.output
    assert "loss became NaN at epoch 2" in result.output
    assert "error: the sweep stopped early: 2 trials failed, more than max_failed_trials (1)" in result.output


@pytest.mark.slow
def test_readme_demo_runs_as_a_user_types_it(tmp_path: Path) -> None:
    """The README's main job, through the installed console script in a fresh directory:
    at least 10 trials, ASHA on, best val_accuracy >= 0.95, states and curves in SQLite."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, "-m", "sweeper", "launch", str(REPO / "search_spaces" / "mnist_demo.yaml")],
        cwd=tmp_path, capture_output=True, text=True, timeout=600, env=env,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "best trial: #" in done.stdout
    study = optuna.load_study(study_name="mnist_demo", storage=f"sqlite:///{tmp_path / 'sweeps.db'}")
    trials = study.get_trials()
    finished = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(finished) == 16 and len(trials) == 16
    assert any(t.state == TrialState.PRUNED for t in trials)
    assert study.best_value >= 0.95
    for t in trials:
        assert len(t.intermediate_values) == (6 if t.state == TrialState.COMPLETE else t.user_attrs["epochs_run"])
    assert all(len(t.intermediate_values) < 6 for t in trials if t.state == TrialState.PRUNED)

    # The walkthrough goes on: list, show, export the best config and train it again alone.
    def sweeper(*args: str) -> str:
        done = subprocess.run([sys.executable, "-m", "sweeper", *args], cwd=tmp_path, capture_output=True,
                              text=True, timeout=600, env=env)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        return done.stdout

    listing = sweeper("studies")
    assert "mnist_demo" in listing and "bayes" in listing and f"{study.best_value:.4f}" in listing
    shown = sweeper("show", "mnist_demo")
    assert "method: bayes" in shown and f"best trial: #{study.best_trial.number}" in shown
    sweeper("export", "mnist_demo", "-o", "best.yaml")
    exported = yaml.safe_load((tmp_path / "best.yaml").read_text())
    assert exported["provenance"]["trial"] == study.best_trial.number
    assert exported["provenance"]["value"] == study.best_value
    assert exported["params"] == study.best_trial.user_attrs["config"]["params"]
    trained = sweeper("train", "best.yaml")
    final = dict(zip(*[iter(trained.strip().splitlines()[-1].removeprefix("final: ").split())] * 2, strict=True))
    assert abs(float(final["val_accuracy"]) - study.best_value) <= 0.01, (final, study.best_value)
    retrained = sweeper("retrain", "mnist_demo", "--epochs", "1", "-o", "retrained")
    assert "evaluating on the validation images" in retrained and "val accuracy" in retrained
    assert sorted(p.name for p in (tmp_path / "retrained").iterdir()) == [
        "config.yaml", "metrics.json", "model.pt", "report.html"]
    report = sweeper("report", "mnist_demo", "-o", "report.html")
    assert "wrote report.html (16 trials)" in report


def test_export_train_studies_and_show_on_a_recorded_study(in_tmp: Path) -> None:
    """The readers on a study recorded by hand through the same code paths (no Ray needed)."""
    from sweeper.spec import validate
    from sweeper.study.record import CONFIG as CONFIG_ATTR
    from sweeper.study.studies import create_study

    sweep = validate({**TINY, "trainer": "cnn", "data": {"dataset": "digits"}, "epochs": 1,
                      "parameters": {"lr": {"values": [0.003, 0.001]}, "filters": {"value": [4, 8, 8, 8, 8]},
                                     "dense_units": {"value": 16}}})
    study = create_study(sweep, concurrency=1)
    for value, state in ((0.5, TrialState.COMPLETE), (0.9, TrialState.PRUNED), (0.7, TrialState.COMPLETE),
                         (None, TrialState.FAIL)):
        trial = study.ask(sweep.space.distributions)
        trial.set_user_attr(CONFIG_ATTR, sweep.trial_config(trial.params, trial.number))
        trial.report(value or 0.0, 1)
        study.tell(trial, value if state == TrialState.COMPLETE else None, state=state)
    result = runner.invoke(app, ["export", "tiny", "--format", "json", "-o", "best.json"])
    assert result.exit_code == 0, result.output
    import json

    best = json.loads((in_tmp / "best.json").read_text())
    assert best["provenance"]["trial"] == 2 and best["provenance"]["value"] == 0.7  # PRUNED 0.9 is never best
    result = runner.invoke(app, ["export", "tiny", "--rank", "3"])
    assert result.exit_code == 2 and "exceeds the 2 feasible COMPLETE trial(s)" in result.output
    result = runner.invoke(app, ["export", "nope"])
    assert result.exit_code == 2 and "studies there: tiny" in result.output
    result = runner.invoke(app, ["train", "best.json", "--epochs", "2"])
    assert result.exit_code == 0, result.output
    assert "epoch   2/2" in result.output and "final: train_loss" in result.output
    broken = in_tmp / "broken.yaml"
    broken.write_text(yaml.safe_dump({**best, "params": {**best["params"], "activation": "swish"}}))
    result = runner.invoke(app, ["train", str(broken)])
    assert result.exit_code == 2 and result.output.startswith("error: params.activation: 'swish' must be one of")
    result = runner.invoke(app, ["studies"])
    assert result.exit_code == 0 and "tiny" in result.output and "0.7000" in result.output
    result = runner.invoke(app, ["show", "tiny"])
    assert result.exit_code == 0 and "study tiny: 2 complete, 1 pruned, 1 failed" in result.output


@pytest.mark.slow
def test_what_the_trainers_print_comes_before_the_closing_table(tmp_path: Path) -> None:
    """Ray forwards the workers' output to the driver late, and holds lines repeated across
    workers: every line a trial printed, the repeated notice included, is out before the closing
    summary, and the output to a file has no ANSI colour codes."""
    spec = write_spec(tmp_path / "loud.yaml", {
        "name": "loud", "method": "random", "run_cap": 4, "epochs": 3, "max_concurrent_trials": 2,
        "trainer": "tests.fake_trainers:loud_fit", "metric": {"name": "val_accuracy", "goal": "maximize"},
        "storage": f"sqlite:///{tmp_path / 'loud.db'}", "artifacts": str(tmp_path / "art"),
        "parameters": {"lr": {"min": 0.01, "max": 0.1}}})
    done = subprocess.run([sys.executable, "-m", "sweeper", "launch", str(spec)], cwd=tmp_path, capture_output=True,
                          text=True, timeout=600, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = done.stdout
    closing = out.index("best trial: #")
    seeds = [int(s) for s in re.findall(r"loud trainer: seed (\d+) done", out)]
    assert len(seeds) == 4, out[-3000:]
    assert all(out.index(f"loud trainer: seed {s} done") < closing for s in seeds), out[-3000:]
    assert "loud trainer: the same notice in every trial" in out[:closing]
    assert "loud trainer" not in out[closing:], out[closing:]
    assert "\x1b[" not in out
