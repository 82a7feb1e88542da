"""Where a model may be installed: destinations refused outright (system directories, root's
home, top-level directories), the deploying user's right to create them, and whether a
function's user can reach them."""

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


def traversal_problem(dest: str, groups: tuple[int, ...] = ()) -> Optional[str]:
    """Why another user (a function's, with supplementary ``groups``) cannot reach ``dest``, or
    None: each existing directory on the way needs the search (x) bit for others, or for its
    group when that group is one of ``groups``."""
    anc = existing_ancestor(os.path.dirname(dest.rstrip("/")) or "/")
    path = "/"
    for part in [p for p in anc.split("/") if p]:
        path = os.path.join(path, part)
        try:
            st = os.stat(path)
        except OSError:
            return None
        if not stat.S_ISDIR(st.st_mode):
            return None
        mode = st.st_mode
        if mode & stat.S_IXOTH or (st.st_gid in groups and mode & stat.S_IXGRP):
            continue
        return (
            f"{path} ({_owner_text(st)}) cannot be traversed by a function's user: a core run "
            "as root runs each function as a user of its own, which needs the search (x) "
            f"permission on every directory on the way; run `chmod o+x {path}` (or give the "
            "resource an owner group that may search it), or choose a destination such as "
            "/srv/models/NAME"
        )
    return None


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


def traversal_warnings(group: Group) -> list[str]:
    """Model destinations granted to a function that the function's user cannot reach, when
    this process runs as root (a core run as root runs each function as a user of its own with
    the resources' owner groups; an unprivileged core runs them as itself, which deployed)."""
    if os.geteuid() != 0:
        return []
    used = {fr.id for f in group.functions for fr in f.resources}
    out = []
    for i, r in enumerate(group.resources):
        if r.model is None or not r.model.destination or r.id not in used:
            continue
        groups = (r.model.owner.group,) if r.model.owner and r.model.owner.group is not None else ()
        problem = traversal_problem(r.model.destination, groups)
        if problem:
            out.append(f"resources[{i}].model.destination: {r.model.destination!r}: {problem}")
    return out


def real_destination(dest: str) -> str:
    """``dest`` with its parent resolved (every symbolic link on the way followed, as far as
    it exists); the destination itself, a link pyengine manages, is not followed."""
    parent, name = os.path.split(dest.rstrip("/") or "/")
    return os.path.join(os.path.realpath(parent), name) if name else "/"
