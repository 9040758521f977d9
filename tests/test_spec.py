"""Spec loading and validation: good specs, W&B files, overrides, and every bad-input rule."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from sweeper.errors import InputError
from sweeper.spec import load_sweep, raw_spec, validate
from tests.conftest import write_spec

REPO = Path(__file__).resolve().parents[1]

GOOD: dict[str, Any] = {
    "name": "good",
    "method": "random",
    "metric": {"name": "val_accuracy", "goal": "maximize"},
    "run_cap": 5,
    "trainer": "cnn",
    "data": {"dataset": "digits", "image_size": 32},
    "epochs": 3,
    "scheduler": {"type": "asha", "grace_period": 1, "reduction_factor": 2},
    "parameters": {
        "lr": {"min": 0.0001, "max": 0.1, "distribution": "log_uniform_values"},
        "filters": {"values": [[8, 8, 8, 8, 8], [16, 16, 16, 16, 16]]},
        "activation": {"values": ["relu", "gelu"]},
        "batch_size": {"value": 32},
    },
}


def problems_of(spec: dict[str, Any]) -> list[str]:
    with pytest.raises(InputError) as info:
        validate(spec)
    return [str(p) for p in info.value.problems]


def test_good_spec_resolves_everything() -> None:
    sweep = validate(GOOD)
    assert sweep.name == "good"
    assert sweep.budget == 5
    assert sweep.max_epochs == 3
    assert sweep.asha is not None and (sweep.asha.grace_period, sweep.asha.reduction_factor) == (1, 2)
    assert [d.name for d in sweep.space.dimensions] == ["lr", "filters", "activation"]
    assert sweep.space.constants == {"batch_size": 32}
    assert sweep.data.dataset == "digits" and sweep.data.seed == 0
    config = sweep.trial_config({"lr": 0.01, "filters": "[8, 8, 8, 8, 8]", "activation": "gelu"}, trial_number=3)
    assert config["params"]["filters"] == [8, 8, 8, 8, 8]
    assert config["params"]["batch_size"] == 32
    assert config["params"]["dropout"] == 0.2  # the trainer's default fills what the spec leaves out
    assert config["seed"] == 3 and config["epochs"] == 3 and config["trainer"] == "cnn"


def test_defaults_when_keys_are_left_out() -> None:
    sweep = validate({"name": "minimal", "method": "random"})
    assert sweep.spec.metric.name == "val_accuracy" and sweep.spec.metric.goal == "maximize"
    assert sweep.budget == 20 and sweep.max_epochs == 10 and sweep.asha is None
    assert sweep.spec.storage == "sqlite:///sweeps.db"
    assert sweep.max_failed == 4



def test_bayes_stops_weak_trials_by_default_random_and_grid_do_not() -> None:
    """sweeper's default search (benchmarks/RESULTS.md, the simulated search): method bayes with
    neither `scheduler` nor `early_terminate` runs ASHA at grace period 1 and reduction factor 3;
    random and grid search run every trial to the end, as in W&B; `scheduler: {type: none}` and
    W&B's early_terminate keep their meaning."""
    bayes = validate({"name": "b", "method": "bayes", "parameters": {"lr": {"min": 0.001, "max": 0.1}}})
    assert bayes.asha is not None and (bayes.asha.grace_period, bayes.asha.reduction_factor) == (1, 3)
    assert not bayes.asha.best_so_far  # judged at the rung, as Ray's ASHA judges
    assert validate({"name": "r", "method": "random"}).asha is None
    assert validate({"name": "g", "method": "grid", "parameters": {"lr": {"values": [0.1, 0.2]}}}).asha is None
    assert validate({"name": "n", "method": "bayes", "scheduler": {"type": "none"}}).asha is None
    wandb = validate({"name": "w", "method": "bayes", "early_terminate": {"type": "hyperband", "min_iter": 2}})
    assert wandb.asha is not None and wandb.asha.grace_period == 2 and wandb.asha.best_so_far


def test_wandb_sweep_file_works_unchanged(tmp_path: Path) -> None:
    """A W&B sweep as the seeds wrote them: program/project keys, hyperband, epochs as a parameter.
    With `trainer:` named, the built-in trainer runs and W&B's program and command are ignored
    (without it, the program runs: tests/test_program.py)."""
    text = """
trainer: cnn
program: train.py
project: inaturalist
entity: someone
command:
  - ${env}
  - python
  - ${program}
  - ${args}
method: bayes
metric:
  name: val_accuracy
  goal: maximize
early_terminate:
  type: hyperband
  min_iter: 2
  eta: 3
parameters:
  epochs:
    values: [5, 10]
  filters:
    values: [[32, 32, 32, 32, 32], [32, 64, 128, 256, 512]]
  activation:
    values: [relu, gelu, silu, mish]
  dropout:
    values: [0.2, 0.3]
  augment:
    values: [yes, no]
  batch_norm:
    values: [yes, no]
  dense_units:
    values: [128, 256]
  lr:
    distribution: log_uniform
    min: -9.21
    max: -4.6
  batch_size:
    distribution: q_log_uniform_values
    min: 16
    max: 128
    q: 16
"""
    path = tmp_path / "wandb_sweep.yaml"
    path.write_text(text)
    sweep = load_sweep(path)
    assert sweep.name == "wandb_sweep"  # no name: the file's stem
    assert any("project" in w for w in sweep.warnings) and any("program, command" in w for w in sweep.warnings)
    assert sweep.asha is not None and sweep.asha.grace_period == 2 and sweep.asha.reduction_factor == 3
    assert sweep.max_epochs == 10  # the largest value of parameters.epochs
    lr = sweep.space.distributions["lr"]
    assert lr.log and lr.low == pytest.approx(1e-4, rel=1e-2) and lr.high == pytest.approx(0.01, rel=1e-2)
    raw = {"epochs": 5, "filters": "[32, 64, 128, 256, 512]", "activation": "mish", "dropout": 0.2,
           "augment": True, "batch_norm": False, "dense_units": 128, "lr": 0.001, "batch_size": 37.0}
    config = sweep.trial_config(raw, trial_number=0)
    assert config["epochs"] == 5 and "epochs" not in config["params"]
    assert config["params"]["batch_size"] == 32  # q_log_uniform_values: round(37 / 16) * 16
    assert config["params"]["filters"] == [32, 64, 128, 256, 512]
    assert sweep.space.distributions["augment"].choices == (True, False)  # YAML's yes/no are booleans


def test_overrides_and_cli_options(tmp_path: Path) -> None:
    path = write_spec(tmp_path / "s.yaml", GOOD)
    sweep = validate(raw_spec(path, ["data.val_fraction=0.25", "parameters.lr.max=0.05"],
                              storage="sqlite:///other.db", study="renamed", n_trials=7))
    assert sweep.spec.data.val_fraction == 0.25
    assert sweep.space.distributions["lr"].high == 0.05
    assert (sweep.name, sweep.spec.storage, sweep.budget) == ("renamed", "sqlite:///other.db", 7)
    with pytest.raises(InputError) as info:
        load_sweep(path, ["data.val_fraction"])
    assert "KEY=VALUE" in str(info.value)
    with pytest.raises(InputError) as info:
        load_sweep(path, ["data.val_fraction=2"])
    assert str(info.value).startswith("data.val_fraction: 2 ")


def test_grid_budget_is_the_grid_size() -> None:
    spec = copy.deepcopy(GOOD) | {"method": "grid"}
    spec["parameters"]["lr"] = {"values": [0.01, 0.001]}
    spec.pop("run_cap")
    sweep = validate(spec)
    assert sweep.space.size() == 8 and sweep.budget == 8
    spec["parameters"]["lr"] = {"min": 0.01, "max": 0.05, "distribution": "q_uniform", "q": 0.01}
    assert validate(spec).budget == 2 * 2 * 5


def test_every_example_spec_passes_sweeper_validate(mnist_pngs: Path, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """`sweeper validate` on each file of search_spaces/; a spec whose data lives on the user's
    disk is validated with its root pointed at a temporary image folder, and ImageNet weights
    are stand-ins of the right shapes, made here, in a temporary hub cache."""
    import torch
    import torchvision
    from typer.testing import CliRunner

    from sweeper.cli import app
    from trainers.vision import hub_weights_file

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    for arch in ("resnet50",):
        path, _ = hub_weights_file(arch)
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(torchvision.models.get_model(arch, weights=None).state_dict(), path)

    specs = sorted((REPO / "search_spaces").glob("*.yaml"))
    assert len(specs) >= 3
    for path in specs:
        raw = yaml.safe_load(path.read_text())
        overrides = []
        if raw.get("data", {}).get("root"):
            overrides = ["--set", f"data.root={mnist_pngs}"]
        result = CliRunner().invoke(app, ["validate", str(path), *overrides])
        assert result.exit_code == 0, (path, result.output)
        assert f"name: {raw['name']}" in result.output


def _mutate(path: str, value: Any) -> dict[str, Any]:
    spec = copy.deepcopy(GOOD)
    node = spec
    keys = path.split(".")
    for key in keys[:-1]:
        node = node.setdefault(key, {})
    if value is _DELETE:
        node.pop(keys[-1])
    else:
        node[keys[-1]] = value
    return spec


_DELETE = object()

BAD = [
    # (key path, bad value, expected start of the one line, a phrase of its rule)
    ("method", "hyperopt", "method: 'hyperopt'", "input should be 'random', 'bayes' or 'grid'"),
    ("method", _DELETE, "method: (missing)", "is required"),
    ("metric.goal", "max", "metric.goal: 'max'", "'maximize' or 'minimize'"),
    ("metric.name", "val_acc", "metric.name: 'val_acc'", "did you mean 'val_accuracy'"),
    ("run_cap", 0, "run_cap: 0", "greater than or equal to 1"),
    ("epochs", -1, "epochs: -1", "greater than or equal to 1"),
    ("scheduler.grace_period", 5, "scheduler.grace_period: 5", "must not exceed epochs (3)"),
    ("scheduler.reduction_factor", 1, "scheduler.reduction_factor: 1", "greater than 1"),
    ("early_terminate", {"type": "hyperband", "min_iter": 1}, "scheduler: 'asha'", "alternatives"),
    ("data.dataset", "cifar", "data.dataset: 'cifar'", "torchvision dataset name"),
    ("data.image_size", 16, "data.image_size: 16", "the smallest size that works is 32"),
    ("data.val_fraction", 1.5, "data.val_fraction: 1.5", "less than 1"),
    ("data.imagesize", 32, "data.imagesize: 32", "did you mean 'image_size'"),
    ("data.dataset", "imagefolder", "data.root: (missing)", "is required"),
    ("trainer", "resnet", "trainer: 'resnet'", "not a registered trainer"),
    ("trainer", "no_such_module:fit", "trainer: 'no_such_module:fit'", "cannot be imported"),
    ("storage", "mysql://u:secret@host/db", "storage: 'mysql://u:***@host/db'", "sqlite:/// or postgresql"),
    ("storage", "sqlite://", "storage: 'sqlite://'", "needs a file path"),
    ("storage", "sqlite:////no/such/dir/s.db", "storage: 'sqlite:////no/such/dir/s.db'",
     "is in folder '/no/such/dir', which does not exist"),
    ("resources_per_trial.gpu", -0.5, "resources_per_trial.gpu: -0.5", "greater than or equal to 0"),
    ("parametrs", {}, "parametrs: {}", "did you mean 'parameters'"),
    ("parameters.lr", {"min": 0.1, "max": 0.01}, "parameters.lr.max: 0.01", "greater than min (0.1)"),
    ("parameters.lr", {"min": 0.0, "max": 0.1, "distribution": "log_uniform_values"},
     "parameters.lr.min: 0.0", "must be > 0"),
    ("parameters.lr", {"min": 0.001, "max": 0.1, "distribution": "normal"},
     "parameters.lr.max: 0.1", "does not apply to normal, which takes mu and sigma"),
    ("parameters.lr", {"min": 0.001, "max": 0.1, "distribution": "q_uniform", "q": -1}, "parameters.lr.q: -1",
     "positive number for q_uniform"),
    ("parameters.lr", {"max": 0.1}, "parameters.lr.min: (missing)", "is required with max"),
    ("parameters.lr", {"value": 0.1, "values": [0.1]}, "parameters.lr:", "exactly one of"),
    ("parameters.activation", {"values": ["relu", "swish"]}, "parameters.activation: 'swish'",
     "must be one of relu, gelu, silu, mish, leaky_relu"),
    ("parameters.activation", {"values": ["relu", "gelu"], "probabilities": [0.5, 0.6]},
     "parameters.activation.probabilities: [0.5, 0.6]", "sum to 1"),
    ("parameters.filters", {"values": [[8, 8, 8]]}, "parameters.filters: [8, 8, 8]", "list of 5 integers"),
    ("parameters.learning_rate", {"value": 0.1}, "parameters.learning_rate: 'learning_rate'",
     "not a parameter of trainer 'cnn'"),
    ("parameters.dropout", {"value": 1.5}, "parameters.dropout: 1.5", "must be <= 0.95"),
    ("parameters.epochs", {"values": [2, 5]}, "parameters.epochs: 5", "must not exceed epochs (3)"),
    ("parameters.lr", {"min": 1, "max": 5, "distribution": "log_uniform"}, "parameters.lr:", "must be <= 10"),
]


@pytest.mark.parametrize(("key", "value", "line_start", "rule"), BAD, ids=[f"{b[0]}={b[1]!r}"[:50] for b in BAD])
def test_bad_spec_is_one_clear_line(key: str, value: Any, line_start: str, rule: str) -> None:
    lines = problems_of(_mutate(key, value))
    assert len(lines) == 1, lines
    assert lines[0].startswith(line_start), lines[0]
    assert rule in lines[0], lines[0]


def test_grid_rejects_continuous_parameters() -> None:
    spec = _mutate("method", "grid")
    lines = problems_of(spec)
    assert lines == ["parameters.lr: 'log_uniform_values' grid search needs discrete parameters: value, values, "
                     "int_uniform, or q_uniform (a range with a step)"]
    spec = copy.deepcopy(GOOD) | {"method": "grid", "run_cap": 100}
    spec["parameters"]["lr"] = {"values": [0.1]}
    assert problems_of(spec) == ["run_cap: 100 exceeds the grid's 4 points"]


def test_all_errors_are_reported_at_once() -> None:
    spec = _mutate("metric.goal", "up")
    spec["data"]["imagesize"] = 3
    spec["parameters"]["activation"] = {"values": ["swish"]}
    spec["storage"] = "oracle://x"
    lines = problems_of(spec)
    assert [line.split(":")[0] for line in lines] == [
        "metric.goal", "data.imagesize", "parameters.activation", "storage"]


def test_yaml_problems(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("method: random\nparameters:\n  lr: {min: 1\n")
    with pytest.raises(InputError) as info:
        load_sweep(bad)
    assert "is not valid YAML at line" in str(info.value)
    bad.write_text("- a list\n")
    with pytest.raises(InputError) as info:
        load_sweep(bad)
    assert "must hold a mapping" in str(info.value)
    with pytest.raises(InputError) as info:
        load_sweep(tmp_path / "missing.yaml")
    assert "cannot be read" in str(info.value)


def test_user_trainer_by_import_path() -> None:
    spec = {"name": "x", "method": "random", "trainer": "tests.fake_trainers:CURVE",
            "parameters": {"lr": {"values": [0.01, 0.02]}, "sleep": {"value": 1}}}
    lines = problems_of(spec)
    assert lines[0].startswith("parameters.sleep: 'sleep' is not a parameter") and "did you mean 'sleep_s'" in lines[0]
    spec["parameters"].pop("sleep")
    assert validate(spec).trainer.params is not None
    # An undeclared plain function: parameters pass unchecked, any metric name goes.
    plain = validate({"name": "p", "method": "random", "trainer": "tests.fake_trainers:plain_fit",
                      "metric": {"name": "score"}, "parameters": {"anything": {"values": [1, 2]}}})
    assert plain.trainer.params is None


def test_stored_spec_validates_to_the_same_sweep() -> None:
    """What a study stores is enough to rebuild the sweep (resume, export, report need it)."""
    sweep = validate(GOOD)
    again = validate(sweep.stored())
    assert again.stored() == sweep.stored()
    assert again.space == sweep.space and again.budget == sweep.budget and again.asha == sweep.asha


def test_a_trainer_named_by_its_path_before_the_folders_is_the_trainer_today() -> None:
    """A study or exported config made before sweeper's modules went into folders names the
    program trainer ``sweeper.program:TRAINER``: it validates, imports and resumes as the one at
    ``sweeper.trial.program``; any other trainer still differs."""
    from sweeper.spec import spec_differences
    from sweeper.spec._schema import PROGRAM_TRAINER, SweepSpec, TrainFileSpec
    from trainers import get_trainer

    old = "sweeper.program:TRAINER"
    assert PROGRAM_TRAINER == "sweeper.trial.program:TRAINER"
    assert get_trainer(PROGRAM_TRAINER).name == PROGRAM_TRAINER
    assert TrainFileSpec.model_validate({"trainer": old}).trainer == PROGRAM_TRAINER
    spec = {"name": "s", "method": "random", "metric": {"name": "val_accuracy", "goal": "maximize"},
            "parameters": {"lr": {"min": 0.001, "max": 0.1}}}
    assert SweepSpec.model_validate({**spec, "trainer": old}).trainer == PROGRAM_TRAINER
    assert spec_differences({**spec, "trainer": old}, {**spec, "trainer": PROGRAM_TRAINER}) == []
    assert spec_differences({**spec, "trainer": "cnn"}, {**spec, "trainer": PROGRAM_TRAINER}) == [
        f"trainer: 'cnn' (stored) -> {PROGRAM_TRAINER!r} (given)"]
