"""Image folders on disk: their layout (ImageFolder-style) and decoding one image file.

Nothing here keeps state; :mod:`trainers.cache` decodes whole folders once per node.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# Same list as torchvision.datasets.folder.IMG_EXTENSIONS, so the layout matches ImageFolder.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


class DataError(ValueError):
    """The data cannot be used as configured; the message says what and where."""



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


def decode(path: str, size: int) -> np.ndarray | None:
    """One image file as RGB uint8 ``(3, size, size)``: shorter side scaled, centre crop."""
    from PIL import Image, ImageOps

    try:
        with Image.open(path) as img:
            img.draft("RGB", (size, size))  # lets JPEG decode at a reduced scale
            rgb = ImageOps.fit(img.convert("RGB"), (size, size), Image.Resampling.BILINEAR)
            return np.asarray(rgb, dtype=np.uint8).transpose(2, 0, 1)
    except Exception:
        return None
