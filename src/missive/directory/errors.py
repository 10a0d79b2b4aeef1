"""Errors of the directory services: each message names the field and what to fix."""

from __future__ import annotations

from missive.errors import MissiveError, NotFound

__all__ = ["Conflict", "DirectoryError", "InvalidField", "NotFound"]


class DirectoryError(MissiveError, ValueError):
    """A directory operation cannot be done as asked; ``str(err)`` says why."""


class InvalidField(DirectoryError):
    """One input field is invalid. ``field`` is its name (CLI option / CSV column)."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


class Conflict(DirectoryError):
    """The object already exists, or its state forbids the change asked for."""
