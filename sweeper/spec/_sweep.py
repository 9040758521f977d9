"""A validated sweep (:class:`Sweep`) with what is derived from its spec, and comparing stored specs."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sweeper.spec._problems import same_value
from sweeper.spec._schema import PROGRAM_TRAINER, MetricSpec, SweepSpec, current_trainer
from sweeper.spec._space import SearchSpace
from sweeper.study.constraints import Bound, bounds_of
from trainers.base import DataConfig, Trainer


@dataclass(frozen=True)
class Asha:
    """ASHA's settings in epochs (Li et al. 2020); ``max_t`` is the sweep's ``epochs``.

    ``best_so_far``: a trial is judged at each rung on its best value so far rather than its
    value there: W&B hyperband's default (``early_terminate.strict`` false; W&B's sweeps library,
    ``hyperband_stopping.py``, compares ``min(history)`` unless strict).
    """

    grace_period: int
    reduction_factor: float
    best_so_far: bool = False


@dataclass(frozen=True)
class Population:
    """Population-based training's settings (``scheduler: {type: pbt | pb2}``), in epochs.

    ``mutations``: each mutating parameter's form, as the spec gives it (``{"values": [...]}`` or
    ``{"min": a, "max": b, "distribution": d}``); see :func:`sweeper.engine.scheduler.make_scheduler`.
    """

    kind: str
    perturbation_interval: int
    quantile_fraction: float
    resample_probability: float
    mutations: Mapping[str, Mapping[str, Any]]


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
        program: for a W&B program sweep, how each trial runs it (``program``, ``command``,
            ``workdir``, ``metric``, ``study``, ``logs``; see :func:`sweeper.trial.program.fit`).
        population: population-based training's settings, or ``None``.
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
    program: Mapping[str, Any] | None = None
    population: Population | None = None

    @property
    def objectives(self) -> tuple[MetricSpec, ...]:
        """What the study optimises, in the order of its directions: ``metrics``, else ``(metric,)``."""
        return tuple(self.spec.metrics) if self.spec.metrics else (self.spec.metric,)

    @property
    def multi_objective(self) -> bool:
        """True for a sweep of two or more ``metrics``."""
        return len(self.objectives) > 1

    @property
    def bounds(self) -> tuple[Bound, ...]:
        """The ``constraints`` as bounds, one per ``max`` or ``min`` (empty without constraints)."""
        return bounds_of(c.model_dump() for c in self.spec.constraints)

    @property
    def scheduler_line(self) -> str:
        """The sweep's scheduler in words, for headers: ``ASHA grace period 1, reduction factor 3``,
        ``PBT every 4 epochs, mutating lr, dropout`` or ``no early stopping``."""
        if self.population is not None:
            return (f"{self.population.kind.upper()} every {self.population.perturbation_interval} epochs, mutating "
                    + ", ".join(self.population.mutations))
        if self.asha is not None:
            return (f"{'multi-objective ' if self.multi_objective else ''}ASHA grace period {self.asha.grace_period}, "
                    f"reduction factor {self.asha.reduction_factor:g}")
        return "no early stopping"

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
        # A program reads its own `epochs` parameter (its arguments are every parameter).
        epochs = int(params.get("epochs", self.max_epochs) if self.program else params.pop("epochs", self.max_epochs))
        config = {
            # A program, or a zero-argument W&B function, runs through sweeper's program trainer.
            "trainer": PROGRAM_TRAINER if self.program else self.spec.trainer,
            "params": params,
            "data": dataclasses.asdict(self.data),
            "epochs": epochs,
            "seed": self.spec.seed + trial_number,
            # The trial's torch threads: `sweeper train` on this config reproduces its curve.
            "threads": max(1, int(self.spec.resources_per_trial.cpu)),
        }
        if self.program is not None:
            config["program"] = {**self.program, "run_id": f"trial-{trial_number}"}
        if any(m.name == "inference_ms" for m in self.objectives) or any(
                c.name == "inference_ms" for c in self.spec.constraints):
            config["measure_inference"] = True
        return config

    def stored(self) -> dict[str, Any]:
        """The spec as stored with the study: JSON-able, defaults filled, valid input to :func:`validate`.

        ``data.root`` is stored absolute, as the trials read it: ``sweeper resume STUDY`` from
        another folder trains on the same photos, and a config read back from the study must
        name exactly that folder (:func:`sweeper.spec.check_trial_config`).
        """
        # With `metrics`, `metric` is the first objective, filled in by validation: not stored.
        dropped = {"project", "entity", *(["metric"] if self.spec.metrics else [])}
        out = self.spec.model_dump(mode="json", exclude=dropped)
        if out["data"].get("root"):
            out["data"]["root"] = self.data.root
        if not self.spec.metrics:
            out.pop("metrics", None)
        # A parameter's form is which keys it sets, so only those are kept.
        out["parameters"] = {
            name: p.model_dump(mode="json", exclude_unset=True) for name, p in self.spec.parameters.items()
        }
        return out



def spec_differences(stored: Mapping[str, Any], given: Mapping[str, Any]) -> list[str]:
    """Keys whose values differ between two stored specs, as ``path: stored -> given`` lines.

    ``storage`` is left out: the stored one has its password redacted. A key one side lacks and
    the other holds empty (``None``, ``[]``, ``{}``) is no difference: a study stored before a key
    existed (``constraints``, ``trial_timeout``) resumes with the key's empty default. A trainer
    named by its path before it moved (``MOVED_TRAINERS``) is the trainer at its path today. A
    ``data.root`` stored relative (by a study made before roots were stored absolute) matches a
    given absolute root that ends in it, or that it names from the current folder (``.``, or a
    link the given root was resolved through).
    """
    lines: list[str] = []
    empty: tuple[Any, ...] = (None, [], {})
    stored, given = ({**spec, "trainer": current_trainer(spec["trainer"])} if isinstance(spec.get("trainer"), str)
                     else spec for spec in (stored, given))

    def walk(a: Any, b: Any, path: str) -> None:
        if isinstance(a, dict) and isinstance(b, dict):
            for key in sorted(set(a) | set(b), key=str):
                if path == "" and key == "storage":
                    continue
                if (key not in a and b.get(key) in empty) or (key not in b and a.get(key) in empty):
                    continue
                walk(a.get(key), b.get(key), f"{path}.{key}" if path else str(key))
        elif a != b and not (path == "data.root" and isinstance(a, str) and not Path(a).is_absolute()
                             and same_value(b, a)):
            lines.append(f"{path}: {a!r} (stored) -> {b!r} (given)")

    walk(dict(stored), dict(given), "")
    return lines

