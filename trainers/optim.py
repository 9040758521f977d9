"""The optimisation schedule: the parameters every built-in trainer reads, the optimiser and
the learning-rate schedule (all torch's own).

torch is imported by the functions that build: validating a spec reads the parameters alone
(:mod:`trainers.datasets` says why).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from trainers.base import Param

if TYPE_CHECKING:
    import torch

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


# What a resumed run may take a new value of (population-based training explores these): the
# optimiser's settings, applied to the restored optimiser by :func:`retune`; the loss's; and dropout,
# which holds no weights.
MUTABLE_PARAMS = frozenset({"lr", "momentum", "weight_decay", "grad_clip", "label_smoothing", "dropout"})
# The learning-rate entries of a torch param group (its own, and those LR schedulers keep there).
_LR_KEYS = ("lr", "initial_lr", "max_lr", "min_lr")


def retune(optimizer: torch.optim.Optimizer, scheduler: Any, params: Mapping[str, Any], old_lr: float | None) -> None:
    """Give a restored ``optimizer`` (and its LR ``scheduler``) the values of ``params``: every
    learning rate scaled by ``params['lr'] / old_lr`` (so a schedule's shape and each group's
    factor are kept), ``weight_decay`` and ``momentum`` set. ``old_lr``: the ``lr`` the checkpoint
    was trained with (``None``: unknown, the rates are left as restored)."""
    new_lr = float(params["lr"])
    ratio = new_lr / old_lr if old_lr else 1.0
    for group in optimizer.param_groups:
        for key in _LR_KEYS:
            if key in group and ratio != 1.0:
                group[key] = group[key] * ratio
        if "weight_decay" in group:
            group["weight_decay"] = float(params["weight_decay"])
        if "momentum" in group and params.get("optimizer") == "sgd":
            group["momentum"] = float(params["momentum"])
    if scheduler is not None and ratio != 1.0:
        for name in ("base_lrs", "_last_lr"):
            if isinstance(getattr(scheduler, name, None), list):
                setattr(scheduler, name, [v * ratio for v in getattr(scheduler, name)])


def make_optimizer(params: Mapping[str, Any], groups: Sequence[Mapping[str, Any]]) -> torch.optim.Optimizer:
    """The optimiser named by ``params['optimizer']`` over parameter ``groups``.

    Each group is ``{"params": [...], "lr_factor": f}``: its learning rate is ``params['lr'] * f``.
    Frozen parameters may be in a group: without a gradient, torch's optimisers skip them.
    """
    import torch

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
    import torch

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
