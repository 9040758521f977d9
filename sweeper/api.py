"""sweeper's Python API: W&B's notebook calls (:func:`sweep`, :func:`agent`) with sweeper behind
them, and sweeps as Python objects (:func:`launch`, :func:`load`, returning
:class:`sweeper.handle.Sweep`).

The W&B notebook flow runs with the two calls renamed::

    sweep_id = sweeper.sweep(sweep_config, project="inat")
    sweeper.agent(sweep_id, function=train, count=30)

``train`` may be defined in the notebook (``__main__``): Ray ships it to the workers by value
(cloudpickle). A zero-argument ``train`` is a W&B function (``wandb.init()``, ``wandb.config``
and ``wandb.log`` work unchanged, through :func:`sweeper.trial.program.fit_function`); one of
``(config, report)`` is a plain sweeper trainer. The study records, as the trainer of a sweep made
from a W&B config that names none, :data:`FUNCTION_TRAINER` (or :data:`FIT_TRAINER`): a
stand-in that only :func:`agent` replaces.

Errors are sweeper's: :class:`sweeper.errors.InputError` for bad input (nothing run), and
:class:`sweeper.errors.SweeperError` when the sweep failed. In IPython and Jupyter each is shown
as its lines alone, without a traceback, once this module has run a call.
"""

from __future__ import annotations

import copy
import os
import secrets
import sys
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from sweeper.defaults import FIT_TRAINER, FUNCTION_TRAINER, default_storage
from sweeper.errors import InputError, SweeperError
from sweeper.handle import Sweep

if TYPE_CHECKING:
    from rich.console import Console

    from sweeper.engine.events import Notice, SweepEnded
    from sweeper.spec import Sweep as ValidSweep
    from sweeper.study.warm_start import WarmStart
    from sweeper.views.notebook import NotebookProgress
    from sweeper.views.progress import SweepProgress

__all__ = ["FIT_TRAINER", "FUNCTION_TRAINER", "Sweep", "agent", "launch", "load", "sweep"]

_STAND_INS = (FUNCTION_TRAINER, FIT_TRAINER)
SpecLike = Mapping[str, Any] | str | os.PathLike[str]


def function_given_to_agent() -> None:
    """The stand-in trainer of a sweep whose W&B function :func:`agent` gives (``function=train``).

    Raises:
        InputError: always: the function lives in the notebook that runs ``agent``.
    """
    raise InputError("trainer: this sweep's function is given to sweeper.agent(sweep_id, function=train)")


def fit_given_to_agent(config: Any, report: Any) -> dict[str, float]:
    """The stand-in trainer of a sweep whose ``fit(config, report)`` :func:`agent` gives.

    Raises:
        InputError: always, as :func:`function_given_to_agent`.
    """
    raise InputError("trainer: this sweep's function is given to sweeper.agent(sweep_id, function=fit)")


def sweep(sweep_config: SpecLike, project: str | None = None, *, storage: str | None = None,
          entity: str | None = None) -> str:
    """Validate a sweep config, as ``sweeper validate`` does, create its study, and return its name
    (the ``sweep_id`` that :func:`agent` takes), as ``wandb.sweep`` does.

    ``sweep_config`` is the dict ``wandb.sweep`` takes (or a YAML file's path): the W&B keys plus
    any of sweeper's (``trainer``, ``data``, ``epochs``, ``storage``, ...). With no ``trainer`` and no
    ``program``, the trainer is the function :func:`agent` will be given. Without a ``name``, the
    study is named ``<project>-<8 hex digits>`` (``sweep-...`` without a project), a new one each
    call; with a ``name``, a study of that name and the same spec is returned as it is (running the
    cell again continues it), and one with another spec is an error.

    Args:
        sweep_config: the sweep, a mapping or a path.
        project: W&B's project; here, the prefix of a generated study name.
        entity: W&B's entity, accepted so that a W&B call runs renamed; not used.
        storage: SQLAlchemy URL of the study's storage (overrides the config's ``storage``;
            default ``SWEEPER_STORAGE``, else ``sqlite:///sweeps.db``).

    Raises:
        InputError: the config is invalid (one line per problem), a study of that name exists
            with another spec, or the storage does not answer.
    """
    _one_line_errors()  # before the imports: Optuna's import warns in Jupyter
    from sweeper.spec import spec_differences, validate
    from sweeper.study.storage import redact, study_names
    from sweeper.study.studies import create_study, stored_spec

    raw = _spec(sweep_config)
    if storage is not None:
        raw["storage"] = storage
    raw.setdefault("storage", default_storage())
    if "trainer" not in raw and "program" not in raw:
        raw["trainer"] = FUNCTION_TRAINER
    if not raw.get("name"):
        raw["name"] = f"{project or 'sweep'}-{secrets.token_hex(4)}"
    valid = validate(raw)
    _print_warnings(valid)
    url = valid.spec.storage
    if valid.name in study_names(url):
        differences = spec_differences(stored_spec(url, valid.name), valid.stored())
        if differences:
            raise InputError([f"name: study {valid.name!r} in {redact(url)} exists with another spec; name this "
                              "one differently or make it match:", *differences])
        _MADE[valid.name] = url
        return valid.name
    create_study(valid, 1)
    _MADE[valid.name] = url
    return valid.name


# The storage of each study that sweep() made or found in this process, by name: agent(sweep_id)
# without `storage` finds a study whose config named its own storage, as wandb.agent finds any sweep.
_MADE: dict[str, str] = {}


def agent(sweep_id: str, function: Callable[..., Any] | None = None, count: int | None = None, *,
          storage: str | None = None, address: str | None = None, entity: str | None = None,
          project: str | None = None) -> Sweep:
    """Run trials of a sweep on Ray Tune with ASHA, as ``wandb.agent`` runs them, and return it.

    Each call runs ``count`` more finished (COMPLETE or PRUNED) trials: a second call adds
    ``count`` more, as a second ``wandb.agent`` would. Trials that a driver now gone left RUNNING
    are marked FAIL and their parameters run again first. When ASHA stops a trial, its function
    is stopped at its next ``wandb.log`` (or ``report``) and the trial is PRUNED with its curve.
    Interrupting the kernel (Ctrl-C) stops the trials, marks them FAIL ("sweep interrupted"), and
    raises ``KeyboardInterrupt``; the next call continues the study.

    Args:
        sweep_id: the study's name (what :func:`sweep` returned).
        function: the trainer: a zero-argument W&B function (``wandb.init()`` inside), or
            ``fit(config, report)``; defined anywhere, the notebook included. ``None``: the
            trainer or program the sweep config names.
        count: finished trials this call runs; ``None``: up to the config's ``run_cap`` for
            the whole study (for a grid, at most the points left).
        storage: SQLAlchemy URL of the study's storage (default: where :func:`sweep` put it in this
            process, else ``SWEEPER_STORAGE``, else ``sqlite:///sweeps.db``).
        address: a Ray cluster to join (``auto``, ``HEAD_IP:6379``); default: Ray on this machine.
        entity: W&B's, accepted so that a W&B call runs renamed; not used.
        project: W&B's, accepted likewise; not used (the study is ``sweep_id``).

    Returns:
        the sweep (:class:`sweeper.handle.Sweep`): its trials, best, plots.

    Raises:
        InputError: no such study; ``count`` below 1; ``function`` missing for a sweep made
            without a trainer, or not callable.
        SweeperError: the sweep stopped early (too many FAIL trials) or no trial completed.
        KeyboardInterrupt: the kernel was interrupted.
    """
    _one_line_errors()  # before the imports: Optuna's import warns in Jupyter
    from sweeper.spec import validate
    from sweeper.study.studies import stored_spec

    url = storage or _MADE.get(sweep_id) or default_storage()
    try:
        raw = stored_spec(url, sweep_id)
    except InputError as err:
        if storage is None:  # the config's own `storage:` (another process, or a kernel restarted)
            raise InputError(f"{err}; if its sweep config names a `storage:`, pass it: "
                             f"sweeper.agent({sweep_id!r}, storage=...)") from None
        raise
    if function is not None:
        if not callable(function):
            raise InputError(f"function: {function!r} is not a function")
        from sweeper.trial.program import takes_no_arguments

        raw["trainer"] = FUNCTION_TRAINER if takes_no_arguments(function) else FIT_TRAINER
    elif raw.get("trainer") in _STAND_INS:
        raise InputError(f"function: sweep {sweep_id!r} was made without a trainer; give it one: "
                         "sweeper.agent(sweep_id, function=train)")
    if count is not None:
        if count < 1:
            raise InputError(f"count: {count} must be 1 or more")
        raw["run_cap"] = _finished(url, sweep_id) + count
        grid = validate({**raw, "run_cap": None}).space.size() if raw.get("method") == "grid" else None
        if grid is not None:
            raw["run_cap"] = min(raw["run_cap"], grid)
    # The trials' configs name the stand-in, never the notebook's function: a config read back
    # from the study names only what sweeper.spec.check_trial_config lets `sweeper train` import.
    valid = validate(raw)
    _run(valid, resume=True, function=function, address=address)
    return Sweep(sweep_id, url)


def launch(spec: SpecLike, *, resume: bool = False, address: str | None = None, **overrides: Any) -> Sweep:
    """Run a sweep from a spec, as ``sweeper launch`` does, and return it.

    Args:
        spec: the spec (a mapping, or a YAML file's path).
        resume: continue the study if it exists (its stored spec must match).
        address: a Ray cluster to join; default: Ray on this machine.
        overrides: spec keys to set, validated like the file's (``run_cap=4``,
            ``storage="sqlite:///s.db"``); ``__`` in a name is a dotted path
            (``data__root="/data/nature_12K"`` sets ``data.root``).

    Raises:
        InputError: the spec is invalid, or the study exists (without ``resume``) or exists with
            another spec.
        SweeperError: as :func:`agent`.
        KeyboardInterrupt: as :func:`agent`.
    """
    _one_line_errors()  # before the imports: Optuna's import warns in Jupyter
    from sweeper.spec import validate
    from sweeper.study.studies import continues_study

    raw = _spec(spec)
    for key, value in overrides.items():
        node = raw
        *path, last = key.split("__")
        for part in path:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise InputError(f"{key}: cannot set inside {part}, which is not a mapping")
        node[last] = value
    raw.setdefault("storage", default_storage())
    valid = validate(raw)
    _print_warnings(valid)
    _run(valid, resume=continues_study(valid, resume), address=address)
    return Sweep(valid.name, valid.spec.storage)


def load(study: str, storage: str | None = None) -> Sweep:
    """The sweep ``study`` in ``storage`` (default ``SWEEPER_STORAGE``, else ``sqlite:///sweeps.db``), to read.

    Raises:
        InputError: no such study in the storage (the message lists those there), or the
            storage does not answer.
    """
    _one_line_errors()  # before the imports: Optuna's import warns in Jupyter
    from sweeper.study.studies import load_study

    url = storage or default_storage()
    load_study(url, study)
    return Sweep(study, url)


def run(valid: ValidSweep, *, resume: bool, function: Callable[..., Any] | None = None,
        address: str | None = None, warm: WarmStart | None = None, console: Console | None = None) -> None:
    """Run (or continue) a validated sweep here with live progress, then show its best trials
    (what ``sweeper launch``, :func:`agent` and :func:`launch` do once the spec is checked). In
    Jupyter the progress is one display updated in place (:mod:`sweeper.views.notebook`).

    Raises:
        InputError: the sweep's trainer is a stand-in for a function given to :func:`agent` and
            no ``function`` is given (``sweeper resume`` on a notebook's sweep); else as
            :func:`sweeper.engine.launch.launch`.
    """
    if function is None and valid.spec.trainer in (FUNCTION_TRAINER, FIT_TRAINER):
        raise InputError(f"trainer: sweep {valid.name!r} runs a function defined where it was made; continue it "
                         f"there with sweeper.agent({valid.name!r}, function=train)")
    from rich.console import Console

    from sweeper.engine.launch import launch as launch_sweep
    from sweeper.views.progress import SweepProgress, rendered

    console = console or Console(highlight=False, soft_wrap=True)
    progress: SweepProgress | NotebookProgress = SweepProgress(valid, console)
    if console.is_jupyter:  # one display updated in place (sweeper.views.notebook), not a scroll of lines
        import logging

        from sweeper.views.notebook import NotebookProgress

        progress = NotebookProgress(valid)
        logging.getLogger("ray.widgets").setLevel(logging.WARNING)  # "install ipywidgets": not needed here

    def show(event: Notice | SweepEnded) -> None:
        progress.stop()
        console.print(rendered(event))

    try:
        launch_sweep(valid, show, address=address, resume=resume, on_start=progress.start,
                     on_end=progress.trial_ended, warm_start=warm, function=function)
    finally:
        progress.stop()


def _run(valid: ValidSweep, **kwargs: Any) -> None:
    try:
        run(valid, **kwargs)
    except KeyboardInterrupt:
        print(f"interrupted: the running trials are marked FAIL; sweeper.agent({valid.name!r}, ...) continues "
              "the study", file=sys.stderr)
        raise


def _spec(spec: SpecLike) -> dict[str, Any]:
    """A copy of the spec mapping, or the YAML file read."""
    from sweeper.spec import read_yaml

    if isinstance(spec, Mapping):
        return copy.deepcopy(dict(spec))
    if isinstance(spec, (str, os.PathLike)):
        return read_yaml(spec)
    raise InputError(f"sweep_config: a {type(spec).__name__} must be a dict or a YAML file's path")


def _finished(url: str, name: str) -> int:
    """COMPLETE and PRUNED trials of the study (warm-start copies left out): what its budget counts."""
    from optuna.trial import TrialState

    from sweeper.study import record
    from sweeper.study.studies import load_study

    counts = record.counts(load_study(url, name).get_trials(deepcopy=False, states=record.FINISHED))
    return counts[TrialState.COMPLETE] + counts[TrialState.PRUNED]


def _print_warnings(valid: ValidSweep) -> None:
    for line in valid.warnings:
        print(f"warning: {line}", file=sys.stderr)


def _one_line_errors() -> None:
    """Optuna's INFO lines silenced (as the command line does), and in IPython or Jupyter, sweeper's
    errors shown as their lines alone (no traceback), as the command line shows them."""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    if shell is not None:  # tqdm.auto (Optuna imports it) asks for ipywidgets: sweeper's display needs none
        import warnings

        warnings.filterwarnings("ignore", message="IProgress not found")
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if shell is None or getattr(shell, "_sweeper_errors", False):
        return

    def handler(self: Any, etype: type, value: BaseException, tb: Any, tb_offset: Any = None) -> None:
        lines = value.problems if isinstance(value, InputError) else [str(value)]
        print("\n".join(f"{etype.__name__}: {line}" for line in lines), file=sys.stderr)

    shell.set_custom_exc((SweeperError,), handler)
    shell._sweeper_errors = True
