"""The node's cache of decoded image folders: each folder decoded once per node and image size
into a uint8 array that every trial on the node memory-maps."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from trainers.base import DataConfig
from trainers.folders import FolderLayout, decode, scan_image_folder

# Bump when decoding changes, so that no cache written by an older decoder is served.
CACHE_VERSION = 1


def cache_root(cfg: DataConfig) -> Path:
    """The node's cache folder: ``data.cache_dir``, else ``$SWEEPER_CACHE_DIR``, else ``~/.cache/sweeper``."""
    return Path(cfg.cache_dir or os.environ.get("SWEEPER_CACHE_DIR") or "~/.cache/sweeper").expanduser()


@dataclass(frozen=True)
class CachedFolder:
    """An image folder decoded once, as the cache holds it.

    Attributes:
        images: uint8 ``(N, 3, S, S)``, memory-mapped read-only from ``folder/images.u8``,
            ordered split by split (train, then val, then test).
        labels: int64 ``(N,)``.
        splits: ``{split: (start, stop)}`` rows of each split of the folder.
        classes: class folder names.
        skipped: files that are not images or could not be decoded.
        folder: where the cache lives.
        built: whether this call decoded the images (``False``: served from the cache).
    """

    images: torch.Tensor
    labels: torch.Tensor
    splits: dict[str, tuple[int, int]]
    classes: tuple[str, ...]
    skipped: int
    folder: Path
    built: bool


def cached_image_folder(root: str, image_size: int, cache_dir: Path) -> CachedFolder:
    """Decode the image folder ``root`` at ``image_size`` once per node; map it from the cache after.

    The cache entry is named by a SHA-256 of every file's path, size and modification time
    (plus the image size and :data:`CACHE_VERSION`), so a changed, added or removed file makes a
    new entry and a stale one is never served. Decoding happens under a file lock, so trials
    starting together on a node decode once; the entry appears atomically (its ``meta.json``
    is written last). Readers map ``images.u8`` copy-on-write: the pages are shared by every
    process of the node through the page cache.

    Raises:
        DataError: as :func:`scan_image_folder`.
    """
    import fcntl
    import hashlib
    import json

    layout = scan_image_folder(root)
    digest = hashlib.sha256(f"v{CACHE_VERSION}|{image_size}|{layout.not_images}".encode())
    for split, items in layout.splits.items():
        for path, label in items:
            st = os.stat(path)
            digest.update(f"{split}|{path}|{label}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    folder = cache_dir / f"{Path(root).name or 'root'}-{image_size}px-{digest.hexdigest()[:20]}"
    built = False
    if not (folder / "meta.json").is_file():
        cache_dir.mkdir(parents=True, exist_ok=True)
        with open(cache_dir / f"{folder.name}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not (folder / "meta.json").is_file():
                _build_cache(layout, image_size, folder)
                built = True
    meta = json.loads((folder / "meta.json").read_text())
    n = int(meta["n"])
    shape = (n, 3, image_size, image_size)
    images = (torch.from_numpy(np.memmap(folder / "images.u8", dtype=np.uint8, mode="c", shape=shape)) if n
              else torch.zeros(shape, dtype=torch.uint8))
    return CachedFolder(
        images=images, labels=torch.from_numpy(np.load(folder / "labels.npy")),
        splits={k: (int(a), int(b)) for k, (a, b) in meta["splits"].items()}, classes=tuple(meta["classes"]),
        skipped=int(meta["skipped"]), folder=folder, built=built,
    )


def _build_cache(layout: FolderLayout, size: int, folder: Path) -> None:
    """Decode every split of ``layout`` into ``folder`` (written to a temporary folder, then renamed)."""
    import json
    import shutil
    import tempfile

    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=folder.name + ".tmp-", dir=folder.parent))
    try:
        total = sum(len(items) for items in layout.splits.values())
        out = np.memmap(tmp / "images.u8", mode="w+", dtype=np.uint8, shape=(max(1, total), 3, size, size))
        labels: list[int] = []
        splits: dict[str, tuple[int, int]] = {}
        skipped = layout.not_images
        row = 0
        with ThreadPoolExecutor(max_workers=max(1, min(8, os.cpu_count() or 1))) as pool:
            for split, items in layout.splits.items():
                start = row
                for first in range(0, len(items), 512):  # bounded memory: 512 images in flight
                    chunk = items[first:first + 512]
                    for array, (_, label) in zip(pool.map(lambda item: decode(item[0], size), chunk), chunk,
                                                 strict=True):
                        if array is None:
                            skipped += 1
                            continue
                        out[row] = array
                        labels.append(label)
                        row += 1
                splits[split] = (start, row)
        out.flush()
        del out
        os.truncate(tmp / "images.u8", row * 3 * size * size)  # less the skipped files' rows
        np.save(tmp / "labels.npy", np.asarray(labels, dtype=np.int64))
        meta = {"n": row, "image_size": size, "splits": splits, "classes": list(layout.classes),
                "skipped": skipped, "version": CACHE_VERSION}
        (tmp / "meta.json").write_text(json.dumps(meta))
        if folder.exists():
            shutil.rmtree(folder)
        tmp.rename(folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
