"""The torchvision trainer: architectures by name, local weights, the fine-tuning strategies."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import torch
import torchvision

from tests.conftest import write_spec
from trainers import get_trainer
from trainers.base import DataConfig, TrainConfig
from trainers.vision import ARCHITECTURES, default_weights_url, hub_weights_file
from trainers.vision_model import blocks, build, fine_tune_plan

DIGITS = DataConfig("digits", image_size=32)


@pytest.fixture(scope="module")
def resnet18_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A resnet18 state dict (1000 classes) as a pretraining run would leave it, made here."""
    torch.manual_seed(123)
    net = torchvision.models.resnet18(weights=None)
    path = tmp_path_factory.mktemp("weights") / "resnet18-pretrained.pt"
    torch.save(net.state_dict(), path)
    return path


def fit(params: dict, epochs: int = 1) -> list[dict]:
    """The checkpoints of each epoch of the torchvision trainer on the digits."""
    states: list[dict] = []
    get_trainer("torchvision").fit(
        TrainConfig({"batch_size": 128, "lr": 0.01, **params}, DIGITS, epochs=epochs, seed=0, threads=2),
        lambda epoch, metrics, checkpoint=None: states.append(
            {"metrics": dict(metrics), **{k: v.clone() for k, v in (checkpoint or {})["model"].items()}}))
    return states


def test_the_architectures_are_torchvisions_classification_models_read_without_importing_it() -> None:
    """trainers.vision reads the names from torchvision's source (no torch in a sweep's driver):
    they must be exactly the ones torchvision's own registry lists."""
    assert tuple(sorted(torchvision.models.list_models(module=torchvision.models))) == ARCHITECTURES
    assert len(ARCHITECTURES) >= 20


def test_the_imagenet_weights_files_are_torchvisions_read_without_importing_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """trainers.vision reads each architecture's default weights URL from torchvision's source,
    and the hub folder from the environment, as torch does: the same files as torchvision's
    ``get_model_weights(...).DEFAULT`` in ``torch.hub.get_dir()``, for every architecture and
    each way of naming the folder (TORCH_HOME, XDG_CACHE_HOME, neither)."""
    for arch in ARCHITECTURES:
        assert default_weights_url(arch) == torchvision.models.get_model_weights(arch).DEFAULT.url, arch
    assert default_weights_url("no_such_net") is None
    with pytest.raises(LookupError, match="no ImageNet weights for no_such_net"):
        hub_weights_file("no_such_net")
    monkeypatch.setattr(torch.hub, "_hub_dir", None)  # no set_dir() of another test in this process
    for env in ({"TORCH_HOME": str(tmp_path / "th")}, {"XDG_CACHE_HOME": str(tmp_path / "xdg")},
                {"HOME": str(tmp_path)}):
        for name in ("TORCH_HOME", "XDG_CACHE_HOME"):
            monkeypatch.delenv(name, raising=False)
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        path, url = hub_weights_file("resnet50")
        assert path == Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[-1]
        assert str(path).startswith(str(tmp_path)), env


def test_any_classification_architecture_gets_a_head_for_the_classes() -> None:
    assert {"resnet18", "resnet34", "resnet50", "alexnet", "vgg13", "vgg13_bn", "convnext_tiny",
            "efficientnet_b0", "mobilenet_v3_small"} <= set(ARCHITECTURES)
    for arch in ("resnet18", "vgg13_bn", "alexnet", "mobilenet_v3_small", "squeezenet1_0", "googlenet"):
        model = build(TrainConfig({"architecture": arch}, DataConfig("digits", image_size=64)), 1, 7).eval()
        assert model(torch.zeros(2, 1, 64, 64, dtype=torch.uint8)).shape == (2, 7), arch


def test_a_local_weights_file_is_loaded_and_all_but_head_stays_frozen(resnet18_file: Path) -> None:
    pretrained = torch.load(resnet18_file, weights_only=True)
    states = fit({"weights": str(resnet18_file), "freeze": "all_but_head"}, epochs=2)
    for state in states:
        for key, value in pretrained.items():
            if not key.startswith("fc."):  # every backbone tensor, BatchNorm statistics included
                assert torch.equal(state[f"2.{key}"], value), key
    assert not torch.equal(states[0]["2.fc.weight"], states[1]["2.fc.weight"])  # the head trains
    assert states[0]["2.fc.weight"].shape == (10, 512)
    assert torch.allclose(states[0]["0.mean"].flatten(), torch.tensor([0.449] * 1), atol=1e-3)  # ImageNet's, grey


def test_unfreeze_at_epoch_and_backbone_lr_factor(resnet18_file: Path) -> None:
    states = fit({"weights": str(resnet18_file), "freeze": "all_but_head", "unfreeze_at_epoch": 2}, epochs=2)
    conv = "2.layer1.0.conv1.weight"
    original = torch.load(resnet18_file, weights_only=True)["layer1.0.conv1.weight"]
    assert torch.equal(states[0][conv], original) and not torch.equal(states[1][conv], original)
    still = fit({"weights": str(resnet18_file), "backbone_lr_factor": 0.0, "optimizer": "sgd", "momentum": 0.0})
    assert torch.equal(still[0][conv], original)  # trainable, at a learning rate of 0
    assert not torch.equal(still[0]["2.fc.bias"], torch.zeros(10))


def test_fraction_and_first_k_freeze_from_the_input_side() -> None:
    model = build(TrainConfig({"architecture": "resnet18"}, DIGITS), 1, 10)
    backbone = [n for n, _ in model.named_parameters() if not n.startswith("2.fc.")]
    plan = fine_tune_plan(model, {**get_trainer("torchvision").defaults(), "freeze": "fraction",
                                  "freeze_fraction": 0.25})
    assert plan.frozen == frozenset(backbone[:round(0.25 * len(backbone))])
    parts = blocks(model)
    assert [b[0].split(".")[1] for b in parts] == ["conv1", "bn1", "layer1", "layer2", "layer3", "layer4"]
    plan = fine_tune_plan(model, {**get_trainer("torchvision").defaults(), "freeze": "first_k", "freeze_k": 3})
    assert plan.frozen == frozenset(parts[0] + parts[1] + parts[2])
    assert "2.layer2.0.conv1.weight" not in plan.frozen and plan.head == {"2.fc.weight", "2.fc.bias"}


def test_imagenet_weights_come_from_the_hub_cache_never_the_network(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    path, url = hub_weights_file("resnet18")
    assert path == tmp_path / "torch" / "hub" / "checkpoints" / url.rsplit("/", 1)[-1]
    spec = write_spec(tmp_path / "ft.yaml", {
        "method": "random", "run_cap": 1, "trainer": "torchvision", "data": {"dataset": "digits"},
        "parameters": {"architecture": {"value": "resnet18"}, "weights": {"value": "imagenet"}}})
    env = {"TORCH_HOME": str(tmp_path / "torch"), "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, "-m", "sweeper", "validate", str(spec)], capture_output=True, text=True,
                          env=env, cwd=tmp_path, timeout=120)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert path.name in done.stderr and str(path.parent) in done.stderr
    with pytest.raises(FileNotFoundError, match=path.name):
        build(TrainConfig({"architecture": "resnet18", "weights": "imagenet"}, DIGITS), 3, 10)
    path.parent.mkdir(parents=True)
    torch.manual_seed(7)
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), path)
    done = subprocess.run([sys.executable, "-m", "sweeper", "validate", str(spec)], capture_output=True, text=True,
                          env=env, cwd=tmp_path, timeout=120)
    assert done.returncode == 0, done.stderr
    model = build(TrainConfig({"architecture": "resnet18", "weights": "imagenet"}, DIGITS), 3, 10)
    assert torch.equal(model[-1].conv1.weight, torch.load(path, weights_only=True)["conv1.weight"])
    assert torch.allclose(model[0].mean.flatten(), torch.tensor([0.485, 0.456, 0.406]))


def test_a_weights_file_that_does_not_fit_says_which_tensor(tmp_path: Path, resnet18_file: Path) -> None:
    # resnet34's layer1 has a third block that resnet18's has not.
    with pytest.raises(ValueError, match=r"does not fit this architecture: 80 tensor.* first layer1\.2\.conv1\.weight"):
        build(TrainConfig({"architecture": "resnet34", "weights": str(resnet18_file)}, DIGITS), 3, 10)
    with pytest.raises(ValueError, match="missing or of another shape"):
        build(TrainConfig({"architecture": "resnet50", "weights": str(resnet18_file)}, DIGITS), 3, 10)


def test_a_fine_tuning_sweep_with_a_relative_weights_path(tmp_path: Path, resnet18_file: Path, study_name: str) -> None:
    """`sweeper launch` from the spec's folder: the relative weights path reaches the Ray workers
    (whose working folder is another), and the freeze strategy is a swept parameter."""
    (tmp_path / "w.pt").write_bytes(resnet18_file.read_bytes())
    spec = write_spec(tmp_path / "ft.yaml", {
        "name": study_name, "method": "grid", "trainer": "torchvision", "epochs": 1,
        "data": {"dataset": "digits", "image_size": 32}, "storage": f"sqlite:///{tmp_path / 's.db'}",
        "parameters": {"architecture": {"value": "resnet18"}, "weights": {"value": "w.pt"},
                       "freeze": {"values": ["all_but_head", "first_k"]}, "freeze_k": {"value": 2},
                       "batch_size": {"value": 128}, "lr": {"value": 0.01}}})
    done = subprocess.run([sys.executable, "-m", "sweeper", "launch", str(spec)], capture_output=True, text=True,
                          cwd=tmp_path, timeout=400)
    assert done.returncode == 0, done.stderr[-3000:]
    study = optuna.load_study(study_name=study_name, storage=f"sqlite:///{tmp_path / 's.db'}")
    trials = study.get_trials(states=[optuna.trial.TrialState.COMPLETE])
    assert sorted(t.params["freeze"] for t in trials) == ["all_but_head", "first_k"]
    for t in trials:
        assert t.user_attrs["config"]["params"]["weights"] == str(tmp_path / "w.pt")
        assert t.value is not None and 0.0 <= t.value <= 1.0 and t.user_attrs["epochs_run"] == 1
