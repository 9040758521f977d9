"""The ``cnn`` trainer: the 5-block convolutional network of the iNaturalist sweeps.

Five blocks of conv → optional BatchNorm → activation → 2x2 max-pool, then dropout, one
dense layer with the same activation, dropout, and the linear classifier. Five poolings
halve the image five times, so ``image_size`` must be at least 2**5 = 32 pixels.

torch is imported by the functions that build and train: validating a spec reads
:data:`PARAMS` alone, in a driver that never trains (:mod:`trainers.datasets` says why).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from trainers.base import EPOCH_METRICS, MEASURED_METRICS, Param, Report, TrainConfig, Trainer
from trainers.optim import MUTABLE_PARAMS, OPTIMIZATION_PARAMS

if TYPE_CHECKING:
    from torch import nn

BLOCKS = 5

# The activations by name: torch.nn's ReLU, GELU, SiLU, Mish and LeakyReLU (:func:`activation`).
ACTIVATIONS = ("relu", "gelu", "silu", "mish", "leaky_relu")


def activation(name: str) -> type[nn.Module]:
    """torch's activation module class called ``name`` (one of :data:`ACTIVATIONS`).

    Raises:
        KeyError: ``name`` is not one of them.
    """
    from torch import nn

    return {"relu": nn.ReLU, "gelu": nn.GELU, "silu": nn.SiLU, "mish": nn.Mish, "leaky_relu": nn.LeakyReLU}[name]


PARAMS: dict[str, Param] = {
    "filters": Param("int_list", [32, 32, 32, 32, 32], "output channels of each of the 5 conv blocks",
                     low=1, high=4096, length=BLOCKS),
    "kernel_size": Param("int", 3, "side of the square convolution kernels (odd keeps the size)",
                         low=1, high=15),
    "activation": Param("str", "relu", "activation after each conv and the dense layer",
                        choices=ACTIVATIONS),
    "batch_norm": Param("bool", True, "BatchNorm after each convolution"),
    "dropout": Param("float", 0.2, "dropout before and after the dense layer", low=0.0, high=0.95),
    "dense_units": Param("int", 128, "units of the dense layer", low=1, high=65536),
    **OPTIMIZATION_PARAMS,
}


def build_model(params: Mapping[str, Any], in_channels: int, num_classes: int, image_size: int) -> nn.Sequential:
    """The 5-block CNN for images ``(N, in_channels, image_size, image_size)`` → logits ``(N, num_classes)``.

    Raises:
        ValueError: ``image_size`` is below 32 (five 2x2 poolings).
    """
    from torch import nn

    if image_size < 2**BLOCKS:
        raise ValueError(f"image_size {image_size} is too small for {BLOCKS} poolings; the smallest is {2**BLOCKS}")
    act = activation(params["activation"])
    layers: list[nn.Module] = []
    channels, size = in_channels, image_size
    k = int(params["kernel_size"])
    for out in params["filters"]:
        layers.append(nn.Conv2d(channels, int(out), k, padding=k // 2, bias=not params["batch_norm"]))
        if params["batch_norm"]:
            layers.append(nn.BatchNorm2d(int(out)))
        layers += [act(), nn.MaxPool2d(2)]
        channels = int(out)
        size = (size + 2 * (k // 2) - k + 1) // 2
    dense = int(params["dense_units"])
    layers += [
        nn.Flatten(),
        nn.Dropout(float(params["dropout"])),
        nn.Linear(channels * size * size, dense),
        act(),
        nn.Dropout(float(params["dropout"])),
        nn.Linear(dense, num_classes),
    ]
    return nn.Sequential(*layers)


def build(config: TrainConfig, channels: int, num_classes: int) -> nn.Sequential:
    """The untrained CNN for ``config``, taking uint8 images ``(N, channels, S, S)``."""
    from trainers.normalize import with_normalization

    params = {**TRAINER.defaults(), **config.params}
    return with_normalization(build_model(params, channels, num_classes, config.data.image_size), channels)


def fit(config: TrainConfig, report: Report) -> dict[str, float]:
    """Train the CNN on ``config.data`` for ``config.epochs``; see :func:`trainers.loop.fit_classifier`."""
    from trainers.data import load_data
    from trainers.loop import fit_classifier
    from trainers.rng import seed_everything

    config = dataclasses.replace(config, params={**TRAINER.defaults(), **config.params})
    data = load_data(config.data)
    seed_everything(config.seed)  # the initial weights depend on the trial's seed only
    return fit_classifier(build(config, data.channels, len(data.classes)), data, config, report)


TRAINER = Trainer(name="cnn", fit=fit, params=PARAMS, metrics=EPOCH_METRICS + MEASURED_METRICS,
                  min_image_size=2**BLOCKS,
                  build=build, mutable=MUTABLE_PARAMS)
