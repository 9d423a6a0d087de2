"""Errors the user can fix, with the place in their file that needs fixing.

Bad input never produces a traceback: the CLI catches `InputError`, prints
`file:line:col: message` and exits with code 2.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Problem:
    """One thing wrong in an input file. line and col are 1-based; 0 means unknown."""

    message: str
    file: str = ""
    line: int = 0
    col: int = 0

    def __str__(self) -> str:
        if not self.file and not self.line:
            return self.message
        where = self.file or "<input>"
        if self.line:
            where += f":{self.line}"
            if self.col:
                where += f":{self.col}"
        return f"{where}: {self.message}"


class InputError(Exception):
    """Input the user gave (a config, a tasks file, an argument) is invalid.

    Holds one or more problems so that a file with several mistakes is reported whole.
    """

    def __init__(self, problems: list[Problem] | Problem | str):
        if isinstance(problems, str):
            problems = [Problem(problems)]
        elif isinstance(problems, Problem):
            problems = [problems]
        self.problems: list[Problem] = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


class GitswarmError(Exception):
    """A failure that is not the user's input (git state, a lost lease, ...); exit 1."""


@dataclass
class Warnings:
    """Warnings collected while loading input (keys accepted but not acted on)."""

    items: list[Problem] = field(default_factory=list)

    def add(self, message: str, file: str = "", line: int = 0, col: int = 0) -> None:
        self.items.append(Problem(message, file, line, col))

    def __iter__(self):
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)
