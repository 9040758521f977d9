"""What a model costs, as objectives of a multi-objective sweep: its size and its inference time.

Both are properties of the architecture (and the device), not of the trained weights; the
built-in trainers report them each epoch (see :data:`trainers.base.MEASURED_METRICS`).
"""

from __future__ import annotations

import time

import numpy as np
import torch
from torch import nn

from trainers.data import ImageData


@torch.no_grad()
def inference_ms(model: nn.Module, data: ImageData, idx: torch.Tensor, device: torch.device, batch_size: int,
                 amp: torch.dtype | None = None, channels_last: bool = False, warmup: int = 2,
                 repeats: int = 5) -> float:
    """Milliseconds per image of ``model``'s forward pass in eval mode on ``device``: one batch of
    ``batch_size`` images of ``data.images[idx]`` (repeated when ``idx`` is shorter), ``warmup``
    passes untimed, then the median of ``repeats`` timed passes divided by the batch size.

    On CUDA the device is synchronised around each pass, so the time is the kernels', not the launch's.
    """
    model.eval()
    take = idx.repeat(-(-batch_size // max(1, len(idx))))[:batch_size]
    xb = data.images[take].to(device)
    if channels_last:
        xb = xb.contiguous(memory_format=torch.channels_last)
    times = []
    for i in range(warmup + repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        started = time.perf_counter()
        with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
            model(xb)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if i >= warmup:
            times.append(time.perf_counter() - started)
    return 1000.0 * float(np.median(times)) / len(take)


def param_count(model: nn.Module, frozen: frozenset[str] = frozenset()) -> int:
    """Trainable parameters (scalars) of ``model``: those with ``requires_grad`` and not named in ``frozen``."""
    return sum(p.numel() for n, p in model.named_parameters() if p.requires_grad and n not in frozen)
