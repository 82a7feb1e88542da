"""Where a model may be installed: the deploying user's right to create a destination, and its
real path (the places refused outright are :func:`pyengine.common.paths.denied_destination`;
whether a function's user can reach it is :mod:`pyengine.deploy.reach`)."""

from __future__ import annotations

import os
import pwd
import stat
from typing import Optional

from pyengine.deploy.group import Group


def _user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def _owner_text(st: os.stat_result) -> str:
    return f"mode {stat.S_IMODE(st.st_mode):04o}, owner {st.st_uid}:{st.st_gid}"


def existing_ancestor(path: str) -> str:
    """The nearest directory entry on ``path``'s way that exists (``path`` itself when it does),
    every symbolic link before it followed."""
    path = os.path.realpath(path)
    while not os.path.lexists(path):
        path = os.path.dirname(path)
    return path


def placement_problem(dest: str) -> Optional[str]:
    """Why the deploying user (this process) cannot install at ``dest``, or None: the deploy
    writes the destination's link and its version store in its parent, making the parent (and
    what is missing above it) first, so the nearest existing directory on the way must be one
    this user may write in. Errors carry the fix, not a later ``[Errno 13]``."""
    parent = os.path.dirname(dest.rstrip("/")) or "/"
    anc = existing_ancestor(parent)
    try:
        st = os.stat(anc)
    except OSError as exc:
        return f"{anc} on its way cannot be examined ({exc.strerror}); check the path"
    if not stat.S_ISDIR(st.st_mode):
        return f"{anc} on its way is not a directory; choose another destination"
    if os.access(anc, os.W_OK | os.X_OK):
        return None
    uid = os.geteuid()
    what = (
        f"cannot create {parent}: {anc}, the nearest directory on the way that exists, is not "
        f"writable by it ({_owner_text(st)})"
        if anc != os.path.realpath(parent)
        else f"cannot write in {parent} ({_owner_text(st)})"
    )
    return (
        f"the deploying user {_user_name(uid)} (uid {uid}) {what}; create the directory for "
        f"this user first (`sudo install -d -o {_user_name(uid)} {parent}`), or choose a "
        "destination under a directory it owns"
    )


def destination_problems(group: Group) -> list[str]:
    """Every model destination this deploying user cannot install at, as ``field: problem``
    (checked by :func:`pyengine.deploy.deploy` before anything is made)."""
    out = []
    for i, r in enumerate(group.resources):
        if r.model is not None and r.model.destination:
            problem = placement_problem(r.model.destination)
            if problem:
                out.append(f"resources[{i}].model.destination: {r.model.destination!r}: "
                           f"{problem}")
    return out


def real_destination(dest: str) -> str:
    """``dest`` with its parent resolved (every symbolic link on the way followed, as far as
    it exists); the destination itself, a link pyengine manages, is not followed."""
    parent, name = os.path.split(dest.rstrip("/") or "/")
    return os.path.join(os.path.realpath(parent), name) if name else "/"
