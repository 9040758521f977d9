"""Random number generators of a training run: seeding them, and saving and restoring their state.

A trial restarted after its worker died continues the same data order and augmentation
draws from its checkpoint (:func:`rng_state` / :func:`set_rng_state`).
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch (CPU and CUDA); returns a CPU generator for the data order."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def rng_state(generator: torch.Generator, augment: torch.Generator | None = None) -> dict[str, Any]:
    """Python, NumPy, torch, data-order and augmentation RNG states.

    In types that ``torch.load(weights_only=True)`` reads back.
    """
    version, internal, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
    state: dict[str, Any] = {
        "python": [version, list(internal), gauss],
        "numpy": [name, torch.from_numpy(np.asarray(keys, dtype=np.int64)), int(pos), int(has_gauss),
                  float(cached)],
        "torch": torch.get_rng_state(),
        "data_order": generator.get_state(),
    }
    if augment is not None:
        state["augment"] = augment.get_state()
    return state


def set_rng_state(state: Mapping[str, Any], generator: torch.Generator, augment: torch.Generator | None = None) -> None:
    """Restore what :func:`rng_state` saved."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    generator.set_state(state["data_order"])
    if augment is not None and "augment" in state:
        augment.set_state(state["augment"])

