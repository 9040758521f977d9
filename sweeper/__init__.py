"""sweeper: hyperparameter sweeps of image classifiers on Ray Tune, recorded in Optuna studies.

Orchestration only: the spec (:mod:`sweeper.spec`), the study's record
(:mod:`sweeper.record`), its storage and lifecycle (:mod:`sweeper.storage`,
:mod:`sweeper.coordination`, :mod:`sweeper.studies`), the launch on Ray Tune
(:mod:`sweeper.launch` with :mod:`sweeper.searcher`, :mod:`sweeper.scheduler`,
:mod:`sweeper.recorder`, :mod:`sweeper.trainable`; W&B programs and functions in
:mod:`sweeper.program`), the readers (:mod:`sweeper.results`,
:mod:`sweeper.report`, :mod:`sweeper.retrain`) and the CLI (:mod:`sweeper.cli`). Models and
training live in the separate ``trainers`` package. docs/architecture.md draws the arrows.
"""

__version__ = "0.1.0"
