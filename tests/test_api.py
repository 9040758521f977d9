"""The Python API (sweeper.api, sweeper.handle): W&B's notebook calls with sweeper behind them,
and a sweep read as a DataFrame and Plotly figures. Real SQLite; the sweeps run on real Ray, in a
fresh interpreter whose functions live in ``__main__`` (so Ray must ship them by value)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

import sweeper
from sweeper.api import FIT_TRAINER, FUNCTION_TRAINER
from sweeper.errors import InputError
from sweeper.spec import validate
from sweeper.spec._schema import PROGRAM_TRAINER
from sweeper.study import record
from sweeper.study.studies import create_study

REPO = Path(__file__).resolve().parents[1]
CONFIG = {"method": "grid", "metric": {"name": "val_acc", "goal": "maximize"},
          "parameters": {"lr": {"values": [0.3, 0.2, 0.1, 0.05, 0.02, 0.01]}, "epochs": {"value": 3}}}


def _finished_study(tmp_path: Path) -> tuple[str, str]:
    """A study made by sweeper, with two COMPLETE trials and a PRUNED one written through the record."""
    url = f"sqlite:///{tmp_path / 'api.db'}"
    valid = validate({"name": "readers", "method": "random", "run_cap": 3, "epochs": 2,
                      "trainer": "tests.fake_trainers:CURVE", "storage": url,
                      "parameters": {"lr": {"min": 0.001, "max": 0.02}}})
    study = create_study(valid, 1)
    for curve, state in (([0.5, 0.75], TrialState.COMPLETE), ([0.6, 0.8], TrialState.COMPLETE),
                         ([0.2], TrialState.PRUNED)):
        trial = study.ask(fixed_distributions=valid.space.distributions)
        record.write_asked(trial, valid.trial_config(trial.params, trial.number), "driver0", "ray0")
        record.write_details(trial, record.TrialDetails([{"epoch": i + 1, "val_accuracy": v}
                                                         for i, v in enumerate(curve)], epochs_run=len(curve)))
        for i, v in enumerate(curve):
            trial.report(v, i + 1)
        study.tell(trial, curve[-1] if state == TrialState.COMPLETE else None, state=state)
    return url, "readers"


def test_import_sweeper_stays_light_and_names_the_api() -> None:
    """`import sweeper` loads neither Optuna nor Ray; the API's names come on first use."""
    code = ("import sys, sweeper; light = not any(m.split('.')[0] in ('optuna', 'ray', 'torch') for m in sys.modules);"
            "print(light, callable(sweeper.sweep), callable(sweeper.agent), callable(sweeper.launch))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.stdout.split() == ["True", "True", "True", "True"], done.stderr[-2000:]
    with pytest.raises(AttributeError):
        _ = sweeper.no_such_name  # type: ignore[attr-defined]


def test_sweeper_launch_stays_the_function_once_the_engine_is_imported() -> None:
    """The engine's module lives at sweeper.engine.launch, so importing it leaves the package's
    name ``launch`` to the API's function."""
    import sweeper.engine.launch
    from sweeper.api import launch

    assert sweeper.launch is launch
    assert sweeper.engine.launch.launch is not launch


def test_sweep_creates_a_study_from_a_wandb_dict(tmp_path: Path) -> None:
    """The W&B dict, no trainer: a study named after the project, the stand-in trainer stored; the
    same named config again returns the same study; another spec under that name is refused."""
    url = f"sqlite:///{tmp_path / 's.db'}"
    sid = sweeper.sweep({**CONFIG, "project": "ignored"}, project="inat", storage=url)
    assert sid.startswith("inat-") and len(sid) == len("inat-") + 8
    study = optuna.load_study(study_name=sid, storage=url)
    assert record.stored_spec(study.user_attrs)["trainer"] == FUNCTION_TRAINER
    assert sweeper.sweep(CONFIG, storage=url) != sid  # no name: a new study each call
    named = {**CONFIG, "name": "inat_named"}
    assert sweeper.sweep(named, storage=url) == sweeper.sweep(named, storage=url) == "inat_named"
    with pytest.raises(InputError, match="exists with another spec"):
        sweeper.sweep({**named, "method": "random"}, storage=url)
    (tmp_path / "c.yaml").write_text("method: grid\nname: from_file\nepochs: 2\nparameters: {lr: {values: [1]}}\n")
    assert sweeper.sweep(tmp_path / "c.yaml", storage=url) == "from_file"


def test_bad_input_is_one_input_error_before_anything_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"sqlite:///{tmp_path / 'bad.db'}"
    with pytest.raises(InputError, match=r"parameters\.lr"):
        sweeper.sweep({**CONFIG, "parameters": {"lr": {"min": 1, "max": 0}}}, storage=url)
    with pytest.raises(InputError, match="dict or a YAML"):
        sweeper.sweep(42, storage=url)  # type: ignore[arg-type]
    sid = sweeper.sweep(CONFIG, storage=url)
    assert sweeper.sweep(CONFIG, "p", entity="e", storage=url).startswith("p-")  # W&B's keywords accepted
    with pytest.raises(InputError, match="function=train"):  # a W&B dict names no trainer: give the function
        sweeper.agent(sid, storage=url, entity="e", project="p")
    with pytest.raises(InputError, match="count: 0"):
        sweeper.agent(sid, function=lambda: None, count=0, storage=url)
    with pytest.raises(InputError, match="does not exist"):
        sweeper.agent("nope", function=lambda: None, storage=url)
    monkeypatch.setenv("SWEEPER_STORAGE", f"sqlite:///{tmp_path / 'default.db'}")
    with pytest.raises(InputError, match=r"does not exist.*a `storage:`, pass it: sweeper.agent\('nope', storage="):
        sweeper.agent("nope", function=lambda: None)  # not told the storage: a hint to give it
    with pytest.raises(InputError, match="does not exist"):
        sweeper.load("nope", url)


def test_a_loaded_sweep_as_data_and_figures(tmp_path: Path) -> None:
    """load() → Sweep: the DataFrame's columns and rows, best, pareto, export, report and each figure."""
    import pandas as pd
    import plotly.graph_objects as go
    import yaml

    url, name = _finished_study(tmp_path)
    s = sweeper.load(name, url)
    assert isinstance(s, sweeper.Sweep) and repr(s) == "Sweep('readers', 2 COMPLETE, 1 PRUNED)"
    df = s.trials
    assert isinstance(df, pd.DataFrame) and df.index.name == "number"
    assert list(df.columns[:5]) == ["state", "val_accuracy", "epochs", "curve", "params"]
    assert {"params_lr", "reason", "duration_s"} <= set(df.columns)
    assert df["state"].tolist() == ["COMPLETE", "COMPLETE", "PRUNED"]
    assert df["curve"].tolist() == [[0.5, 0.75], [0.6, 0.8], [0.2]] and df["epochs"].tolist() == [2, 2, 1]
    assert df.loc[1, "val_accuracy"] == pytest.approx(0.8) and df.loc[2, "val_accuracy"] == pytest.approx(0.2)
    assert s.best is not None and s.best["trial"] == 1 and s.best["values"] == {"val_accuracy": pytest.approx(0.8)}
    assert [p["trial"] for p in s.pareto] == [1, 0]
    config = s.export(tmp_path / "best.yaml")
    assert config["provenance"]["trial"] == 1 and yaml.safe_load((tmp_path / "best.yaml").read_text())["seed"]
    assert s.export(trial=0)["provenance"]["trial"] == 0
    assert s.report(tmp_path / "r.html").read_text().startswith("<!DOCTYPE html>")
    for figure in (s.plot.learning_curves(), s.plot.history(), s.plot.timeline(), s.plot.parallel(),
                   s.plot.importances()):
        assert isinstance(figure, go.Figure) and figure.data
    with pytest.raises(InputError, match="two or three objectives"):
        s.plot.pareto()
    with pytest.raises(InputError, match="rank"):
        s.export(rank=5)


_SCRIPT = """
import sys, time
import sweeper

def train():  # a W&B user's function, in __main__: Ray cannot import it, it is shipped by value
    import wandb
    run = wandb.init()
    lr = float(wandb.config["lr"])
    for epoch in range(1, 4):
        time.sleep(0.1)
        wandb.log({"val_acc": lr * epoch, "nested": {"loss": 1 - lr * epoch}})
    run.finish()

def fit(config, report):  # a plain sweeper trainer, also in __main__
    lr = float(config.params["lr"])
    for epoch in range(1, config.epochs + 1):
        report(epoch, {"val_acc": lr * epoch})
    return {"val_acc": lr * config.epochs}

url = sys.argv[1]
config = {"method": "grid", "metric": {"name": "val_acc", "goal": "maximize"}, "max_concurrent_trials": 1,
          "early_terminate": {"type": "hyperband", "min_iter": 1, "eta": 2}, "artifacts": sys.argv[2],
          "parameters": {"lr": {"values": [0.3, 0.2, 0.1, 0.05, 0.02, 0.01]}, "epochs": {"value": 3}}}
sid = sweeper.sweep({**config, "name": "wandb_fn"}, storage=url)
s = sweeper.agent(sid, function=train, count=3, storage=url)
assert isinstance(s, sweeper.Sweep)
sweeper.agent(sid, function=train, count=2, storage=url)
# The config names its own storage and agent is not told it: the study sweep() made is found there.
sweeper.agent(sweeper.sweep({**config, "name": "plain_fit", "storage": url}), function=fit, count=2)
named = {"name": "named_trainer", "method": "random", "epochs": 2, "trainer": "tests.fake_trainers:CURVE",
         "artifacts": sys.argv[2], "max_concurrent_trials": 1, "parameters": {"lr": {"min": 0.001, "max": 0.02}}}
sweeper.agent(sweeper.sweep(named, storage=url), count=2, storage=url)  # the spec's trainer: no function
print("DONE", callable(sweeper.launch))
"""


@pytest.mark.slow
def test_agent_runs_main_functions_and_each_call_adds_count(tmp_path: Path) -> None:
    """A zero-argument W&B function and a fit(config, report), both defined in __main__: wandb
    works unchanged, ASHA's stop prunes the function with its curve, and a second call adds
    `count` finished trials to the study; a config naming its trainer runs with no function."""
    (tmp_path / "main.py").write_text(_SCRIPT)
    url = f"sqlite:///{tmp_path / 'a.db'}"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "main.py", url, str(tmp_path / "art")], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == "DONE True"
    trials = sweeper.load("wandb_fn", url).trials
    assert trials["state"].tolist().count("COMPLETE") >= 1 and "PRUNED" in trials["state"].tolist()
    assert len(trials) == 5  # 3, then 2 more (grid order: no FAIL, no duplicate)
    assert trials.loc[0, "curve"] == pytest.approx([0.3, 0.6, 0.9])
    assert all(len(c) < 3 for c in trials[trials["state"] == "PRUNED"]["curve"])
    study = optuna.load_study(study_name="wandb_fn", storage=url)
    assert study.trials[0].user_attrs["history"][-1]["nested/loss"] == pytest.approx(0.1)
    # The config names the stand-in, never the notebook's function (which `sweeper train` would import).
    assert study.trials[0].user_attrs["config"]["program"]["function"] == FUNCTION_TRAINER
    assert sweeper.load("named_trainer", url).counts() == {"COMPLETE": 2}
    plain = sweeper.load("plain_fit", url).trials
    assert len(plain) == 2 and plain.loc[0, "state"] == "COMPLETE" and plain.loc[0, "curve"] == pytest.approx(
        [0.3, 0.6, 0.9])
    # A notebook's sweep exports (its stored configs pass the check of configs read back from a study).
    exported = sweeper.load("wandb_fn", url).export(tmp_path / "fn.yaml")
    assert exported["trainer"] == PROGRAM_TRAINER and exported["params"]["lr"] == 0.3
    assert sweeper.load("plain_fit", url).export(tmp_path / "fit.yaml")["trainer"] == FIT_TRAINER


@pytest.mark.slow
@pytest.mark.usefixtures("ray_local")
def test_launch_runs_a_spec_with_overrides(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """launch(spec, **overrides) runs the spec like `sweeper launch` and returns the Sweep."""
    monkeypatch.chdir(tmp_path)
    url = f"sqlite:///{tmp_path / 'l.db'}"
    spec = {"name": "launched", "method": "random", "run_cap": 99, "epochs": 2, "max_concurrent_trials": 1,
            "trainer": "tests.fake_trainers:CURVE", "parameters": {"lr": {"min": 0.001, "max": 0.02}}}
    s = sweeper.launch(spec, storage=url, run_cap=2, artifacts=str(tmp_path / "art"), scheduler__type="none")
    assert s.name == "launched" and s.counts() == {"COMPLETE": 2}
    assert optuna.load_study(study_name="launched", storage=url).user_attrs["sweeper_spec"]["run_cap"] == 2
    with pytest.raises(InputError, match="already exists"):
        sweeper.launch(spec, storage=url)
    # A sweep that raised leaves nothing watching Ray's worker output in this process.
    from ray._private.ray_logging import global_worker_stdstream_dispatcher

    assert all(name != "sweeper_worker_output" for name, _ in global_worker_stdstream_dispatcher.handlers)


def test_ipython_shows_sweepers_errors_as_one_line(tmp_path: Path) -> None:
    """In IPython (as in a Jupyter kernel), a bad call prints its one line, no traceback."""
    url = f"sqlite:///{tmp_path / 'none.db'}"
    code = ("from IPython.core.interactiveshell import InteractiveShell\n"
            "shell = InteractiveShell.instance()\n"
            f"shell.run_cell({f'import sweeper; sweeper.load({chr(34)}nope{chr(34)}, {url!r})'!r})\n"
            "shell.run_cell('print(1 / 0)')\n")  # other errors keep IPython's traceback
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    lines = [ln for ln in done.stderr.splitlines() if "does not exist" in ln]
    assert lines == [f"InputError: study: 'nope' does not exist in {url}; studies there: none"], done.stderr
    assert "Traceback" not in done.stderr.split("ZeroDivisionError")[0]
    assert "ZeroDivisionError" in done.stdout + done.stderr


def test_the_notebook_display_shows_counts_running_epochs_and_the_last_trials(tmp_path: Path) -> None:
    """sweeper.views.notebook's HTML: the header, the counts, the running trials' epochs read from the
    study, the last SHOWN_TRIALS trial lines with the earlier ones counted, and no ANSI codes."""
    from sweeper.views.notebook import SHOWN_TRIALS, NotebookProgress
    from sweeper.views.progress import SweepStart, TrialEnd

    url, name = _finished_study(tmp_path)
    valid = validate({"name": name, "method": "random", "run_cap": 30, "epochs": 2, "storage": url,
                      "trainer": "tests.fake_trainers:CURVE", "parameters": {"lr": {"min": 0.001, "max": 0.02}}})
    study = optuna.load_study(study_name=name, storage=url)
    running = study.ask(fixed_distributions=valid.space.distributions)
    running.report(0.625, 1)
    shown = NotebookProgress(valid)
    shown.progress.begin(SweepStart(2, {TrialState.COMPLETE: 2, TrialState.PRUNED: 1, TrialState.FAIL: 0},
                                    (0.8, 1)), running=lambda: 1)
    shown._study = study
    try:
        for number in range(4, 4 + SHOWN_TRIALS + 2):
            shown.trial_ended(TrialEnd(number, TrialState.PRUNED, 1, 2, 0.1, {"lr": 0.001}))
        page = shown.html()
    finally:
        shown.stop()
    assert f"sweep <span style=\"font-weight: bold\">{name}</span>: random search" in page
    assert f"running: #{running.number} epoch 1/2 (val_accuracy 0.6250)" in page
    assert "2 earlier trial(s)" in page and f"trial  {4 + SHOWN_TRIALS + 1} " in page and "trial   4 " not in page
    assert "best val_accuracy 0.8000 (trial 1)" in page.replace("</span>", "").split("running:")[0], page
    assert "\x1b" not in page
