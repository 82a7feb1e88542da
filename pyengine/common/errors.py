"""Errors shared across layers."""

from __future__ import annotations


class SourceError(OSError):
    """A source (or another object store, such as the fleet's bucket) cannot be resolved, read
    or written.

    ``transient`` is true for failures worth retrying (a dropped connection, a timeout);
    false for those that will fail again the same way (missing object, access denied).
    """

    def __init__(self, message: str, *, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient

    def __str__(self) -> str:
        return str(self.args[0])
