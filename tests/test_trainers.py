"""The trainers package alone: no Ray, no Optuna; real digits; seeded curves."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from trainers import get_trainer
from trainers.base import DataConfig, TrainConfig
from trainers.cnn import PARAMS, build_model

SMALL = {"filters": [4, 8, 8, 8, 8], "dense_units": 16, "batch_size": 64, "lr": 0.003}


def run(params: dict, epochs: int = 2, seed: int = 0, dataset: str = "digits") -> list[tuple[int, dict]]:
    curve: list[tuple[int, dict]] = []
    get_trainer("cnn").fit(TrainConfig(params, DataConfig(dataset, image_size=32), epochs=epochs, seed=seed),
                           lambda epoch, metrics, checkpoint=None: curve.append((epoch, dict(metrics))))
    return curve


def test_cnn_reports_every_epoch_and_learns_digits() -> None:
    curve = run({**SMALL, "batch_norm": True}, epochs=3)
    assert [e for e, _ in curve] == [1, 2, 3]
    for _, m in curve:
        assert {"train_loss", "train_accuracy", "val_loss", "val_accuracy"} <= set(m)
        assert 0.0 <= m["val_accuracy"] <= 1.0 and 0.0 <= m["train_accuracy"] <= 1.0
    assert curve[-1][1]["val_accuracy"] > 0.5  # chance is 0.1
    assert curve[-1][1]["train_loss"] < curve[0][1]["train_loss"]


def test_same_config_and_seed_give_the_same_curve() -> None:
    params = {**SMALL, "augment": True, "dropout": 0.3, "activation": "mish"}
    first, again, other = run(params, seed=5), run(params, seed=5), run(params, seed=6)
    assert _close(first, again)
    assert [m["train_loss"] for _, m in first] != [m["train_loss"] for _, m in other]


def _close(a: list, b: list) -> bool:
    return all(abs(x[1][k] - y[1][k]) < 1e-9 for x, y in zip(a, b, strict=True) for k in x[1] if k != "epoch_s")


@pytest.mark.parametrize("activation", ["relu", "gelu", "silu", "mish", "leaky_relu"])
def test_model_shapes(activation: str) -> None:
    params = {name: p.default for name, p in PARAMS.items()} | {"activation": activation, "kernel_size": 5}
    model = build_model(params, in_channels=3, num_classes=7, image_size=64)
    assert model(torch.zeros(2, 3, 64, 64)).shape == (2, 7)
    with pytest.raises(ValueError, match="smallest is 32"):
        build_model(params, in_channels=3, num_classes=7, image_size=31)


def test_nan_loss_fails_with_the_epoch() -> None:
    # The epoch depends on the thread count earlier tests left torch with (summation order).
    with pytest.raises(FloatingPointError, match=r"loss became (NaN|infinite) at epoch [12]$"):
        run({**SMALL, "lr": 10.0, "optimizer": "sgd", "momentum": 0.99, "batch_norm": False,
             "activation": "leaky_relu", "dropout": 0.0}, epochs=2)


def test_trainers_import_neither_ray_nor_optuna() -> None:
    code = ("import sys, trainers, trainers.cnn, trainers.loop, trainers.data; "
            "bad = [m for m in sys.modules if m.split('.')[0] in ('ray', 'optuna', 'sweeper')]; "
            "print(bad); sys.exit(1 if bad else 0)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr


def test_unknown_trainer_lists_the_registered_ones() -> None:
    with pytest.raises(LookupError, match="cnn"):
        get_trainer("resnet")


def test_resuming_from_a_checkpoint_continues_the_same_curve() -> None:
    """A checkpoint (saved and loaded with weights_only=True) resumes at the next epoch with the
    same weights, optimiser, schedule, early-stopping state and RNG streams (augmentation's
    included): the resumed curve equals the uninterrupted one."""
    import io

    params = {**SMALL, "augment": True, "lr_schedule": "cosine", "warmup_epochs": 1, "patience": 5}
    config = TrainConfig(params, DataConfig("digits", image_size=32), epochs=3, seed=1)
    full: list[tuple[int, float]] = []
    saved: dict[str, bytes] = {}

    def report(epoch: int, metrics: dict, checkpoint: dict | None = None) -> None:
        full.append((epoch, metrics["val_loss"]))
        if epoch == 1:
            buffer = io.BytesIO()
            torch.save(dict(checkpoint or {}), buffer)
            saved["state"] = buffer.getvalue()

    get_trainer("cnn").fit(config, report)
    state = torch.load(io.BytesIO(saved["state"]), weights_only=True)
    resumed: list[tuple[int, float]] = []
    get_trainer("cnn").fit(TrainConfig(params, config.data, 3, 1, resume_state=state),
                           lambda epoch, metrics, checkpoint=None: resumed.append((epoch, metrics["val_loss"])))
    assert resumed == full[1:]
