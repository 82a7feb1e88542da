"""Whether an installed version is still as it was installed: content digests and ctimes."""

from __future__ import annotations

import json
import os
from typing import Optional

from pyengine.deploy.state import State
from pyengine.deploy.tree import SKIP_DIRS, content_digest


def changed_since(path: str, t: float) -> Optional[str]:
    """The first entry of the tree at ``path`` (itself included) whose inode changed after the
    time ``t`` (written, truncated, chmod-ed, an entry added or removed below it); None when none
    did or the tree is gone."""
    for dirpath, dirnames, filenames in os.walk(path):
        for p in (dirpath, *(os.path.join(dirpath, n) for n in dirnames + filenames)):
            try:
                if os.lstat(p).st_ctime > t:
                    return p
            except FileNotFoundError:
                return p
    return None


def version_digest(kind: str, path: str) -> str:
    """The content digest recorded for an installed version (:func:`content_digest`; a
    function's ``__pycache__`` is left out: Python may write it beside the code it imports)."""
    return content_digest(path, skip_dirs=SKIP_DIRS if kind == "function" else ())


def changed_in_place(state: State, kind: str, key: str, version: str, path: str,
                     thorough: bool = False) -> Optional[str]:
    """What changed in the installed version ``path`` since it was installed, or None when it
    is as installed (or was installed before digests were recorded).

    The cheap test first: no inode in the tree changed since the version was made (a write, a
    chmod, an entry added or removed moves its ctime, which no user can set back) means it is
    as installed. Otherwise, or with ``thorough`` (which also finds what a ctime cannot show,
    such as damage below the filesystem), its content digest is compared with the recorded one.
    """
    row = state.version(kind, key, version)
    if row is None or not row["digest"]:
        return None
    changed = changed_since(path, row["created"]) if row["created"] else path
    if changed is None and not thorough:
        return None
    try:
        now = version_digest(kind, path)
    except OSError as exc:
        return f"{exc.filename or path} cannot be read ({exc.strerror or exc})"
    if now == row["digest"]:
        return None
    where = f" ({changed} changed after it was installed)" if changed else ""
    return (f"its content digest is {now[:16]}..., not the {row['digest'][:16]}... recorded "
            f"when it was installed{where}")


def writable_by_function(spec_json: Optional[str]) -> bool:
    """Whether an installed model's recorded spec grants a function rw (its content is then
    the function's to change, not compared)."""
    try:
        owner = json.loads(spec_json or "{}").get("owner")
    except (ValueError, AttributeError):
        return False
    return isinstance(owner, list) and len(owner) == 2 and owner[1] == "rw"
