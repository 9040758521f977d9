"""sweeper.trial.replay: a schedule replayed step by step from the trainer's own checkpoints.

The trainer here is a real one of a few lines (a running sum the learning rate adds to each
epoch), so that what the replay continues from can be read off its metrics exactly."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from sweeper.errors import InputError
from sweeper.trial.replay import fit_scheduled
from trainers.base import Report, TrainConfig, Trainer


def _summing(every: int) -> Trainer:
    """Each epoch adds ``lr`` to ``w``; a checkpoint every ``every`` epochs (0: never). The
    checkpoint dict is reused and changed afterwards, as a trainer's live state would be."""

    def fit(config: TrainConfig, report: Report) -> dict[str, float]:
        state: dict[str, Any] = dict(config.resume_state or {"epoch": 0, "w": 0.0})
        metrics: dict[str, float] = {}
        for epoch in range(int(state["epoch"]) + 1, config.epochs + 1):
            state["w"] += config.params["lr"]
            state["epoch"] = epoch
            metrics = {"w": state["w"]}
            report(epoch, metrics, state if every and epoch % every == 0 else None)
        return metrics

    return Trainer(name="summing", fit=fit, metrics=("w",))


def _run(trainer: Trainer, schedule: list[Mapping[str, Any]] | None, epochs: int = 6) -> list[tuple[int, float]]:
    seen: list[tuple[int, float]] = []
    fit_scheduled(trainer, TrainConfig(params={"lr": 1.0}, epochs=epochs), schedule,
                  lambda epoch, metrics, checkpoint=None: seen.append((epoch, metrics["w"])))
    return seen


def test_each_step_continues_from_the_checkpoint_of_the_epoch_before_it_with_its_values() -> None:
    schedule = [{"epoch": 1, "params": {"lr": 1.0}}, {"epoch": 3, "params": {"lr": 10.0}},
                {"epoch": 5, "params": {"lr": 100.0}}]
    assert _run(_summing(every=1), schedule) == [(1, 1.0), (2, 2.0), (3, 12.0), (4, 22.0), (5, 122.0), (6, 222.0)]
    assert _run(_summing(every=1), None) == [(e, float(e)) for e in range(1, 7)]
    # fewer epochs asked than the schedule covers: its later steps are dropped
    assert _run(_summing(every=1), schedule, epochs=3) == [(1, 1.0), (2, 2.0), (3, 12.0)]


def test_a_step_without_a_checkpoint_of_its_last_epoch_is_one_line_naming_the_step() -> None:
    schedule = [{"epoch": 1, "params": {}}, {"epoch": 4, "params": {"lr": 2.0}}]
    for every in (0, 2):  # never, or at epochs 2, 4, 6 (not at 3, where step 1 ends)
        with pytest.raises(InputError) as refused:
            _run(_summing(every=every), schedule)
        assert str(refused.value) == ("schedule[1].epoch: 4 needs a checkpoint of epoch 3 to continue from, and "
                                      "trainer 'summing' reported none then")
    with pytest.raises(InputError, match=r"^schedule: \[1, 1\] must be epochs that start at 1 and increase$"):
        _run(_summing(every=1), [{"epoch": 1, "params": {}}, {"epoch": 1, "params": {}}])
