"""Validating one training run's config (``sweeper export``'s output) into a trainer and its
:class:`trainers.base.TrainConfig`."""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from sweeper.errors import InputError, Problem
from sweeper.spec._problems import did_you_mean, pydantic_problems
from sweeper.spec._schema import TrainFileSpec
from trainers import get_trainer
from trainers.base import DataConfig, TrainConfig, Trainer
from trainers.data import check_data


def load_train_config(raw: Mapping[str, Any], *, epochs: int | None = None) -> tuple[Trainer, TrainConfig]:
    """Validate one training run's config (``sweeper export``'s output) into a trainer and its config.

    Raises:
        InputError: every problem, as for a sweep spec (``params.lr: ...``).
    """
    if epochs is not None:
        raw = {**raw, "epochs": epochs}
    try:
        spec = TrainFileSpec.model_validate(dict(raw)).model_dump()
    except ValidationError as err:
        raise InputError(pydantic_problems(err, TrainFileSpec)) from None
    name_of_trainer: str = spec["trainer"]
    given_params: dict[str, Any] = spec["params"]
    problems: list[Problem] = []
    trainer: Trainer | None = None
    try:
        trainer = get_trainer(name_of_trainer)
    except LookupError as err:
        problems.append(Problem("trainer", name_of_trainer, str(err)))
    if trainer is not None and trainer.params is not None:
        for name, value in given_params.items():
            if name not in trainer.params:
                problems.append(Problem(f"params.{name}", name, f"is not a parameter of trainer {name_of_trainer!r}"
                                        + did_you_mean(name, list(trainer.params))))
            elif (reason := trainer.params[name].check(value)) is not None:
                problems.append(Problem(f"params.{name}", value, reason))
        if trainer.check is not None and not problems:
            given = {**trainer.defaults(), **given_params}
            problems += [Problem(f"params.{key}", value, rule)
                         for key, value, rule in trainer.check({k: [v] for k, v in given.items()})]
    given_data = spec["data"]
    if trainer is not None and given_data["image_size"] < trainer.min_image_size:
        problems.append(Problem("data.image_size", given_data["image_size"],
                                f"is too small for trainer {name_of_trainer!r}; the smallest size that works is "
                                f"{trainer.min_image_size}"))
    root = given_data["root"]
    data = DataConfig(**{**given_data, "root": str(Path(root).expanduser().resolve()) if root else None})
    problems += [Problem(k, v if k != "data.root" else root, rule) for k, v, rule in check_data(data)]
    if problems:
        raise InputError(problems)
    assert trainer is not None
    program = spec["program"]
    if program is not None:  # a program's own run: its files beside the sweep's, not over its trial's
        program = {**program, "run_id": f"{program.get('run_id', 'run')}-{time.strftime('%Y%m%d-%H%M%S')}"}
        if epochs is not None and "epochs" in given_params:
            given_params = {**given_params, "epochs": epochs}  # the program reads its epochs as a parameter
    return trainer, TrainConfig(trainer.resolve({**trainer.defaults(), **given_params}), data, spec["epochs"],
                                spec["seed"], threads=spec["threads"], program=program,
                                measure_inference=spec["measure_inference"])
