"""The sweep spec: the YAML schema, its validation, and its search space.

This package is the only place that knows the YAML's keys:

- ``_schema``: the keys, their types and bounds (pydantic; ``data`` and the training-config
  file from :mod:`trainers.base`'s dataclasses);
- ``_files``: reading a spec file, ``--set`` overrides, the CLI's options;
- ``_validate``: validating a spec once, every problem one line (``_problems``: pydantic's
  errors as those lines);
- ``_space``: W&B parameters as Optuna distributions, and back;
- ``_sweep``: the validated :class:`Sweep` and what is derived from it;
- ``_train``: validating a training config file (``sweeper train``/``retrain``), and one read
  back from a study before it runs.
"""

from sweeper.spec._files import apply_overrides, raw_spec, read_yaml
from sweeper.spec._params import build_space, stored_space
from sweeper.spec._schema import SweepSpec
from sweeper.spec._space import Dimension, SearchSpace
from sweeper.spec._sweep import Asha, Sweep, spec_differences
from sweeper.spec._train import check_trial_config, load_train_config
from sweeper.spec._validate import load_sweep, validate

__all__ = [
    "Asha",
    "Dimension",
    "SearchSpace",
    "Sweep",
    "SweepSpec",
    "apply_overrides",
    "build_space",
    "check_trial_config",
    "load_sweep",
    "load_train_config",
    "raw_spec",
    "read_yaml",
    "spec_differences",
    "stored_space",
    "validate",
]
