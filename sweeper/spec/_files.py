"""Reading a spec file: its YAML, the ``--set`` overrides and the CLI's options, not yet validated."""

from __future__ import annotations

import copy
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from sweeper.defaults import default_storage
from sweeper.errors import InputError, Problem

# A spec is a few kilobytes: refuse what no spec is, before parsing it.
MAX_SPEC_BYTES = 1_000_000
# YAML nodes once aliases are expanded (each use of `*name` counts the whole anchored node) and
# their nesting: the bounds keep a "billion laughs" file or a deep nest from exhausting memory.
MAX_YAML_NODES = 200_000
MAX_YAML_DEPTH = 100


class _Refused(yaml.YAMLError):
    """YAML that parses but is refused (duplicate key, too many nodes, too deep), with the reason."""


class _SpecLoader(yaml.SafeLoader):
    """PyYAML's safe loader that refuses duplicate keys, deep nesting and alias bombs.

    The pure-Python loader on purpose: libyaml's composer recurses in C and crashes on deep nests.
    """

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        self._depth += 1
        try:
            if self._depth > MAX_YAML_DEPTH:
                line = self.peek_event().start_mark.line + 1
                raise _Refused(f"nests deeper than {MAX_YAML_DEPTH} levels (line {line})")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def get_single_node(self) -> Any:
        node = super().get_single_node()
        if node is not None:
            _check_expansion(node)
        return node

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, int] = {}
            for key_node, _ in node.value:
                if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node)
                line = key_node.start_mark.line + 1
                if key in seen:
                    raise _Refused(f"key {key!r} appears twice in one mapping (lines {seen[key]} and {line}); "
                                   "keep one (YAML would silently keep the last)")
                seen[key] = line
        return super().construct_mapping(node, deep)


def _check_expansion(root: yaml.Node) -> None:
    """Refuse a node graph whose expansion (aliases counted at each use) exceeds the bounds, or
    that holds itself (a recursive alias). Iterative: no recursion on hostile input."""
    size: dict[int, int] = {}
    depth: dict[int, int] = {}
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    active: set[int] = set()
    while stack:
        node, done = stack.pop()
        children: list[yaml.Node] = []
        if isinstance(node, yaml.SequenceNode):
            children = list(node.value)
        elif isinstance(node, yaml.MappingNode):
            children = [n for pair in node.value for n in pair]
        if done:
            active.discard(id(node))
            size[id(node)] = 1 + sum(size[id(c)] for c in children)
            depth[id(node)] = 1 + max((depth[id(c)] for c in children), default=0)
            if size[id(node)] > MAX_YAML_NODES:
                raise _Refused(f"expands to more than {MAX_YAML_NODES:,} values (an alias *name counts its "
                               f"anchor's values at each use; line {node.start_mark.line + 1})")
            if depth[id(node)] > MAX_YAML_DEPTH:
                raise _Refused(f"nests deeper than {MAX_YAML_DEPTH} levels once its aliases are expanded "
                               f"(line {node.start_mark.line + 1})")
            continue
        if id(node) in size:
            continue
        if id(node) in active:
            raise _Refused(f"holds an alias to a node that contains it (line {node.start_mark.line + 1})")
        active.add(id(node))
        stack.append((node, True))
        stack += [(c, False) for c in children if id(c) not in size]


def _load(text: str) -> Any:
    """YAML text through :class:`_SpecLoader`."""
    loader = _SpecLoader(text)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


def read_yaml(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The mapping in a YAML file (at most :data:`MAX_SPEC_BYTES`, UTF-8), read with PyYAML's safe
    loader, refusing duplicate keys and alias bombs (:class:`_SpecLoader`).

    Raises:
        InputError: the file is missing, unreadable, too large or not UTF-8; not YAML, or YAML
            refused (a duplicate key, too many values or too deep); or not a mapping.
    """
    p = Path(path)
    try:
        with p.open("rb") as f:
            data = f.read(MAX_SPEC_BYTES + 1)
    except OSError as err:
        raise InputError(Problem(str(p), None, f"cannot be read: {err.strerror or err}")) from err
    if len(data) > MAX_SPEC_BYTES:
        raise InputError(f"{p}: is larger than {MAX_SPEC_BYTES:,} bytes, the most a spec may be")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise InputError(f"{p}: is not UTF-8 text (byte 0x{data[err.start]:02x} at offset {err.start}); "
                         "save it as UTF-8") from None
    try:
        raw = _load(text)
    except _Refused as err:
        raise InputError(f"{p}: {err}") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise InputError(f"{p}: is not valid YAML{where}: {problem}") from None
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
            value = _load(text) if text.strip() else ""
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
    ``run_cap`` and ``artifacts``. A spec without ``storage`` (and no ``--storage``) gets
    ``SWEEPER_STORAGE`` when it is set (:func:`sweeper.defaults.default_storage`).

    Raises:
        InputError: the file cannot be read or parsed, or an override is malformed.
    """
    raw = apply_overrides(read_yaml(path), overrides)
    for key, value in (("storage", storage), ("name", study), ("run_cap", n_trials), ("artifacts", artifacts)):
        if value is not None:
            raw[key] = value
    raw.setdefault("storage", default_storage())
    raw.setdefault("name", Path(path).stem)
    return raw
