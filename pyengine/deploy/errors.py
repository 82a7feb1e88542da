"""Exceptions of the deploy layer (no dependency on the native core)."""

from __future__ import annotations

import os


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


class StateError(DeployError):
    """The state database cannot be used: damaged, emptied, or its filesystem is full. The
    message says which and what to do (``pyengine doctor --repair``)."""


def repair_hint(root: str) -> str:
    """The command that repairs ``root``'s state."""
    return f"run `pyengine doctor --repair --root {root}`"


def state_error(path: str, exc: BaseException) -> StateError:
    """A :class:`StateError` for an SQLite error ``exc`` on the database at ``path``."""
    root = os.path.dirname(path)
    text = str(exc)
    if "full" in text or space_short(root):
        try:
            st = os.statvfs(root)
            avail = f" ({st.f_bavail * st.f_frsize} bytes available)"
        except OSError:
            avail = ""
        return StateError(
            f"{path}: {text}: no space left on the filesystem of {root}{avail}; free some "
            "space (old files, a function's scratch) and try again")
    if "locked" in text or "busy" in text:
        return StateError(f"{path}: {text}: another process holds it; try again")
    if "readonly" in text or "read-only" in text:
        return StateError(f"{path}: {text}: run as the user that owns {root}")
    return StateError(f"{path} is damaged ({text}); {repair_hint(root)} (it restores the copy "
                      "taken after the last deployment, or rebuilds what it can)")


def space_short(root: str) -> bool:
    """Whether the filesystem of ``root`` is (nearly) full: SQLite reports a failed write of
    its side files as a "disk I/O error"."""
    try:
        st = os.statvfs(root)
    except OSError:
        return False
    return st.f_bavail * st.f_frsize < (1 << 20)
