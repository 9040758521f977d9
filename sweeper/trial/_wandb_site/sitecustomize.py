"""sweeper's hook in a W&B program's Python (first on its ``PYTHONPATH``; see :mod:`sweeper.trial.program`).

When the program imports ``wandb``, the file named by ``SWEEPER_METRICS_FILE`` is created (the
program then reports through wandb only), and every ``Run.log`` (``wandb.log``, ``run.log``; the real run
and the disabled one) also appends the call's data as one JSON line to the file named by
``SWEEPER_METRICS_FILE``, flushed at once, so that the trial reads each call as it happens; once the
file holds half of ``SWEEPER_METRICS_CAP`` bytes it is renamed to its ``.1``, so both stay under the cap. Values
that are not JSON (images, tables, tensors) are left out. Then any other ``sitecustomize`` on the
path runs, as it would have without this one.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import json
import numbers
import os
import sys
import threading
from typing import Any

_FILE = os.environ.get("SWEEPER_METRICS_FILE")
# The file is renamed to its `.1` (replacing the one before) once it holds half of this many bytes.
_CAP = int(os.environ.get("SWEEPER_METRICS_CAP") or 0)
_LOCK = threading.Lock()


def _plain(value: Any) -> Any:
    """``value`` as JSON can hold it: numbers (NumPy's and torch's scalars too) and dicts of them."""
    if isinstance(value, bool):
        return None
    if isinstance(value, numbers.Number):
        return float(value)  # type: ignore[arg-type]
    if isinstance(value, dict):
        return {str(k): v for k, v in ((k, _plain(v)) for k, v in value.items()) if v is not None}
    item = getattr(value, "item", None)  # a 0-d tensor or array
    if callable(item) and getattr(value, "ndim", None) == 0:
        try:
            return _plain(item())
        except Exception:
            return None
    return None


def _record(data: Any) -> None:
    if not _FILE or not isinstance(data, dict):
        return
    plain = _plain(data)
    if not plain:
        return
    line = json.dumps(plain) + "\n"
    with _LOCK:
        with open(_FILE, "a", encoding="utf-8") as f:
            f.write(line)
            f.flush()
            full = _CAP > 0 and f.tell() >= _CAP // 2
        if full:
            os.replace(_FILE, _FILE + ".1")


def _wrap(cls: type) -> None:
    original = cls.__dict__.get("log")
    if original is None or getattr(original, "_sweeper", False):
        return

    def log(self: Any, data: Any, *args: Any, **kwargs: Any) -> Any:
        _record(data)
        return original(self, data, *args, **kwargs)

    log._sweeper = True  # type: ignore[attr-defined]
    log.__doc__ = original.__doc__
    cls.log = log  # type: ignore[attr-defined]


def _patch() -> None:
    from wandb.sdk import wandb_run

    if _FILE:  # the file's existence says: this program uses wandb (its stdout is not read for metrics)
        open(_FILE, "a", encoding="utf-8").close()

    _wrap(wandb_run.Run)
    try:
        from wandb.sdk.lib import noop_run
    except ImportError:  # an older wandb: its disabled run is the Run class
        return
    _wrap(noop_run.NoopRun)


class _AfterWandb(importlib.abc.MetaPathFinder):
    """Patches wandb right after ``import wandb`` finished."""

    def find_spec(self, name: str, path: Any, target: Any = None) -> importlib.machinery.ModuleSpec | None:
        if name != "wandb":
            return None
        sys.meta_path.remove(self)
        try:
            spec = importlib.util.find_spec(name)
        finally:
            sys.meta_path.insert(0, self)
        if spec is None or spec.loader is None:
            return None
        loader = spec.loader
        exec_module = loader.exec_module

        def exec_and_patch(module: Any) -> None:
            exec_module(module)
            try:
                _patch()
            except Exception as err:  # never break the user's program
                print(f"sweeper: could not follow wandb.log ({err})", file=sys.stderr)

        loader.exec_module = exec_and_patch  # type: ignore[method-assign]
        sys.meta_path.remove(self)
        return spec


if _FILE:
    sys.meta_path.insert(0, _AfterWandb())


def _chain() -> None:
    """Run the next ``sitecustomize`` on the path (the one this module shadows), if any."""
    here = os.path.dirname(os.path.abspath(__file__))
    for entry in sys.path:
        if not entry or os.path.abspath(entry) == here:
            continue
        candidate = os.path.join(entry, "sitecustomize.py")
        if os.path.isfile(candidate):
            spec = importlib.util.spec_from_file_location("_sweeper_next_sitecustomize", candidate)
            if spec is not None and spec.loader is not None:
                spec.loader.exec_module(importlib.util.module_from_spec(spec))
            return


_chain()
