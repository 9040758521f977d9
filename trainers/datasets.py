"""Which datasets a trainer can read, checked without torch for the bundled datasets and image
folders (a torchvision dataset is opened, which imports it): what validating a spec needs.

Validation (``sweeper launch``'s first step, ``sweeper validate``) runs in the driver, which
never trains. Keeping these checks free of torch keeps its import (about 1.5 s and 500 MB here,
benchmarks/RESULTS.md, "Driver memory at scale") out of the driver; the loading itself is
:mod:`trainers.data`.
"""

from __future__ import annotations

from trainers.base import DataConfig
from trainers.folders import DataError, scan_image_folder

BUNDLED_DATASETS = ("mnist5k", "digits")


def check_data(cfg: DataConfig) -> list[tuple[str, object, str]]:
    """Check a data configuration: the bundled datasets need nothing, an image folder is scanned
    without decoding an image, and a torchvision dataset is opened and its training split read
    from ``root`` (which imports torch; nothing is downloaded).

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
    from trainers.data import _torchvision_split

    try:
        _torchvision_split(cfg.dataset, cfg.root, train=True)
    except DataError as err:
        return [("data.dataset", cfg.dataset, str(err))]
    return []


def torchvision_dataset_names() -> list[str]:
    """Names of the torchvision dataset classes (``CIFAR10``, ``MNIST``, ...); imports torchvision."""
    import torchvision.datasets

    return sorted(
        n for n in torchvision.datasets.__all__ if n[:1].isupper() and n not in ("ImageFolder",)
    )
