"""Reading a spec file: its YAML, the ``--set`` overrides and the CLI's options, not yet validated."""

from __future__ import annotations

import copy
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from sweeper.errors import InputError, Problem


def read_yaml(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The mapping in a YAML file, read with PyYAML's safe loader.

    Raises:
        InputError: the file is missing or unreadable, not YAML, or not a mapping.
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as err:
        raise InputError(Problem(str(p), None, f"cannot be read: {err.strerror or err}")) from err
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise InputError(f"{p}: is not valid YAML{where}: {problem}") from err
    if not isinstance(raw, dict):
        raise InputError(Problem(str(p), type(raw).__name__, "must hold a mapping of keys (a sweep spec)"))
    return raw


def apply_overrides(raw: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Apply ``--set KEY=VALUE`` overrides (dotted path, YAML value) to a copy of ``raw``.

    Raises:
        InputError: an override is not ``KEY=VALUE``, or its path runs through a non-mapping.
    """
    out = copy.deepcopy(raw)
    problems = []
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key.strip() or any(not part for part in key.split(".")):
            problems.append(Problem("--set", item, "must look like KEY=VALUE, KEY a dotted path such as data.root"))
            continue
        try:
            value = yaml.safe_load(text) if text.strip() else ""
        except yaml.YAMLError:
            value = text
        node = out
        parts = key.strip().split(".")
        for depth, part in enumerate(parts[:-1]):
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                problems.append(Problem("--set", item, f"cannot set inside {'.'.join(parts[:depth + 1])}, "
                                        "which is not a mapping"))
                break
            node = child
        else:
            node[parts[-1]] = value
    if problems:
        raise InputError(problems)
    return out


def raw_spec(
    path: str | os.PathLike[str],
    overrides: Sequence[str] = (),
    *,
    storage: str | None = None,
    study: str | None = None,
    n_trials: int | None = None,
    artifacts: str | None = None,
) -> dict[str, Any]:
    """The spec file as a mapping, with ``--set`` overrides and the CLI's options applied, not
    yet validated (:func:`validate` does that; under Ray Client the cluster does).

    ``storage``, ``study``, ``n_trials`` and ``artifacts`` are the CLI's ``--storage``,
    ``--study``, ``--n-trials`` and ``--artifacts``: they override ``storage``, ``name``,
    ``run_cap`` and ``artifacts``.

    Raises:
        InputError: the file cannot be read or parsed, or an override is malformed.
    """
    raw = apply_overrides(read_yaml(path), overrides)
    for key, value in (("storage", storage), ("name", study), ("run_cap", n_trials), ("artifacts", artifacts)):
        if value is not None:
            raw[key] = value
    raw.setdefault("name", Path(path).stem)
    return raw
