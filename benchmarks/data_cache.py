"""Epoch time on a JPEG image folder: sweeper's node cache vs torchvision ImageFolder + DataLoader.

The folder holds ``--images`` JPEG photos of natural-image size (500x375, quality 90), made
from the two real photographs bundled with scikit-learn (``load_sample_images``: a temple
in China and a flower) by random crops, scales, flips and colour shifts, one class per
source photo and crop family. Both pipelines prepare ``--size`` pixel squares (shorter side
scaled, centre crop) with the same augmentation (random resized crop 0.8-1, rotation 10
degrees, horizontal flip, colour jitter 0.2) and feed the same small CNN, batch 64.

- baseline: ``torchvision.datasets.ImageFolder`` + ``DataLoader(num_workers=--workers)`` with
  torchvision v2 transforms (decode, resize, crop, augment per image, in worker processes);
- sweeper, first trial: decode the folder into the node cache, then train the epoch;
- sweeper, later trials: map the cache (another process would find it the same way) and
  train the epoch, augmenting each batch on the device (``BatchAugment``).

Usage: ``python -m benchmarks.data_cache [--images 1200] [--size 224] [--epochs 2]``; writes
its section of ``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from benchmarks._results import machine, write_section

# (label, train the CNN?, augment?)
CASES = [("data only, augmented", False, True), ("data only, not augmented", False, False),
         ("training the CNN, augmented", True, True)]


def make_photo_folder(root: Path, n: int, seed: int = 0) -> None:
    """``n`` 500x375 JPEGs in 4 classes: random crops of scikit-learn's two sample photos."""
    from PIL import Image, ImageEnhance
    from sklearn.datasets import load_sample_images

    photos = [Image.fromarray(a) for a in load_sample_images().images]  # 2 photos, 427x640 RGB
    rng = np.random.default_rng(seed)
    for i in range(n):
        label = i % 4
        photo = photos[label % 2]
        w, h = photo.size
        scale = rng.uniform(0.4, 0.9) if label < 2 else rng.uniform(0.2, 0.4)
        cw, ch = int(w * scale), int(h * scale)
        x0, y0 = int(rng.integers(0, w - cw)), int(rng.integers(0, h - ch))
        img = photo.crop((x0, y0, x0 + cw, y0 + ch)).resize((500, 375), Image.Resampling.BICUBIC)
        if rng.random() < 0.5:
            img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        img = ImageEnhance.Color(img).enhance(float(rng.uniform(0.6, 1.4)))
        folder = root / f"class_{label}"
        folder.mkdir(parents=True, exist_ok=True)
        img.save(folder / f"{i:05d}.jpg", quality=90)


def small_cnn() -> nn.Module:
    from trainers.normalize import Normalize

    torch.manual_seed(0)
    layers: list[nn.Module] = [Normalize(3, [0.5] * 3, [0.25] * 3)]
    channels = 3
    for out in (8, 16, 16, 32, 32):
        layers += [nn.Conv2d(channels, out, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)]
        channels = out
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, 4)]
    return nn.Sequential(*layers)


def train_batches(model: nn.Module | None, batches: object, opt: torch.optim.Optimizer | None) -> int:
    """One pass: a training step per batch, or (``model`` None) the batches alone."""
    seen = 0
    loss_fn = nn.CrossEntropyLoss()
    for xb, yb in batches:  # type: ignore[attr-defined]
        if model is not None and opt is not None:
            opt.zero_grad()
            loss_fn(model(xb), yb).backward()
            opt.step()
        seen += len(yb)
    return seen


def baseline_epochs(root: Path, size: int, epochs: int, workers: int, train: bool, augmented: bool) -> list[float]:
    from torch.utils.data import DataLoader
    from torchvision.datasets import ImageFolder
    from torchvision.transforms import v2

    steps = [v2.PILToTensor(), v2.Resize(size, antialias=True), v2.CenterCrop(size)]
    if augmented:
        steps += [v2.RandomResizedCrop(size, scale=(0.8, 1.0), antialias=True), v2.RandomRotation(10),
                  v2.RandomHorizontalFlip(), v2.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2)]
    transform = v2.Compose(steps)
    loader = DataLoader(ImageFolder(str(root), transform=transform), batch_size=64, shuffle=True,
                        num_workers=workers, persistent_workers=workers > 0)
    model = small_cnn() if train else None
    opt = torch.optim.Adam(model.parameters(), 1e-3) if model is not None else None
    times = []
    for _ in range(epochs):
        started = time.perf_counter()
        train_batches(model, loader, opt)
        times.append(time.perf_counter() - started)
    return times


def sweeper_epochs(root: Path, size: int, epochs: int, cache: Path, train: bool,
                   augmented: bool) -> tuple[float, list[float]]:
    """(seconds to get the data: decode or map the cache, epoch seconds)."""
    from trainers.augment import BatchAugment
    from trainers.cache import cached_image_folder

    started = time.perf_counter()
    cached = cached_image_folder(str(root), size, cache)
    ready = time.perf_counter() - started
    images, labels = cached.images, cached.labels
    augment, gen = BatchAugment(3), torch.Generator().manual_seed(0)
    model = small_cnn() if train else None
    opt = torch.optim.Adam(model.parameters(), 1e-3) if model is not None else None
    times = []
    for _ in range(epochs):
        started = time.perf_counter()
        order = torch.randperm(len(labels))
        batches = (((augment(images[ix], gen) if augmented else images[ix]), labels[ix]) for ix in order.split(64))
        train_batches(model, batches, opt)
        times.append(time.perf_counter() - started)
    return ready, times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1200)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    with tempfile.TemporaryDirectory() as tmp:
        root, cache = Path(tmp) / "photos", Path(tmp) / "cache"
        make_photo_folder(root, args.images)
        megabytes = sum(p.stat().st_size for p in root.rglob("*.jpg")) / 1e6
        results = {}
        for case in CASES:
            train, augmented = case[1], case[2]
            shutil.rmtree(cache, ignore_errors=True)
            base = baseline_epochs(root, args.size, args.epochs, args.workers, train, augmented)
            build_s, first = sweeper_epochs(root, args.size, args.epochs, cache, train, augmented)
            map_s, later = sweeper_epochs(root, args.size, args.epochs, cache, train, augmented)
            results[case] = (statistics.median(base), build_s, statistics.median(first), map_s,
                             statistics.median(later))
            print(case[0], results[case], flush=True)
    rows = []
    for case in CASES:
        label = case[0]
        base_epoch, build_s, first_epoch, map_s, later_epoch = results[case]
        rows += [
            f"| {label} | torchvision ImageFolder + DataLoader ({args.workers} workers), per-image v2 transforms "
            f"| 0 | {base_epoch:.2f} | 1.00 |",
            f"| {label} | sweeper, first trial (decodes into the node cache) | {build_s:.2f} | {first_epoch:.2f} | "
            f"{base_epoch / first_epoch:.2f} |",
            f"| {label} | sweeper, later trials (map the cache; batched augmentation) | {map_s:.3f} | "
            f"{later_epoch:.2f} | {base_epoch / later_epoch:.2f} |",
        ]
    write_section(f"Data cache: epoch time on a JPEG folder ({dt.date.today().isoformat()})", [
        f"Machine: {machine()}. Command: `python -m benchmarks.data_cache --images {args.images} --size {args.size} "
        f"--epochs {args.epochs} --workers {args.workers}`. {args.images} JPEGs of 500x375 ({megabytes:.0f} MB), "
        f"4 classes, {args.size}-pixel squares, batch 64, same augmentation; median epoch. 'Data only' times "
        "the pipeline alone (every batch decoded or gathered, augmented, ready for the model); 'training' adds "
        "a 5-conv CNN's steps, whose cost on this CPU is in every row. Target: the cached pipeline >= 5x faster "
        "from the second trial on.",
        "",
        "| epoch of | pipeline | data ready (s) | epoch (s) | speed-up vs baseline |",
        "| --- | --- | --- | --- | --- |",
        *rows,
    ])

if __name__ == "__main__":
    main()
