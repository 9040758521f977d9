"""The ``torchvision`` trainer's model code (torch): the model built by name, its classifier
replaced for the dataset's classes, pretrained weights loaded, the fine-tuning plan, and the fit.

Imported only where a model is built or trained (a trial, retrain, a parameter count):
:mod:`trainers.vision` holds what validating a spec needs, without torch.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torchvision
from torch import nn

from trainers.base import Report, TrainConfig
from trainers.data import load_data
from trainers.loop import FineTune, fit_classifier
from trainers.normalize import Normalize
from trainers.rng import seed_everything
from trainers.vision import TRAINER, hub_weights_file, missing_hub_file

# The mean and standard deviation of ImageNet's RGB channels that torchvision's pretrained
# classifiers expect (torchvision.transforms._presets.ImageClassification).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Models whose auxiliary classifiers would change what forward() returns while training.
_AUX_LOGITS = ("googlenet", "inception_v3")


class _RepeatChannels(nn.Module):
    """Grey images ``(N, 1, S, S)`` → ``(N, 3, S, S)``, for models made for RGB."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.expand(-1, 3, -1, -1)


class _FirstOutput(nn.Module):
    """Wraps a model; returns its logits tensor."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.net(x)
        return out if isinstance(out, torch.Tensor) else out[0]


def _head_name(net: nn.Module) -> str:
    """The qualified name of ``net``'s classifier: its last ``Linear`` (else last ``Conv2d``) module."""
    linear: list[str] = [n for n, m in net.named_modules() if isinstance(m, nn.Linear)]
    if linear:
        return linear[-1]
    convs: list[str] = [n for n, m in net.named_modules() if isinstance(m, nn.Conv2d)]
    if convs:
        return convs[-1]
    raise ValueError(f"{type(net).__name__} has no Linear or Conv2d classifier to replace")


def _state_dict_of(path: str) -> dict[str, torch.Tensor]:
    loaded: Any = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model"):  # common wrappers of a training script's checkpoint
        if isinstance(loaded, dict) and isinstance(loaded.get(key), dict):
            loaded = loaded[key]
    if not isinstance(loaded, dict) or not all(isinstance(v, torch.Tensor) for v in loaded.values()):
        raise ValueError(f"weights: {path} holds no state dict (a mapping of names to tensors)")
    return {k.removeprefix("module."): v for k, v in loaded.items()}


def load_weights(net: nn.Module, state: Mapping[str, torch.Tensor], head: str, source: str) -> None:
    """Copy ``state`` into ``net``, all but the classifier ``head``, whose shape may differ.

    Raises:
        ValueError: a tensor of ``net`` outside the head is missing from ``state`` or has
            another shape (the message names the first and the count).
    """
    own = net.state_dict()
    fitting = {k: v for k, v in state.items() if k in own and tuple(v.shape) == tuple(own[k].shape)
               and not k.startswith(head + ".")}
    missing = [k for k in own if k not in fitting and not k.startswith(head + ".")
               and not k.endswith("num_batches_tracked")]
    if missing:
        raise ValueError(f"weights: {source} does not fit this architecture: {len(missing)} tensor(s) missing or of "
                         f"another shape, the first {missing[0]}")
    net.load_state_dict(fitting, strict=False)


def build(config: TrainConfig, channels: int, num_classes: int) -> nn.Sequential:
    """The model for ``config``: uint8 images ``(N, channels, S, S)`` → logits ``(N, num_classes)``.

    ``Normalize`` (ImageNet's mean and standard deviation with pretrained weights, else fitted to
    the training images), a channel repeat for grey images, then the torchvision model.

    Raises:
        FileNotFoundError: ``imagenet`` weights that are not in torch's hub cache (the message
            says which file to put where).
        ValueError: a weights file that does not fit the architecture.
    """
    params = {**TRAINER.defaults(), **config.params}
    arch, weights = str(params["architecture"]), str(params["weights"])
    kwargs: dict[str, Any] = {"aux_logits": False, "init_weights": False} if arch in _AUX_LOGITS else {}
    net = torchvision.models.get_model(arch, weights=None, **kwargs)
    head = _head_name(net)
    if weights == "imagenet":
        reason = missing_hub_file(arch)
        if reason is not None:
            raise FileNotFoundError(f"weights: imagenet {reason}")
        load_weights(net, _state_dict_of(str(hub_weights_file(arch)[0])), head, f"imagenet ({arch})")
    elif weights != "none":
        if not Path(weights).is_file():
            raise FileNotFoundError(f"weights: file {weights!r} does not exist")
        load_weights(net, _state_dict_of(weights), head, weights)
    parent_name, _, leaf = head.rpartition(".")
    parent = net.get_submodule(parent_name) if parent_name else net
    old = net.get_submodule(head)
    if isinstance(old, nn.Linear):
        new: nn.Module = nn.Linear(old.in_features, num_classes)
    else:
        assert isinstance(old, nn.Conv2d)
        new = nn.Conv2d(old.in_channels, num_classes, old.kernel_size, old.stride, old.padding)  # type: ignore[arg-type]
    setattr(parent, leaf, new)
    if weights == "none":
        normalize = Normalize(channels)
    elif channels == 3:
        normalize = Normalize(3, IMAGENET_MEAN, IMAGENET_STD)
    else:
        normalize = Normalize(channels, [sum(IMAGENET_MEAN) / 3] * channels, [sum(IMAGENET_STD) / 3] * channels)
    layers: list[nn.Module] = [normalize]
    if channels == 1:
        layers.append(_RepeatChannels())
    layers.append(_FirstOutput(net) if arch in _AUX_LOGITS else net)
    return nn.Sequential(*layers)


def _torchvision_net(model: nn.Sequential) -> tuple[nn.Module, str]:
    """The torchvision model inside :func:`build`'s Sequential, and its parameters' name prefix."""
    net, prefix = model[-1], f"{len(model) - 1}."
    if isinstance(net, _FirstOutput):
        return net.net, prefix + "net."
    return net, prefix


def blocks(model: nn.Sequential) -> list[list[str]]:
    """The parameter names of each block of ``model`` (from :func:`build`), from the input side.

    Blocks are the torchvision model's top-level parts that hold parameters (a ResNet's
    ``conv1``, ``bn1``, ``layer1`` ... ``layer4``); a part named ``features`` (VGG, AlexNet,
    DenseNet, EfficientNet, MobileNet, ConvNeXt) and the part holding the classifier are
    split into their own parts. The classifier itself is not a block.
    """
    net, prefix = _torchvision_net(model)
    head = _head_name(net)
    out: list[list[str]] = []
    for name, child in net.named_children():
        parts = [(name, child)]
        if name == "features" or head.startswith(name + "."):
            parts = [(f"{name}.{n}", c) for n, c in child.named_children()]
        for part_name, part in parts:
            if part_name == head:
                continue
            names = [f"{prefix}{part_name}.{n}" for n, _ in part.named_parameters()]
            if names:
                out.append(names)
    return out


def fine_tune_plan(model: nn.Sequential, params: Mapping[str, Any]) -> FineTune:
    """What ``freeze``, ``freeze_fraction``, ``freeze_k``, ``unfreeze_at_epoch`` and
    ``backbone_lr_factor`` mean for ``model`` (from :func:`build`), as parameter names."""
    net, _ = _torchvision_net(model)
    head_module = net.get_submodule(_head_name(net))
    head_ids = {id(p) for p in head_module.parameters()}
    named = list(model.named_parameters())
    head = frozenset(n for n, p in named if id(p) in head_ids)
    backbone = [n for n, _ in named if n not in head]
    how = params["freeze"]
    if how == "all_but_head":
        frozen = frozenset(backbone)
    elif how == "fraction":
        frozen = frozenset(backbone[:round(float(params["freeze_fraction"]) * len(backbone))])
    elif how == "first_k":
        frozen = frozenset(n for block in blocks(model)[:int(params["freeze_k"])] for n in block)
    else:
        frozen = frozenset()
    return FineTune(head=head, frozen=frozen, backbone_lr_factor=float(params["backbone_lr_factor"]),
                    unfreeze_at_epoch=int(params["unfreeze_at_epoch"]))


def fit(config: TrainConfig, report: Report) -> dict[str, float]:
    """Train (or fine-tune) the model on ``config.data``; see :func:`trainers.loop.fit_classifier`."""
    config = dataclasses.replace(config, params={**TRAINER.defaults(), **config.params})
    data = load_data(config.data)
    seed_everything(config.seed)  # the new head's (and a scratch model's) weights depend on the seed only
    model = build(config, data.channels, len(data.classes))
    return fit_classifier(model, data, config, report, fine_tune_plan(model, config.params))
