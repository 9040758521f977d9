"""Validating one training run's config (``sweeper export``'s output) into a trainer and its
:class:`trainers.base.TrainConfig`."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from sweeper.defaults import FIT_TRAINER, FUNCTION_TRAINER
from sweeper.errors import InputError, Problem
from sweeper.spec._problems import did_you_mean, pydantic_problems, same_value
from sweeper.spec._schema import PROGRAM_TRAINER, TrainFileSpec
from sweeper.spec._space import SearchSpace
from trainers import get_trainer
from trainers.base import DataConfig, TrainConfig, Trainer
from trainers.datasets import check_data


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
    # A population-based trial's schedule (sweeper.trial.replay): each step's parameters checked as params are.
    steps = [(f"schedule[{i}].params", step["params"]) for i, step in enumerate(spec.get("schedule") or [])]
    starts = [step["epoch"] for step in spec.get("schedule") or []]
    if starts and (starts[0] != 1 or starts != sorted(set(starts))):
        problems.append(Problem("schedule", starts, "its steps' epochs must start at 1 and increase"))
    if trainer is not None and trainer.params is not None:
        for where, checked in (("params", given_params), *steps):
            for name, value in checked.items():
                if name not in trainer.params:
                    problems.append(Problem(f"{where}.{name}", name, "is not a parameter of trainer "
                                            f"{name_of_trainer!r}" + did_you_mean(name, list(trainer.params))))
                elif (reason := trainer.params[name].check(value)) is not None:
                    problems.append(Problem(f"{where}.{name}", value, reason))
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


def check_trial_config(config: Mapping[str, Any], spec: Mapping[str, Any] | None, where: str,
                       drawn: tuple[SearchSpace, Mapping[str, Any]] | None = None, *,
                       check_data: bool = False) -> None:
    """Check a training config read back from a study before anything runs it (``export``,
    ``retrain STUDY``, then ``train``): the study is a database others may write (a dashboard
    can set trial attributes), so the config is untrusted. It must be a valid training config
    (:class:`TrainFileSpec`: known keys, types and bounds, ``program`` holding only what
    :func:`sweeper.trial.program.fit` reads), and what it would run (``trainer``, and a program's
    ``program``, ``command``, ``workdir``, ``logs`` and ``function``) must be what the study's
    stored ``spec`` gives (skipped when the study has none). With ``drawn`` (the stored spec's
    search space, :func:`sweeper.spec.stored_space`, and the trial's Optuna parameters), each
    searched parameter and constant in its ``params`` must be what that draw decodes to. With
    ``check_data``, its ``data`` must be what the stored spec gives every trial.

    Raises:
        InputError: one line per problem, each starting with ``where`` (the trial), then the key,
            the value and the rule.
    """
    try:
        checked = TrainFileSpec.model_validate(dict(config)).model_dump()
    except ValidationError as err:
        raise InputError([Problem(f"{where}: {p.path}", p.value, p.rule)
                          for p in pydantic_problems(err, TrainFileSpec)]) from None
    if spec is None:
        return
    program = checked["program"] or {}
    function = program.get("function")
    expected: dict[str, Any] = {"trainer": PROGRAM_TRAINER if spec.get("program") or function else spec.get("trainer")}
    if function is not None:
        expected["program.function"] = spec.get("trainer")
    if spec.get("trainer") in (FUNCTION_TRAINER, FIT_TRAINER):
        # Made by sweeper.sweep() without a trainer: sweeper.agent() ran a W&B function (a program
        # config naming the function stand-in) or a fit(config, report) (the fit stand-in).
        expected = ({"trainer": PROGRAM_TRAINER, "program.function": FUNCTION_TRAINER} if function is not None
                    else {"trainer": FIT_TRAINER})
    if spec.get("program") is not None and not program:
        expected["program"] = f"{spec['program']} (the spec's program)"
    elif spec.get("program") is not None:
        command = spec.get("command")
        expected.update({"program.program": spec["program"], "program.workdir": spec.get("workdir"),
                         "program.command": [str(c) for c in command] if command else None})
    if program:
        expected["program.logs"] = str(Path(str(spec.get("artifacts"))) / str(spec.get("name")) / "programs")
    got = {"trainer": checked["trainer"], **{f"program.{k}": v for k, v in program.items()}}
    problems = [Problem(f"{where}: {key}", got.get(key), f"differs from the study's spec ({value!r}); a config read "
                        "back from a study must be the one sweeper stored, so it is not run")
                for key, value in expected.items() if got.get(key) != value]
    if program and spec.get("program") is None and function is None:
        problems.append(Problem(f"{where}: program", program.get("program"), "is not in the study's spec; a config "
                                "read back from a study must be the one sweeper stored, so it is not run"))
    if drawn is not None:
        problems += _draw_problems(checked, drawn[1], drawn[0], where)
    if check_data:
        problems += _data_problems(checked, spec, where)
    if problems:
        raise InputError(problems)


def _data_problems(config: Mapping[str, Any], spec: Mapping[str, Any], where: str) -> list[Problem]:
    """Where a config's ``data`` differs from what the study's stored ``spec`` gives every trial
    (:func:`sweeper.spec._validate._data`): its ``data`` keys with their defaults, the split's
    ``seed`` from the spec's ``seed``, ``train_on_val`` off, and ``root``: the same folder (a
    study stores it absolute, :meth:`sweeper.spec.Sweep.stored`), or for a study stored before
    that, an absolute folder that ends in its relative root (:func:`same_value`)."""
    expected = {**dataclasses.asdict(DataConfig()), **(spec.get("data") or {}),
                "seed": spec.get("seed", 0), "train_on_val": False}
    got = config.get("data") or {}
    return [Problem(f"{where}: data.{key}", got.get(key), f"differs from the study's spec ({value!r}); a config "
                    "read back from a study must be the one sweeper stored, so it is not run")
            for key, value in expected.items() if not same_value(got.get(key), value)]


def _draw_problems(config: Mapping[str, Any], drawn: Mapping[str, Any], space: SearchSpace,
                   where: str) -> list[Problem]:
    """Where a config's ``params`` differ from what the trial's draw ``drawn`` decodes to in
    ``space`` (compared as JSON, as the study stores them). A searched ``epochs`` is the
    config's own ``epochs`` unless it is in ``params`` (a program's)."""
    problems = []
    params = config.get("params") or {}
    for name, value in space.values(drawn).items():
        got: Any = params if name != "epochs" or "epochs" in params else {"epochs": config.get("epochs")}
        for part in space.paths.get(name, (name,)):
            got = got.get(part) if isinstance(got, Mapping) else None
        if not same_value(got, value):
            problems.append(Problem(f"{where}: params.{name}", got, f"differs from the trial's draw ({value!r}); a "
                                    "config read back from a study must be the one sweeper stored, so it is not run"))
    return problems
