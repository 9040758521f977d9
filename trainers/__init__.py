"""PyTorch trainers for sweeper: models, data and the training loop.

Nothing here imports Ray or Optuna. A trainer is ``fit(config, report) -> metrics`` with a
declaration of the parameters it reads (:class:`trainers.base.Trainer`); :func:`get_trainer`
finds one by registry name (``cnn``) or import path (``package.module:function``).
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Any

from trainers.base import DataConfig, Param, Report, TrainConfig, Trainer

__all__ = ["REGISTRY", "DataConfig", "Param", "Report", "TrainConfig", "Trainer", "get_trainer", "load_model"]

# Registry name → "module:attribute" of a Trainer; imported lazily, so that listing the
# names costs nothing.
REGISTRY: dict[str, str] = {
    "cnn": "trainers.cnn:TRAINER",
    "torchvision": "trainers.vision:TRAINER",
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


def load_model(folder: str | os.PathLike[str]) -> Any:
    """The model that ``sweeper retrain`` wrote to ``folder``, ready to predict.

    Returns a ``torch.nn.Module`` in eval mode taking uint8 images ``(N, C, S, S)`` (C and S as
    in ``folder/config.yaml``: ``channels`` and ``data.image_size``) and returning logits
    ``(N, len(classes))``; ``classes`` in the same file names the columns::

        model = trainers.load_model("retrained")
        predicted = model(images).argmax(1)

    Raises:
        LookupError: the folder's trainer cannot be found or cannot rebuild its model.
    """
    import torch
    import yaml

    base = Path(folder)
    config = yaml.safe_load((base / "config.yaml").read_text())
    trainer = get_trainer(config["trainer"])
    if trainer.build is None:
        raise LookupError(f"trainer {trainer.name!r} cannot rebuild its model (no build)")
    data = DataConfig(**{k: v for k, v in config["data"].items() if k in DataConfig.__dataclass_fields__})
    params = {**trainer.defaults(), **config["params"]}
    if "weights" in params:
        params["weights"] = "none"  # model.pt holds every weight; no pretrained file is needed to load it
    model = trainer.build(TrainConfig(params, data), int(config["channels"]), len(config["classes"]))
    model.load_state_dict(torch.load(base / "model.pt", weights_only=True, map_location="cpu"))
    return model.eval()
