"""sweeper: hyperparameter sweeps of image classifiers on Ray Tune, recorded in Optuna studies.

Orchestration only: the spec (:mod:`sweeper.spec`), the study's record
(:mod:`sweeper.record`), its storage and lifecycle (:mod:`sweeper.storage`,
:mod:`sweeper.coordination`, :mod:`sweeper.studies`), the launch on Ray Tune
(:mod:`sweeper.launch` with :mod:`sweeper.searcher`, :mod:`sweeper.scheduler`,
:mod:`sweeper.recorder`, :mod:`sweeper.trainable`; W&B programs and functions in
:mod:`sweeper.program`), the readers (:mod:`sweeper.results`,
:mod:`sweeper.report`, :mod:`sweeper.retrain`) and the CLI (:mod:`sweeper.cli`). Models and
training live in the separate ``trainers`` package. docs/architecture.md draws the arrows.

The Python API (:mod:`sweeper.api`) is imported from here on first use (PEP 562), so that
``import sweeper`` and ``sweeper --help`` stay light: ``sweeper.sweep``, ``sweeper.agent``,
``sweeper.launch``, ``sweeper.load`` and the ``sweeper.Sweep`` they return.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

_API = ("Sweep", "agent", "launch", "load", "sweep")
__all__ = ["__version__", *_API]


def __getattr__(name: str) -> Any:
    if name in _API:
        from sweeper import api

        return getattr(api, name)
    raise AttributeError(f"module 'sweeper' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_API])
