"""Defaults that the command line and the spec share, in a module that imports nothing else
(so that ``sweeper --help`` and the readers load no spec, torch or Ray to show them)."""

DEFAULT_STORAGE = "sqlite:///sweeps.db"
DEFAULT_ARTIFACTS = "sweeper_artifacts"
DEFAULT_EPOCHS = 10
DEFAULT_RUN_CAP = 20
