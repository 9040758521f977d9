"""Replaying a population-based trial's schedule: ``sweeper train`` and ``sweeper retrain`` of a
config that carries one (``schedule``, what ``sweeper export`` writes for a PBT/PB2 trial).

The run trains as the trial's weights were trained (:mod:`sweeper.engine.population`): the first step's
parameters (and the config's ``seed``, the first step's) from epoch 1, then at each later step's
``epoch`` it continues from its own checkpoint of the epoch before with that step's parameters,
as the trial continued from the checkpoint it copied. Only the trainer's ``resume_state`` is
used, so any trainer that resumes from its checkpoints replays a schedule.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
from collections.abc import Mapping, Sequence
from typing import Any

from sweeper.errors import InputError, Problem
from trainers.base import Report, TrainConfig, Trainer


class _StepEnded(Exception):
    """Raised from the report of a step's last epoch to end that step's run."""


def fit_scheduled(trainer: Trainer, config: TrainConfig, schedule: Sequence[Mapping[str, Any]] | None,
                  report: Report) -> dict[str, float]:
    """Train ``config`` following ``schedule`` (``[{epoch, params, ...}]``, epochs from 1,
    increasing; ``None`` or empty: plain ``trainer.fit``), reporting every epoch once. Each step's
    ``params`` are the values it sets: the first step's over ``config.params``, each later
    step's over the step before.

    Returns:
        the last epoch's metrics (the trainer's return value of the last step).

    Raises:
        InputError: the steps' epochs do not increase from 1, or a step before the last ends with
            no checkpoint reported at its last epoch to continue from (a trainer that reports
            none, or not every epoch, cannot replay a schedule): one line, ``sweeper train``'s
            exit code 2.
    """
    schedule = [step for step in schedule or () if int(step["epoch"]) <= config.epochs]  # fewer epochs asked
    if not schedule:
        return dict(trainer.fit(config, report))
    starts = [int(step["epoch"]) for step in schedule]
    if starts[0] != 1 or any(b <= a for a, b in itertools.pairwise(starts)):
        raise InputError(Problem("schedule", starts, "must be epochs that start at 1 and increase"))
    state: dict[str, Any] | None = None
    final: dict[str, float] = {}
    params = dict(config.params)  # each step sets what it names
    for i, step in enumerate(schedule):
        last = starts[i + 1] - 1 if i + 1 < len(starts) else config.epochs
        kept: dict[str, Any] = {}

        def step_report(epoch: int, metrics: Mapping[str, float], checkpoint: Mapping[str, Any] | None = None,
                        last: int = last, kept: dict[str, Any] = kept) -> None:
            report(epoch, metrics, checkpoint)
            if epoch >= last and last < config.epochs:
                if checkpoint is not None:  # copied once per step: the trainer may reuse its objects
                    kept["state"], kept["metrics"] = copy.deepcopy(dict(checkpoint)), dict(metrics)
                raise _StepEnded

        params = {**params, **step["params"]}
        run = dataclasses.replace(config, params=params, resume_state=state)
        try:
            final = dict(trainer.fit(run, step_report))
        except _StepEnded:
            if "state" not in kept:
                raise InputError(Problem(f"schedule[{i + 1}].epoch", last + 1,
                                         f"needs a checkpoint of epoch {last} to continue from, and trainer "
                                         f"{trainer.name!r} reported none then")) from None
            state, final = kept["state"], kept["metrics"]
    return final
