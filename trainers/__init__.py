"""PyTorch trainers for sweeper: models, data and the training loop.

Nothing here imports Ray or Optuna. A trainer is ``fit(config, report) -> metrics`` with a
declaration of the parameters it reads (:class:`trainers.base.Trainer`); :func:`get_trainer`
finds one by registry name (``cnn``) or import path (``package.module:function``).
"""

from __future__ import annotations

import importlib

from trainers.base import DataConfig, Param, Report, TrainConfig, Trainer

__all__ = ["REGISTRY", "DataConfig", "Param", "Report", "TrainConfig", "Trainer", "get_trainer"]

# Registry name → "module:attribute" of a Trainer; imported lazily, so that listing the
# names costs nothing.
REGISTRY: dict[str, str] = {
    "cnn": "trainers.cnn:TRAINER",
}


def get_trainer(name: str) -> Trainer:
    """The trainer called ``name``: a registry name or ``package.module:function``.

    A plain function found by import path becomes an undeclared :class:`Trainer`
    (its parameters are not checked).

    Raises:
        LookupError: unknown name, or the module/attribute cannot be imported; the
            message lists the registered names.
    """
    target = REGISTRY.get(name, name)
    module_name, sep, attr = target.partition(":")
    if not sep or not module_name or not attr:
        raise LookupError(
            f"is not a registered trainer ({', '.join(sorted(REGISTRY))}) nor a 'package.module:function' path"
        )
    try:
        obj = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as err:
        raise LookupError(f"cannot be imported: {err}") from err
    if isinstance(obj, Trainer):
        return obj
    if callable(obj):
        return Trainer(name=name, fit=obj, params=None, metrics=None)
    raise LookupError(f"{target} is neither a Trainer nor a function")
