"""sweeper: hyperparameter sweeps of image classifiers on Ray Tune, recorded in Optuna studies.

Orchestration only: the spec (:mod:`sweeper.spec`), the study's record
(:mod:`sweeper.study.record`), its storage and lifecycle (:mod:`sweeper.study.storage`,
:mod:`sweeper.study.coordination`, :mod:`sweeper.study.studies`), the launch on Ray Tune
(:mod:`sweeper.engine.launch` with :mod:`sweeper.engine.searcher`, :mod:`sweeper.engine.scheduler`,
:mod:`sweeper.engine.recorder`, :mod:`sweeper.trial.trainable`; W&B programs and functions in
:mod:`sweeper.trial.program`), the readers (:mod:`sweeper.study.results`,
:mod:`sweeper.views.report`, :mod:`sweeper.retrain`) and the CLI (:mod:`sweeper.cli`). Models and
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
