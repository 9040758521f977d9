"""Problems with the user's input, as one line each: pydantic's errors turned into
:class:`sweeper.errors.Problem` (the key's path, the value, the rule) with did-you-mean hints,
and :func:`same_value`, whether a value read back from a study is the one sweeper stored."""

from __future__ import annotations

import difflib
import json
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from sweeper.errors import Problem


def did_you_mean(word: str, options: Sequence[str]) -> str:
    """``; did you mean 'x'?`` for the option closest to ``word`` (difflib, cutoff 0.6), else ``""``."""
    close = difflib.get_close_matches(word, list(options), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def without(raw: Mapping[str, Any], locs: Sequence[tuple[int | str, ...]]) -> dict[str, Any]:
    """``raw`` less the keys the errors point at: one parameter, or a whole top-level key."""
    out = dict(raw)
    params = dict(out.get("parameters") or {}) if isinstance(out.get("parameters"), dict) else None
    for loc in locs:
        if loc and loc[0] == "parameters" and len(loc) > 1 and params is not None:
            params.pop(str(loc[1]), None)
        elif loc:
            out.pop(str(loc[0]), None)
    if params is not None and "parameters" in out:
        out["parameters"] = params
    return out


def pydantic_problems(err: ValidationError, model: type[BaseModel]) -> list[Problem]:
    """One problem per path of a pydantic error on ``model`` (unknown keys with did-you-mean and
    the keys known there)."""
    problems = []
    for e in err.errors():
        loc = [str(p) for p in e["loc"]]
        # pydantic appends the union member it tried ("int", "float") to the path.
        while loc and loc[-1] in ("int", "float", "str", "bool", "list[any]", "is-instance[int]"):
            loc.pop()
        path = ".".join(loc)
        value = e.get("input")
        if e["type"] == "extra_forbidden":
            known = _known_keys(loc[:-1], model)
            rule = "is not a known key" + did_you_mean(loc[-1], known)
            if known:
                rule += f" (known here: {', '.join(known)})"
            problems.append(Problem(path, value, rule))
        elif e["type"] == "missing":
            problems.append(Problem(path, None, "is required"))
        else:
            msg = e["msg"]
            msg = msg[0].lower() + msg[1:] if msg else msg
            problems.append(Problem(path, value, msg))
    # one line per path: a union reports each member's complaint
    seen: dict[str, Problem] = {}
    for p in problems:
        seen.setdefault(p.path, p)
    return list(seen.values())


def _known_keys(loc: Sequence[str], model: type[BaseModel]) -> list[str]:
    """The keys allowed at ``loc`` of the spec (for did-you-mean)."""
    node: Any = model
    for part in loc:
        if isinstance(node, type) and issubclass(node, BaseModel):
            field = node.model_fields.get(part)
            if field is None:
                return []
            node = field.annotation
        elif typing.get_origin(node) is dict:
            node = typing.get_args(node)[1]
        else:
            return []
        node = _unwrap_optional(node)
    if isinstance(node, type) and issubclass(node, BaseModel):
        return list(node.model_fields)
    return []


def _unwrap_optional(tp: Any) -> Any:
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    if typing.get_origin(tp) in (typing.Union, types.UnionType) and len(args) == 1:
        return args[0]
    return tp


def same_value(got: Any, value: Any) -> bool:
    """``got`` (from a stored config) is ``value`` (decoded from the draw, or a study's stored
    spec), as JSON. A declared file parameter's path and a data root are made absolute in the
    config (:meth:`trainers.base.Param.resolve`), so a relative ``value`` also matches an absolute
    ``got`` that ends in it, or that it names from the current folder (``.``, whose tail is empty,
    or a link ``got`` was resolved through); an absolute ``value`` matches itself only."""
    if json.dumps(got, sort_keys=True) == json.dumps(value, sort_keys=True):
        return True
    if not (isinstance(got, str) and isinstance(value, str) and Path(got).is_absolute()):
        return False
    named = Path(value).expanduser()
    if str(named.resolve()) == got:
        return True
    tail = [part for part in named.parts if part not in (".", "..")]
    return bool(tail) and list(Path(got).parts[-len(tail):]) == tail
