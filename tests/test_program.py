"""W&B programs as trials, with the real ``wandb`` package (disabled mode: no account, no network):
the agent's command macros against W&B's own code, a W&B project folder swept unchanged with
hyperband, failures, stdout metrics, and no program left behind by a killed driver."""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.trial import TrialState
from typer.testing import CliRunner

from sweeper.cli import app
from sweeper.errors import InputError
from sweeper.spec import validate
from sweeper.trial.program import command_line, macro_values
from tests.conftest import write_spec
from tests.test_resume import FINISHED, assert_finishes, ctrl_c, kill, start, trials_of, wait_until

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "search_spaces" / "wandb_project"
runner = CliRunner()

PARAMS = {"lr": 0.001, "num_filters": 32, "augment": True, "batch_norm": False, "filters": [32, 64],
          "optimizer": {"name": "adam", "beta": 0.9}, "activation": "relu", "note": "two words"}


def test_every_macro_is_encoded_as_the_wandb_agent_encodes_it(tmp_path: Path) -> None:
    """Each of sweeper's macro expansions equals the W&B agent's own (wandb.sdk.launch.sweeps.utils)."""
    from wandb.sdk.launch.sweeps import utils as wandb_utils

    theirs = wandb_utils.create_sweep_command_args({"args": {k: {"value": v} for k, v in PARAMS.items()}})
    ours = macro_values(PARAMS)
    for macro in ("args", "args_no_hyphens", "args_no_boolean_flags", "args_no_equals", "args_json",
                  "args_append_hydra", "args_override_hydra"):
        assert ours[macro] == theirs[macro], macro
    # ${envvar:NAME} inside a word, as the agent's create_sweep_command fills it
    command = ["${env}", "${interpreter}", "${program}", "--data=${envvar:DATA_DIR}/x", "${args_json_file}",
               "${args_no_boolean_flags}", "${unknown}"]
    os.environ["DATA_DIR"] = "/data"
    try:
        their_words = wandb_utils.create_sweep_command(list(command))
    finally:
        del os.environ["DATA_DIR"]
    words = command_line("train.py", command, PARAMS, str(tmp_path / "a.json"), {"DATA_DIR": "/data"})
    assert their_words[3] == "--data=/data/x" == words[3]
    assert words[:3] == ["/usr/bin/env", words[1], "train.py"] and words[1].endswith(("python", "python3",
                                                                                     "python3.11"))
    assert words[4] == str(tmp_path / "a.json")
    assert words[5:] == theirs["args_no_boolean_flags"]  # ${unknown} is dropped, as by the agent
    # the default command is the agent's: ${env} ${interpreter} ${program} ${args}
    assert command_line("t.py", None, {"a": 1}, "f", {})[2:] == ["t.py", "--a=1"]


def _digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


@pytest.mark.slow
@pytest.mark.usefixtures("ray_local")
def test_a_wandb_project_folder_is_swept_unchanged_with_hyperband(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """The example W&B project (sweep.yaml with program: train.py, train.py using wandb and argparse)
    runs with `sweeper launch sweep.yaml` from its folder: COMPLETE and PRUNED trials with their
    curves, every logged number kept, the folder unchanged (no wandb/ written: disabled mode)."""
    project = tmp_path / "project"
    shutil.copytree(EXAMPLE, project)
    before = _digest(project)
    monkeypatch.chdir(project)
    url = f"sqlite:///{tmp_path / 'study.db'}"
    result = runner.invoke(app, ["launch", "sweep.yaml", "--storage", url, "--artifacts", str(tmp_path / "art"),
                                 "--n-trials", "6", "--set", "parameters.lr.min=0.00001",
                                 "--set", "early_terminate.eta=2"])
    assert result.exit_code == 0, result.output
    assert _digest(project) == before  # nothing edited, nothing written there
    trials = optuna.load_study(study_name="sweep", storage=url).trials
    states = {t.state for t in trials}
    assert TrialState.COMPLETE in states and TrialState.PRUNED in states, [(t.state, t.intermediate_values)
                                                                          for t in trials]
    for t in trials:
        if t.state == TrialState.COMPLETE:
            assert sorted(t.intermediate_values) == list(range(1, 7)) and t.value == t.intermediate_values[6]
        elif t.state == TrialState.PRUNED:
            assert 1 <= len(t.intermediate_values) < 6
        history = t.user_attrs["history"]
        assert {"val_acc", "val_loss", "train/loss"} <= set(history[-1])  # every logged number, as W&B names it
    assert max(t.value for t in trials if t.state == TrialState.COMPLETE) > 0.8
    assert not _programs_gone_within("train.py", 15)
    # export -> train: the best trial's program runs again alone, with its parameters and --epochs 2
    best = tmp_path / "best.yaml"
    assert runner.invoke(app, ["export", "sweep", "--storage", url, "-o", str(best)]).exit_code == 0
    trained = runner.invoke(app, ["train", str(best), "--epochs", "2"])
    assert trained.exit_code == 0, trained.output
    assert "epoch   2/2" in trained.output and "epoch   3/" not in trained.output and "final: " in trained.output
    assert _digest(project) == before


def _programs_running(marker: str) -> list[str]:
    done = subprocess.run(["pgrep", "-af", marker], capture_output=True, text=True, check=False)
    return [line for line in done.stdout.splitlines() if "pgrep" not in line]


def _programs_gone_within(marker: str, timeout_s: float) -> list[str]:
    """What still runs of ``marker`` after up to ``timeout_s`` seconds: a trial stopped as its
    sweep ends gets SIGTERM and its launcher reaps its tree (SIGKILL after the grace), which may
    finish just after `launch` returns."""
    deadline = time.monotonic() + timeout_s
    while _programs_running(marker) and time.monotonic() < deadline:
        time.sleep(0.2)
    return _programs_running(marker)


FAILING = """
import sys, wandb
run = wandb.init()
wandb.log({"score": 0.1})
raise ValueError(f"bad value for lr: {wandb.config.lr}")
"""

STDOUT = """
import argparse, time
p = argparse.ArgumentParser(); p.add_argument("--lr", type=float); p.add_argument("--epochs", type=int)
a = p.parse_args()
for epoch in range(1, 3):  # ends by itself after 2 of its 4 epochs
    time.sleep(0.05)
    print(f"progress {epoch}")
    print(f"score={a.lr * epoch}", flush=True)
"""


@pytest.mark.slow
@pytest.mark.usefixtures("ray_local")
def test_failing_and_stdout_programs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A program that raises is FAIL with its error's last line; a program without wandb that
    prints name=value lines and exits 0 before its epochs bound is COMPLETE at its last value."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "fails.py").write_text(FAILING)
    (tmp_path / "prints.py").write_text(STDOUT)
    url = f"sqlite:///{tmp_path / 's.db'}"
    base = {"method": "random", "metric": {"name": "score", "goal": "maximize"}, "storage": url,
            "artifacts": str(tmp_path / "art"), "max_concurrent_trials": 2,
            "parameters": {"lr": {"min": 0.1, "max": 0.2}, "epochs": {"value": 4}}}
    result = runner.invoke(app, ["launch", str(write_spec(tmp_path / "f.yaml", {
        **base, "name": "fails", "program": "fails.py", "run_cap": 1, "max_failed_trials": 0}))])
    assert result.exit_code == 1, result.output
    [failed] = optuna.load_study(study_name="fails", storage=url).trials
    assert failed.state == TrialState.FAIL
    assert failed.user_attrs["fail_reason"].startswith("ProgramFailed: fails.py ended with exit code 1: "
                                                      "ValueError: bad value for lr: 0.")
    result = runner.invoke(app, ["launch", str(write_spec(tmp_path / "p.yaml", {
        **base, "name": "prints", "program": "prints.py", "run_cap": 2,
        "command": ["${env}", "${interpreter}", "${program}", "${args}"]}))])
    assert result.exit_code == 0, result.output
    study = optuna.load_study(study_name="prints", storage=url)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 2
    for t in study.trials:
        lr = t.params["lr"]
        assert t.intermediate_values == {1: pytest.approx(lr), 2: pytest.approx(2 * lr)}
        assert t.value == pytest.approx(2 * lr)
        logs = Path(t.user_attrs["config"]["program"]["logs"])
        if t.number == study.best_trial.number:  # the program read its W&B config file; the file is kept
            config = yaml.safe_load((logs / f"trial-{t.number}.config.yaml").read_text())
            assert config["lr"]["value"] == pytest.approx(lr)
        else:  # keep_checkpoints 1: the other COMPLETE trial's logs went with its checkpoints
            assert not list(logs.glob(f"trial-{t.number}.*")), sorted(logs.iterdir())


@pytest.mark.slow
@pytest.mark.parametrize("stop", ["sigkill", "ctrl-c"])
def test_a_killed_or_interrupted_driver_leaves_no_program_and_resume_finishes(tmp_path: Path, stop: str) -> None:
    """SIGKILL the driver, or press Ctrl-C, while programs run: none is left running (each dies
    with its worker, or is stopped with its trial), and `sweeper resume` finishes the budget."""
    program = tmp_path / f"slow_program_{stop.replace('-', '_')}_7f3a.py"
    program.write_text("import sys, time\nfor e in range(1, 5):\n    time.sleep(1.0)\n"
                       "    print(f'score={e}', flush=True)\n")
    url = f"sqlite:///{tmp_path / 'k.db'}"
    spec = write_spec(tmp_path / "k.yaml", {
        "name": "killed", "method": "random", "metric": {"name": "score"}, "program": program.name,
        "run_cap": 4, "epochs": 4, "storage": url, "artifacts": str(tmp_path / "art"), "max_concurrent_trials": 2,
        "parameters": {"lr": {"values": [0.1, 0.2, 0.3, 0.4]}}})
    log = tmp_path / "driver.log"
    proc = start(["launch", str(spec)], tmp_path, log)
    try:
        wait_until(lambda: len(_programs_running(program.name)) >= 2, 120, proc, log)
        if stop == "sigkill":
            kill(proc)
        else:
            ctrl_c(proc, log)
        deadline = time.monotonic() + 30
        while _programs_running(program.name) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert not _programs_running(program.name), log.read_text()[-2000:]
    finally:
        if proc.poll() is None:
            kill(proc)
    resumed = start(["resume", "killed", "--storage", url], tmp_path, log)
    try:
        assert_finishes(resumed, log, 300)
    finally:
        if resumed.poll() is None:
            os.killpg(resumed.pid, signal.SIGKILL)
    trials = trials_of(url, "killed")
    assert sum(t.state in FINISHED for t in trials) == 4
    reason = "driver lost" if stop == "sigkill" else "sweep interrupted (Ctrl-C)"
    assert any(t.user_attrs.get("fail_reason", "").startswith(reason) for t in trials)
    assert not _programs_gone_within(program.name, 15)


def test_program_specs_are_checked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "train.py").write_text("print('score=1')\n")
    base = {"method": "random", "program": "train.py", "metric": {"name": "score"},
            "storage": f"sqlite:///{tmp_path / 's.db'}", "parameters": {"lr": {"values": [0.1]}}}
    with pytest.raises(InputError) as err:
        validate(base)
    assert [str(p) for p in err.value.problems] == [
        "epochs: (missing) is required for a program sweep: ASHA needs the most times a trial logs score; set "
        "`epochs`, an `epochs` parameter or early_terminate.max_iter"]
    # W&B's hyperband max_iter is a run's most iterations: it bounds the trials' epochs, as in W&B
    hyperband = validate({**base, "early_terminate": {"type": "hyperband", "max_iter": 9, "s": 2}})
    assert (hyperband.max_epochs, hyperband.asha.grace_period) == (9, 1)  # type: ignore[union-attr]
    assert hyperband.trial_config({"lr": 0.1}, 0)["epochs"] == 9
    with pytest.raises(InputError) as err:
        validate({**base, "epochs": 3, "program": "nope.py"})
    assert str(err.value.problems[0]) == (f"program: 'nope.py' is not a file in {tmp_path} (where it runs; "
                                          "see `workdir`)")
    sweep = validate({**base, "parameters": {"epochs": {"values": [2, 5]}}})
    assert sweep.max_epochs == 5 and sweep.spec.workdir == str(tmp_path)
    assert sweep.trial_config({"epochs": 5}, 3)["params"] == {"epochs": 5}  # the program gets its epochs flag
    # through Ray Client the folder is the cluster's: it must be given, absolute
    from sweeper.client import DriverJob, client_problems

    assert [p.path for p in client_problems(DriverJob(raw={**base, "storage": "postgresql+psycopg://u@h/db",
                                                          "artifacts": "/shared/a"}))] == ["workdir"]
    assert not client_problems(DriverJob(raw={**base, "storage": "postgresql+psycopg://u@h/db",
                                              "artifacts": "/shared/a", "workdir": "/shared/project"}))
    # with a trainer, program and command are W&B's keys that sweeper does not need
    with_trainer = validate({**base, "trainer": "tests.fake_trainers:plain_fit", "epochs": 3})
    assert with_trainer.program is None and any("program" in w for w in with_trainer.warnings)


@pytest.mark.slow
@pytest.mark.usefixtures("ray_local")
def test_a_zero_argument_wandb_function_runs_in_the_worker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`trainer: module:function` with no arguments (the wandb.agent(function=...) style): wandb.init()
    inside it gets the trial's config and each wandb.log reports to the trial; ASHA prunes."""
    monkeypatch.chdir(tmp_path)
    url = f"sqlite:///{tmp_path / 'f.db'}"
    spec = write_spec(tmp_path / "f.yaml", {
        "name": "function", "method": "grid", "trainer": "tests.fake_trainers:wandb_function",
        "metric": {"name": "val_acc", "goal": "maximize"}, "epochs": 3, "storage": url,
        "artifacts": str(tmp_path / "art"), "max_concurrent_trials": 1,
        "early_terminate": {"type": "hyperband", "min_iter": 1, "eta": 2},
        "parameters": {"lr": {"values": [0.3, 0.2, 0.1, 0.05]}, "epochs": {"value": 3}}})
    result = runner.invoke(app, ["launch", str(spec)])
    assert result.exit_code == 0, result.output
    trials = optuna.load_study(study_name="function", storage=url).trials
    assert trials[0].state == TrialState.COMPLETE
    assert trials[0].intermediate_values == {1: pytest.approx(0.3), 2: pytest.approx(0.6), 3: pytest.approx(0.9)}
    assert trials[0].user_attrs["history"][-1]["nested/loss"] == pytest.approx(0.1)
    pruned = [t for t in trials if t.state == TrialState.PRUNED]  # the weaker later ones stopped at a rung
    assert pruned and all(len(t.intermediate_values) < 3 for t in pruned)
    assert trials[0].user_attrs["config"]["trainer"] == "sweeper.trial.program:TRAINER"


@pytest.mark.slow
def test_a_program_whose_worker_died_runs_again_from_its_start(tmp_path: Path) -> None:
    """SIGKILL the Ray worker running a program trial: the program dies with it, Ray retries the
    trial (max_failures), the program runs again from its start, and the trial is COMPLETE with its
    whole curve and one worker retry."""
    program = tmp_path / "retried_program_5c1e.py"
    program.write_text("import time\nfor e in range(1, 5):\n    time.sleep(0.7)\n    print(f'score={e}', flush=True)\n")
    url = f"sqlite:///{tmp_path / 'w.db'}"
    spec = write_spec(tmp_path / "w.yaml", {
        "name": "retried", "method": "random", "metric": {"name": "score"}, "program": program.name,
        "run_cap": 1, "epochs": 4, "storage": url, "artifacts": str(tmp_path / "art"), "max_concurrent_trials": 1,
        "parameters": {"lr": {"values": [0.1]}}})
    log = tmp_path / "driver.log"
    proc = start(["launch", str(spec)], tmp_path, log)
    try:
        wait_until(lambda: bool(_programs_running(program.name)), 120, proc, log)
        time.sleep(1.0)  # a step or two logged
        child = int(_programs_running(program.name)[0].split()[0])
        worker = int(Path(f"/proc/{child}/stat").read_text().rsplit(")", 1)[1].split()[1])  # its parent: the worker
        os.kill(worker, signal.SIGKILL)
        assert_finishes(proc, log, 300)
    finally:
        if proc.poll() is None:
            kill(proc)
    [trial] = trials_of(url, "retried")
    assert trial.state == TrialState.COMPLETE, log.read_text()[-3000:]
    assert trial.intermediate_values == {1: 1.0, 2: 2.0, 3: 3.0, 4: 4.0}
    assert trial.user_attrs["worker_retries"] == 1
    assert not _programs_gone_within(program.name, 15)


def test_a_wandb_program_that_also_prints_its_metrics_counts_each_step_once(tmp_path: Path) -> None:
    """Without Ray: sweeper.trial.program.fit runs the program and reports each wandb.log of the metric
    once, though it also prints `val_acc=...` lines; nested logged dicts are named with '/'."""
    from sweeper.trial.program import fit
    from trainers.base import TrainConfig

    (tmp_path / "both.py").write_text(
        "import wandb\nrun = wandb.init()\n"
        "for e in range(1, 4):\n"
        "    print(f'val_acc={0.1 * e}', flush=True)\n"
        "    wandb.log({'val_acc': wandb.config.lr * e, 'loss': {'train': 1.0 / e}})\n")
    reports: list[tuple[int, dict[str, float]]] = []
    config = TrainConfig({"lr": 0.2}, epochs=5, program={
        "program": "both.py", "command": None, "workdir": str(tmp_path), "metric": "val_acc", "study": "s",
        "logs": str(tmp_path / "logs"), "run_id": "trial-0"})
    final = fit(config, lambda epoch, metrics, checkpoint=None: reports.append((epoch, dict(metrics))))
    assert [(e, round(m["val_acc"], 6)) for e, m in reports[:3]] == [(1, 0.2), (2, 0.4), (3, 0.6)]
    assert reports[1][1]["loss/train"] == pytest.approx(0.5)
    assert reports[3] == (3, {**reports[2][1], "early_stopped": 1.0})  # ended by itself before epochs (5)
    assert final["val_acc"] == pytest.approx(0.6)
    assert not (tmp_path / "wandb").exists()  # disabled: nothing written beside the program
