"""Errors that tell the user what is wrong, where, and for which subject."""

from __future__ import annotations


class AgeMapperError(Exception):
    """Base class for every error this package raises on purpose."""


class InputDataError(AgeMapperError):
    """A problem with one input file, named by subject, file and problem."""

    def __init__(self, problem: str, *, path=None, subject=None, contrast=None):
        self.problem = problem
        self.path = None if path is None else str(path)
        self.subject = None if subject is None else str(subject)
        self.contrast = contrast
        where = []
        if self.subject is not None:
            where.append(f"subject {self.subject}")
        if contrast is not None:
            where.append(f"contrast {contrast}")
        if self.path is not None:
            where.append(f"file {self.path}")
        super().__init__(f"{', '.join(where)}: {problem}" if where else problem)


class ConfigError(AgeMapperError):
    """The configuration or a table it names is inconsistent."""
