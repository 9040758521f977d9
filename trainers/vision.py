"""The ``torchvision`` trainer: any torchvision classification model, from scratch or fine-tuned.

The model comes from :func:`torchvision.models.get_model` by name, its classifier (the last
``Linear``, or SqueezeNet's last 1x1 convolution) replaced by one for the dataset's classes.
Pretrained weights come from a local state-dict file or torch's hub cache; nothing is ever
downloaded. The fine-tuning strategies of the iNaturalist write-ups are parameters:
freeze nothing, all but the head, a fraction of the parameter tensors from the input side or
the first k blocks; unfreeze everything at an epoch; train the backbone at a lower rate.

This module holds what validating a spec needs (the parameters, the architectures' names, the
check for pretrained weights, all read from torchvision's source) and imports neither torch nor
torchvision, so that a sweep's driver does not pay for them (about 1.5 s and 500 MB here); the
model code is in :mod:`trainers.vision_model`, imported where a model is built or trained.
"""

from __future__ import annotations

import ast
import functools
import importlib.util
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trainers.base import EPOCH_METRICS, MEASURED_METRICS, Param, Report, TrainConfig, Trainer
from trainers.optim import MUTABLE_PARAMS, OPTIMIZATION_PARAMS

if TYPE_CHECKING:
    from torch import nn


@functools.cache
def _registry() -> tuple[dict[str, frozenset[str]], dict[str, str | None]]:
    """What torchvision's ``models/*.py`` say of its classification models, read from the installed
    torchvision's source without importing it (importing it imports torch), once per process:

    - model name → the names in its builder's ``weights`` annotation: the builders are the
      functions decorated with ``@register_model()``, torchvision's model registry
      (``torchvision.models._api``), under the name they register;
    - each ``WeightsEnum`` class → the URL of its ``DEFAULT`` member's ``Weights(url=...)``.

    Both empty without torchvision.
    """
    builders: dict[str, frozenset[str]] = {}
    defaults: dict[str, str | None] = {}
    spec = importlib.util.find_spec("torchvision")
    if spec is None or not spec.submodule_search_locations:
        return builders, defaults
    for path in sorted(Path(next(iter(spec.submodule_search_locations)), "models").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef):
                for decorator in node.decorator_list:
                    if isinstance(decorator, ast.Call) and getattr(decorator.func, "id", None) == "register_model":
                        named = [k.value.value for k in decorator.keywords
                                 if k.arg == "name" and isinstance(k.value, ast.Constant)]
                        builders[str(named[0]) if named else node.name] = _weights_annotation(node)
            elif isinstance(node, ast.ClassDef) and any(getattr(b, "id", None) == "WeightsEnum" for b in node.bases):
                defaults[node.name] = _default_url(node)
    return builders, defaults


def _weights_annotation(builder: ast.FunctionDef) -> frozenset[str]:
    """The names in the annotation of a builder's ``weights`` argument (``Optional[ResNet50_Weights]``)."""
    arguments = [*builder.args.args, *builder.args.kwonlyargs]
    annotation = next((a.annotation for a in arguments if a.arg == "weights"), None)
    return frozenset(n.id for n in ast.walk(annotation) if isinstance(n, ast.Name)) if annotation else frozenset()


def _default_url(weights_enum: ast.ClassDef) -> str | None:
    """The ``url`` of a ``WeightsEnum`` class's ``DEFAULT`` member (``DEFAULT = IMAGENET1K_V2``)."""
    members: dict[str, ast.expr] = {t.id: a.value for a in weights_enum.body if isinstance(a, ast.Assign)
                                    for t in a.targets if isinstance(t, ast.Name)}
    default = members.get("DEFAULT")
    while isinstance(default, ast.Name):
        default = members.get(default.id)
    if not isinstance(default, ast.Call):
        return None
    urls = [k.value.value for k in default.keywords if k.arg == "url" and isinstance(k.value, ast.Constant)]
    return str(urls[0]) if urls else None


def classification_models() -> tuple[str, ...]:
    """torchvision's classification models, sorted: the names that
    ``torchvision.models.list_models(module=torchvision.models)`` returns (its top-level
    ``models`` modules, not detection, segmentation, video or optical flow), read from its source
    (:func:`_registry`). ``()`` without torchvision.
    """
    return tuple(sorted(_registry()[0]))


def default_weights_url(architecture: str) -> str | None:
    """The URL of ``architecture``'s default ImageNet weights, as
    ``torchvision.models.get_model_weights(architecture).DEFAULT.url`` gives it, read from
    torchvision's source (:func:`_registry`): the ``WeightsEnum`` class named in the builder's
    ``weights`` annotation (how ``get_model_weights`` finds it), its ``DEFAULT`` member's URL.
    ``None`` for an unknown architecture or one without weights."""
    builders, defaults = _registry()
    return next((defaults[n] for n in sorted(builders.get(architecture, ())) if defaults.get(n)), None)


def hub_weights_file(architecture: str) -> tuple[Path, str]:
    """Where torch's hub cache keeps ``architecture``'s default ImageNet weights, and their URL.

    The path is ``$TORCH_HOME/hub/checkpoints/<file name of the URL>`` (``TORCH_HOME`` defaults to
    ``$XDG_CACHE_HOME/torch``, that to ``~/.cache/torch``), where ``torch.hub.get_dir()`` would
    have ``torchvision.models.get_model_weights(architecture).DEFAULT`` download it; neither is
    imported (:func:`default_weights_url`).

    Raises:
        LookupError: torchvision has no pretrained weights for ``architecture``.
    """
    url = default_weights_url(architecture)
    if url is None:
        raise LookupError(f"torchvision has no ImageNet weights for {architecture}")
    home = os.getenv("TORCH_HOME", os.path.join(os.getenv("XDG_CACHE_HOME", "~/.cache"), "torch"))
    return Path(os.path.expanduser(home)) / "hub" / "checkpoints" / url.rsplit("/", 1)[-1], url


def missing_hub_file(architecture: str) -> str | None:
    """Why ``imagenet`` weights cannot be used for ``architecture`` here, or ``None``."""
    try:
        path, url = hub_weights_file(architecture)
    except LookupError as err:
        return str(err)
    if path.is_file():
        return None
    return (f"needs {path.name} for {architecture} in torch's hub cache, and nothing is downloaded at run time: "
            f"put it at {path} (from {url}, or set TORCH_HOME to a folder holding hub/checkpoints/{path.name})")


ARCHITECTURES: tuple[str, ...] = classification_models()

PARAMS: dict[str, Param] = {
    "architecture": Param("str", "resnet18", "a torchvision classification model: resnet18/34/50, vgg13, "
                          "vgg13_bn, alexnet, convnext_tiny, efficientnet_b0, mobilenet_v3_small, ...",
                          choices=ARCHITECTURES),
    "weights": Param("str", "none", "none (random init), imagenet (torch's hub cache) or a state-dict file",
                     choices=("none", "imagenet"), file=True),
    "freeze": Param("str", "none", "none | all_but_head | fraction (freeze_fraction of the parameter tensors, "
                    "from the input side) | first_k (the first freeze_k blocks)",
                    choices=("none", "all_but_head", "fraction", "first_k")),
    "freeze_fraction": Param("float", 0.5, "share of the backbone's parameter tensors frozen by freeze: fraction",
                             low=0.0, high=1.0),
    "freeze_k": Param("int", 1, "blocks frozen by freeze: first_k (see docs/trainers.md for what a block is)",
                      low=0, high=10000),
    "unfreeze_at_epoch": Param("int", 0, "from this epoch on every layer trains (0 = never)", low=0, high=100000),
    "backbone_lr_factor": Param("float", 1.0, "learning-rate factor of everything but the new head", low=0.0,
                                high=1.0),
    **OPTIMIZATION_PARAMS,
}


def check(values: Mapping[str, Sequence[Any]]) -> list[tuple[str, Any, str]]:
    """Before anything runs: ``imagenet`` weights exist in the hub cache for every architecture a
    sweep may pick (the weights' file names read from torchvision's source, neither imported).

    Args:
        values: each parameter's possible values in the sweep, by name.

    Returns:
        ``(parameter, value, reason)`` for each problem; empty when there is none.
    """
    if "imagenet" not in values.get("weights", [PARAMS["weights"].default]):
        return []
    problems = []
    for arch in values.get("architecture", [PARAMS["architecture"].default]):
        if arch in ARCHITECTURES and (reason := missing_hub_file(arch)) is not None:
            problems.append(("weights", "imagenet", reason))
    return problems


def build(config: TrainConfig, channels: int, num_classes: int) -> nn.Sequential:
    """The model for ``config``: uint8 images ``(N, channels, S, S)`` → logits
    ``(N, num_classes)`` (:func:`trainers.vision_model.build`, which imports torch).

    Raises:
        FileNotFoundError: ``imagenet`` weights not in torch's hub cache, or a weights file
            that does not exist.
        ValueError: a weights file that does not fit the architecture.
    """
    from trainers.vision_model import build as build_model

    return build_model(config, channels, num_classes)


def fit(config: TrainConfig, report: Report) -> dict[str, float]:
    """Train (or fine-tune) the model on ``config.data``, calling ``report`` after each epoch;
    returns the last epoch's metrics, or the best epoch's with ``patience``
    (:func:`trainers.vision_model.fit`, which imports torch, and
    :func:`trainers.loop.fit_classifier`, whose errors it raises besides :func:`build`'s)."""
    from trainers.vision_model import fit as fit_model

    return fit_model(config, report)


TRAINER = Trainer(name="torchvision", fit=fit, params=PARAMS, metrics=EPOCH_METRICS + MEASURED_METRICS,
                  min_image_size=32,
                  build=build, check=check, mutable=MUTABLE_PARAMS)
