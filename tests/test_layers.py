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
    assert "0 broken" in done.stdout and "7 kept" in done.stdout


def test_a_reader_that_imports_ray_or_a_trainer_that_imports_sweeper_breaks_its_contract(tmp_path: Path) -> None:
    for folder in ("sweeper", "trainers"):
        shutil.copytree(REPO / folder, tmp_path / folder, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / ".importlinter", tmp_path / ".importlinter")

    def plant(path: str, line: str) -> None:
        file = tmp_path / path
        file.write_text(file.read_text() + "\n\n" + line + "  # noqa\n")

    plant("sweeper/study/results.py", "def _late() -> None:\n    import ray.tune")
    plant("trainers/base.py", "import sweeper.study.record")
    # the data model reaching back up to its builder
    plant("sweeper/spec/_space.py", "def _late() -> None:\n    from sweeper.spec import _params")
    plant("sweeper/engine/recorder.py", "import sweeper.views.progress")  # the engine drawing
    plant("sweeper/trial/trainable.py", "import optuna")  # a worker needing the study's library
    done = _lint(tmp_path)
    assert done.returncode != 0
    assert "2 kept, 5 broken" in done.stdout, done.stdout[-3000:]
    for arrow in ("sweeper.study.results -> ray", "trainers.base -> sweeper.study.record",
                  "sweeper.spec._space -> sweeper.spec._params", "sweeper.engine.recorder -> sweeper.views.progress",
                  "sweeper.trial.trainable -> optuna"):
        assert arrow in done.stdout, arrow
