"""The sweep spec: the YAML schema, its validation, and its search space.

This package is the only place that knows the YAML's keys.
"""

from sweeper.spec._load import (
    SPEC_ATTR,
    Asha,
    Sweep,
    apply_overrides,
    load_sweep,
    load_train_config,
    raw_spec,
    read_yaml,
    spec_differences,
    validate,
)
from sweeper.spec._schema import DEFAULT_STORAGE, SweepSpec
from sweeper.spec._space import Dimension, SearchSpace, build_space

__all__ = [
    "DEFAULT_STORAGE",
    "SPEC_ATTR",
    "Asha",
    "Dimension",
    "SearchSpace",
    "Sweep",
    "SweepSpec",
    "apply_overrides",
    "build_space",
    "load_sweep",
    "load_train_config",
    "raw_spec",
    "read_yaml",
    "spec_differences",
    "validate",
]
