"""sweeper: hyperparameter sweeps of image classifiers on Ray Tune, recorded in Optuna studies.

Orchestration only: the spec (:mod:`sweeper.spec`), the searcher backed by the study
(:mod:`sweeper.search`), the Ray Tune execution (:mod:`sweeper.execution`), the study's
storage (:mod:`sweeper.storage`) and the CLI (:mod:`sweeper.cli`). Models and training
live in the separate ``trainers`` package.
"""

__version__ = "0.1.0"
