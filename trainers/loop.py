"""The training loop shared by the trainers: epochs, batches, fine-tuning, early stopping, k-fold.

Images arrive as uint8 tensors ``(N, C, S, S)`` with index tensors per split (see
:mod:`trainers.data`). Each batch is gathered by index (from memory or the node's
memory-mapped cache), moved to the trial's device, augmented there as a batch (optionally)
and fed to the model, whose first layer (:class:`Normalize`) scales it to [0, 1] and
standardises it per channel.
"""

from __future__ import annotations

import copy
import math
import time
from collections import deque
from collections.abc import Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from trainers.augment import BatchAugment
from trainers.base import Report, TrainConfig
from trainers.data import ImageData
from trainers.device import autocast_dtype, resolve_device
from trainers.measure import inference_ms, param_count
from trainers.normalize import Normalize
from trainers.optim import make_optimizer, make_scheduler, retune
from trainers.rng import rng_state, seed_everything, set_rng_state
from trainers.stopping import EarlyStopping


@dataclass(frozen=True)
class FineTune:
    """Which parameters train at which learning rate, when (names as in ``model.named_parameters()``).

    Attributes:
        head: the new classifier's parameters; they train at ``lr``, the rest ("backbone") at
            ``lr * backbone_lr_factor``.
        frozen: parameters that do not train before ``unfreeze_at_epoch``.
        backbone_lr_factor: learning-rate factor of the backbone (0-1).
        unfreeze_at_epoch: from this epoch (counted from 1) on, every parameter trains;
            0 = never unfreeze.
    """

    head: frozenset[str]
    frozen: frozenset[str] = frozenset()
    backbone_lr_factor: float = 1.0
    unfreeze_at_epoch: int = 0

    def frozen_at(self, epoch: int) -> frozenset[str]:
        """The parameters frozen during ``epoch``."""
        if self.unfreeze_at_epoch and epoch >= self.unfreeze_at_epoch:
            return frozenset()
        return self.frozen


@torch.no_grad()
def evaluate(model: nn.Module, data: ImageData, idx: torch.Tensor, device: torch.device,
             amp: torch.dtype | None = None, channels_last: bool = False, batch_size: int = 512) -> tuple[float, float]:
    """Mean cross-entropy (nats per image) and accuracy (a fraction) of ``model`` on ``data.images[idx]``.

    ``idx`` is an int64 index tensor ``(M,)``; batches of ``batch_size`` images run under autocast
    to ``amp`` when given (``None``: fp32) and in channels-last layout when asked.
    """
    model.eval()
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    for xb, yb in _batches(data, idx, batch_size, device, 0, channels_last):
        with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
            logits = model(xb)
        loss_sum += F.cross_entropy(logits.float(), yb, reduction="sum")
        correct += (logits.argmax(1) == yb).sum()
    n = max(1, len(idx))
    return float(loss_sum) / n, int(correct) / n


def _chunks(order: torch.Tensor, batch_size: int, drop_single: bool) -> list[torch.Tensor]:
    """``order`` cut into batches of indices; with ``drop_single``, a last batch of one image is left out
    (BatchNorm cannot train on one image)."""
    chunks = list(order.split(batch_size))
    if drop_single and len(chunks) > 1 and len(chunks[-1]) == 1:
        chunks.pop()
    return chunks


def _batches(data: ImageData, order: torch.Tensor, batch_size: int, device: torch.device, workers: int,
             channels_last: bool, drop_single: bool = False) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """``(images, labels)`` batches of ``data`` in ``order`` on ``device``; ``workers`` threads gather ahead."""
    chunks = _chunks(order, batch_size, drop_single)
    pin = device.type == "cuda"

    def gather(ix: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        xb, yb = data.images[ix], data.labels[ix]
        return (xb.pin_memory(), yb.pin_memory()) if pin else (xb, yb)

    def place(pair: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        xb = pair[0].to(device, non_blocking=True)
        if channels_last:
            xb = xb.contiguous(memory_format=torch.channels_last)
        return xb, pair[1].to(device, non_blocking=True)

    if workers <= 0:
        for ix in chunks:
            yield place(gather(ix))
        return
    with ThreadPoolExecutor(max_workers=workers) as pool:
        ahead: deque[Future[tuple[torch.Tensor, torch.Tensor]]] = deque()
        pending = iter(chunks)
        for ix in pending:
            ahead.append(pool.submit(gather, ix))
            if len(ahead) > workers:
                yield place(ahead.popleft().result())
        while ahead:
            yield place(ahead.popleft().result())


class _Run:
    """One model's training state: the trial's model, or one fold's under k-fold."""

    def __init__(self, model: nn.Module, data: ImageData, train_idx: torch.Tensor, val_idx: torch.Tensor,
                 config: TrainConfig, device: torch.device, finetune: FineTune | None):
        params = self.params = config.params
        self.model, self.data, self.train_idx, self.val_idx = model, data, train_idx, val_idx
        self.device, self.finetune = device, finetune
        self.amp = autocast_dtype(str(params["precision"]), device)
        self.channels_last = bool(params["channels_last"]) and device.type == "cuda"
        first = model[0] if isinstance(model, nn.Sequential) and len(model) else None
        if isinstance(first, Normalize) and not first.fixed:
            first.fit_to(data.images[train_idx[:20000]])
        model.to(device)
        if self.channels_last:
            model.to(memory_format=torch.channels_last)
        named = list(model.named_parameters())
        if finetune is not None and finetune.head:
            backbone = [p for n, p in named if n not in finetune.head]
            groups = [{"params": backbone, "lr_factor": finetune.backbone_lr_factor},
                      {"params": [p for n, p in named if n in finetune.head], "lr_factor": 1.0}]
        else:
            groups = [{"params": [p for _, p in named]}]
        self.optimizer = make_optimizer(params, [g for g in groups if g["params"]])
        steps = len(_chunks(train_idx, int(params["batch_size"]), drop_single=True))
        self.scheduler = make_scheduler(params, self.optimizer, config.epochs, steps)
        self.per_step = params["lr_schedule"] == "onecycle"
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp == torch.float16 and device.type == "cuda")
        self.loss_fn = nn.CrossEntropyLoss(label_smoothing=float(params["label_smoothing"]))
        self.clip = float(params["grad_clip"])
        self.best_state: dict[str, torch.Tensor] | None = None

    def _freeze_for(self, epoch: int) -> list[nn.Module]:
        """Set ``requires_grad`` for ``epoch``; the BatchNorm layers whose parameters are all frozen."""
        frozen = self.finetune.frozen_at(epoch) if self.finetune else frozenset()
        for name, p in self.model.named_parameters():
            p.requires_grad_(name not in frozen)
        if not frozen:
            return []
        return [m for m in self.model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
                and (own := list(m.parameters(recurse=False))) and all(not p.requires_grad for p in own)]

    def train_epoch(self, epoch: int, order: torch.Tensor, batch_size: int, workers: int,
                    augment: BatchAugment | None, aug_gen: torch.Generator | None) -> tuple[float, float]:
        """One pass over ``order`` (indices of the training images); mean loss and accuracy."""
        frozen_norms = self._freeze_for(epoch)
        self.model.train()
        for norm in frozen_norms:  # a frozen BatchNorm keeps its (pretrained) statistics
            norm.eval()
        loss_sum = torch.zeros((), device=self.device)
        correct = torch.zeros((), device=self.device, dtype=torch.long)
        seen = 0
        for xb, yb in _batches(self.data, order, batch_size, self.device, workers, False, drop_single=True):
            if augment is not None and aug_gen is not None:
                xb = augment(xb, aug_gen)
            if self.channels_last:
                xb = xb.contiguous(memory_format=torch.channels_last)
            self.optimizer.zero_grad(set_to_none=True)
            with torch.autocast(self.device.type, dtype=self.amp or torch.float32, enabled=self.amp is not None):
                logits = self.model(xb)
            loss = self.loss_fn(logits.float(), yb)
            self.scaler.scale(loss).backward()
            if self.clip > 0:
                self.scaler.unscale_(self.optimizer)
                nn.utils.clip_grad_norm_(self.model.parameters(), self.clip)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            if self.per_step:
                self.scheduler.step()
            loss_sum += loss.detach() * len(yb)
            correct += (logits.detach().argmax(1) == yb).sum()
            seen += len(yb)
        return float(loss_sum) / max(1, seen), int(correct) / max(1, seen)

    def end_epoch(self, monitored: float) -> None:
        if self.scheduler is None or self.per_step:
            return
        if isinstance(self.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            self.scheduler.step(monitored)
        else:
            self.scheduler.step()

    def evaluate(self) -> tuple[float, float]:
        return evaluate(self.model, self.data, self.val_idx, self.device, self.amp, self.channels_last)

    def lr(self) -> float:
        return float(self.optimizer.param_groups[-1]["lr"])

    def state(self) -> dict[str, Any]:
        out: dict[str, Any] = {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                               "scaler": self.scaler.state_dict(), "lr": float(self.params["lr"])}
        if self.scheduler is not None:
            out["scheduler"] = self.scheduler.state_dict()
        if self.best_state is not None:
            out["best_model"] = self.best_state
        return out

    def load(self, state: Mapping[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        if self.scheduler is not None and "scheduler" in state:
            self.scheduler.load_state_dict(state["scheduler"])
        # A checkpoint resumed with other values (population-based training's explore step).
        retune(self.optimizer, self.scheduler, self.params, state.get("lr"))
        self.best_state = state.get("best_model")

    def keep_best(self) -> None:
        self.best_state = {k: v.detach().to("cpu", copy=True) for k, v in self.model.state_dict().items()}

    def restore_best(self) -> None:
        if self.best_state is not None:
            self.model.load_state_dict(self.best_state)


def _fold_indices(data: ImageData, folds: int, seed: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Stratified k-fold split (scikit-learn's StratifiedKFold, shuffled with ``seed``) of train+val."""
    from sklearn.model_selection import StratifiedKFold

    pool = torch.cat([data.train_idx, data.val_idx])
    labels = data.labels[pool].numpy()
    counts = np.bincount(labels)
    smallest = int(counts[counts > 0].min())
    if smallest < folds:
        raise ValueError(f"folds {folds}: the smallest class has {smallest} images; each fold needs one")
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    return [(pool[torch.from_numpy(np.sort(tr))], pool[torch.from_numpy(np.sort(va))])
            for tr, va in splitter.split(np.zeros(len(labels)), labels)]


def _resume(state: Mapping[str, Any], runs: list[_Run], generator: torch.Generator,
            aug_gen: torch.Generator | None) -> tuple[EarlyStopping, int]:
    """Load a checkpoint (:func:`fit_classifier`'s) into ``runs`` and the RNG streams; returns the
    early-stopping state and the first epoch to train."""
    for run, run_state in zip(runs, state.get("runs", [state]), strict=True):
        run.load(run_state)
    set_rng_state(state["rng"], generator, aug_gen)
    return EarlyStopping(**state.get("early_stopping", {})), int(state["epoch"]) + 1


def _train_epoch(runs: list[_Run], epoch: int, generator: torch.Generator, batch_size: int, num_workers: int,
                 augment: BatchAugment | None, aug_gen: torch.Generator | None) -> dict[str, float]:
    """One epoch of every fold's run: the means over folds of ``train_loss``, ``train_accuracy``,
    ``val_loss`` and ``val_accuracy``, and with several folds each fold's ``fold<i>_val_loss`` and
    ``fold<i>_val_accuracy``.

    Raises:
        FloatingPointError: a fold's training loss is NaN or infinite.
    """
    rows = []
    for run in runs:
        order = run.train_idx[torch.randperm(len(run.train_idx), generator=generator)]
        train_loss, train_accuracy = run.train_epoch(epoch, order, batch_size, num_workers, augment, aug_gen)
        if not math.isfinite(train_loss):
            raise FloatingPointError(f"loss became {'NaN' if math.isnan(train_loss) else 'infinite'} at epoch {epoch}")
        val_loss, val_accuracy = run.evaluate()
        rows.append({"train_loss": train_loss, "train_accuracy": train_accuracy, "val_loss": val_loss,
                     "val_accuracy": val_accuracy})
    metrics = {key: float(np.mean([r[key] for r in rows])) for key in rows[0]}
    if len(runs) > 1:
        for i, row in enumerate(rows, start=1):
            metrics[f"fold{i}_val_loss"], metrics[f"fold{i}_val_accuracy"] = row["val_loss"], row["val_accuracy"]
    return metrics


def _early_stopping(best: EarlyStopping, runs: list[_Run], epoch: int, metrics: dict[str, float], score: float,
                    patience: int, min_delta: float, epochs: int) -> bool:
    """Update ``best`` with this epoch's ``score`` (higher is better), keeping the best weights;
    at the last epoch or when stopping, restore them and add ``best_epoch`` (and
    ``early_stopped`` = 1) to ``metrics``. Returns whether to stop before ``epochs``."""
    if best.update(epoch, score, metrics, min_delta):
        for run in runs:
            run.keep_best()
    stop = best.bad >= patience and epoch < epochs
    if stop or epoch == epochs:
        for run in runs:
            run.restore_best()
        metrics["best_epoch"] = float(best.epoch)
        if stop:
            metrics["early_stopped"] = 1.0
    return stop


def fit_classifier(model: nn.Module, data: ImageData, config: TrainConfig, report: Report,
                   finetune: FineTune | None = None) -> dict[str, float]:
    """Train ``model`` (starting with a :class:`Normalize`, fitted here to the training
    images unless fixed) for ``config.epochs``, with the schedule, early stopping, clipping,
    label smoothing, precision and k-fold settings of ``config.params`` (:data:`OPTIMIZATION_PARAMS`).

    Reports after each epoch (counted from 1) ``train_loss``, ``train_accuracy``, ``val_loss``,
    ``val_accuracy`` (fractions; means over folds under k-fold, with ``fold<i>_val_loss`` and
    ``fold<i>_val_accuracy`` per fold), ``lr`` (the head's learning rate during the epoch),
    ``epoch_s`` (wall seconds), ``param_count`` (:func:`trainers.measure.param_count`) and, with
    ``config.measure_inference``, ``inference_ms`` (:func:`trainers.measure.inference_ms`), with a
    checkpoint of the models, optimisers, schedules and RNG states. With ``patience`` the best
    epoch's weights are restored at the end and the last report carries ``best_epoch`` (and
    ``early_stopped`` = 1 when it stopped before ``config.epochs``). Starts after
    ``config.resume_state``'s epoch when given. ``model`` holds the trained (first fold's)
    weights on return.

    Returns:
        the last epoch's metrics, or the best epoch's with ``patience``.

    Raises:
        FloatingPointError: the training loss became NaN or infinite (``loss became NaN
            at epoch 3``); a diverged trial should fail, not score.
        ValueError: ``folds`` exceeds the images of the smallest class.
    """
    params = config.params
    if config.threads:
        torch.set_num_threads(config.threads)
    generator = seed_everything(config.seed)
    device = resolve_device(config.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = not params["deterministic"]
        torch.backends.cudnn.deterministic = bool(params["deterministic"])
    folds = int(params["folds"])
    splits = _fold_indices(data, folds, config.data.seed) if folds >= 2 else [(data.train_idx, data.val_idx)]
    runs = [_Run(model if i == 0 else copy.deepcopy(model), data, tr, va, config, device, finetune)
            for i, (tr, va) in enumerate(splits)]
    augment = BatchAugment(data.channels) if params["augment"] else None
    aug_gen = torch.Generator(device=device).manual_seed(config.seed + 1) if augment else None
    monitor, patience = str(params["monitor"]), int(params["patience"])
    sign = 1.0 if monitor == "val_accuracy" else -1.0
    best = EarlyStopping()
    batch_size = int(params["batch_size"])
    first_epoch = 1
    if config.resume_state is not None:
        # Continue a run whose worker died: same weights, optimiser moments, schedules and RNG streams.
        best, first_epoch = _resume(config.resume_state, runs, generator, aug_gen)
    metrics: dict[str, float] = {}
    # The model as built, less what a fine-tune freezes at its first epoch.
    trainable = float(param_count(runs[0].model, finetune.frozen_at(1) if finetune else frozenset()))
    measured_ms: float | None = None
    for epoch in range(first_epoch, config.epochs + 1):
        started = time.perf_counter()
        lr = runs[0].lr()
        metrics = _train_epoch(runs, epoch, generator, batch_size, config.data.num_workers, augment, aug_gen)
        metrics["lr"] = lr
        for run in runs:
            run.end_epoch(metrics[monitor])
        stop = False
        if patience > 0:
            stop = _early_stopping(best, runs, epoch, metrics, sign * metrics[monitor], patience,
                                   float(params["min_delta"]), config.epochs)
        metrics["epoch_s"] = time.perf_counter() - started
        metrics["param_count"] = trainable
        if config.measure_inference:
            # The architecture sets the time, not the weights: measured once, after the first epoch.
            if measured_ms is None:
                run = runs[0]
                measured_ms = inference_ms(run.model, data, run.val_idx, device, batch_size, run.amp,
                                           run.channels_last)
            metrics["inference_ms"] = measured_ms
        checkpoint = {"epoch": epoch, "model": runs[0].model.state_dict(), "runs": [run.state() for run in runs],
                      "rng": rng_state(generator, aug_gen),
                      "early_stopping": best.state()}
        report(epoch, metrics, checkpoint)
        if stop:
            break
    if patience > 0 and best.metrics:
        return {**best.metrics, "best_epoch": float(best.epoch)}
    return metrics
