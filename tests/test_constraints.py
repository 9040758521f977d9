"""Outcome constraints (``constraints:``): validation one line each, the bounds' arithmetic, the
schedulers' decisions on hand-made results, and whole sweeps through real Ray and SQLite (and
PostgreSQL) with their readers: the study records Optuna's constraint values, a trial too large
is PRUNED ``infeasible`` after its first epoch, and "best" is the best feasible trial."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from sweeper.engine.scheduler import FeasibilityScheduler, RecordingASHA, make_scheduler
from sweeper.errors import InputError
from sweeper.spec import validate
from sweeper.study import record
from sweeper.study.constraints import (
    INFEASIBLE,
    Bound,
    bounds_of,
    constraint_values,
    final_violation,
    judged,
    violations,
)
from tests.conftest import write_spec
from tests.test_resume import REPO

BASE: dict[str, Any] = {"method": "random", "trainer": "tests.fake_trainers:SIZED", "epochs": 3,
                        "parameters": {"width": {"values": [4, 16, 64]}}}


# --- the spec ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("constraints", "line"), [
    ([{"name": "param_cout", "max": 2e6}], "constraints[0].name: 'param_cout' must be a metric the trainer reports "
                                          "or sweeper measures"),
    ([{"name": "param_count", "max": float("nan")}], "constraints[0].max: nan must be a finite number"),
    ([{"name": "param_count", "min": float("inf")}], "constraints[0].min: inf must be a finite number"),
    ([{"name": "val_accuracy", "min": 0.5}], "constraints[0].name: 'val_accuracy' is an objective of this sweep"),
    (["param_count"], "constraints.0: 'param_count' input should be a valid dictionary"),
    ("param_count <= 2e6", "constraints: 'param_count <= 2e6' input should be a valid list"),
    ([{"name": "param_count"}], "constraints[0]: 'param_count' needs a bound"),
    ([{"name": "val_loss", "max": 1.0, "min": 2.0}], "constraints[0].min: 2.0 is above max"),
])
def test_each_bad_constraint_is_one_line_naming_field_value_and_rule(constraints: Any, line: str) -> None:
    with pytest.raises(InputError) as err:
        validate({**BASE, "constraints": constraints})
    assert [str(p) for p in err.value.problems if str(p).startswith(line)], err.value.problems
    assert "did you mean 'param_count'" in str(err.value) or "param_cout" not in str(constraints)


def test_the_cli_refuses_a_bad_constraint_with_exit_2_and_writes_nothing(tmp_path: Path) -> None:
    spec = write_spec(tmp_path / "s.yaml", {**BASE, "storage": f"sqlite:///{tmp_path / 'x.db'}",
                                            "constraints": [{"name": "param_count", "max": ".inf"}]})
    text = spec.read_text().replace("'.inf'", ".inf")
    spec.write_text(text)
    proc = subprocess.run([sys.executable, "-m", "sweeper", "launch", str(spec)], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "constraints[0].max: inf must be a finite number" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "x.db").exists()


def test_bounds_become_optuna_constraint_values_and_tell_final_from_recoverable() -> None:
    bounds = bounds_of([{"name": "param_count", "max": 2e6}, {"name": "val_loss", "max": 0.5, "min": 0.1},
                        {"name": "train_s", "max": 60, "min": 1}])
    assert [b.key for b in bounds] == ["param_count.max", "val_loss.max", "val_loss.min", "train_s.max",
                                       "train_s.min"]
    assert [b.final for b in bounds] == [True, False, False, True, False]
    row = {"param_count": 3e6, "val_loss": 0.05, "train_s": 10.0}
    assert violations(bounds, row) == {"param_count.max": 1e6, "val_loss.max": 0.05 - 0.5,
                                       "val_loss.min": 0.1 - 0.05, "train_s.max": -50.0, "train_s.min": -9.0}
    assert final_violation(bounds, row) == "infeasible: param_count 3e+06 > max 2e+06"
    assert final_violation(bounds, {**row, "param_count": 1e6}) is None  # val_loss may still rise above 0.1
    # ASHA ranks a row that breaks a bound below every feasible value, less violating first.
    assert judged(bounds, {"param_count": 1e6, "val_loss": 0.3}, 0.8, maximize=True) == 0.8
    low = judged(bounds, {"param_count": 1e6, "val_loss": 0.6}, 0.9, maximize=True)
    lower = judged(bounds, {"param_count": 1e6, "val_loss": 0.9}, 0.9, maximize=True)
    assert lower < low <= -INFEASIBLE
    assert judged(bounds, {"param_count": 1e6, "val_loss": 0.6}, 0.2, maximize=False) >= INFEASIBLE


# --- the schedulers' decisions, by hand ----------------------------------------------------------


class _Trial:
    def __init__(self, trial_id: str):
        self.trial_id = trial_id


def test_asha_stops_a_final_violation_at_once_and_judges_feasible_trials_first() -> None:
    bounds = (Bound("param_count", "max", 1000.0), Bound("val_loss", "max", 0.5))
    asha = RecordingASHA(time_attr="epoch", metric="acc", mode="max", max_t=9, grace_period=1, reduction_factor=2,
                         bounds=bounds)
    big, lossy, good = _Trial("big"), _Trial("lossy"), _Trial("good")
    for t in (big, lossy, good):
        asha.on_trial_add(None, t)  # type: ignore[arg-type]
    # The most accurate trial is too large: stopped at its first result, whatever ASHA would say.
    assert asha.on_trial_result(None, big, {"epoch": 1, "acc": 0.99, "param_count": 5000.0, "val_loss": 0.1}) == "STOP"
    assert asha.stopped("big") and asha.infeasible("big") == "infeasible: param_count 5000 > max 1000"
    # Breaking a bound that may recover: it trains on (alone at the rung, nothing to compare).
    assert asha.on_trial_result(None, lossy, {"epoch": 1, "acc": 0.9, "param_count": 10.0, "val_loss": 0.8}) == \
        "CONTINUE"
    # A feasible but less accurate trial ranks above it: top 1 of 2 at rung 1 goes on.
    assert asha.on_trial_result(None, good, {"epoch": 1, "acc": 0.5, "param_count": 10.0, "val_loss": 0.4}) == \
        "CONTINUE"
    assert asha.infeasible("lossy") is None and asha.infeasible("good") is None
    # Without bounds the same results keep the accurate trial and stop the feasible one.
    plain = RecordingASHA(time_attr="epoch", metric="acc", mode="max", max_t=9, grace_period=1, reduction_factor=2)
    for t in (lossy, good):
        plain.on_trial_add(None, t)  # type: ignore[arg-type]
    plain.on_trial_result(None, lossy, {"epoch": 1, "acc": 0.9, "val_loss": 0.8})
    assert plain.on_trial_result(None, good, {"epoch": 1, "acc": 0.5, "val_loss": 0.4}) == "STOP"


def test_a_sweep_without_asha_gets_a_scheduler_that_only_stops_infeasible_trials() -> None:
    sweep = validate({**BASE, "constraints": [{"name": "param_count", "max": 20000}]})
    scheduler = make_scheduler(sweep)
    assert isinstance(scheduler, FeasibilityScheduler)
    t = _Trial("t")
    assert scheduler.on_trial_result(None, t, {"epoch": 1, "param_count": 16000.0}) == "CONTINUE"  # type: ignore[arg-type]
    assert scheduler.on_trial_result(None, t, {"epoch": 1, "param_count": 64000.0}) == "STOP"  # type: ignore[arg-type]
    assert scheduler.infeasible("t") == "infeasible: param_count 6.4e+04 > max 2e+04"
    assert make_scheduler(validate(BASE)) is None


# --- whole sweeps through Ray -------------------------------------------------------------------


def _cli(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "sweeper", *args], cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "200"}, timeout=600)


def _spec(tmp_path: Path, name: str, url: str, limit: float) -> Path:
    """A grid of three widths (the widest the most accurate) with ``param_count <= limit``."""
    return write_spec(tmp_path / f"{name}.yaml", {
        "name": name, "method": "grid", "trainer": "tests.fake_trainers:SIZED", "epochs": 3,
        "max_concurrent_trials": 1, "storage": url, "artifacts": str(tmp_path / "artifacts"),
        "scheduler": {"type": "none"}, "constraints": [{"name": "param_count", "max": limit}],
        "parameters": {"width": {"values": [4, 16, 64]}, "lr": {"value": 0.01}, "sleep_s": {"value": 0.0}}})


@pytest.mark.slow
def test_a_constrained_sweep_prunes_the_too_large_and_its_best_is_feasible(tmp_path: Path, storage_url: str,
                                                                              study_name: str) -> None:
    proc = _cli(["launch", str(_spec(tmp_path, study_name, storage_url, 20000))], tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1 infeasible (constraints: param_count <= 20000)" in proc.stdout
    study = optuna.load_study(study_name=study_name, storage=storage_url)
    by_width = {t.params["width"]: t for t in study.get_trials()}
    assert sorted(by_width) == [4, 16, 64]
    big = by_width[64]
    # Stopped after the epoch that measured it, recorded PRUNED with the reason, its curve kept.
    assert big.state == TrialState.PRUNED and record.epochs_run_of(big) == 1
    assert record.pruned_reason_of(big) == "infeasible: param_count 6.4e+04 > max 2e+04"
    assert big.system_attrs["constraints:param_count.max"] == 64000 - 20000
    assert by_width[16].state == TrialState.COMPLETE and by_width[16].constraints == {"param_count.max": -4000.0}
    # Optuna's own best_trial and sweeper's agree: the widest feasible, not the most accurate.
    assert study.best_trial.number == by_width[16].number
    exported = tmp_path / "best.yaml"
    proc = _cli(["export", study_name, "--storage", storage_url, "--output", str(exported)], tmp_path)
    assert proc.returncode == 0, proc.stderr
    config = yaml.safe_load(exported.read_text())
    assert config["params"]["width"] == 16
    assert config["provenance"]["feasible"] is True
    assert config["provenance"]["constraints"] == {"param_count.max": -4000.0}
    report = tmp_path / "report.html"
    proc = _cli(["report", study_name, "--storage", storage_url, "--output", str(report)], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "INFEASIBLE (PRUNED): 1" in report.read_text()


@pytest.mark.slow
def test_when_no_trial_is_feasible_it_says_so_and_exports_nothing_silently(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'sweeps.db'}"
    proc = _cli(["launch", str(_spec(tmp_path, "tiny", url, 1000))], tmp_path)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "no trial meets the constraints; the least violating is #" in proc.stdout
    assert "no trial met the constraints" in proc.stderr
    proc = _cli(["export", "tiny", "--storage", url, "--output", str(tmp_path / "best.yaml")], tmp_path)
    assert proc.returncode == 2 and not (tmp_path / "best.yaml").exists()
    assert "no COMPLETE trial of study 'tiny' meets its constraints" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_resume_rebuilds_the_rungs_asha_held_live_with_constraints() -> None:
    """What a resumed sweep's ASHA holds (replayed from the study's per-epoch history) equals what
    it held live, infeasible trials ranked last and the one stopped as infeasible included."""
    bounds = (Bound("param_count", "max", 1000.0), Bound("val_loss", "max", 0.5))
    results = {
        "a": [{"epoch": 1, "acc": 0.6, "param_count": 10.0, "val_loss": 0.4},
              {"epoch": 2, "acc": 0.7, "param_count": 10.0, "val_loss": 0.3}],
        "b": [{"epoch": 1, "acc": 0.9, "param_count": 10.0, "val_loss": 0.8}],
        "c": [{"epoch": 1, "acc": 0.95, "param_count": 5000.0, "val_loss": 0.1}],
        "d": [{"epoch": 1, "acc": 0.5, "param_count": 10.0, "val_loss": 0.2},
              {"epoch": 2, "acc": 0.8, "param_count": 10.0, "val_loss": 0.2}],
    }

    def make() -> RecordingASHA:
        return RecordingASHA(time_attr="epoch", metric="acc", mode="max", max_t=4, grace_period=1,
                             reduction_factor=2, bounds=bounds)

    live = make()
    for name, rows in results.items():
        trial = _Trial(name)
        live.on_trial_add(None, trial)  # type: ignore[arg-type]
        for row in rows:
            if live.on_trial_result(None, trial, dict(row)) == "STOP":  # type: ignore[arg-type]
                break
        live.on_trial_complete(None, trial, dict(row))  # type: ignore[arg-type]
    replayed = make()
    replayed.replay({name: {int(r["epoch"]): r for r in rows} for name, rows in results.items()})

    def rungs(asha: RecordingASHA) -> list[dict[str, float]]:
        return [dict(recorded) for _, recorded in asha._brackets[0]._rungs]

    assert rungs(replayed) == rungs(live)
    rung1 = next(r for r in rungs(live) if "c" in r)
    assert rung1["a"] == 0.6 and rung1["c"] < rung1["b"] < 0  # both infeasible, c the more violating


def test_a_study_stored_before_constraints_existed_still_matches_its_spec() -> None:
    from sweeper.spec import spec_differences

    given = validate(BASE).stored()
    older = {k: v for k, v in given.items() if k not in ("constraints", "trial_timeout")}
    assert spec_differences(older, given) == []
    assert spec_differences(older, {**given, "constraints": [{"name": "param_count", "max": 1.0, "min": None}]}) == [
        "constraints: None (stored) -> [{'name': 'param_count', 'max': 1.0, 'min': None}] (given)"]


def test_a_constraint_on_a_metric_the_trainer_never_reports_is_refused_and_never_passes_as_met() -> None:
    with pytest.raises(InputError) as err:
        validate({**BASE, "trainer": "tests.fake_trainers:CURVE", "parameters": {"lr": {"values": [0.1, 0.2]}},
                  "constraints": [{"name": "param_count", "max": 10}]})
    assert "constraints[0].name: 'param_count' must be a metric the trainer reports" in str(err.value)
    bounds = bounds_of([{"name": "param_count", "max": 10}])
    assert constraint_values(bounds, {"val_accuracy": 0.9}) == {"param_count.max": math.inf}
    assert constraint_values(bounds, {"param_count": 4.0}) == {"param_count.max": -6.0}
