"""The structure the next features stand on: readers that import no Ray, one owner of the study's
record, modules of one job each, and output that fits an 80-column terminal."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState
from rich.console import Console

from sweeper.spec import validate
from sweeper.study import record
from sweeper.study.studies import create_study
from sweeper.views.progress import SweepProgress, summary
from tests.conftest import write_spec
from trainers.vision import hub_weights_file

REPO = Path(__file__).resolve().parents[1]
PACKAGES = [REPO / "sweeper", REPO / "trainers"]

# Runs the command in this interpreter with Typer's runner, then says whether it loaded the package.
_PROBE = """
import sys
from typer.testing import CliRunner
from sweeper.cli import app
package, args = sys.argv[1], sys.argv[2:]
result = CliRunner().invoke(app, args)
assert result.exit_code == 0, result.output
print("LOADED" if any(m == package or m.startswith(package + ".") for m in sys.modules) else "NOT-LOADED")
"""


def _command_loads(package: str, args: list[str], cwd: Path, env: dict[str, str] | None = None) -> bool:
    """Whether ``sweeper ARGS``, run to exit 0 in a fresh interpreter in ``cwd``, imported ``package``."""
    done = subprocess.run([sys.executable, "-c", _PROBE, package, *args], capture_output=True, text=True, cwd=cwd,
                          env=env, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return done.stdout.strip().splitlines()[-1] == "LOADED"


@pytest.fixture
def finished_study(tmp_path: Path) -> tuple[str, str]:
    """A study made by sweeper, with one COMPLETE trial written through the record (no Ray)."""
    url = f"sqlite:///{tmp_path / 'readers.db'}"
    sweep = validate({"name": "readers", "method": "random", "run_cap": 2, "epochs": 2,
                      "trainer": "tests.fake_trainers:CURVE", "storage": url,
                      "parameters": {"lr": {"min": 0.001, "max": 0.02}}})
    study = create_study(sweep, 1)
    trial = study.ask(fixed_distributions=sweep.space.distributions)
    record.write_asked(trial, sweep.trial_config(trial.params, trial.number), "driver0", "ray0")
    record.write_details(trial, record.TrialDetails([{"epoch": 1, "val_accuracy": 0.5},
                                                     {"epoch": 2, "val_accuracy": 0.75}], epochs_run=2))
    trial.report(0.5, 1)
    trial.report(0.75, 2)
    study.tell(trial, 0.75)
    return url, "readers"


@pytest.mark.parametrize("command", ["studies", "show", "export", "report", "validate", "dashboard --help"])
def test_readers_and_validate_import_no_ray(command: str, finished_study: tuple[str, str], tmp_path: Path) -> None:
    """Each reader runs to exit 0 in a fresh interpreter, and Ray is never imported."""
    url, name = finished_study
    args = {
        "studies": ["studies", "--storage", url],
        "show": ["show", name, "--storage", url],
        "export": ["export", name, "--storage", url, "-o", str(tmp_path / "best.yaml")],
        "report": ["report", name, "--storage", url, "-o", str(tmp_path / "report.html")],
        "validate": ["validate", str(REPO / "search_spaces" / "digits_grid.yaml")],
        "dashboard --help": ["dashboard", "--help"],
    }[command]
    env = {**os.environ, "PYTHONPATH": str(REPO)}  # the study's trainer is tests.fake_trainers:CURVE
    assert not _command_loads("ray", args, tmp_path, env)


def test_the_driver_of_a_cnn_sweep_never_imports_torch(tmp_path: Path) -> None:
    """``sweeper launch`` of a ``cnn`` sweep trains in Ray's workers only: its driver (validation,
    Ray, the study, Tune's loop, the closing summary) never imports torch, which would cost it
    about 1.5 s of its start and 500 MB (trainers.datasets)."""
    spec = {"name": "no-torch", "method": "random", "run_cap": 1, "epochs": 1, "trainer": "cnn",
            "data": {"dataset": "digits", "image_size": 32}, "storage": f"sqlite:///{tmp_path / 't.db'}",
            "artifacts": str(tmp_path / "art"), "max_concurrent_trials": 1,
            "parameters": {"filters": {"value": [4, 4, 4, 4, 4]}, "dense_units": {"value": 8}}}
    path = write_spec(tmp_path / "spec.yaml", spec)
    assert not _command_loads("torch", ["launch", str(path)], tmp_path)
    assert len(optuna.load_study(study_name="no-torch", storage=spec["storage"]).trials) == 1


@pytest.mark.parametrize("spec", ["mnist_demo.yaml", "digits_grid.yaml", "imagefolder", "torchvision",
                                  "torchvision-imagenet"])
def test_validating_a_cnn_or_torchvision_spec_imports_no_torch(spec: str, tmp_path: Path, mnist_pngs: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """``sweeper validate`` of the bundled ``cnn`` specs, of one on an image folder, and of
    ``torchvision`` fine-tuning specs (architectures by name; ImageNet weights, looked for in a
    hub cache that holds them), in a fresh interpreter: exit 0 and torch never imported (the
    quick form of the launch test above)."""
    env = None
    path = REPO / "search_spaces" / spec
    if spec == "imagefolder":
        path = write_spec(tmp_path / "folder.yaml", {
            "method": "random", "trainer": "cnn", "epochs": 1,
            "data": {"dataset": "imagefolder", "root": str(mnist_pngs)},
            "parameters": {"lr": {"values": [0.01, 0.001]}}})
    if spec == "torchvision":
        path = write_spec(tmp_path / "vision.yaml", {
            "method": "random", "trainer": "torchvision", "epochs": 1,
            "data": {"dataset": "imagefolder", "root": str(mnist_pngs)},
            "parameters": {"architecture": {"values": ["resnet18", "mobilenet_v3_small"]},
                           "freeze": {"values": ["none", "all_but_head"]}}})
    if spec == "torchvision-imagenet":
        path = write_spec(tmp_path / "imagenet.yaml", {
            "method": "random", "trainer": "torchvision", "epochs": 1,
            "data": {"dataset": "imagefolder", "root": str(mnist_pngs)},
            "parameters": {"architecture": {"values": ["resnet18", "resnet50"]}, "weights": {"value": "imagenet"}}})
        monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
        env = dict(os.environ)
        for arch in ("resnet18", "resnet50"):  # the files' names are torchvision's (tests/test_vision.py)
            weights, _ = hub_weights_file(arch)
            weights.parent.mkdir(parents=True, exist_ok=True)
            weights.write_bytes(b"")  # validate looks for the files; it does not load them
    assert not _command_loads("torch", ["validate", str(path)], tmp_path, env)


def test_the_dashboard_opens_its_study_without_ray(finished_study: tuple[str, str]) -> None:
    """The dashboard's only sweeper work before serving (finding the study) needs no Ray; its server
    itself is exercised in test_dashboard.py."""
    url, name = finished_study
    code = ("import sys; from sweeper.study.studies import load_study; from sweeper.study.storage import open_storage; "
            "load_study(sys.argv[1], sys.argv[2]); open_storage(sys.argv[1]); import optuna_dashboard; "
            "print('RAY' if 'ray' in sys.modules else 'NO-RAY')")
    done = subprocess.run([sys.executable, "-c", code, url, name], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "NO-RAY"


def test_no_module_of_the_packages_is_over_400_lines_and_each_says_what_it_owns() -> None:
    for package in PACKAGES:
        for path in package.rglob("*.py"):
            text = path.read_text()
            assert len(text.splitlines()) <= 400, f"{path.relative_to(REPO)}: {len(text.splitlines())} lines"
            if path.name != "__main__.py":
                assert ast.get_docstring(ast.parse(text)), f"{path.relative_to(REPO)} has no module docstring"


def test_only_the_record_reads_or_writes_the_studys_attributes() -> None:
    """No module but sweeper.study.record indexes ``user_attrs``, calls ``.get`` on it, sets a user
    attribute or queues a trial with ``user_attrs=``: the keys have one owner."""
    setters = {"set_user_attr", "set_trial_user_attr", "set_study_user_attr"}
    offenders = []
    for path in (REPO / "sweeper").rglob("*.py"):
        if path.name == "record.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            where = f"{path.relative_to(REPO)}:{getattr(node, 'lineno', '?')}"
            if isinstance(node, ast.Subscript) and isinstance(node.value, ast.Attribute) and \
                    node.value.attr == "user_attrs":
                offenders.append(where + " user_attrs[...]")
            elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                target = node.func
                if target.attr in setters:
                    offenders.append(where + f" {target.attr}")
                elif target.attr == "get" and isinstance(target.value, ast.Attribute) and \
                        target.value.attr == "user_attrs":
                    offenders.append(where + " user_attrs.get")
                if any(k.arg == "user_attrs" for k in node.keywords):
                    offenders.append(where + " user_attrs=")
    assert not offenders, offenders
    # The record's writers and readers agree with each other.
    study = optuna.create_study()
    trial = study.ask()
    record.write_details(trial, record.TrialDetails([{"epoch": 1, "m": 0.5}], epochs_run=1, where={"worker": "h:1"},
                                                    fail_reason="ValueError: x", fail_kind="trial"))
    study.tell(trial, state=TrialState.FAIL)
    frozen = study.trials[0]
    assert record.history_of(frozen) == [{"epoch": 1, "m": 0.5}] and record.epochs_run_of(frozen) == 1
    assert record.worker_of(frozen) == "h:1" and record.end_reason(frozen) == "ValueError: x"
    assert record.failed_by_itself(frozen)


def test_the_closing_table_and_progress_line_fit_80_columns(finished_study: tuple[str, str]) -> None:
    """At 80 columns nothing is cut ("0.9…"): the table turns into one block per trial, and the
    progress line into its short words; at 200 columns the table stays a table."""
    url, name = finished_study
    spec = {"name": name, "method": "random", "run_cap": 2, "epochs": 2, "storage": url,
            "parameters": {"filters": {"values": [[32, 64, 128, 256, 512], [64, 64, 64, 64, 64]]},
                           "activation": {"values": ["relu", "gelu", "silu", "mish"]},
                           "dropout": {"values": [0.2, 0.3]}, "dense_units": {"values": [128, 256]},
                           "lr": {"values": [0.001, 0.0005]}, "batch_norm": {"values": [True, False]},
                           "augment": {"values": [True, False]}, "kernel_size": {"values": [3, 5]}}}
    sweep = validate(spec | {"name": "wide", "storage": f"sqlite:///{Path(url[10:]).parent / 'wide.db'}"})
    study = create_study(sweep, 1)
    for value in (0.98123, 0.97):
        trial = study.ask(fixed_distributions=sweep.space.distributions)
        record.write_details(trial, record.TrialDetails([{"epoch": 2, "val_accuracy": value}], epochs_run=2))
        study.tell(trial, value)
    for width in (80, 200):
        console = Console(width=width, record=True, highlight=False)
        console.print(summary(study, sweep, 12.0))
        text = console.export_text()
        assert "…" not in text and "0.9812" in text and "0.9700" in text, text
        assert max(len(line) for line in text.splitlines()) <= width
        for value in ("[32, 64, 128, 256, 512]", "mish", "gelu", "silu", "relu"):
            if value in str(study.trials[0].params) or value in str(study.trials[1].params):
                assert re.sub(r"\s+", " ", value) in re.sub(r"\s+", " ", text)
    progress = SweepProgress(sweep, Console(width=80))
    progress.best = (0.98123, 7)
    progress.counts.update({TrialState.COMPLETE: 12, TrialState.PRUNED: 30, TrialState.FAIL: 1})
    line = progress.line(80)
    assert line.cell_len <= 80 and "0.9812" in line.plain and "#7" in line.plain
    assert "(trial 7)" in progress.line(200).plain and "val_accuracy" in progress.line(200).plain


def test_the_data_settings_are_defined_once(tmp_path: Path) -> None:
    """The spec's ``data`` and the training file's ``data`` take trainers.base.DataConfig's defaults and bounds."""
    from trainers.base import DataConfig

    sweep = validate({"method": "random", "name": "d", "storage": f"sqlite:///{tmp_path / 'd.db'}"})
    assert sweep.data == DataConfig(seed=0)
    bad = write_spec(tmp_path / "bad.yaml", {"method": "random", "data": {"image_size": 0, "val_fraction": 1.0}})
    from typer.testing import CliRunner

    from sweeper.cli import app

    result = CliRunner().invoke(app, ["validate", str(bad)])
    assert result.exit_code == 2
    assert "data.image_size: 0 input should be greater than or equal to 1" in result.output
    assert "data.val_fraction: 1.0 input should be less than 1" in result.output
