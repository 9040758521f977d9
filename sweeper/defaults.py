"""Defaults that the command line and the spec share, in a module that imports nothing else
(so that ``sweeper --help`` and the readers load no spec, torch or Ray to show them)."""

import os

DEFAULT_STORAGE = "sqlite:///sweeps.db"
# The storage URL when none is given: a password in it stays out of `ps` and shell history.
STORAGE_ENV = "SWEEPER_STORAGE"
DEFAULT_ARTIFACTS = "sweeper_artifacts"
DEFAULT_EPOCHS = 10
DEFAULT_RUN_CAP = 20


def default_storage() -> str:
    """The storage URL used when neither ``--storage`` nor a spec's ``storage`` names one:
    :data:`STORAGE_ENV` when set and not empty, else :data:`DEFAULT_STORAGE`.

    Precedence, everywhere: ``--storage``, then the spec's ``storage`` key (``launch``,
    ``validate``), then ``SWEEPER_STORAGE``, then ``sqlite:///sweeps.db``.
    """
    return os.environ.get(STORAGE_ENV) or DEFAULT_STORAGE
# The stand-in trainers of a sweep made by sweeper.sweep() without one: its function is given to
# sweeper.agent(sweep_id, function=...) in the notebook, and runs only there (see sweeper.api).
FUNCTION_TRAINER = "sweeper.api:function_given_to_agent"
FIT_TRAINER = "sweeper.api:fit_given_to_agent"
