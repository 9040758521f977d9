"""Multi-objective sweeps: the spec's ``metrics:`` list, the Pareto ranking and multi-objective
ASHA's rung decisions (checked against sorts done by hand), the objectives sweeper measures,
and a whole sweep through real Ray and SQLite with its readers (show, export, report)."""

from __future__ import annotations

import math
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import optuna
import pytest
import torch
import yaml
from optuna.trial import TrialState

from sweeper.engine.scheduler import MultiObjectiveASHA, make_scheduler
from sweeper.errors import InputError
from sweeper.spec import validate
from sweeper.study import record
from sweeper.study.pareto import crowding_distances, hypervolume_2d, minimised, non_dominated_fronts, rank_order
from tests.conftest import write_spec
from tests.test_dashboard import free_port, get_json
from tests.test_resume import REPO, run_to_end
from trainers import get_trainer
from trainers.base import DataConfig, TrainConfig

OBJECTIVES = [{"name": "val_accuracy", "goal": "maximize"}, {"name": "model_ms", "goal": "minimize"}]


def multi_spec(name: str, url: str, tmp_path: Path, **extra: Any) -> dict[str, Any]:
    """A random search of the fake MULTI trainer (accuracy and model_ms trade off through width)."""
    return {"name": name, "method": "random", "metrics": OBJECTIVES, "trainer": "tests.fake_trainers:MULTI",
            "epochs": 9, "run_cap": 10, "max_concurrent_trials": 1, "storage": url,
            "artifacts": str(tmp_path / "artifacts"), "scheduler": {"type": "asha", "grace_period": 1,
                                                                   "reduction_factor": 3},
            "parameters": {"lr": {"values": [0.002, 0.004, 0.008, 0.016]}, "width": {"values": [2, 8, 32, 128]},
                           "sleep_s": {"value": 0.02}}, **extra}


# --- the Pareto ranking, by hand ----------------------------------------------------------

# Minimised points: A, B, C are non-dominated; B dominates D; every point dominates E.
POINTS = [(1.0, 5.0), (2.0, 3.0), (4.0, 1.0), (3.0, 4.0), (5.0, 5.0)]


def test_non_dominated_sort_crowding_and_hypervolume_match_a_hand_computation() -> None:
    assert non_dominated_fronts(POINTS) == [[0, 1, 2], [3], [4]]
    # B's neighbours: (4 - 1) / 3 in the first objective, (5 - 1) / 4 in the second; the ends are infinite.
    assert crowding_distances(POINTS, [0, 1, 2]) == {0: math.inf, 1: 2.0, 2: math.inf}
    assert rank_order(POINTS) == [0, 2, 1, 3, 4]
    # Staircase to (6, 6): x in [1, 2) covers 1, [2, 4) covers 2 * 3, [4, 6] covers 2 * 5.
    assert hypervolume_2d(POINTS, (6.0, 6.0)) == 17.0
    assert minimised([0.9, 3.0], ["maximize", "minimize"]) == (-0.9, 3.0)


# --- multi-objective ASHA's rungs, by hand ------------------------------------------------


class _Trial:
    def __init__(self, trial_id: str):
        self.trial_id = trial_id


def _scheduler() -> MultiObjectiveASHA:
    return MultiObjectiveASHA(time_attr="epoch", metrics=["acc", "ms"], goals=["maximize", "minimize"], max_t=9,
                              grace_period=1, reduction_factor=3)


# (trial, epoch, accuracy, milliseconds, the decision worked out by hand)
HAND_MADE = [
    ("t1", 1, 0.50, 10.0, "CONTINUE"),  # alone at rung 1
    ("t2", 1, 0.40, 12.0, "STOP"),  # t1 dominates it; top 1 of 2 is t1
    ("t3", 1, 0.30, 5.0, "CONTINUE"),  # not top 1 of 3 (t1 and t3 tie on the first front), but no one dominates it
    ("t4", 1, 0.45, 11.0, "STOP"),  # t1 dominates it; top 1 of 4
    ("t5", 1, 0.60, 4.0, "CONTINUE"),  # dominates every other: the first front alone
    ("t6", 1, 0.55, 4.5, "CONTINUE"),  # t5 dominates it, but it is alone on the second front: top 2 of 6
    ("t1", 3, 0.70, 10.0, "CONTINUE"),  # alone at rung 3
    ("t3", 3, 0.35, 5.0, "CONTINUE"),  # t1 and t3 do not dominate each other
    ("t5", 3, 0.80, 4.0, "CONTINUE"),  # dominates both
    ("t6", 3, 0.50, 4.5, "STOP"),  # t5 dominates it; top 1 of 4
    ("t5", 9, 0.90, 4.0, "STOP"),  # max_t: the trial is done
]


def test_rung_decisions_follow_the_non_dominated_sort_worked_out_by_hand() -> None:
    scheduler = _scheduler()
    assert [level for level, _ in scheduler.rungs] == [1.0, 3.0]
    trials = {name: _Trial(name) for name in ("t1", "t2", "t3", "t4", "t5", "t6")}
    decisions = [scheduler.on_trial_result(None, trials[name], {"epoch": epoch, "acc": acc, "ms": ms})
                 for name, epoch, acc, ms, _ in HAND_MADE]
    assert decisions == [expected for *_, expected in HAND_MADE]
    assert {n for n in trials if scheduler.stopped(n)} == {"t2", "t4", "t5", "t6"}
    # A result without every objective is not judged.
    assert scheduler.on_trial_result(None, _Trial("t7"), {"epoch": 1, "acc": 0.1}) == "CONTINUE"
    assert "t7" not in scheduler.rungs[0][1]


def test_rungs_rebuilt_from_stored_curves_hold_what_the_live_rungs_held() -> None:
    live = _scheduler()
    curves: dict[str, dict[int, list[float]]] = {}
    for name, epoch, acc, ms, _ in HAND_MADE:
        live.on_trial_result(None, _Trial(name), {"epoch": epoch, "acc": acc, "ms": ms})
        curves.setdefault(name, {})[epoch] = [acc, ms]
    rebuilt = _scheduler()
    rebuilt.replay(curves)
    assert rebuilt.rungs == live.rungs
    # So a trial after a resume is judged as it would have been live: t8 is dominated by t5 at rung 1.
    assert rebuilt.on_trial_result(None, _Trial("t8"), {"epoch": 1, "acc": 0.2, "ms": 6.0}) == "STOP"
    assert _scheduler().on_trial_result(None, _Trial("t8"), {"epoch": 1, "acc": 0.2, "ms": 6.0}) == "CONTINUE"


# --- the spec -------------------------------------------------------------------------------


def test_a_metrics_list_makes_a_multi_objective_sweep_that_round_trips(tmp_path: Path) -> None:
    sweep = validate(multi_spec("mo", f"sqlite:///{tmp_path / 's.db'}", tmp_path))
    assert [(m.name, m.goal) for m in sweep.objectives] == [("val_accuracy", "maximize"), ("model_ms", "minimize")]
    assert sweep.multi_objective and sweep.spec.metric.name == "val_accuracy"
    stored = sweep.stored()
    assert "metric" not in stored and stored["metrics"] == [{**m, "target": None} for m in OBJECTIVES]
    assert validate(stored).objectives == sweep.objectives
    assert isinstance(make_scheduler(sweep), MultiObjectiveASHA)
    single = validate({**multi_spec("so", f"sqlite:///{tmp_path / 's.db'}", tmp_path), "metrics": None})
    assert not single.multi_objective and "metrics" not in single.stored()


@pytest.mark.parametrize(("change", "expected"), [
    ({"metric": {"name": "val_loss", "goal": "minimize"}}, "metric: 'val_loss' give `metric` (one objective)"),
    ({"metrics": [OBJECTIVES[0], OBJECTIVES[0]]}, "metrics[1].name: 'val_accuracy' names an objective twice"),
    ({"metrics": [{**OBJECTIVES[0], "target": 0.9}, OBJECTIVES[1]]}, "metrics[0].target: 0.9 is for a single"),
    ({"metrics": [OBJECTIVES[0], {"name": "model_mss", "goal": "minimize"}]},
     "metrics[1].name: 'model_mss' must be a metric the trainer reports"),
    ({"metrics": [OBJECTIVES[0]]}, "metrics"),
])
def test_a_wrong_metrics_list_is_one_line_naming_the_field(tmp_path: Path, change: dict[str, Any],
                                                           expected: str) -> None:
    with pytest.raises(InputError) as err:
        validate({**multi_spec("mo", f"sqlite:///{tmp_path / 's.db'}", tmp_path), **change})
    lines = [str(p) for p in err.value.problems]
    assert any(line.startswith(expected) for line in lines), lines


def test_the_cli_refuses_a_wrong_metrics_list_with_exit_2_and_writes_nothing(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    spec = write_spec(tmp_path / "bad.yaml", {**multi_spec("mo", f"sqlite:///{db}", tmp_path),
                                              "metrics": [OBJECTIVES[0], {"name": "latency", "goal": "minimize"}]})
    proc = subprocess.run([sys.executable, "-m", "sweeper", "launch", str(spec)], cwd=tmp_path, capture_output=True,
                          text=True, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}, timeout=120)
    assert proc.returncode == 2
    assert "metrics[1].name: 'latency' must be a metric the trainer reports" in proc.stderr
    assert "Traceback" not in proc.stderr and not db.exists()


# --- what sweeper measures ----------------------------------------------------------------


def test_the_cnn_reports_its_trainable_parameters_and_its_inference_time_when_asked() -> None:
    params = {"filters": [4, 8, 8, 8, 8], "dense_units": 16, "batch_size": 64, "lr": 0.003}
    data = DataConfig("digits", image_size=32)
    trainer = get_trainer("cnn")
    rows: list[dict[str, float]] = []
    config = TrainConfig(params, data, epochs=2, seed=0, threads=2, measure_inference=True)
    trainer.fit(config, lambda epoch, metrics, checkpoint=None: rows.append(dict(metrics)))
    built = trainer.build(config, 1, 10) if trainer.build else None
    assert built is not None
    expected = sum(p.numel() for p in built.parameters() if p.requires_grad)
    assert [r["param_count"] for r in rows] == [expected, expected]
    assert all(0 < r["inference_ms"] < 1000 for r in rows) and rows[0]["inference_ms"] == rows[1]["inference_ms"]
    plain: list[dict[str, float]] = []
    trainer.fit(TrainConfig(params, data, epochs=1, seed=0, threads=2),
                lambda epoch, metrics, checkpoint=None: plain.append(dict(metrics)))
    assert "inference_ms" not in plain[0] and plain[0]["param_count"] == expected
    assert torch.get_num_threads() >= 1


# --- a whole sweep ------------------------------------------------------------------------


@pytest.mark.slow
def test_a_multi_objective_sweep_with_asha_keeps_every_curve_and_shows_its_front(tmp_path: Path,
                                                                               study_name: str) -> None:
    url = f"sqlite:///{tmp_path / 'sweeps.db'}"
    spec = write_spec(tmp_path / "mo.yaml", multi_spec(study_name, url, tmp_path))
    log = tmp_path / "driver.log"
    run_to_end(["launch", str(spec)], tmp_path, log)
    text = log.read_text()
    assert "Pareto front: val_accuracy (maximize), model_ms (minimize)" in text and "Traceback" not in text

    study = optuna.load_study(study_name=study_name, storage=url)
    assert [d.name for d in study.directions] == ["MAXIMIZE", "MINIMIZE"]
    trials = [t for t in study.get_trials() if not record.is_duplicate_draw(t)]
    states = {t.state for t in trials}
    assert states == {TrialState.COMPLETE, TrialState.PRUNED}
    for t in trials:
        curve = record.objective_curve_of(t)
        history = record.history_of(t)
        assert not t.intermediate_values  # none in a multi-objective study (Optuna's TPE would raise)
        assert sorted(curve) == [row["epoch"] for row in history] == list(range(1, record.epochs_run_of(t) + 1))
        assert all(curve[int(r["epoch"])] == [r["val_accuracy"], r["model_ms"]] for r in history)
        assert all(r["train_s"] > 0 and r["gpu_hours"] == 0.0 for r in history)  # measured by sweeper, on the CPU
        if t.state == TrialState.COMPLETE:
            assert t.values == curve[9]
        else:
            assert t.values is None and max(curve) < 9
    front = {t.number for t in study.best_trials}
    assert front and front == {row["trial"] for row in _pareto(study_name, url, tmp_path)}

    shown = _cli(["show", study_name, "--storage", url], tmp_path)
    assert "Pareto front" in shown.stdout and f"Pareto front: {len(front)} trial(s)" in shown.stdout
    pick = min(front)
    exported = _cli(["export", study_name, "--storage", url, "--trial", str(pick), "-o", "t.yaml"], tmp_path)
    assert exported.returncode == 0, exported.stderr
    provenance = yaml.safe_load((tmp_path / "t.yaml").read_text())["provenance"]
    assert provenance["trial"] == pick and provenance["rank"] is None
    assert list(provenance["values"].values()) == study.trials[pick].values
    by_rank = _cli(["export", study_name, "--storage", url], tmp_path)
    assert by_rank.returncode == 2 and "--rank: study" in by_rank.stderr and "--trial N" in by_rank.stderr
    pruned = next(t.number for t in trials if t.state == TrialState.PRUNED)
    retrain = _cli(["retrain", study_name, "--storage", url, "--trial", str(pruned)], tmp_path)
    assert retrain.returncode == 2 and f"--trial: {pruned} is a PRUNED trial" in retrain.stderr
    report = _cli(["report", study_name, "--storage", url, "-o", "r.html"], tmp_path)
    assert report.returncode == 0, report.stderr
    page = (tmp_path / "r.html").read_text()
    assert "<h2>Pareto front plot</h2>" in page and "id='front'" in page and "PRUNED (last epoch)" in page
    _dashboard_shows_the_front(study_name, url, tmp_path, front)


def _dashboard_shows_the_front(study: str, url: str, cwd: Path, front: set[int]) -> None:
    """optuna-dashboard (``sweeper dashboard``) serves the study with both directions and its front."""
    port = free_port()
    with (cwd / "server.log").open("w") as log:
        server = subprocess.Popen([sys.executable, "-m", "sweeper", "dashboard", study, "--storage", url,
                                   "--port", str(port)], cwd=cwd, stdout=log, stderr=subprocess.STDOUT,
                                  env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    try:
        deadline, summaries = time.monotonic() + 60, {}
        while time.monotonic() < deadline and not summaries:
            try:
                summaries = get_json(f"http://127.0.0.1:{port}/api/studies")
            except OSError:
                time.sleep(0.3)
        [summary] = summaries["study_summaries"]
        detail = get_json(f"http://127.0.0.1:{port}/api/studies/{summary['study_id']}")
        assert [d.lower() for d in summary["directions"]] == ["maximize", "minimize"]
        assert {t["number"] for t in detail["best_trials"]} == front
    finally:
        server.kill()


def _cli(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "sweeper", *args], cwd=cwd, capture_output=True, text=True,
                          env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", "COLUMNS": "200"}, timeout=300)


def _pareto(study: str, url: str, cwd: Path) -> list[dict[str, Any]]:
    """The trials ``sweeper export --pareto`` lists (read from its table)."""
    listed = _cli(["export", study, "--storage", url, "--pareto"], cwd)
    assert listed.returncode == 0, listed.stderr
    rows = [line.split("│")[1].strip() for line in listed.stdout.splitlines() if line.startswith("│")]
    return [{"trial": int(r)} for r in rows]
