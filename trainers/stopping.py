"""Early stopping's state within one trial (the trainer's ``patience`` and ``min_delta``, as
Keras' ``EarlyStopping`` callback defines them): the best epoch so far and the epochs since it.

:func:`trainers.loop.fit_classifier` updates it each epoch, keeps the best epoch's weights and
saves it with each checkpoint, so a resumed trial stops where an uninterrupted one would.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass
class EarlyStopping:
    """Early stopping's state, saved with each checkpoint (as a plain dict).

    Attributes:
        epoch: the best epoch so far (0: none yet).
        score: its monitored value, signed so that higher is better (``val_loss`` negated).
        metrics: the metrics that epoch reported.
        bad: epochs since the best one without progress by more than ``min_delta``.
    """

    epoch: int = 0
    score: float = -math.inf
    metrics: dict[str, float] = field(default_factory=dict)
    bad: int = 0

    def update(self, epoch: int, score: float, metrics: Mapping[str, float], min_delta: float) -> bool:
        """Count ``epoch``; True when it is the new best (its score beats the best by more than ``min_delta``)."""
        if score > self.score + min_delta or self.epoch == 0:
            self.epoch, self.score, self.metrics, self.bad = epoch, score, dict(metrics), 0
            return True
        self.bad += 1
        return False

    def state(self) -> dict[str, Any]:
        """The state in types that ``torch.load(weights_only=True)`` reads back."""
        return {"epoch": self.epoch, "score": self.score, "metrics": dict(self.metrics), "bad": self.bad}
