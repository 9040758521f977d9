"""Errors that the CLI turns into one line and an exit code (see :mod:`sweeper.cli`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the user's input.

    Attributes:
        path: the key's dotted path in the spec (``parameters.lr.min``) or the option.
        value: the value received (``None`` when the key is missing).
        rule: what the value must be, and the fix where there is one.
    """

    path: str
    value: object
    rule: str

    def __str__(self) -> str:
        shown = "(missing)" if self.value is None else repr(self.value)
        if len(shown) > 80:
            shown = shown[:77] + "..."
        return f"{self.path}: {shown} {self.rule}"


class SweeperError(Exception):
    """A domain error with a message meant for the user; exit code 1 unless subclassed."""

    exit_code = 1


class InputError(SweeperError):
    """Bad input (spec, option, study name, storage URL): exit code 2, nothing written."""

    exit_code = 2

    def __init__(self, problems: Sequence[Problem | str] | Problem | str):
        self.problems: list[Problem | str] = (
            [problems] if isinstance(problems, (str, Problem)) else list(problems)
        )
        super().__init__("\n".join(str(p) for p in self.problems))

    def __reduce__(self) -> tuple[type[InputError], tuple[list[Problem | str]]]:
        # Pickled across Ray (a driver on the cluster): keep one problem per line.
        return (type(self), (self.problems,))
