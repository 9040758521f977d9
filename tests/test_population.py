"""Population-based training (``scheduler: {type: pbt | pb2}``, issue 23 part 2): validation one
line each; a restored optimiser retuned to new values; whole sweeps through real Ray and SQLite
with the real CNN on real digits, their schedules kept in the study; and ``sweeper export`` +
``sweeper train`` replaying the best trial's schedule to the same curve."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import optuna
import pytest
import torch
import yaml
from optuna.trial import TrialState

from sweeper.engine.pb2 import RecordingPB2
from sweeper.engine.population import RecordingPBT
from sweeper.engine.scheduler import make_scheduler
from sweeper.errors import InputError
from sweeper.spec import validate
from sweeper.study import record
from tests.conftest import write_spec
from tests.test_resume import REPO
from trainers.optim import retune

BASE: dict[str, Any] = {
    "method": "random", "trainer": "cnn", "epochs": 6, "run_cap": 4, "max_concurrent_trials": 2,
    "metric": {"name": "val_accuracy", "goal": "maximize"}, "data": {"dataset": "digits", "image_size": 32},
    "parameters": {"lr": {"min": 1e-4, "max": 1e-1, "distribution": "log_uniform_values"},
                   "dropout": {"values": [0.0, 0.3]}, "filters": {"value": [4, 8, 8, 8, 8]}},
}
PBT = {"type": "pbt", "perturbation_interval": 2, "quantile_fraction": 0.5,
       "hyperparam_mutations": {"lr": {"min": 1e-4, "max": 1e-1, "distribution": "log_uniform_values"},
                                "dropout": {"values": [0.0, 0.1, 0.2, 0.3]}}}


# --- the spec ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("scheduler", "line"), [
    ({"type": "pbt"}, "scheduler.hyperparam_mutations: (missing) is required for pbt"),
    ({**PBT, "hyperparam_mutations": {"filters": {"values": [[4] * 5]}}},
     "scheduler.hyperparam_mutations.filters: 'filters' cannot change during a run of trainer 'cnn'"),
    ({**PBT, "hyperparam_mutations": {"lrr": {"min": 0.1, "max": 1}}},
     "scheduler.hyperparam_mutations.lrr: 'lrr' must be one of the spec's parameters; did you mean 'lr'?"),
    ({**PBT, "hyperparam_mutations": {"lr": {"min": 0.1, "max": 0.01}}},
     "scheduler.hyperparam_mutations.lr: [0.1, 0.01] must have finite min < max"),
    ({**PBT, "hyperparam_mutations": {"lr": {"min": 0.0, "max": 0.1, "distribution": "log_uniform_values"}}},
     "scheduler.hyperparam_mutations.lr.min: 0.0 must be > 0 for log_uniform_values"),
    ({"type": "pb2", "hyperparam_bounds": {"dropout": {"values": [0.0, 0.3]}}},
     "scheduler.hyperparam_bounds.dropout.values: [0.0, 0.3] pb2 takes ranges only"),
    ({**PBT, "perturbation_interval": 6}, "scheduler.perturbation_interval: 6 must be below epochs (6)"),
    ({**PBT, "quantile_fraction": 0.7}, "scheduler.quantile_fraction: 0.7 input should be less than or equal to 0.5"),
])
def test_each_bad_population_setting_is_one_line_naming_field_value_and_rule(scheduler: Any, line: str) -> None:
    with pytest.raises(InputError) as err:
        validate({**BASE, "scheduler": scheduler})
    assert [str(p) for p in err.value.problems if str(p).startswith(line)], err.value.problems


def test_pbt_is_refused_for_several_metrics_and_for_a_program(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"scheduler\.type: 'pbt' takes one metric"):
        validate({**BASE, "scheduler": PBT, "metrics": [{"name": "val_accuracy", "goal": "maximize"},
                                                        {"name": "param_count", "goal": "minimize"}]})
    (tmp_path / "train.py").write_text("print('val_accuracy=1')\n")
    with pytest.raises(InputError, match=r"scheduler\.type: 'pbt' needs a Python trainer that resumes"):
        validate({**{k: v for k, v in BASE.items() if k not in ("trainer", "data")}, "scheduler": PBT,
                  "program": "train.py", "workdir": str(tmp_path)})


def test_the_spec_becomes_rays_pbt_and_pb2_with_the_mutations_where_the_config_holds_them() -> None:
    sweep = validate({**BASE, "scheduler": PBT})
    assert sweep.scheduler_line == "PBT every 2 epochs, mutating lr, dropout"
    pbt = make_scheduler(sweep)
    assert isinstance(pbt, RecordingPBT)
    mutations = pbt._hyperparam_mutations["sweeper"]["params"]
    assert mutations["dropout"] == [0.0, 0.1, 0.2, 0.3]
    assert (mutations["lr"].lower, mutations["lr"].upper) == (1e-4, 1e-1)
    assert pbt._perturbation_interval == 2 and pbt._quantile_fraction == 0.5 and pbt._time_attr == "epoch"
    # Ray multiplies by 1.2 or 0.8 without clipping: a value past the range comes back to its edge
    explored = pbt._custom_explore_fn({"sweeper": {"params": {"lr": 0.09 * 1.2, "dropout": 0.3}}})
    assert explored["sweeper"]["params"] == {"lr": 1e-1, "dropout": 0.3}
    pb2 = make_scheduler(validate({**BASE, "scheduler": {"type": "pb2", "perturbation_interval": 2,
                                                         "hyperparam_bounds": {"lr": {"min": 1e-4, "max": 1e-1}}}}))
    assert isinstance(pb2, RecordingPB2)
    assert pb2._hyperparam_bounds == {"sweeper": {"params": {"lr": [1e-4, 1e-1]}}}


def test_a_restored_optimiser_takes_the_new_values_and_keeps_its_schedule_shape() -> None:
    """PBT's explore step on a resumed run: the learning rate scaled (a cosine schedule's place and
    shape kept), weight decay set; nothing changes when the values are the checkpoint's."""
    weights = [torch.nn.Parameter(torch.zeros(2))]
    optimizer = torch.optim.AdamW(weights, lr=0.01, weight_decay=0.0)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=10)
    for _ in range(5):
        optimizer.step()
        scheduler.step()
    halfway = optimizer.param_groups[0]["lr"]
    retune(optimizer, scheduler, {"lr": 0.02, "weight_decay": 0.1, "optimizer": "adamw"}, old_lr=0.01)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(2 * halfway)
    assert optimizer.param_groups[0]["weight_decay"] == 0.1
    scheduler.step()  # the schedule goes on from where it was, at twice the rate
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.02 * (1 + torch.cos(torch.tensor(0.6 * torch.pi))) / 2)
    before = optimizer.param_groups[0]["lr"]
    retune(optimizer, scheduler, {"lr": 0.02, "weight_decay": 0.1, "optimizer": "adamw"}, old_lr=0.02)
    assert optimizer.param_groups[0]["lr"] == before


# --- whole sweeps -----------------------------------------------------------------------------


def _cli(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "sweeper", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=600, env={**__import__("os").environ, "PYTHONPATH": str(REPO)})


@pytest.mark.slow
def test_a_pbt_sweep_keeps_each_schedule_and_train_replays_the_best_to_the_same_curve(tmp_path: Path) -> None:
    """Real Ray, SQLite, the CNN on real digits: 4 trials, 8 epochs, PBT every 2 epochs. Every trial
    is COMPLETE with its drawn values as Optuna params; some trial copied another (a step with a
    source); `sweeper export` writes that trial's schedule and `sweeper train` replays it: its
    val_accuracy per epoch is the lineage's (CPU, one thread, same seed; measured equal to 4
    decimals, asserted within 0.01)."""
    url = f"sqlite:///{tmp_path / 'p.db'}"
    spec = write_spec(tmp_path / "p.yaml", {**BASE, "name": "pbt", "epochs": 8, "storage": url,
                                            "artifacts": str(tmp_path / "a"), "scheduler": PBT})
    proc = _cli(["launch", str(spec)], tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "PBT every 2 epochs, mutating lr, dropout" in proc.stdout
    assert "Restored on" not in proc.stdout + proc.stderr
    study = optuna.load_study(study_name="pbt", storage=url)
    trials = study.get_trials()
    assert len(trials) == 4 and all(t.state == TrialState.COMPLETE for t in trials)
    schedules = {t.number: record.schedule_of(t) for t in trials}
    for t in trials:
        first = schedules[t.number][0]
        assert first["epoch"] == 1 and first["source"] is None and "seed" in first
        assert [e for step in schedules[t.number] for e, _ in step["curve"]] == list(range(1, 9))
    copied = [n for n, steps in schedules.items() if len(steps) > 1]
    assert copied, schedules  # with quantile 0.5 of 4, the lower half copies the upper at epoch 2, 4 or 6
    number = copied[0]
    step = schedules[number][-1]  # the last copy is its own (earlier steps may come with the checkpoint)
    assert step["by"] == number and step["epoch"] in (3, 5, 7) and step["source"]["epoch"] == step["epoch"] - 1
    assert step["source"]["trial"] in schedules and step["source"]["trial"] != number
    assert set(step["params"]) <= {"lr", "dropout"}
    assert all(1e-4 <= s["params"].get("lr", 1e-4) <= 1e-1 for steps in schedules.values() for s in steps)
    # Optuna's params stay the drawn ones: what the sampler proposed
    drawn = next(t for t in trials if t.number == number)
    assert record.config_of(drawn)["params"]["lr"] == drawn.params["lr"]

    exported = tmp_path / "t.yaml"
    proc = _cli(["export", "pbt", "--storage", url, "--trial", str(number), "--output", str(exported)], tmp_path)
    assert proc.returncode == 0, proc.stderr
    config = yaml.safe_load(exported.read_text())
    assert [s["epoch"] for s in config["schedule"]] == [s["epoch"] for s in schedules[number]]
    assert config["seed"] == schedules[number][0]["seed"]
    assert config["params"]["lr"] == pytest.approx(
        next(s["params"]["lr"] for s in reversed(schedules[number]) if "lr" in s["params"]))
    proc = _cli(["train", str(exported)], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert f"following its {len(config['schedule'])}-step schedule" in proc.stdout
    replayed = {int(m.group(1)): float(m.group(2))
                for m in re.finditer(r"epoch\s+(\d+)/8 .*?val_accuracy (\d\.\d+)", proc.stdout)}
    lineage = {int(e): v for s in schedules[number] for e, v in s["curve"]}
    assert sorted(replayed) == list(range(1, 9))
    assert all(abs(replayed[e] - lineage[e]) <= 0.01 for e in lineage), (replayed, lineage)
    # the report draws the lineage and each mutated parameter's schedule
    page = tmp_path / "r.html"
    proc = _cli(["report", "pbt", "--storage", url, "--output", str(page)], tmp_path)
    assert proc.returncode == 0, proc.stderr
    text = page.read_text()
    made = {(s["by"], s["epoch"], str(s["source"])) for steps in schedules.values() for s in steps[1:]}
    assert f"Population lineage: {len(made)} exploit(s)" in text
    assert "Schedule of lr" in text or "Schedule of dropout" in text


@pytest.mark.slow
def test_a_pb2_sweep_runs_through_ray_and_keeps_its_schedules(tmp_path: Path) -> None:
    """Ray's PB2 (a GP-bandit explore step) on the same sweep: COMPLETE trials, and the copies it
    made recorded with the learning rate it chose, within the bounds."""
    url = f"sqlite:///{tmp_path / 'b.db'}"
    spec = write_spec(tmp_path / "b.yaml", {
        **BASE, "name": "pb2", "epochs": 8, "storage": url, "artifacts": str(tmp_path / "a"),
        "scheduler": {"type": "pb2", "perturbation_interval": 1, "quantile_fraction": 0.5,
                      "hyperparam_bounds": {"lr": {"min": 1e-4, "max": 1e-1}}}})
    proc = _cli(["launch", str(spec)], tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    trials = optuna.load_study(study_name="pb2", storage=url).get_trials()
    assert len(trials) == 4 and all(t.state == TrialState.COMPLETE for t in trials)
    steps = [s for t in trials for s in record.schedule_of(t)[1:]]
    # PB2's GP proposes within the bounds, as float32 (1e-4 comes back as 9.9999997e-05)
    assert steps and all(set(s["params"]) <= {"lr"} for s in steps)
    assert all(1e-4 * (1 - 1e-6) <= s["params"]["lr"] <= 1e-1 * (1 + 1e-6) for s in steps if s["params"])


@pytest.mark.slow
def test_a_killed_pbt_driver_resumes_its_population_from_their_checkpoints(tmp_path: Path) -> None:
    """SIGKILL the driver while members run (each has kept its state at a checkpoint), then
    `sweeper resume`: each lost member runs again from its last checkpoint with its values and
    schedule so far (its new history starts after that epoch), and the budget is met."""
    from tests.test_resume import kill, run_to_end, start, trials_of, wait_until

    url = f"sqlite:///{tmp_path / 'k.db'}"
    spec = write_spec(tmp_path / "k.yaml", {**BASE, "name": "pbtk", "epochs": 10, "storage": url,
                                            "artifacts": str(tmp_path / "a"), "scheduler": PBT})
    log = tmp_path / "driver.log"
    driver = start(["launch", str(spec)], tmp_path, log)

    def members_kept() -> bool:
        running = [t for t in trials_of(url, "pbtk") if t.state == TrialState.RUNNING]
        return any((t.user_attrs.get(record.POPULATION_STATE) or {}).get("epoch", 0) >= 4 for t in running)

    wait_until(members_kept, 240, driver, log)
    kill(driver)
    lost = {t.number: t.user_attrs.get(record.POPULATION_STATE) for t in trials_of(url, "pbtk")
            if t.state == TrialState.RUNNING}
    kept = {n: state for n, state in lost.items() if state}
    assert kept, lost

    run_to_end(["resume", "pbtk", "--storage", url], tmp_path, log)
    trials = trials_of(url, "pbtk")
    assert sum(t.state == TrialState.COMPLETE for t in trials) == 4, log.read_text()[-3000:]
    retries = {record.retry_of(t): t for t in trials if record.retry_of(t) is not None}
    for number, state in kept.items():
        again = retries[number]
        assert again.state == TrialState.COMPLETE
        # the values it had at its checkpoint, mutated ones too (its Optuna params stay the drawn ones)
        assert record.config_of(again)["params"] == state["params"]
        assert again.params == next(t.params for t in trials if t.number == number)
        history = record.history_of(again)
        assert history[0]["epoch"] == state["epoch"] + 1 and history[-1]["epoch"] == 10  # not from epoch 1
        steps = record.schedule_of(again)
        assert [e for s in steps for e, _ in s["curve"]] == list(range(1, 11))
        if all(s["source"] in [p["source"] for p in state["schedule"]] for s in steps):
            # not copied since the resume: the lineage it had goes on
            assert [(s["epoch"], s.get("seed")) for s in steps] == [(s["epoch"], s.get("seed"))
                                                                    for s in state["schedule"]]
            assert steps[0]["curve"][:state["epoch"]] == state["schedule"][0]["curve"][:state["epoch"]]


def test_a_sweep_without_pb2_never_imports_scikit_learn() -> None:
    """Ray's PB2 imports scikit-learn and SciPy (1.5 s of a sweep's start on a 2-core machine):
    the driver's modules leave it out until a sweep uses PB2 (sweeper.engine.pb2)."""
    import subprocess
    import sys

    code = ("import sys, sweeper.engine.launch, sweeper.engine.recorder, sweeper.engine.scheduler, "
            "sweeper.engine.population; "
            "print(sorted(m for m in ('sklearn', 'scipy', 'ray.tune.schedulers.pb2') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[]"
