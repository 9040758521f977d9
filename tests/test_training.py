"""The training features both trainers share: schedules, early stopping, label smoothing,
precision, k-fold, batched augmentation; real digits on the CPU."""

from __future__ import annotations

import math

import pytest
import torch

from trainers import get_trainer
from trainers.augment import BatchAugment
from trainers.base import DataConfig, TrainConfig
from trainers.data import load_data
from trainers.loop import _fold_indices

SMALL = {"filters": [4, 8, 8, 8, 8], "dense_units": 16, "batch_size": 128, "lr": 0.003}
DIGITS = DataConfig("digits", image_size=32)


def run(params: dict, epochs: int = 3, seed: int = 0) -> tuple[list[dict], dict]:
    curve: list[dict] = []
    final = get_trainer("cnn").fit(TrainConfig({**SMALL, **params}, DIGITS, epochs=epochs, seed=seed, threads=2),
                                   lambda epoch, metrics, checkpoint=None: curve.append({"epoch": epoch, **metrics}))
    return curve, dict(final)


def test_cosine_with_warm_up_and_step_schedules_set_each_epochs_rate() -> None:
    lr = 0.002
    cosine, _ = run({"lr": lr, "lr_schedule": "cosine", "warmup_epochs": 1}, epochs=4)
    # LinearLR from lr/2 for one epoch, then CosineAnnealingLR over the 3 epochs left.
    expected = [lr / 2, lr] + [lr * (1 + math.cos(math.pi * k / 3)) / 2 for k in (1, 2)]
    assert [c["lr"] for c in cosine] == pytest.approx(expected, rel=1e-6)
    step, _ = run({"lr": lr, "lr_schedule": "step", "step_size": 2, "gamma": 0.1}, epochs=4)
    assert [c["lr"] for c in step] == pytest.approx([lr, lr, lr / 10, lr / 10], rel=1e-6)


def test_onecycle_steps_every_batch_and_plateau_decays_without_progress() -> None:
    onecycle, _ = run({"lr": 0.01, "lr_schedule": "onecycle", "warmup_epochs": 1}, epochs=3)
    rates = [c["lr"] for c in onecycle]
    assert rates[0] == pytest.approx(0.01 / 25)  # OneCycleLR starts at max_lr / div_factor
    assert rates[1] > rates[0] * 10  # the peak after the first epoch's warm-up
    # lr 1e-6 leaves the accuracy where it is: after the first (best) epoch, plateau (patience 0)
    # halves the rate after every epoch.
    plateau, _ = run({"lr": 1e-6, "lr_schedule": "plateau", "plateau_patience": 0, "gamma": 0.5}, epochs=4)
    assert [c["lr"] for c in plateau] == pytest.approx([1e-6, 1e-6, 5e-7, 2.5e-7])


def test_early_stopping_stops_keeps_the_best_epoch_and_says_so() -> None:
    curve, final = run({"lr": 1e-8, "patience": 2, "min_delta": 0.05}, epochs=8)
    assert len(curve) == 3  # no epoch improves by 0.05 after the first
    assert curve[-1]["early_stopped"] == 1.0 and curve[-1]["best_epoch"] == 1.0
    assert final["val_accuracy"] == curve[0]["val_accuracy"] and final["best_epoch"] == 1.0
    learning, final = run({"patience": 2}, epochs=3)
    assert "early_stopped" not in learning[-1] and learning[-1]["best_epoch"] >= 1


def test_label_smoothing_changes_the_training_loss_only() -> None:
    plain, _ = run({"lr": 1e-8}, epochs=1)
    smooth, _ = run({"lr": 1e-8, "label_smoothing": 0.3}, epochs=1)
    assert smooth[0]["train_loss"] != pytest.approx(plain[0]["train_loss"], rel=1e-3)
    assert smooth[0]["val_loss"] == pytest.approx(plain[0]["val_loss"], rel=1e-4)  # validation: plain cross-entropy


def test_bf16_on_the_cpu_autocasts(caplog: pytest.LogCaptureFixture) -> None:
    fp32, _ = run({}, epochs=3)
    bf16, _ = run({"precision": "bf16"}, epochs=3)
    assert bf16[-1]["val_accuracy"] > 0.4  # it learns (chance is 0.1) ...
    assert bf16[0]["train_loss"] != fp32[0]["train_loss"]  # ... in bf16 arithmetic, not fp32
    run({"precision": "fp16"}, epochs=1)
    run({"precision": "fp16"}, epochs=1)
    assert caplog.text.count("fp16 autocast is for CUDA") == 1  # said once (logger "trainers")


def test_gradient_clipping_bounds_each_step() -> None:
    """Plain SGD with the gradient's norm clipped to c moves the weights at most lr * c per step."""

    def moved(clip: float) -> float:
        states: list[dict] = []
        get_trainer("cnn").fit(
            TrainConfig({**SMALL, "optimizer": "sgd", "momentum": 0.0, "lr": 1.0, "batch_norm": False,
                         "grad_clip": clip}, DIGITS, epochs=2, seed=0, threads=2),
            lambda epoch, metrics, checkpoint=None: states.append(
                {k: v.clone() for k, v in (checkpoint or {})["model"].items()}))
        return float(torch.sqrt(sum(((states[1][k] - states[0][k]) ** 2).sum() for k in states[0])))

    steps = math.ceil(len(load_data(DIGITS).train_idx) / SMALL["batch_size"])
    bound = 1.0 * 1e-3 * steps
    assert moved(1e-3) <= bound * 1.0001
    assert moved(0.0) > 5 * bound  # without clipping the same epoch moves much further


def test_k_fold_reports_each_fold_and_their_mean() -> None:
    curve, _ = run({"folds": 3}, epochs=2)
    for row in curve:
        folds = [row[f"fold{i}_val_accuracy"] for i in (1, 2, 3)]
        assert row["val_accuracy"] == pytest.approx(sum(folds) / 3)
        assert len(set(folds)) > 1  # three models on three validation folds
    data = load_data(DIGITS)
    splits = _fold_indices(data, 3, seed=0)
    pool = torch.cat([data.train_idx, data.val_idx]).sort().values
    val = torch.cat([va for _, va in splits]).sort().values
    assert torch.equal(val, pool)  # every image validates exactly once
    for train, va in splits:
        assert not set(train.tolist()) & set(va.tolist())
        counts = torch.bincount(data.labels[va], minlength=10)
        assert int(counts.max() - counts.min()) <= 3  # stratified: ~60 per class each
    with pytest.raises(ValueError, match="smallest class"):
        _fold_indices(data, 500, seed=0)


def test_batched_augmentation_draws_per_image_and_is_seeded() -> None:
    images = load_data(DataConfig("mnist5k", image_size=32)).images[:1].expand(64, -1, -1, -1).contiguous()
    aug = BatchAugment(channels=1)
    out = aug(images, torch.Generator().manual_seed(0))
    assert out.shape == images.shape and out.dtype == torch.float32
    assert float(out.min()) >= 0.0 and float(out.max()) <= 255.0
    distinct = {tuple(o.flatten()[::7].round().tolist()) for o in out}
    assert len(distinct) == 64  # one draw per image, not one per batch
    assert torch.equal(out, aug(images, torch.Generator().manual_seed(0)))
    assert not torch.equal(out, aug(images, torch.Generator().manual_seed(1)))
    # Mean brightness stays near the original's (a crop, a small rotation, +-20% jitter).
    assert abs(float(out.mean()) - float(images.float().mean())) < 0.3 * float(images.float().mean())


@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_and_channels_last_on_cuda(precision: str) -> None:
    """Autocast on the GPU (fp16 with a gradient scaler), channels-last: it learns as fp32 does."""
    states: list[dict] = []
    curve: list[dict] = []

    def report(epoch: int, metrics: dict, checkpoint: dict | None = None) -> None:
        curve.append(dict(metrics))
        states.append(dict(checkpoint or {}))

    get_trainer("cnn").fit(TrainConfig({**SMALL, "precision": precision, "channels_last": True}, DIGITS, epochs=3,
                                       seed=0, device="cuda"), report)
    assert curve[-1]["val_accuracy"] > 0.4 and all(math.isfinite(c["train_loss"]) for c in curve)
    scaler = states[-1]["runs"][0]["scaler"]
    assert (precision == "fp16") == bool(scaler)  # the scaler is on for fp16 only


def test_batches_gathered_ahead_by_threads_give_the_same_curve() -> None:
    """`data.num_workers` threads gather batches ahead of the model; the batches are the same."""
    ahead: list[dict] = []
    get_trainer("cnn").fit(TrainConfig({**SMALL, "augment": True}, DataConfig("digits", image_size=32, num_workers=2),
                                       epochs=2, seed=0, threads=2),
                           lambda epoch, metrics, checkpoint=None: ahead.append(dict(metrics)))
    inline, _ = run({"augment": True}, epochs=2)
    assert [r["val_loss"] for r in ahead] == [r["val_loss"] for r in inline]
