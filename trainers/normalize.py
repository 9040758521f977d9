"""The models' input layer: uint8 images in, scaled and standardised per channel."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class Normalize(nn.Module):
    """Images ``(N, C, S, S)`` in 0-255 (uint8 or float) → float, scaled to [0, 1], standardised per channel.

    Starts as the identity standardisation; :meth:`fit_to` sets the training split's per-channel
    mean and standard deviation. With ``mean``/``std`` given (a pretrained model's, such as
    ImageNet's), it is ``fixed``: :func:`fit_classifier` leaves it as it is. Both are buffers,
    so a saved model carries them.
    """

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, channels: int, mean: Sequence[float] | None = None, std: Sequence[float] | None = None):
        super().__init__()
        self.fixed = mean is not None
        self.register_buffer("mean", torch.tensor(mean if mean is not None else [0.0] * channels).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std if std is not None else [1.0] * channels).view(1, -1, 1, 1))

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
