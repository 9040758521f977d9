"""Validating a spec once, before anything is written or started: every problem, one line each.

Structure through pydantic (:mod:`sweeper.spec._schema`), then the rules that span keys: the
trainer's parameters, the epochs, the scheduler, grid discreteness, the data and the storage.
Touches nothing on disk but the data root it checks.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from sweeper.defaults import DEFAULT_EPOCHS, DEFAULT_RUN_CAP
from sweeper.errors import InputError, Problem
from sweeper.spec._files import raw_spec
from sweeper.spec._params import build_space
from sweeper.spec._population import population
from sweeper.spec._problems import did_you_mean, pydantic_problems, without
from sweeper.spec._schema import PROGRAM_TRAINER, SWEEPER_OBJECTIVES, WANDB_IGNORED_KEYS, SweepSpec
from sweeper.spec._space import GRID_POINTS_MAX, SearchSpace
from sweeper.spec._sweep import Asha, Sweep
from trainers import get_trainer
from trainers.base import MEASURED_METRICS, DataConfig, Trainer
from trainers.datasets import BUNDLED_DATASETS, check_data, torchvision_dataset_names

# A study name becomes a folder under `artifacts`: a safe set of characters, no path, no hidden file.
STUDY_NAME_MAX = 100
STUDY_NAME = re.compile(rf"[A-Za-z0-9_][A-Za-z0-9._-]{{0,{STUDY_NAME_MAX - 1}}}")

# What the sweep's trainable adds to every trainer's reports (see sweeper.trial.trainable.run_trial).
SWEPT_BY_SWEEPER = tuple(m for m in SWEEPER_OBJECTIVES if m not in MEASURED_METRICS)


def load_sweep(path: str | os.PathLike[str], overrides: Sequence[str] = ()) -> Sweep:
    """Read, override and validate a spec file into a :class:`Sweep` (the CLI's options too:
    ``validate(raw_spec(path, overrides, storage=...))``). Relative data roots and artifact
    folders are resolved against the working directory.

    Raises:
        InputError: every problem with the file, one line each.
    """
    return validate(raw_spec(path, overrides))



def validate(raw: Mapping[str, Any]) -> Sweep:
    """Validate a spec mapping (from YAML, or as stored with a study).

    Raises:
        InputError: every problem found, each naming the key's path, the value and the rule.
    """
    raw, engine_warnings, engine_problems = _wandb_scheduler(raw)
    try:
        spec = SweepSpec.model_validate(dict(raw))
        problems: list[Problem] = list(engine_problems)
    except ValidationError as err:
        # Report the structural errors together with the rules checked on the rest:
        # drop what failed (one parameter, or a whole top-level key) and validate again.
        problems = [*engine_problems, *pydantic_problems(err, SweepSpec)]
        pruned = without(raw, [e["loc"] for e in err.errors()])
        try:
            spec = SweepSpec.model_validate(pruned)
        except ValidationError:
            raise InputError(problems) from None
        try:
            validate(pruned)
        except InputError as more:
            problems += [p for p in more.problems if isinstance(p, Problem)]
        raise InputError(problems) from None
    warnings = list(engine_warnings)
    ignored = [k for k in WANDB_IGNORED_KEYS if k in spec.model_fields_set]
    if ignored:
        warnings.append(f"ignoring W&B key(s) {', '.join(ignored)}: sweeper records the sweep in its study")
    spec, program_problems = _program(spec, warnings)
    problems += program_problems
    spec, metric_problems = _objectives(spec)
    problems += metric_problems
    problems += _constraints(spec)

    if spec.name is not None and not STUDY_NAME.fullmatch(spec.name):
        problems.append(Problem("name", spec.name, "must be a study name of letters, digits, '-', '_' and '.', "
                                f"not starting with '.' or '-', at most {STUDY_NAME_MAX} characters (it names a folder "
                                "under artifacts); set `name` or --study"))
    space, space_problems = build_space(spec.parameters)
    problems += space_problems

    trainer, trainer_problems = _trainer(spec, space)
    problems += trainer_problems

    function = trainer is not None and trainer.params is None and _zero_argument(trainer)
    max_epochs, epoch_problems = _epochs(spec, space)
    problems += epoch_problems
    if (spec.program is not None or function) and spec.epochs is None and "epochs" not in space.candidates() \
            and (spec.early_terminate is None or spec.early_terminate.max_iter is None):
        problems.append(Problem("epochs", None, "is required for a program sweep: ASHA needs the most times a trial "
                                f"logs {spec.metric.name}; set `epochs`, an `epochs` parameter or "
                                "early_terminate.max_iter"))
    asha, asha_problems = _scheduler(spec, max_epochs)
    problems += asha_problems
    pbt, pbt_problems = population(spec, trainer, max_epochs, spec.program is None and not function)
    problems += pbt_problems

    budget, budget_problems = _budget(spec, space)
    problems += budget_problems

    data, data_problems = _data(spec)
    problems += data_problems
    # Checkpoints live under the artifacts folder; workers on other nodes need the same path.
    spec = spec.model_copy(update={"artifacts": str(Path(spec.artifacts).expanduser().resolve())})
    problems += _check_storage(spec.storage)

    if problems:
        raise InputError(problems)
    assert trainer is not None
    max_failed = spec.max_failed_trials if spec.max_failed_trials is not None else max(1, budget // 5)
    program = _program_settings(spec, function) if spec.program is not None or function else None
    return Sweep(spec, space, trainer, budget, max_failed, max_epochs, asha, data, tuple(warnings), program, pbt)


def _trainer(spec: SweepSpec, space: SearchSpace) -> tuple[Trainer | None, list[Problem]]:
    """The spec's trainer (``None`` when unknown), and the problems of the spec against it: its
    parameters, the metrics it reports (objectives and constraints), its smallest image size."""
    try:
        trainer = get_trainer(spec.trainer)
    except LookupError as err:
        return None, [Problem("trainer", spec.trainer, str(err))]
    problems = _check_trainer_params(trainer, spec, space)
    if trainer.metrics is not None:
        reported = (*trainer.metrics, *SWEPT_BY_SWEEPER)
        named = [(f"metrics[{i}].name", m.name) for i, m in enumerate(spec.metrics or [])] or [
            ("metric.name", spec.metric.name)]
        problems += [Problem(path, name, "must be a metric the trainer reports: " + ", ".join(reported)
                             + did_you_mean(name, reported)) for path, name in named if name not in reported]
        problems += [Problem(f"constraints[{i}].name", c.name, "must be a metric the trainer reports or sweeper "
                             "measures: " + ", ".join(reported) + did_you_mean(c.name, reported))
                     for i, c in enumerate(spec.constraints) if c.name not in reported]
    image_size = spec.data_settings()["image_size"]
    if image_size < trainer.min_image_size:
        problems.append(Problem("data.image_size", image_size,
                                f"is too small for trainer {spec.trainer!r}; the smallest size that works is "
                                f"{trainer.min_image_size}"))
    return trainer, problems


def _budget(spec: SweepSpec, space: SearchSpace) -> tuple[int, list[Problem]]:
    """How many trials the sweep runs: ``run_cap`` (default :data:`DEFAULT_RUN_CAP`), or for grid
    search the grid's points (a grid of discrete parameters, at most :data:`GRID_POINTS_MAX`)."""
    budget = spec.run_cap or DEFAULT_RUN_CAP
    if spec.method != "grid":
        return budget, []
    size = space.size()
    if size is None:
        return budget, [Problem(f"parameters.{d.name}", _distribution_of(spec, d.name),
                                "grid search needs discrete parameters: value, values, int_uniform, "
                                "or q_uniform (a range with a step)") for d in space.dimensions if d.count() is None]
    if size > GRID_POINTS_MAX:
        return budget, [Problem("parameters", size, f"points make the grid, more than a grid search runs "
                                f"({GRID_POINTS_MAX:,} at most): give fewer values, or use method random or bayes")]
    if spec.run_cap is not None and spec.run_cap > size:
        return budget, [Problem("run_cap", spec.run_cap, f"exceeds the grid's {size} points")]
    return spec.run_cap or size, []


def _program_settings(spec: SweepSpec, function: bool) -> dict[str, Any]:
    """What a program trial needs (:mod:`sweeper.trial.program`): the script or command, its folder,
    the metric it logs, where its logs go, the W&B function's trainer name, the trial timeout."""
    study = spec.name or "sweep"
    return {"program": spec.program, "command": [str(c) for c in spec.command] if spec.command else None,
            "workdir": spec.workdir or str(Path.cwd()), "metric": spec.metric.name, "study": study,
            "logs": str(Path(spec.artifacts) / study.replace("/", "_") / "programs"),
            "function": spec.trainer if function else None, "trial_timeout": spec.trial_timeout}


def _constraints(spec: SweepSpec) -> list[Problem]:
    """Each ``constraints`` entry bounds a metric other than an objective by a finite ``max``
    and/or ``min`` (``min`` not above ``max``), each metric once."""
    problems: list[Problem] = []
    objectives = {m.name for m in (spec.metrics or [spec.metric])}
    seen: set[str] = set()
    for i, c in enumerate(spec.constraints):
        if c.name in objectives:
            problems.append(Problem(f"constraints[{i}].name", c.name, "is an objective of this sweep; a constraint "
                                    "bounds another metric (to bound an objective, make it a constraint and "
                                    "optimise something else)"))
        if c.name in seen:
            problems.append(Problem(f"constraints[{i}].name", c.name,
                                    "is constrained twice; give max and min in one entry"))
        seen.add(c.name)
        if c.max is None and c.min is None:
            problems.append(Problem(f"constraints[{i}]", c.name, "needs a bound: max, min or both"))
        for kind, bound in (("max", c.max), ("min", c.min)):
            if bound is not None and not math.isfinite(bound):
                problems.append(Problem(f"constraints[{i}].{kind}", bound, "must be a finite number"))
        if c.max is not None and c.min is not None and c.min > c.max:
            problems.append(Problem(f"constraints[{i}].min", c.min, f"is above max ({c.max}): nothing is feasible"))
    return problems


def _objectives(spec: SweepSpec) -> tuple[SweepSpec, list[Problem]]:
    """W&B's multi-objective form (``metrics:``, two or more): no ``metric`` beside it, distinct
    names, no ``target`` (a front has no single value to reach). The spec's ``metric`` becomes the
    first objective, which the single-metric parts (progress line, trainer monitor) show."""
    if spec.metrics is None:
        return spec, []
    problems = []
    if "metric" in spec.model_fields_set:
        problems.append(Problem("metric", spec.metric.name, "give `metric` (one objective) or `metrics` (two or "
                                "more), not both"))
    names = [m.name for m in spec.metrics]
    for i, m in enumerate(spec.metrics):
        if m.name in names[:i]:
            problems.append(Problem(f"metrics[{i}].name", m.name, "names an objective twice; each metric once"))
        if m.target is not None:
            problems.append(Problem(f"metrics[{i}].target", m.target, "is for a single `metric`; a multi-objective "
                                    "sweep runs to its run_cap"))
    return spec.model_copy(update={"metric": spec.metrics[0]}), problems


def _program(spec: SweepSpec, warnings: list[str]) -> tuple[SweepSpec, list[Problem]]:
    """A W&B program sweep (``program:`` and no ``trainer:``): its trainer and folder, checked.

    The program runs in ``workdir`` (default: the folder of the command), as the W&B agent runs
    it in its own folder; the program file must be there when the command names ``${program}``.
    With a ``trainer``, ``program`` and ``command`` are ignored with a warning.
    """
    given = spec.model_fields_set
    if spec.program is None or ("trainer" in given and spec.trainer != PROGRAM_TRAINER):
        named = [k for k in ("program", "command") if k in given]
        if named:
            warnings.append(f"ignoring W&B key(s) {', '.join(named)}: "
                            + ("`trainer` runs each trial" if spec.program is not None else "no `program` to run"))
        return spec.model_copy(update={"program": None, "command": None, "workdir": None}), []
    workdir = Path(spec.workdir or os.getcwd()).expanduser().resolve()
    spec = spec.model_copy(update={"trainer": PROGRAM_TRAINER, "workdir": str(workdir)})
    if not workdir.is_dir():
        return spec, [Problem("workdir", str(workdir), "is not a folder (the folder the program runs in)")]
    words = [str(c) for c in spec.command] if spec.command else ["${program}"]
    assert spec.program is not None
    if "${program}" in words and not (workdir / spec.program).is_file():
        return spec, [Problem("program", spec.program, f"is not a file in {workdir} (where it runs; see `workdir`)")]
    return spec, []


def _zero_argument(trainer: Trainer) -> bool:
    """A trainer named by path that takes no argument: W&B's ``wandb.agent(function=...)`` style."""
    from sweeper.trial.program import takes_no_arguments

    return takes_no_arguments(trainer.fit)


def _distribution_of(spec: SweepSpec, name: str) -> str | None:
    """The ``distribution`` key of parameter ``name`` (a dotted path for a nested one)."""
    params: Any = spec.parameters
    node: Any = None
    for part in name.split("."):
        node = (params or {}).get(part)
        params = getattr(node, "parameters", None)
    return getattr(node, "distribution", None)


def _wandb_scheduler(raw: Mapping[str, Any]) -> tuple[Mapping[str, Any], list[str], list[Problem]]:
    """W&B's own ``scheduler`` form (an external engine: ``engine``, ``job``, ``resource``,
    ``num_workers``, ``settings``) is W&B's, not sweeper's ASHA key: ``engine: optuna`` (or
    none named) runs with sweeper's Optuna samplers and the rest of the mapping is ignored with a
    warning; another engine is refused. Returns the spec without it, warnings and problems."""
    scheduler = raw.get("scheduler")
    if not isinstance(scheduler, dict) or not {"engine", "job", "resource", "num_workers", "settings"} & set(scheduler):
        return raw, [], []
    rest = {k: v for k, v in raw.items() if k != "scheduler"}
    engine = scheduler.get("engine", "optuna")
    if str(engine).lower() != "optuna":
        return rest, [], [Problem("scheduler.engine", engine, "is a W&B external engine sweeper cannot run; use "
                                  "engine: optuna (sweeper's own Optuna samplers) or remove `scheduler`")]
    return rest, [f"scheduler: W&B's engine form ({', '.join(sorted(scheduler))}) runs with sweeper's own Optuna "
                  "samplers (method) and early stopping (early_terminate, else sweeper's default); its other keys "
                  "are ignored"], []


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
                                    + did_you_mean(name, list(declared))
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
    """The sweep's most epochs per trial: ``epochs``, else the largest ``parameters.epochs``, else
    W&B's ``early_terminate.max_iter`` (hyperband's most iterations of a run)."""
    if spec.epochs is None and "epochs" not in space.candidates() and spec.early_terminate is not None \
            and spec.early_terminate.max_iter is not None:
        spec = spec.model_copy(update={"epochs": spec.early_terminate.max_iter})
    candidates = space.candidates().get("epochs", [])
    bad = [c for c in candidates if isinstance(c, bool) or not isinstance(c, int) or c < 1]
    if bad:
        return DEFAULT_EPOCHS, [Problem("parameters.epochs", bad[0], "must be whole numbers of epochs >= 1")]
    top = spec.epochs or (max(candidates) if candidates else DEFAULT_EPOCHS)
    if candidates and max(candidates) > top:
        return top, [Problem("parameters.epochs", max(candidates), f"must not exceed epochs ({top})")]
    return top, []


# What `method: bayes` stops trials with when the spec names neither `scheduler` nor `early_terminate`.
DEFAULT_ASHA = Asha(grace_period=1, reduction_factor=3)


def _scheduler(spec: SweepSpec, max_epochs: int) -> tuple[Asha | None, list[Problem]]:
    """The sweep's early stopping: W&B's ``early_terminate`` read as W&B means it (ASHA judging
    each trial on its best value so far unless ``strict``), ``scheduler: {type: asha, ...}``,
    ``scheduler: {type: none}``, or when neither key is given, :data:`DEFAULT_ASHA` for
    ``method: bayes`` and none for ``random`` and ``grid`` (as in W&B)."""
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
        asha = Asha(grace, et.eta, best_so_far=not et.strict)
    elif spec.scheduler is not None and spec.scheduler.type == "asha":
        asha = Asha(spec.scheduler.grace_period, spec.scheduler.reduction_factor)
    elif spec.scheduler is None and spec.method == "bayes":
        # sweeper's default search: TPE with ASHA at grace period 1 and reduction factor 3, the
        # fastest to the top 1% of the curve table among the candidates and the peers
        # (benchmarks/RESULTS.md, "Simulated search on the curve table").
        asha = DEFAULT_ASHA
    if asha is not None and asha.grace_period > max_epochs:
        return None, [Problem(key, asha.grace_period, f"must not exceed epochs ({max_epochs})")]
    return asha, []


def _data(spec: SweepSpec) -> tuple[DataConfig, list[Problem]]:
    """The trials' data settings (root made absolute, the split seeded with the sweep's ``seed``)."""
    d = spec.data_settings()
    root = str(Path(d["root"]).expanduser().resolve()) if d["root"] else None
    cfg = DataConfig(**{**d, "root": root, "seed": spec.seed})
    dataset = cfg.dataset
    known = [*BUNDLED_DATASETS, "imagefolder"]
    if dataset not in known and not (dataset[:1].isupper() and dataset in torchvision_dataset_names()):
        hint = did_you_mean(dataset, known + torchvision_dataset_names())
        return cfg, [Problem("data.dataset", dataset,
                             "must be mnist5k, digits, imagefolder or a torchvision dataset name such as CIFAR10"
                             + hint)]
    return cfg, [Problem(k, v if k != "data.root" else d["root"], rule) for k, v, rule in check_data(cfg)]


def _check_storage(url: str) -> list[Problem]:
    from sweeper.study.storage import parse_url

    try:
        parsed = parse_url(url)
    except InputError as err:  # the URL shown with its password hidden
        return [p for p in err.problems if isinstance(p, Problem)]
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
