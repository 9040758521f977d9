"""Load a sweep spec, apply overrides, validate it once, and resolve it into a :class:`Sweep`.

Validation collects every problem before reporting (structure through pydantic, then the
rules that span keys) and touches nothing on disk but the data root it checks.
"""

from __future__ import annotations

import difflib
import os
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from sweeper.errors import InputError, Problem
from sweeper.spec._schema import (
    DEFAULT_EPOCHS,
    DEFAULT_RUN_CAP,
    WANDB_IGNORED_KEYS,
    SweepSpec,
    TrainFileSpec,
)
from sweeper.spec._space import SearchSpace, build_space
from trainers import get_trainer
from trainers.base import DataConfig, TrainConfig, Trainer
from trainers.data import BUNDLED_DATASETS, check_data, torchvision_dataset_names

SPEC_ATTR = "sweeper_spec"


@dataclass(frozen=True)
class Asha:
    """ASHA's settings in epochs (Li et al. 2020); ``max_t`` is the sweep's ``epochs``."""

    grace_period: int
    reduction_factor: float


@dataclass(frozen=True)
class Sweep:
    """A validated spec with everything derived from it.

    Attributes:
        spec: the validated spec, overrides applied and ``name`` filled in.
        space: the search space.
        trainer: the trainer and its declaration.
        budget: finished trials (COMPLETE + PRUNED) the sweep runs to.
        max_failed: FAIL trials tolerated; one more stops the sweep (default 20% of the
            budget, at least 1).
        max_epochs: the most epochs a trial trains (ASHA's ``max_t``).
        asha: ASHA settings, or ``None`` for no early stopping.
        data: the data settings every trial gets (root made absolute).
        warnings: one line each, for keys accepted and ignored.
    """

    spec: SweepSpec
    space: SearchSpace
    trainer: Trainer
    budget: int
    max_failed: int
    max_epochs: int
    asha: Asha | None
    data: DataConfig
    warnings: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        """The study name."""
        assert self.spec.name is not None
        return self.spec.name

    def trial_config(self, raw_params: Mapping[str, Any], trial_number: int) -> dict[str, Any]:
        """The JSON-able training config of one trial (what ``sweeper export`` writes).

        ``seed`` is the sweep's seed plus the trial number, so trials differ and a trial
        can be reproduced alone.
        """
        configured = self.space.config(raw_params)
        params = self.trainer.resolve({**self.trainer.defaults(), **configured})
        monitor = (self.trainer.params or {}).get("monitor")
        if monitor is not None and "monitor" not in configured and self.spec.metric.name in (monitor.choices or ()):
            params["monitor"] = self.spec.metric.name  # early stopping and plateau watch the sweep's metric
        epochs = int(params.pop("epochs", self.max_epochs))
        return {
            "trainer": self.spec.trainer,
            "params": params,
            "data": self.data.__dict__.copy(),
            "epochs": epochs,
            "seed": self.spec.seed + trial_number,
            # The trial's torch threads: `sweeper train` on this config reproduces its curve.
            "threads": max(1, int(self.spec.resources_per_trial.cpu)),
        }

    def stored(self) -> dict[str, Any]:
        """The spec as stored with the study: JSON-able, defaults filled, valid input to :func:`validate`."""
        out = self.spec.model_dump(mode="json", exclude={"program", "command", "project", "entity"})
        # A parameter's form is which keys it sets, so only those are kept.
        out["parameters"] = {
            name: p.model_dump(mode="json", exclude_unset=True) for name, p in self.spec.parameters.items()
        }
        return out


def read_yaml(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The mapping in a YAML file, read with PyYAML's safe loader.

    Raises:
        InputError: the file is missing or unreadable, not YAML, or not a mapping.
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as err:
        raise InputError(Problem(str(p), None, f"cannot be read: {err.strerror or err}")) from err
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise InputError(f"{p}: is not valid YAML{where}: {problem}") from err
    if not isinstance(raw, dict):
        raise InputError(Problem(str(p), type(raw).__name__, "must hold a mapping of keys (a sweep spec)"))
    return raw


def apply_overrides(raw: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Apply ``--set KEY=VALUE`` overrides (dotted path, YAML value) to a copy of ``raw``.

    Raises:
        InputError: an override is not ``KEY=VALUE``, or its path runs through a non-mapping.
    """
    import copy

    out = copy.deepcopy(raw)
    problems = []
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key.strip() or any(not part for part in key.split(".")):
            problems.append(Problem("--set", item, "must look like KEY=VALUE, KEY a dotted path such as data.root"))
            continue
        try:
            value = yaml.safe_load(text) if text.strip() else ""
        except yaml.YAMLError:
            value = text
        node = out
        parts = key.strip().split(".")
        for depth, part in enumerate(parts[:-1]):
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                problems.append(Problem("--set", item, f"cannot set inside {'.'.join(parts[:depth + 1])}, "
                                        "which is not a mapping"))
                break
            node = child
        else:
            node[parts[-1]] = value
    if problems:
        raise InputError(problems)
    return out


def load_sweep(path: str | os.PathLike[str], overrides: Sequence[str] = ()) -> Sweep:
    """Read, override and validate a spec file into a :class:`Sweep` (the CLI's options too:
    ``validate(raw_spec(path, overrides, storage=...))``). Relative data roots and artifact
    folders are resolved against the working directory.

    Raises:
        InputError: every problem with the file, one line each.
    """
    return validate(raw_spec(path, overrides))


def raw_spec(
    path: str | os.PathLike[str],
    overrides: Sequence[str] = (),
    *,
    storage: str | None = None,
    study: str | None = None,
    n_trials: int | None = None,
    artifacts: str | None = None,
) -> dict[str, Any]:
    """The spec file as a mapping, with ``--set`` overrides and the CLI's options applied, not
    yet validated (:func:`validate` does that; under Ray Client the cluster does).

    ``storage``, ``study``, ``n_trials`` and ``artifacts`` are the CLI's ``--storage``,
    ``--study``, ``--n-trials`` and ``--artifacts``: they override ``storage``, ``name``,
    ``run_cap`` and ``artifacts``.

    Raises:
        InputError: the file cannot be read or parsed, or an override is malformed.
    """
    raw = apply_overrides(read_yaml(path), overrides)
    for key, value in (("storage", storage), ("name", study), ("run_cap", n_trials), ("artifacts", artifacts)):
        if value is not None:
            raw[key] = value
    raw.setdefault("name", Path(path).stem)
    return raw


def validate(raw: Mapping[str, Any]) -> Sweep:
    """Validate a spec mapping (from YAML, or as stored with a study).

    Raises:
        InputError: every problem found, each naming the key's path, the value and the rule.
    """
    try:
        spec = SweepSpec.model_validate(dict(raw))
        problems: list[Problem] = []
    except ValidationError as err:
        # Report the structural errors together with the rules checked on the rest:
        # drop what failed (one parameter, or a whole top-level key) and validate again.
        problems = _pydantic_problems(err)
        pruned = _without(raw, [e["loc"] for e in err.errors()])
        try:
            spec = SweepSpec.model_validate(pruned)
        except ValidationError:
            raise InputError(problems) from None
        try:
            validate(pruned)
        except InputError as more:
            problems += [p for p in more.problems if isinstance(p, Problem)]
        raise InputError(problems) from None
    warnings: list[str] = []
    ignored = [k for k in WANDB_IGNORED_KEYS if k in spec.model_fields_set]
    if ignored:
        warnings.append(f"ignoring W&B key(s) {', '.join(ignored)}: sweeper runs its own trainer (see `trainer`)")

    space, space_problems = build_space(spec.parameters)
    problems += space_problems

    trainer: Trainer | None = None
    try:
        trainer = get_trainer(spec.trainer)
    except LookupError as err:
        problems.append(Problem("trainer", spec.trainer, str(err)))
    if trainer is not None:
        problems += _check_trainer_params(trainer, spec, space)
        if trainer.metrics is not None and spec.metric.name not in trainer.metrics:
            problems.append(Problem("metric.name", spec.metric.name, "must be a metric the trainer reports: "
                                    + ", ".join(trainer.metrics) + _did_you_mean(spec.metric.name, trainer.metrics)))
        if spec.data.image_size < trainer.min_image_size:
            problems.append(Problem("data.image_size", spec.data.image_size,
                                    f"is too small for trainer {spec.trainer!r}; the smallest size that works is "
                                    f"{trainer.min_image_size}"))

    max_epochs, epoch_problems = _epochs(spec, space)
    problems += epoch_problems
    asha, asha_problems = _scheduler(spec, max_epochs)
    problems += asha_problems

    budget = spec.run_cap or DEFAULT_RUN_CAP
    if spec.method == "grid":
        size = space.size()
        if size is None:
            continuous = [d.name for d in space.dimensions if d.grid_values() is None]
            for name in continuous:
                problems.append(Problem(f"parameters.{name}", spec.parameters[name].distribution,
                                        "grid search needs discrete parameters: value, values, int_uniform, "
                                        "or q_uniform (a range with a step)"))
        else:
            if spec.run_cap is not None and spec.run_cap > size:
                problems.append(Problem("run_cap", spec.run_cap, f"exceeds the grid's {size} points"))
            budget = spec.run_cap or size

    data, data_problems = _data(spec)
    problems += data_problems
    # Checkpoints live under the artifacts folder; workers on other nodes need the same path.
    spec = spec.model_copy(update={"artifacts": str(Path(spec.artifacts).expanduser().resolve())})
    problems += _check_storage(spec.storage)

    if problems:
        raise InputError(problems)
    assert trainer is not None
    max_failed = spec.max_failed_trials if spec.max_failed_trials is not None else max(1, budget // 5)
    return Sweep(spec, space, trainer, budget, max_failed, max_epochs, asha, data, tuple(warnings))


def load_train_config(raw: Mapping[str, Any], *, epochs: int | None = None) -> tuple[Trainer, TrainConfig]:
    """Validate one training run's config (``sweeper export``'s output) into a trainer and its config.

    Raises:
        InputError: every problem, as for a sweep spec (``params.lr: ...``).
    """
    if epochs is not None:
        raw = {**raw, "epochs": epochs}
    try:
        spec = TrainFileSpec.model_validate(dict(raw))
    except ValidationError as err:
        raise InputError(_pydantic_problems(err, TrainFileSpec)) from None
    problems: list[Problem] = []
    trainer: Trainer | None = None
    try:
        trainer = get_trainer(spec.trainer)
    except LookupError as err:
        problems.append(Problem("trainer", spec.trainer, str(err)))
    if trainer is not None and trainer.params is not None:
        for name, value in spec.params.items():
            if name not in trainer.params:
                problems.append(Problem(f"params.{name}", name, f"is not a parameter of trainer {spec.trainer!r}"
                                        + _did_you_mean(name, list(trainer.params))))
            elif (reason := trainer.params[name].check(value)) is not None:
                problems.append(Problem(f"params.{name}", value, reason))
        if trainer.check is not None and not problems:
            given = {**trainer.defaults(), **spec.params}
            problems += [Problem(f"params.{key}", value, rule)
                         for key, value, rule in trainer.check({k: [v] for k, v in given.items()})]
    if trainer is not None and spec.data.image_size < trainer.min_image_size:
        problems.append(Problem("data.image_size", spec.data.image_size,
                                f"is too small for trainer {spec.trainer!r}; the smallest size that works is "
                                f"{trainer.min_image_size}"))
    d = spec.data
    data = DataConfig(d.dataset, str(Path(d.root).expanduser().resolve()) if d.root else None, d.image_size,
                      d.val_fraction, d.num_workers, d.seed, d.train_on_val, d.cache_dir)
    problems += [Problem(k, v if k != "data.root" else d.root, rule) for k, v, rule in check_data(data)]
    if problems:
        raise InputError(problems)
    assert trainer is not None
    return trainer, TrainConfig(trainer.resolve({**trainer.defaults(), **spec.params}), data, spec.epochs, spec.seed,
                                threads=spec.threads)


def spec_differences(stored: Mapping[str, Any], given: Mapping[str, Any]) -> list[str]:
    """Keys whose values differ between two stored specs, as ``path: stored -> given`` lines.

    ``storage`` is left out: the stored one has its password redacted.
    """
    lines: list[str] = []

    def walk(a: Any, b: Any, path: str) -> None:
        if isinstance(a, dict) and isinstance(b, dict):
            for key in sorted(set(a) | set(b), key=str):
                if path == "" and key == "storage":
                    continue
                walk(a.get(key), b.get(key), f"{path}.{key}" if path else str(key))
        elif a != b:
            lines.append(f"{path}: {a!r} (stored) -> {b!r} (given)")

    walk(dict(stored), dict(given), "")
    return lines


def _check_trainer_params(trainer: Trainer, spec: SweepSpec, space: SearchSpace) -> list[Problem]:
    if trainer.params is None:
        return []
    declared = trainer.params
    problems = []
    values = space.candidates()
    for name, candidates in values.items():
        if name == "epochs":
            continue
        if name not in declared:
            problems.append(Problem(f"parameters.{name}", name,
                                    f"is not a parameter of trainer {spec.trainer!r}"
                                    + _did_you_mean(name, list(declared))
                                    + f" (it reads: {', '.join(declared)}, epochs)"))
            continue
        for value in candidates:
            reason = declared[name].check(value)
            if reason:
                problems.append(Problem(f"parameters.{name}", value, reason))
                break
    if trainer.check is not None and not problems:
        problems += [Problem(f"parameters.{key}", value, rule) for key, value, rule in trainer.check(values)]
    return problems


def _epochs(spec: SweepSpec, space: SearchSpace) -> tuple[int, list[Problem]]:
    """The sweep's most epochs per trial: ``epochs``, else the largest ``parameters.epochs``."""
    candidates: list[Any] = []
    if "epochs" in space.constants:
        candidates = [space.constants["epochs"]]
    for d in space.dimensions:
        if d.name == "epochs":
            candidates = d.candidates()
    bad = [c for c in candidates if isinstance(c, bool) or not isinstance(c, int) or c < 1]
    if bad:
        return DEFAULT_EPOCHS, [Problem("parameters.epochs", bad[0], "must be whole numbers of epochs >= 1")]
    top = spec.epochs or (max(candidates) if candidates else DEFAULT_EPOCHS)
    if candidates and max(candidates) > top:
        return top, [Problem("parameters.epochs", max(candidates), f"must not exceed epochs ({top})")]
    return top, []


def _scheduler(spec: SweepSpec, max_epochs: int) -> tuple[Asha | None, list[Problem]]:
    if spec.scheduler is not None and spec.early_terminate is not None:
        return None, [Problem("scheduler", spec.scheduler.type,
                              "and early_terminate are alternatives; keep one of them")]
    asha: Asha | None = None
    key = "scheduler.grace_period"
    if spec.early_terminate is not None:
        et = spec.early_terminate
        key = "early_terminate.min_iter"
        if et.min_iter is not None:
            grace = et.min_iter
        elif et.max_iter is not None:
            grace = max(1, int(et.max_iter / et.eta ** (et.s or 0)))
        else:
            return None, [Problem("early_terminate.min_iter", None, "is required (or max_iter with s)")]
        asha = Asha(grace, et.eta)
    elif spec.scheduler is not None and spec.scheduler.type == "asha":
        asha = Asha(spec.scheduler.grace_period, spec.scheduler.reduction_factor)
    if asha is not None and asha.grace_period > max_epochs:
        return None, [Problem(key, asha.grace_period, f"must not exceed epochs ({max_epochs})")]
    return asha, []


def _data(spec: SweepSpec) -> tuple[DataConfig, list[Problem]]:
    d = spec.data
    root = str(Path(d.root).expanduser().resolve()) if d.root else None
    cfg = DataConfig(d.dataset, root, d.image_size, d.val_fraction, d.num_workers, spec.seed, cache_dir=d.cache_dir)
    known = [*BUNDLED_DATASETS, "imagefolder"]
    if d.dataset not in known and not (d.dataset[:1].isupper() and d.dataset in torchvision_dataset_names()):
        hint = _did_you_mean(d.dataset, known + torchvision_dataset_names())
        return cfg, [Problem("data.dataset", d.dataset,
                             "must be mnist5k, digits, imagefolder or a torchvision dataset name such as CIFAR10"
                             + hint)]
    return cfg, [Problem(k, v if k != "data.root" else d.root, rule) for k, v, rule in check_data(cfg)]


def _check_storage(url: str) -> list[Problem]:
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except ArgumentError:
        return [Problem("storage", url, "must be an SQLAlchemy URL such as sqlite:///sweeps.db or "
                        "postgresql+psycopg://user:pass@host/db")]
    shown = parsed.render_as_string(hide_password=True)
    if parsed.get_backend_name() not in ("sqlite", "postgresql"):
        return [Problem("storage", shown, "must be an sqlite:/// or postgresql+psycopg:// URL")]
    if parsed.get_backend_name() == "sqlite":
        if not parsed.database or parsed.database == ":memory:":
            return [Problem("storage", shown, "needs a file path (sqlite:///sweeps.db); an in-memory "
                            "database would vanish with the driver")]
        folder = Path(parsed.database).expanduser().resolve().parent
        if not folder.is_dir():
            return [Problem("storage", shown, f"is in folder {str(folder)!r}, which does not exist")]
    return []


def _did_you_mean(word: str, options: Sequence[str]) -> str:
    close = difflib.get_close_matches(word, list(options), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def _without(raw: Mapping[str, Any], locs: Sequence[tuple[int | str, ...]]) -> dict[str, Any]:
    """``raw`` less the keys the errors point at: one parameter, or a whole top-level key."""
    out = dict(raw)
    params = dict(out.get("parameters") or {}) if isinstance(out.get("parameters"), dict) else None
    for loc in locs:
        if loc and loc[0] == "parameters" and len(loc) > 1 and params is not None:
            params.pop(str(loc[1]), None)
        elif loc:
            out.pop(str(loc[0]), None)
    if params is not None and "parameters" in out:
        out["parameters"] = params
    return out


def _pydantic_problems(err: ValidationError, model: type[BaseModel] = SweepSpec) -> list[Problem]:
    problems = []
    for e in err.errors():
        loc = [str(p) for p in e["loc"]]
        # pydantic appends the union member it tried ("int", "float") to the path.
        while loc and loc[-1] in ("int", "float", "str", "bool", "list[any]", "is-instance[int]"):
            loc.pop()
        path = ".".join(loc)
        value = e.get("input")
        if e["type"] == "extra_forbidden":
            known = _known_keys(loc[:-1], model)
            rule = "is not a known key" + _did_you_mean(loc[-1], known)
            if known:
                rule += f" (known here: {', '.join(known)})"
            problems.append(Problem(path, value, rule))
        elif e["type"] == "missing":
            problems.append(Problem(path, None, "is required"))
        else:
            msg = e["msg"]
            msg = msg[0].lower() + msg[1:] if msg else msg
            problems.append(Problem(path, value, msg))
    # one line per path: a union reports each member's complaint
    seen: dict[str, Problem] = {}
    for p in problems:
        seen.setdefault(p.path, p)
    return list(seen.values())


def _known_keys(loc: Sequence[str], model: type[BaseModel] = SweepSpec) -> list[str]:
    """The keys allowed at ``loc`` of the spec (for did-you-mean)."""
    node: Any = model
    for part in loc:
        if isinstance(node, type) and issubclass(node, BaseModel):
            field = node.model_fields.get(part)
            if field is None:
                return []
            node = field.annotation
        elif typing.get_origin(node) is dict:
            node = typing.get_args(node)[1]
        else:
            return []
        node = _unwrap_optional(node)
    if isinstance(node, type) and issubclass(node, BaseModel):
        return list(node.model_fields)
    return []


def _unwrap_optional(tp: Any) -> Any:
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    if typing.get_origin(tp) in (typing.Union, types.UnionType) and len(args) == 1:
        return args[0]
    return tp
