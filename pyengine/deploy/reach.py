"""Whether each function's user can reach the model destinations granted to it, checked by the
deploy before anything is made (issue 20: "one that the function's user cannot traverse" is
refused at validation).

A core run as root runs each function's workers as a user of their own (core/policy.py): the
group file's ``run_as`` uid and gid when given, else a uid the core allocates from its range,
which owns no file, so the permission bits for others apply to it. Its supplementary groups are
the owner groups of its models and the groups owning its devices and volumes (never group 0).
All of that is known at deploy time except the allocated uid's number, which does not matter:
it owns nothing on the way. So the deploy, when it runs as root (the user a root core shares),
checks every directory on the way to each granted destination with that user's permission
class, both those that exist and those it would make under the current umask. An unprivileged
core runs functions as itself, the user that deployed, so nothing is checked then.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from typing import Optional

from pyengine.deploy.destinations import existing_ancestor
from pyengine.deploy.group import Function, Group

#: The search (execute) bit of each permission class.
_SEARCH = {"owner": stat.S_IXUSR, "group": stat.S_IXGRP, "others": stat.S_IXOTH}
_CHMOD = {"owner": "u", "group": "g", "others": "o"}


@dataclass(frozen=True)
class FunctionUser:
    """Who a function's workers run as under a root core: ``uid``/``gid`` from ``run_as``, or
    None for the user of its own the core allocates; ``groups`` its supplementary groups."""

    uid: Optional[int]
    gid: Optional[int]
    groups: frozenset[int]

    def describe(self) -> str:
        extra = f", supplementary groups {sorted(self.groups)}" if self.groups else ""
        if self.uid is not None:
            return f"uid {self.uid} gid {self.gid} (its run_as{extra})"
        return ("a user of its own (a uid the core allocates, which owns no file, so the "
                f"permission for others applies{extra})")

    def permission_class(self, uid: int, gid: int) -> str:
        """Which permission bits of a file owned by ``uid``:``gid`` apply to this user."""
        if self.uid is not None and uid == self.uid:
            return "owner"
        if gid == self.gid or gid in self.groups:
            return "group"
        return "others"


def function_user(group: Group, f: Function) -> FunctionUser:
    """The user function ``f`` of ``group`` runs as under a root core (as core/policy.py
    plans it)."""
    groups: set[int] = set()
    for fr in f.resources:
        r = group.resource(fr.id)
        if r.model is not None and r.model.owner is not None and r.model.owner.group is not None:
            groups.add(r.model.owner.group)
        node = r.device.path if r.device is not None else r.volume.path if r.volume else None
        if node is not None:
            try:
                gid = os.stat(node).st_gid
            except OSError:
                continue
            if gid != 0:  # the core never adds group 0, which owns much of the system
                groups.add(gid)
    run_as = f.run_as
    return FunctionUser(run_as.uid if run_as else None, run_as.gid if run_as else None,
                        frozenset(groups))


def current_umask() -> int:
    """This process's umask, read without changing it (Linux 4.7+), else by setting it back."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def reach_problem(dest: str, user: FunctionUser, name: str, umask: int) -> Optional[str]:
    """Why function ``name``'s ``user`` could not reach ``dest`` once deployed, or None: a
    directory on the way, existing or to be made by the deploy with mode 0777 & ~``umask``,
    without the search (x) permission of the user's class."""
    parent = os.path.dirname(dest.rstrip("/")) or "/"
    anc = existing_ancestor(parent)
    path = "/"
    for part in [p for p in anc.split("/") if p]:
        path = os.path.join(path, part)
        try:
            st = os.stat(path)
        except OSError:
            return None  # placement_problem reports what cannot be examined
        if not stat.S_ISDIR(st.st_mode):
            return None
        cls = user.permission_class(st.st_uid, st.st_gid)
        if not st.st_mode & _SEARCH[cls]:
            return (f"function {name!r} runs as {user.describe()}, which cannot traverse "
                    f"{path} (mode {stat.S_IMODE(st.st_mode):04o}, owner {st.st_uid}:"
                    f"{st.st_gid}): it lacks the search (x) permission for {cls}; run "
                    f"`chmod {_CHMOD[cls]}+x {path}`, or choose a destination such as "
                    "/srv/models/NAME")
    # The directories the deploy makes on the way belong to this (root) process.
    mode = 0o777 & ~umask
    made = parent
    missing = []
    while os.path.realpath(made) != anc and made not in ("/", ""):
        missing.append(made)
        made = os.path.dirname(made)
    cls = user.permission_class(os.geteuid(), os.getegid())
    if missing and not mode & _SEARCH[cls]:
        first = missing[-1]
        return (f"function {name!r} runs as {user.describe()}, which could not traverse "
                f"{first}: the deploy would make it with mode {mode:04o} (umask {umask:04o}), "
                f"without the search (x) permission for {cls}; create it first (`install -d "
                f"-m 0755 {first}`), or deploy with a umask such as 022")
    return None


def reach_problems(group: Group) -> list[str]:
    """Every model destination granted to a function whose user could not reach it, as
    ``field: problem`` (checked by :func:`pyengine.deploy.deploy` before anything is made)."""
    if os.geteuid() != 0:
        return []
    umask = current_umask()
    index = {r.id: i for i, r in enumerate(group.resources)}
    out = []
    for f in group.functions:
        user = function_user(group, f)
        if user.uid == 0:
            continue  # root: run_as 0, which the core must allow; it searches any directory
        for fr in f.resources:
            r = group.resource(fr.id)
            if r.model is None or not r.model.destination:
                continue
            problem = reach_problem(r.model.destination, user, f.name, umask)
            if problem:
                out.append(f"resources[{index[r.id]}].model.destination: "
                           f"{r.model.destination!r}: {problem}")
    return out
