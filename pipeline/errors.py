"""Errors and skip records: bad input is reported with the file and the problem, never lost."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path


class InputError(Exception):
    """A problem with one input file, named in the message as ``path: problem``."""

    def __init__(self, path: str | Path, problem: str) -> None:
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


@dataclass(frozen=True)
class Skip:
    """One input (an image, a label line, a feature) left out, and why.

    Attributes:
        path: the file the problem is in (with ``:line`` or ``#feature`` where that helps).
        stage: the step that skipped it (``discover``, ``read``, ``annotations``, ``tile``...).
        reason: a short human-readable reason.
        kind: what was skipped: ``image``, ``annotation`` or ``tile``.
    """

    path: str
    stage: str
    reason: str
    kind: str = "image"

    def to_dict(self) -> dict[str, str]:
        return asdict(self)
