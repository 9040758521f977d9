"""The layering contracts (``.importlinter``, checked by import-linter): they hold for the tree as
it is, and they fail when a layer imports what it must not."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _lint(root: Path) -> subprocess.CompletedProcess[str]:
    lint = Path(sys.executable).with_name("lint-imports")
    return subprocess.run([str(lint), "--config", str(root / ".importlinter"), "--no-cache"], cwd=root,
                          capture_output=True, text=True, timeout=300)


def test_every_layering_contract_holds() -> None:
    done = _lint(REPO)
    assert done.returncode == 0, done.stdout[-3000:]
    assert "0 broken" in done.stdout and "5 kept" in done.stdout


def test_a_reader_that_imports_ray_or_a_trainer_that_imports_sweeper_breaks_its_contract(tmp_path: Path) -> None:
    for folder in ("sweeper", "trainers"):
        shutil.copytree(REPO / folder, tmp_path / folder, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / ".importlinter", tmp_path / ".importlinter")
    results = tmp_path / "sweeper" / "results.py"
    results.write_text(results.read_text() + "\n\ndef _late() -> None:\n    import ray.tune  # noqa\n")
    base = tmp_path / "trainers" / "base.py"
    base.write_text(base.read_text() + "\n\nimport sweeper.record  # noqa\n")
    space = tmp_path / "sweeper" / "spec" / "_space.py"  # the data model reaching back up to its builder
    space.write_text(space.read_text() + "\n\ndef _late() -> None:\n    from sweeper.spec import _params  # noqa\n")
    done = _lint(tmp_path)
    assert done.returncode != 0
    assert "2 kept, 3 broken" in done.stdout  # the readers', the trainers' and spec's one-way contracts
    assert "sweeper.results -> ray" in done.stdout and "trainers.base -> sweeper.record" in done.stdout
    assert "sweeper.spec._space -> sweeper.spec._params" in done.stdout
