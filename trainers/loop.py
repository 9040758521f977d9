"""The training loop shared by the trainers: optimiser, augmentation, epochs, evaluation.

Images arrive as uint8 tensors ``(N, C, S, S)`` (see :mod:`trainers.data`); each batch is
augmented (optionally), scaled to [0, 1] and normalised with the training split's
per-channel mean and standard deviation.
"""

from __future__ import annotations

import math
import random
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from trainers.base import Param, Report, TrainConfig
from trainers.data import ImageData

# Parameters every built-in trainer reads: optimisation and augmentation.
OPTIMIZATION_PARAMS: dict[str, Param] = {
    "optimizer": Param("str", "adam", "adam | adamw | sgd (with momentum) | adamax",
                       choices=("adam", "adamw", "sgd", "adamax")),
    "lr": Param("float", 1e-3, "learning rate", low=1e-8, high=10.0),
    "momentum": Param("float", 0.9, "momentum of sgd (ignored by the others)", low=0.0, high=1.0),
    "weight_decay": Param("float", 0.0, "L2 weight decay (decoupled for adamw)", low=0.0, high=1.0),
    "batch_size": Param("int", 64, "images per optimisation step", low=1, high=65536),
    "augment": Param("bool", False, "random resized crop, small rotation, colour jitter, "
                     "horizontal flip (not for digits)"),
}

_told_cpu = False


def resolve_device(name: str) -> torch.device:
    """``auto`` → the CUDA device Ray (or the user) made visible, else the CPU.

    Says once per process, on stderr, when it falls back to the CPU.
    """
    global _told_cpu
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cpu" and not _told_cpu:
        _told_cpu = True
        print("trainer: CUDA is not available; training on the CPU", file=sys.stderr)
    return device


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch; returns a generator for the data order."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def rng_state(generator: torch.Generator) -> dict[str, Any]:
    """Python, NumPy, torch and data-order RNG states, in types ``torch.load(weights_only=True)`` reads."""
    version, internal, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
    return {
        "python": [version, list(internal), gauss],
        "numpy": [name, torch.from_numpy(np.asarray(keys, dtype=np.int64)), int(pos), int(has_gauss),
                  float(cached)],
        "torch": torch.get_rng_state(),
        "data_order": generator.get_state(),
    }


def set_rng_state(state: Mapping[str, Any], generator: torch.Generator) -> None:
    """Restore what :func:`rng_state` saved."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    generator.set_state(state["data_order"])


def make_optimizer(params: Mapping[str, Any], parameters: Iterator[nn.Parameter]) -> torch.optim.Optimizer:
    """The optimiser named by ``params['optimizer']`` with ``lr`` and ``weight_decay``."""
    name, lr, wd = params["optimizer"], float(params["lr"]), float(params["weight_decay"])
    trainable = [p for p in parameters if p.requires_grad]
    if name == "adam":
        return torch.optim.Adam(trainable, lr=lr, weight_decay=wd)
    if name == "adamw":
        return torch.optim.AdamW(trainable, lr=lr, weight_decay=wd)
    if name == "adamax":
        return torch.optim.Adamax(trainable, lr=lr, weight_decay=wd)
    if name == "sgd":
        return torch.optim.SGD(trainable, lr=lr, momentum=float(params["momentum"]), weight_decay=wd)
    raise ValueError(f"optimizer {name!r} is not one of adam, adamw, sgd, adamax")


def make_augmentation(image_size: int, channels: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """torchvision v2 augmentation of one uint8 image ``(C, S, S)``.

    Random resized crop (scale 0.8-1), rotation up to 10 degrees, brightness/contrast
    jitter of 0.2 (and saturation 0.2 for colour images), horizontal flip for colour
    images only: a flipped digit is another glyph.
    """
    from torchvision.transforms import v2

    steps: list[Any] = [
        v2.RandomResizedCrop(image_size, scale=(0.8, 1.0), antialias=True),
        v2.RandomRotation(10),
    ]
    if channels == 3:
        steps += [v2.RandomHorizontalFlip(), v2.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2)]
    else:
        steps += [v2.ColorJitter(brightness=0.2, contrast=0.2)]
    compose: Callable[[torch.Tensor], torch.Tensor] = v2.Compose(steps)
    return compose


class _ImageDataset(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    def __init__(self, x: torch.Tensor, y: torch.Tensor, transform: Callable[[torch.Tensor], torch.Tensor] | None):
        self.x, self.y, self.transform = x, y, transform

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        img = self.x[i]
        return (self.transform(img) if self.transform else img), self.y[i]


class Normalize(nn.Module):
    """uint8 images ``(N, C, S, S)`` → float, scaled to [0, 1], standardised per channel.

    Starts as the identity standardisation; :meth:`fit_to` sets the training split's per-channel
    mean and standard deviation. Both are buffers, so a saved model carries them.
    """

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, channels: int):
        super().__init__()
        self.register_buffer("mean", torch.zeros(1, channels, 1, 1))
        self.register_buffer("std", torch.ones(1, channels, 1, 1))

    def fit_to(self, images: torch.Tensor) -> None:
        """Take the mean and standard deviation of (up to 20,000 of) uint8 ``images``."""
        sample = images[:20000].float() / 255.0
        self.mean.copy_(sample.mean(dim=(0, 2, 3)).view(1, -1, 1, 1))
        self.std.copy_(sample.std(dim=(0, 2, 3)).clamp_min(1e-3).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x.float() / 255.0 - self.mean) / self.std


def with_normalization(model: nn.Module, channels: int) -> nn.Sequential:
    """Prefix ``model`` with a :class:`Normalize`, so the model takes uint8 images."""
    return nn.Sequential(Normalize(channels), model)


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, device: torch.device,
             batch_size: int = 512) -> tuple[float, float]:
    """Mean cross-entropy and accuracy (a fraction) of ``model`` on uint8 images ``(N, C, S, S)``."""
    model.eval()
    loss_sum, correct = 0.0, 0
    for start in range(0, len(y), batch_size):
        xb = x[start:start + batch_size].to(device, non_blocking=True)
        yb = y[start:start + batch_size].to(device, non_blocking=True)
        logits = model(xb)
        loss_sum += float(nn.functional.cross_entropy(logits, yb, reduction="sum"))
        correct += int((logits.argmax(1) == yb).sum())
    n = max(1, len(y))
    return loss_sum / n, correct / n


def fit_classifier(model: nn.Module, data: ImageData, config: TrainConfig, report: Report) -> dict[str, float]:
    """Train ``model`` (starting with a :class:`Normalize`, fitted here to the training
    images) for ``config.epochs``.

    Reports ``train_loss``, ``train_accuracy``, ``val_loss``, ``val_accuracy`` (fractions) and
    ``epoch_s`` (wall seconds of the epoch) after each epoch, epochs counted from 1, with a
    checkpoint of the model, optimiser and RNG states; starts after ``config.resume_state``'s
    epoch when given.

    Returns:
        the last epoch's metrics.

    Raises:
        FloatingPointError: the training loss became NaN or infinite (``loss became NaN
            at epoch 3``); a diverged trial should fail, not score.
    """
    params = config.params
    if config.threads:
        torch.set_num_threads(config.threads)
    generator = seed_everything(config.seed)
    device = resolve_device(config.device)
    if isinstance(model, nn.Sequential) and isinstance(model[0], Normalize):
        model[0].fit_to(data.train_x)
    model.to(device)
    transform = make_augmentation(config.data.image_size, data.channels) if params["augment"] else None
    loader = DataLoader(
        _ImageDataset(data.train_x, data.train_y, transform),
        batch_size=int(params["batch_size"]),
        shuffle=True,
        generator=generator,
        num_workers=config.data.num_workers,
        pin_memory=device.type == "cuda",
        persistent_workers=config.data.num_workers > 0,
    )
    optimizer = make_optimizer(params, model.parameters())
    loss_fn = nn.CrossEntropyLoss()
    metrics: dict[str, float] = {}
    first_epoch = 1
    if config.resume_state is not None:
        # Continue a run whose worker died: same weights, optimiser moments and RNG streams.
        model.load_state_dict(config.resume_state["model"])
        optimizer.load_state_dict(config.resume_state["optimizer"])
        set_rng_state(config.resume_state["rng"], generator)
        first_epoch = int(config.resume_state["epoch"]) + 1
    for epoch in range(first_epoch, config.epochs + 1):
        started = time.perf_counter()
        model.train()
        loss_sum, correct, seen = 0.0, 0, 0
        for xb, yb in loader:
            xb, yb = xb.to(device, non_blocking=True), yb.to(device, non_blocking=True)
            optimizer.zero_grad(set_to_none=True)
            logits = model(xb)
            loss = loss_fn(logits, yb)
            loss.backward()
            optimizer.step()
            loss_sum += float(loss.detach()) * len(yb)
            correct += int((logits.detach().argmax(1) == yb).sum())
            seen += len(yb)
        train_loss = loss_sum / max(1, seen)
        if not math.isfinite(train_loss):
            raise FloatingPointError(f"loss became {'NaN' if math.isnan(train_loss) else 'infinite'} at epoch {epoch}")
        val_loss, val_accuracy = evaluate(model, data.val_x, data.val_y, device)
        metrics = {
            "train_loss": train_loss,
            "train_accuracy": correct / max(1, seen),
            "val_loss": val_loss,
            "val_accuracy": val_accuracy,
            "epoch_s": time.perf_counter() - started,
        }
        checkpoint = {"epoch": epoch, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                      "rng": rng_state(generator)}
        report(epoch, metrics, checkpoint)
    return metrics
