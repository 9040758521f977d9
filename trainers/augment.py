"""Batched image augmentation on the trial's device (one random draw per image)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


class BatchAugment:
    """Random augmentation of a whole batch on its device, a different draw per image.

    One affine warp per image (``affine_grid`` + ``grid_sample``, bilinear, zeros outside)
    does what torchvision's ``RandomResizedCrop(scale=(0.8, 1), ratio=(3/4, 4/3))``,
    ``RandomRotation(10)`` and (for colour images) ``RandomHorizontalFlip`` do one image at a
    time; then brightness and contrast (and saturation for colour) jitter of 0.2 as in
    ``ColorJitter``. A flipped digit is another glyph, so grey images are not flipped.
    """

    def __init__(self, channels: int, scale: tuple[float, float] = (0.8, 1.0), degrees: float = 10.0,
                 jitter: float = 0.2):
        self.colour = channels == 3
        self.scale, self.degrees, self.jitter = scale, degrees, jitter

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """uint8 (or float 0-255) images ``(N, C, S, S)`` → augmented float images in [0, 255], same shape."""
        n = x.shape[0]
        u = torch.rand(n, 9, generator=generator, device=x.device)
        area = self.scale[0] + (self.scale[1] - self.scale[0]) * u[:, 0]
        ratio = torch.exp(math.log(3 / 4) + math.log(16 / 9) * u[:, 1])
        w, h = (area * ratio).sqrt().clamp(max=1.0), (area / ratio).sqrt().clamp(max=1.0)
        tx, ty = (1 - w) * (2 * u[:, 2] - 1), (1 - h) * (2 * u[:, 3] - 1)
        angle = math.radians(self.degrees) * (2 * u[:, 4] - 1)
        flip = torch.where(u[:, 5] < 0.5, -1.0, 1.0) if self.colour else torch.ones_like(w)
        cos, sin = angle.cos(), angle.sin()
        theta = torch.stack([torch.stack([w * cos * flip, -h * sin, tx], 1),
                             torch.stack([w * sin * flip, h * cos, ty], 1)], 1)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        out = F.grid_sample(x.float(), grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        j = self.jitter
        brightness = (1 + j * (2 * u[:, 6] - 1)).view(-1, 1, 1, 1)
        contrast = (1 + j * (2 * u[:, 7] - 1)).view(-1, 1, 1, 1)
        # Brightness b then contrast c around the brightened image's mean grey b*m, in one pass:
        # (b*x - b*m) * c + b*m = x * (b*c) + b*m*(1-c).
        mean = self._grey(out).mean(dim=(1, 2, 3), keepdim=True)
        out = torch.addcmul(brightness * mean * (1 - contrast), out, brightness * contrast)
        if self.colour:
            saturation = (1 + j * (2 * u[:, 8] - 1)).view(-1, 1, 1, 1)
            grey = self._grey(out)
            out.mul_(saturation).add_(grey * (1 - saturation))
        return out.clamp_(0.0, 255.0)

    def _grey(self, x: torch.Tensor) -> torch.Tensor:
        if not self.colour:
            return x
        # ITU-R 601-2 luma, as torchvision's rgb_to_grayscale.
        return (0.2989 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3])
