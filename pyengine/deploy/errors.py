"""Exceptions of the deploy layer (no dependency on the native core)."""

from __future__ import annotations


class GroupError(ValueError):
    """A group file breaks the schema. ``problems`` lists each as ``field.path: message``."""

    def __init__(self, where: str, problems: list[str]) -> None:
        self.where = where
        self.problems = list(problems)
        lines = "\n".join(f"  {p}" for p in self.problems)
        super().__init__(f"{where}: {len(self.problems)} problem(s) in the group:\n{lines}")


class UnpackError(ValueError):
    """A package cannot be unpacked safely (hostile, damaged or of an unsupported format)."""


class DeployError(RuntimeError):
    """A deployment, rollback or reset could not be done; the message says why and what to do."""


class DeployBusyError(DeployError):
    """Another deploy holds the root's lock."""
