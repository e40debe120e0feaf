"""User-facing errors: one line, naming the file and the problem, never a traceback."""
from __future__ import annotations

from pathlib import Path


class CliscError(Exception):
    """An error the user can fix (bad input, missing data or weights); the CLI prints it as one line."""


class DataError(CliscError):
    """A data file is missing, unreadable or inconsistent."""

    def __init__(self, path: str | Path, problem: str):
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class WeightsError(CliscError):
    """Pretrained weights are missing, unreachable or fail their checksum."""
