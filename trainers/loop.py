"""The training loop shared by the trainers: optimiser, schedule, augmentation, epochs, folds.

Images arrive as uint8 tensors ``(N, C, S, S)`` with index tensors per split (see
:mod:`trainers.data`). Each batch is gathered by index (from memory or the node's
memory-mapped cache), moved to the trial's device, augmented there as a batch (optionally)
and fed to the model, whose first layer (:class:`Normalize`) scales it to [0, 1] and
standardises it per channel.
"""

from __future__ import annotations

import copy
import math
import random
import sys
import time
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from trainers.base import Param, Report, TrainConfig
from trainers.data import ImageData

# Parameters every built-in trainer reads: optimisation, schedule, regularisation, precision.
OPTIMIZATION_PARAMS: dict[str, Param] = {
    "optimizer": Param("str", "adam", "adam | adamw | sgd (with momentum) | adamax",
                       choices=("adam", "adamw", "sgd", "adamax")),
    "lr": Param("float", 1e-3, "learning rate (the peak of onecycle and of a warm-up)", low=1e-8, high=10.0),
    "momentum": Param("float", 0.9, "momentum of sgd (ignored by the others)", low=0.0, high=1.0),
    "weight_decay": Param("float", 0.0, "L2 weight decay (decoupled for adamw)", low=0.0, high=1.0),
    "batch_size": Param("int", 64, "images per optimisation step", low=1, high=65536),
    "augment": Param("bool", False, "per-image random resized crop (scale 0.8-1), rotation up to 10 degrees, "
                     "brightness/contrast (and saturation) jitter 0.2, horizontal flip for colour images only; "
                     "batched on the trial's device"),
    "lr_schedule": Param("str", "none", "none | cosine (to 0 over the epochs after the warm-up) | step "
                         "(x gamma every step_size epochs) | plateau (x gamma after plateau_patience epochs "
                         "without progress of monitor) | onecycle (per step, peak lr)",
                         choices=("none", "cosine", "step", "plateau", "onecycle")),
    "warmup_epochs": Param("int", 0, "epochs of linear warm-up from lr/(warmup_epochs+1) to lr (cosine, step); "
                           "onecycle's rising share (default 30%)", low=0, high=10000),
    "step_size": Param("int", 10, "epochs between two decays of the step schedule", low=1, high=10000),
    "gamma": Param("float", 0.1, "learning-rate factor of each step / plateau decay", low=1e-6, high=1.0),
    "plateau_patience": Param("int", 2, "epochs without progress before plateau decays", low=0, high=10000),
    "monitor": Param("str", "val_accuracy", "what early stopping and plateau watch (val_accuracy up, "
                     "val_loss down; a sweep sets it to its metric)", choices=("val_accuracy", "val_loss")),
    "patience": Param("int", 0, "early stopping: stop after this many epochs without progress of monitor and "
                      "keep the best epoch's weights (0 = off)", low=0, high=10000),
    "min_delta": Param("float", 0.0, "smallest change of monitor that counts as progress", low=0.0, high=1e6),
    "grad_clip": Param("float", 0.0, "clip the gradients' global L2 norm to this (0 = off)", low=0.0, high=1e6),
    "label_smoothing": Param("float", 0.0, "label smoothing of the training loss", low=0.0, high=0.99),
    "precision": Param("str", "fp32", "fp32 | bf16 | fp16: autocast on CUDA (fp16 with a gradient scaler); "
                       "bf16 on the CPU (fp16 there runs as bf16)", choices=("fp32", "bf16", "fp16")),
    "channels_last": Param("bool", True, "channels-last memory format on CUDA (ignored on the CPU)"),
    "deterministic": Param("bool", False, "deterministic cuDNN kernels (slower; CPU runs are always "
                           "repeatable for a given thread count)"),
    "folds": Param("int", 1, "stratified k-fold cross-validation over train+val when >= 2: one model per fold, "
                   "the reported metrics are the means over folds, each fold's as fold<i>_<metric>",
                   low=1, high=50),
}

_said: set[str] = set()


def say_once(message: str) -> None:
    """Print ``message`` on stderr the first time this process asks."""
    if message not in _said:
        _said.add(message)
        print(f"trainer: {message}", file=sys.stderr)


def resolve_device(name: str) -> torch.device:
    """``auto`` → the CUDA device Ray (or the user) made visible, else the CPU.

    Says once per process, on stderr, when it falls back to the CPU.
    """
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cpu":
        say_once("CUDA is not available; training on the CPU")
    return device


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of ``precision`` on ``device`` (``None``: full fp32).

    bf16 where the device supports it, else fp16 on CUDA; fp16 on the CPU runs as bf16
    (torch's CPU autocast is made for bf16). Each substitution is said once.
    """
    if precision == "fp32":
        return None
    if device.type == "cuda":
        if precision == "bf16" and not torch.cuda.is_bf16_supported():
            say_once("this GPU has no bf16; using fp16 with a gradient scaler")
            return torch.float16
        return torch.bfloat16 if precision == "bf16" else torch.float16
    if precision == "fp16":
        say_once("fp16 autocast is for CUDA; on the CPU this runs as bf16")
    return torch.bfloat16


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch (CPU and CUDA); returns a CPU generator for the data order."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def rng_state(generator: torch.Generator, augment: torch.Generator | None = None) -> dict[str, Any]:
    """Python, NumPy, torch, data-order and augmentation RNG states.

    In types that ``torch.load(weights_only=True)`` reads back.
    """
    version, internal, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
    state: dict[str, Any] = {
        "python": [version, list(internal), gauss],
        "numpy": [name, torch.from_numpy(np.asarray(keys, dtype=np.int64)), int(pos), int(has_gauss),
                  float(cached)],
        "torch": torch.get_rng_state(),
        "data_order": generator.get_state(),
    }
    if augment is not None:
        state["augment"] = augment.get_state()
    return state


def set_rng_state(state: Mapping[str, Any], generator: torch.Generator, augment: torch.Generator | None = None) -> None:
    """Restore what :func:`rng_state` saved."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    generator.set_state(state["data_order"])
    if augment is not None and "augment" in state:
        augment.set_state(state["augment"])


def make_optimizer(params: Mapping[str, Any], groups: Sequence[Mapping[str, Any]]) -> torch.optim.Optimizer:
    """The optimiser named by ``params['optimizer']`` over parameter ``groups``.

    Each group is ``{"params": [...], "lr_factor": f}``: its learning rate is ``params['lr'] * f``.
    Frozen parameters may be in a group: without a gradient, torch's optimisers skip them.
    """
    name, lr, wd = params["optimizer"], float(params["lr"]), float(params["weight_decay"])
    torch_groups = [{"params": list(g["params"]), "lr": lr * float(g.get("lr_factor", 1.0))} for g in groups]
    if name == "adam":
        return torch.optim.Adam(torch_groups, lr=lr, weight_decay=wd)
    if name == "adamw":
        return torch.optim.AdamW(torch_groups, lr=lr, weight_decay=wd)
    if name == "adamax":
        return torch.optim.Adamax(torch_groups, lr=lr, weight_decay=wd)
    if name == "sgd":
        return torch.optim.SGD(torch_groups, lr=lr, momentum=float(params["momentum"]), weight_decay=wd)
    raise ValueError(f"optimizer {name!r} is not one of adam, adamw, sgd, adamax")


def make_scheduler(params: Mapping[str, Any], optimizer: torch.optim.Optimizer, epochs: int,
                   steps_per_epoch: int) -> Any:
    """torch's learning-rate scheduler for ``params['lr_schedule']``, or ``None`` for ``none``.

    ``cosine``: CosineAnnealingLR to 0 over the epochs after ``warmup_epochs`` of LinearLR
    (Loshchilov & Hutter, SGDR, 2017; Goyal et al. 2017 for the warm-up); ``step``: StepLR;
    ``plateau``: ReduceLROnPlateau on ``monitor``; ``onecycle``: OneCycleLR stepped every batch
    (Smith & Topin 2019). All but ``onecycle`` and ``plateau`` step once per epoch.
    """
    sched = torch.optim.lr_scheduler
    kind, warmup = params["lr_schedule"], int(params["warmup_epochs"])
    if kind == "none":
        return None
    if kind == "onecycle":
        pct = warmup / epochs if warmup else 0.3
        return sched.OneCycleLR(optimizer, max_lr=[g["lr"] for g in optimizer.param_groups],
                                total_steps=max(1, epochs * steps_per_epoch), pct_start=min(0.99, max(0.01, pct)))
    if kind == "plateau":
        return sched.ReduceLROnPlateau(optimizer, mode="max" if params["monitor"] == "val_accuracy" else "min",
                                       factor=float(params["gamma"]),
                                       patience=int(params["plateau_patience"]))
    main: Any
    if kind == "cosine":
        main = sched.CosineAnnealingLR(optimizer, T_max=max(1, epochs - warmup))
    else:
        main = sched.StepLR(optimizer, step_size=int(params["step_size"]), gamma=float(params["gamma"]))
    if warmup <= 0:
        return main
    ramp = sched.LinearLR(optimizer, start_factor=1.0 / (warmup + 1), total_iters=warmup)
    return sched.SequentialLR(optimizer, [ramp, main], milestones=[warmup])


class BatchAugment:
    """Random augmentation of a whole batch on its device, a different draw per image.

    One affine warp per image (``affine_grid`` + ``grid_sample``, bilinear, zeros outside)
    does what torchvision's ``RandomResizedCrop(scale=(0.8, 1), ratio=(3/4, 4/3))``,
    ``RandomRotation(10)`` and (for colour images) ``RandomHorizontalFlip`` do one image at a
    time; then brightness and contrast (and saturation for colour) jitter of 0.2 as in
    ``ColorJitter``. A flipped digit is another glyph, so grey images are not flipped.
    """

    def __init__(self, channels: int, scale: tuple[float, float] = (0.8, 1.0), degrees: float = 10.0,
                 jitter: float = 0.2):
        self.colour = channels == 3
        self.scale, self.degrees, self.jitter = scale, degrees, jitter

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """uint8 (or float 0-255) images ``(N, C, S, S)`` → augmented float images in [0, 255], same shape."""
        n = x.shape[0]
        u = torch.rand(n, 9, generator=generator, device=x.device)
        area = self.scale[0] + (self.scale[1] - self.scale[0]) * u[:, 0]
        ratio = torch.exp(math.log(3 / 4) + math.log(16 / 9) * u[:, 1])
        w, h = (area * ratio).sqrt().clamp(max=1.0), (area / ratio).sqrt().clamp(max=1.0)
        tx, ty = (1 - w) * (2 * u[:, 2] - 1), (1 - h) * (2 * u[:, 3] - 1)
        angle = math.radians(self.degrees) * (2 * u[:, 4] - 1)
        flip = torch.where(u[:, 5] < 0.5, -1.0, 1.0) if self.colour else torch.ones_like(w)
        cos, sin = angle.cos(), angle.sin()
        theta = torch.stack([torch.stack([w * cos * flip, -h * sin, tx], 1),
                             torch.stack([w * sin * flip, h * cos, ty], 1)], 1)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        out = F.grid_sample(x.float(), grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        j = self.jitter
        brightness = (1 + j * (2 * u[:, 6] - 1)).view(-1, 1, 1, 1)
        contrast = (1 + j * (2 * u[:, 7] - 1)).view(-1, 1, 1, 1)
        # Brightness b then contrast c around the brightened image's mean grey b*m, in one pass:
        # (b*x - b*m) * c + b*m = x * (b*c) + b*m*(1-c).
        mean = self._grey(out).mean(dim=(1, 2, 3), keepdim=True)
        out = torch.addcmul(brightness * mean * (1 - contrast), out, brightness * contrast)
        if self.colour:
            saturation = (1 + j * (2 * u[:, 8] - 1)).view(-1, 1, 1, 1)
            grey = self._grey(out)
            out.mul_(saturation).add_(grey * (1 - saturation))
        return out.clamp_(0.0, 255.0)

    def _grey(self, x: torch.Tensor) -> torch.Tensor:
        if not self.colour:
            return x
        # ITU-R 601-2 luma, as torchvision's rgb_to_grayscale.
        return (0.2989 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3])


class Normalize(nn.Module):
    """Images ``(N, C, S, S)`` in 0-255 (uint8 or float) → float, scaled to [0, 1], standardised per channel.

    Starts as the identity standardisation; :meth:`fit_to` sets the training split's per-channel
    mean and standard deviation. With ``mean``/``std`` given (a pretrained model's, such as
    ImageNet's), it is ``fixed``: :func:`fit_classifier` leaves it as it is. Both are buffers,
    so a saved model carries them.
    """

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, channels: int, mean: Sequence[float] | None = None, std: Sequence[float] | None = None):
        super().__init__()
        self.fixed = mean is not None
        self.register_buffer("mean", torch.tensor(mean if mean is not None else [0.0] * channels).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std if std is not None else [1.0] * channels).view(1, -1, 1, 1))

    def fit_to(self, images: torch.Tensor) -> None:
        """Take the mean and standard deviation of (up to 20,000 of) uint8 ``images``."""
        sample = images[:20000].float() / 255.0
        self.mean.copy_(sample.mean(dim=(0, 2, 3)).view(1, -1, 1, 1))
        self.std.copy_(sample.std(dim=(0, 2, 3)).clamp_min(1e-3).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x.float() / 255.0 - self.mean) / self.std


def with_normalization(model: nn.Module, channels: int) -> nn.Sequential:
    """Prefix ``model`` with a :class:`Normalize`, so the model takes uint8 images."""
    return nn.Sequential(Normalize(channels), model)


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
        params = config.params
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
                               "scaler": self.scaler.state_dict()}
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


def fit_classifier(model: nn.Module, data: ImageData, config: TrainConfig, report: Report,
                   finetune: FineTune | None = None) -> dict[str, float]:
    """Train ``model`` (starting with a :class:`Normalize`, fitted here to the training
    images unless fixed) for ``config.epochs``, with the schedule, early stopping, clipping,
    label smoothing, precision and k-fold settings of ``config.params`` (:data:`OPTIMIZATION_PARAMS`).

    Reports after each epoch (counted from 1) ``train_loss``, ``train_accuracy``, ``val_loss``,
    ``val_accuracy`` (fractions; means over folds under k-fold, with ``fold<i>_val_loss`` and
    ``fold<i>_val_accuracy`` per fold), ``lr`` (the head's learning rate during the epoch) and
    ``epoch_s`` (wall seconds), with a checkpoint of the models, optimisers, schedules and RNG
    states. With ``patience`` the best epoch's weights are restored at the end and the last
    report carries ``best_epoch`` (and ``early_stopped`` = 1 when it stopped before
    ``config.epochs``). Starts after ``config.resume_state``'s epoch when given. ``model``
    holds the trained (first fold's) weights on return.

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
    best: dict[str, Any] = {"epoch": 0, "score": -math.inf, "metrics": {}, "bad": 0}
    batch_size = int(params["batch_size"])
    first_epoch = 1
    if config.resume_state is not None:
        # Continue a run whose worker died: same weights, optimiser moments, schedules and RNG streams.
        state = config.resume_state
        for run, run_state in zip(runs, state.get("runs", [state]), strict=True):
            run.load(run_state)
        set_rng_state(state["rng"], generator, aug_gen)
        best = {**best, **state.get("early_stopping", {})}
        first_epoch = int(state["epoch"]) + 1
    metrics: dict[str, float] = {}
    for epoch in range(first_epoch, config.epochs + 1):
        started = time.perf_counter()
        lr = runs[0].lr()
        rows = []
        for run in runs:
            order = run.train_idx[torch.randperm(len(run.train_idx), generator=generator)]
            train_loss, train_accuracy = run.train_epoch(epoch, order, batch_size, config.data.num_workers,
                                                         augment, aug_gen)
            if not math.isfinite(train_loss):
                raise FloatingPointError(
                    f"loss became {'NaN' if math.isnan(train_loss) else 'infinite'} at epoch {epoch}")
            val_loss, val_accuracy = run.evaluate()
            rows.append({"train_loss": train_loss, "train_accuracy": train_accuracy, "val_loss": val_loss,
                         "val_accuracy": val_accuracy})
        metrics = {key: float(np.mean([r[key] for r in rows])) for key in rows[0]}
        if len(runs) > 1:
            for i, row in enumerate(rows, start=1):
                metrics[f"fold{i}_val_loss"], metrics[f"fold{i}_val_accuracy"] = row["val_loss"], row["val_accuracy"]
        metrics["lr"] = lr
        for run in runs:
            run.end_epoch(metrics[monitor])
        stop = False
        if patience > 0:
            score = sign * metrics[monitor]
            if score > best["score"] + float(params["min_delta"]) or best["epoch"] == 0:
                best.update(epoch=epoch, score=score, metrics=dict(metrics), bad=0)
                for run in runs:
                    run.keep_best()
            else:
                best["bad"] += 1
            stop = best["bad"] >= patience and epoch < config.epochs
            if stop or epoch == config.epochs:
                for run in runs:
                    run.restore_best()
                metrics["best_epoch"] = float(best["epoch"])
                if stop:
                    metrics["early_stopped"] = 1.0
        metrics["epoch_s"] = time.perf_counter() - started
        checkpoint = {"epoch": epoch, "model": runs[0].model.state_dict(), "runs": [run.state() for run in runs],
                      "rng": rng_state(generator, aug_gen),
                      "early_stopping": {**best, "metrics": dict(best["metrics"])}}
        report(epoch, metrics, checkpoint)
        if stop:
            break
    if patience > 0 and best["metrics"]:
        return {**best["metrics"], "best_epoch": float(best["epoch"])}
    return metrics
