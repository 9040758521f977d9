"""The trainer contract: what a trainer is, what it reads, what it reports.

A trainer is a plain function ``fit(config, report) -> metrics``. It knows nothing of
Ray or Optuna: ``report(epoch, metrics)`` is how it publishes each epoch, and whoever
calls it (a sweep, ``sweeper train``, a notebook) decides what happens with the numbers.
When a sweep's scheduler stops a trial, the ``report`` call does not return (the
orchestrator unwinds the trainer's thread), so trainers need no stopping logic.

A trainer also *declares* the parameters it reads (:class:`Param`), so that a sweep
spec can be checked against it before anything runs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

ParamKind = Literal["int", "float", "bool", "str", "int_list"]

# The metrics every built-in trainer reports after each epoch. Accuracies are fractions.
EPOCH_METRICS: tuple[str, ...] = ("train_loss", "train_accuracy", "val_loss", "val_accuracy")
# Further per-epoch numbers a study keeps in each trial's curve when a trainer reports them:
# seconds of the epoch, learning rate, early stopping's best epoch and whether it stopped the
# trial; and, under k-fold cross-validation, ``fold<i>_<metric>`` per fold.
EXTRA_METRICS: tuple[str, ...] = ("epoch_s", "lr", "best_epoch", "early_stopped", "train_s", "gpu_hours")
# Objectives of a model rather than of its fit, which the built-in trainers report each epoch:
# ``param_count`` (the trainable parameters, a count) and, when ``TrainConfig.measure_inference``
# asks for it, ``inference_ms`` (milliseconds per image of a forward pass; see
# trainers.loop.inference_ms). ``train_s`` and ``gpu_hours`` are added to every trainer's
# reports by the sweep's trainable (sweeper.trial.trainable).
MEASURED_METRICS: tuple[str, ...] = ("param_count", "inference_ms")
FOLD_METRIC_PREFIX = "fold"


class Report(Protocol):
    """Callback a trainer calls once per finished epoch.

    ``epoch`` counts from 1; ``metrics`` maps a metric name to a float. ``checkpoint``, when
    given, is the trainer's whole state after that epoch (model, optimiser, RNG, ...), made of
    tensors, numbers, strings and containers of them only, so that it loads back with
    ``torch.load(weights_only=True)``; a trial restarted after a worker died gets it back as
    :attr:`TrainConfig.resume_state`. When a sweep's scheduler decides the trial should stop,
    the call does not return.
    """

    def __call__(self, epoch: int, metrics: Mapping[str, float],
                 checkpoint: Mapping[str, Any] | None = None) -> None: ...


def _bounded(default: Any, **bounds: float) -> Any:
    """A dataclass field with its default and its bounds (pydantic's ``ge``/``gt``/``le``/``lt``) as
    metadata: the sweep spec and the training-config file validate against these, with no copy."""
    return field(default=default, metadata=bounds)


@dataclass(frozen=True)
class DataConfig:
    """Where a trainer's images come from and how they are prepared.

    The one definition of the data settings: the sweep spec's ``data`` and the training-config
    file's ``data`` (``sweeper export``, ``sweeper train``) are validated against these fields,
    their defaults and their bounds (:mod:`sweeper.spec._schema`).

    Attributes:
        dataset: ``mnist5k`` | ``digits`` | ``imagefolder`` | a torchvision dataset
            class name such as ``CIFAR10``.
        root: folder of the data (``imagefolder`` and torchvision datasets); absolute.
        image_size: side of the square images a model sees, in pixels.
        val_fraction: share of the training images held out, stratified, for validation
            when the data has no validation split of its own (0 < f < 1).
        num_workers: threads that gather batches ahead of the model (0 = in the training loop).
        cache_dir: the node's folder of decoded image folders (``None``: ``$SWEEPER_CACHE_DIR``,
            else ``~/.cache/sweeper``); see :func:`trainers.cache.cached_image_folder`.
        seed: seed of the train/validation split; the same for every trial of a sweep (the
            sweep's ``seed``), so that all trials are scored on the same validation images.
        train_on_val: retraining a chosen config: the validation images join the training
            ones, and the test split (when the data has one) takes the validation's place.
    """

    dataset: str = "mnist5k"
    root: str | None = None
    image_size: int = _bounded(32, ge=1, le=4096)
    val_fraction: float = _bounded(0.2, gt=0, lt=1)
    num_workers: int = _bounded(0, ge=0, le=64)
    seed: int = _bounded(0, ge=0, lt=2**31)
    train_on_val: bool = False
    cache_dir: str | None = None


# The data settings that a sweep sets per trial rather than the spec's ``data`` key.
PER_TRIAL_DATA = ("seed", "train_on_val")


@dataclass(frozen=True)
class TrainConfig:
    """Everything one training run needs.

    The one definition of a training run's settings: ``sweeper export`` writes ``params``,
    ``data``, ``epochs``, ``seed`` and ``threads`` (with the trainer's name), and ``sweeper
    train``/``retrain`` validate the file against these fields, defaults and bounds.

    Attributes:
        params: the trainer's hyperparameters by name (every declared one present).
        data: the data settings.
        epochs: number of epochs to train (each epoch is one pass over the training split).
        seed: seed of the model's initialisation, shuffling and augmentation.
        threads: CPU threads torch may use (``None``: torch's default). The same config
            and seed give the same curve on the CPU only with the same thread count, since
            it sets the order of floating-point sums.
        device: ``auto`` (CUDA when present, else CPU), ``cpu``, ``cuda`` or ``cuda:N``.
        resume_state: the last ``checkpoint`` the trainer reported, when the run continues
            after its worker died; training goes on at ``resume_state["epoch"] + 1``.
        program: for a sweep of a W&B program (``program:`` in the spec), how to run it
            (:func:`sweeper.trial.program.fit` reads it); ``None`` for every other trainer.
        measure_inference: the built-in trainers time the trained model's forward pass and
            report ``inference_ms`` (a sweep with that objective sets it; it costs a few
            forward passes once per run).
    """

    params: Mapping[str, Any]
    data: DataConfig = field(default_factory=DataConfig)
    epochs: int = _bounded(10, ge=1, le=100000)
    seed: int = _bounded(0, ge=0, lt=2**31)
    device: str = "auto"
    resume_state: Mapping[str, Any] | None = None
    threads: int | None = _bounded(None, ge=1, le=1024)
    program: Mapping[str, Any] | None = None
    measure_inference: bool = False


# TrainConfig's fields that exist only while a run runs (never in a config file).
RUNTIME_FIELDS = ("device", "resume_state")


@dataclass(frozen=True)
class Param:
    """Declaration of one hyperparameter a trainer reads.

    Attributes:
        kind: ``int``, ``float``, ``bool``, ``str`` or ``int_list`` (a list of ints, such
            as filters per convolution block, of exactly ``length`` items).
        default: the value used when a spec does not set the parameter.
        choices: the allowed values, for ``str`` parameters.
        low, high: the inclusive range allowed for numbers (and for each item of an
            ``int_list``); ``None`` for no bound.
        length: the item count of an ``int_list``.
        help: one line saying what the parameter does (the parameter tables of docs/trainers.md say the same).
        file: a ``str`` that is one of ``choices`` or else the path of an existing file
            (made absolute by :meth:`resolve` before trials run in other folders).
    """

    kind: ParamKind
    default: Any
    help: str
    choices: tuple[str, ...] | None = None
    low: float | None = None
    high: float | None = None
    length: int | None = None
    file: bool = False

    def check(self, value: Any) -> str | None:
        """Return why ``value`` is not allowed for this parameter, or ``None`` if it is."""
        if self.kind == "bool":
            return None if isinstance(value, bool) else "must be true or false"
        if self.kind == "str":
            if not isinstance(value, str):
                return "must be a string"
            if self.file and value not in (self.choices or ()):
                if Path(value).expanduser().is_file():
                    return None
                return f"must be {' or '.join(self.choices or ())} or the path of an existing file (no such file)"
            if self.choices is not None and value not in self.choices:
                return "must be one of " + ", ".join(self.choices)
            return None
        if self.kind == "int_list":
            if not isinstance(value, list) or not all(
                isinstance(v, int) and not isinstance(v, bool) for v in value
            ):
                return f"must be a list of {self.length} integers"
            if self.length is not None and len(value) != self.length:
                return f"must be a list of {self.length} integers (got {len(value)})"
            for v in value:
                reason = self._check_range(v)
                if reason:
                    return "each item " + reason
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return f"must be a number ({self.kind})"
        if self.kind == "int" and not float(value).is_integer():
            return "must be an integer"
        return self._check_range(value)

    def resolve(self, value: Any) -> Any:
        """``value`` as trials get it: a ``file`` parameter's path made absolute."""
        if self.file and isinstance(value, str) and value not in (self.choices or ()):
            return str(Path(value).expanduser().resolve())
        return value

    def _check_range(self, value: float) -> str | None:
        if self.low is not None and value < self.low:
            return f"must be >= {self.low:g}"
        if self.high is not None and value > self.high:
            return f"must be <= {self.high:g}"
        return None


FitFn = Callable[[TrainConfig, Report], Mapping[str, float]]


@dataclass(frozen=True)
class Trainer:
    """A trainer and its declaration.

    Attributes:
        name: registry name (``cnn``) or import path (``pkg.module:function``).
        fit: ``fit(config: TrainConfig, report: Report) -> final epoch's metrics``.
        params: the parameters ``fit`` reads; ``None`` when undeclared (a user's plain
            function), in which case a spec's parameters are passed through unchecked.
        metrics: the metric names ``fit`` reports each epoch; ``None`` when undeclared.
        min_image_size: the smallest ``data.image_size`` (pixels) the model accepts.
        build: ``build(config, channels, num_classes) -> torch.nn.Module``, the untrained
            model whose ``state_dict`` the trainer checkpoints as ``"model"``; it takes uint8
            images ``(N, channels, S, S)`` and returns logits ``(N, num_classes)``. Needed to
            load a retrained model back (``sweeper retrain``, :func:`trainers.load_model`).
        check: checks across parameters before anything runs: given every value each
            parameter may take (``{name: [values]}``), returns problems as
            ``(parameter, value, rule)``; ``None`` when there is nothing to check.
        mutable: the parameters whose value may change when a run resumes from a checkpoint
            (population-based training's explore step: the model keeps its shape);
            ``None`` when undeclared (any of the spec's parameters may).
    """

    name: str
    fit: FitFn
    params: Mapping[str, Param] | None = None
    metrics: tuple[str, ...] | None = EPOCH_METRICS
    min_image_size: int = 1
    build: Callable[[TrainConfig, int, int], Any] | None = None
    check: Callable[[Mapping[str, Sequence[Any]]], list[tuple[str, Any, str]]] | None = None
    mutable: frozenset[str] | None = None

    def defaults(self) -> dict[str, Any]:
        """The declared parameters' defaults, by name (empty when undeclared)."""
        return {name: p.default for name, p in (self.params or {}).items()}

    def resolve(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """``params`` as trials get them: declared file paths made absolute (see :meth:`Param.resolve`)."""
        declared = self.params or {}
        return {k: declared[k].resolve(v) if k in declared else v for k, v in params.items()}
