"""Exceptions of the deploy layer (no dependency on the native core)."""

from __future__ import annotations


class GroupError(ValueError):
    """A group file breaks the schema. ``problems`` lists each as ``field.path: message``."""

    #: A problem longer than this (a huge value quoted) is shortened in the middle.
    PROBLEM_MAX_CHARS = 600

    def __init__(self, where: str, problems: list[str]) -> None:
        self.where = where
        self.problems = [_shorten(p, self.PROBLEM_MAX_CHARS) for p in problems]
        lines = "\n".join(f"  {p}" for p in self.problems)
        super().__init__(f"{where}: {len(self.problems)} problem(s) in the group:\n{lines}")


def _shorten(text: str, limit: int) -> str:
    """``text`` with its middle (where a quoted value sits) cut to fit ``limit`` characters."""
    if len(text) <= limit:
        return text
    head, tail = limit * 2 // 3, limit // 3
    return f"{text[:head]} ... ({len(text) - head - tail} characters left out) ... {text[-tail:]}"


class UnpackError(ValueError):
    """A package cannot be unpacked safely (hostile, damaged or of an unsupported format)."""


class DeployError(RuntimeError):
    """A deployment, rollback or reset could not be done; the message says why and what to do."""


class DeployBusyError(DeployError):
    """Another deploy holds the root's lock."""
