"""What the root keeps private: files only the core's user reads (:func:`private_file`), and
functions' environments, kept out of the state database.

A function's ``environment`` often holds secrets (API keys, broker passwords). The group as
recorded in ``state.db`` keeps none of it: each deployment writes each function's environment to
its own file ``ROOT/environments/env-<random>.json`` (mode 0600 in a 0700 directory, owned by the
core's user) and the recorded group names that file under ``"environments"``. What this protects
against: a copy or backup of ``state.db``, and anyone who can read the database but not the
root's private files. It does not protect against root on the machine or the core's own user,
who can read the files (as the core must, to hand the environment to the function).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import stat
from typing import Any, Iterable, Optional

from pyengine.deploy.errors import DeployError

ENV_DIR = "environments"
#: The key of the recorded group mapping a function's name to its environment file.
REFS = "environments"


def private_file(path: str, owner_of: Optional[str] = None) -> int:
    """Open (creating) ``path`` as a file only its owner can read or write (0600 whatever the
    umask; an existing file is tightened), never through a symbolic link. Where this process is
    root and ``owner_of`` (a directory) belongs to another user, the file is given to that user,
    so a core running as the root directory's owner can read it. Returns the descriptor."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        if stat.S_IMODE(os.fstat(fd).st_mode) != 0o600:
            os.fchmod(fd, 0o600)
        if owner_of is not None and os.geteuid() == 0:
            st = os.stat(owner_of)
            if st.st_uid != 0:
                os.fchown(fd, st.st_uid, st.st_gid)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _env_dir(root: str) -> str:
    d = os.path.join(root, ENV_DIR)
    os.makedirs(d, mode=0o700, exist_ok=True)
    os.chmod(d, 0o700)
    st = os.stat(root)
    if os.geteuid() == 0 and st.st_uid != 0:
        os.chown(d, st.st_uid, st.st_gid)
    return d


def store_environments(root: str, group: dict[str, Any]) -> dict[str, Any]:
    """``group`` (a :meth:`Group.to_dict`) as it is recorded: each function's non-empty
    environment moved to its own private file (written and fsynced before this returns)."""
    out = dict(group)
    functions = []
    refs: dict[str, str] = {}
    for f in group.get("functions", []):
        env = f.get("environment") or {}
        if env:
            d = _env_dir(root)
            name = f"env-{secrets.token_hex(16)}.json"
            fd = private_file(os.path.join(d, name), root)
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump({"function": f["name"], "environment": env}, fh)
                fh.flush()
                os.fsync(fh.fileno())
            refs[f["name"]] = name
            f = {**f, "environment": {}}
        functions.append(f)
    if refs:
        fd = os.open(_env_dir(root), os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    out["functions"] = functions
    out[REFS] = refs
    return out


def load_environments(root: str, recorded: dict[str, Any]) -> dict[str, Any]:
    """Inverse of :func:`store_environments`: the group with each function's environment read
    back (groups recorded before environments left the database carry theirs inline)."""
    refs = recorded.get(REFS) or {}
    out = {k: v for k, v in recorded.items() if k != REFS}
    functions = []
    for f in recorded.get("functions", []):
        name = refs.get(f["name"])
        if name:
            path = os.path.join(root, ENV_DIR, os.path.basename(name))
            try:
                with open(path, encoding="utf-8") as fh:
                    env = json.load(fh)["environment"]
            except FileNotFoundError:
                raise DeployError(
                    f"the environment of function {f['name']!r} ({path}) is missing; deploy "
                    "the group again"
                ) from None
            except PermissionError:
                raise DeployError(
                    f"the environment of function {f['name']!r} ({path}) is readable by its "
                    "owner only; run as the user that owns the root (the core's)"
                ) from None
            f = {**f, "environment": env}
        functions.append(f)
    out["functions"] = functions
    return out


def referenced_environments(recorded_groups: Iterable[Optional[str]]) -> set[str]:
    """The environment files named by these recorded groups (``group_json`` texts)."""
    names: set[str] = set()
    for text in recorded_groups:
        if text:
            with contextlib.suppress(ValueError, AttributeError):
                names.update((json.loads(text).get(REFS) or {}).values())
    return names


def remove_unreferenced_environments(root: str, keep: set[str]) -> None:
    """Delete environment files no kept deployment names (the lock must be held)."""
    d = os.path.join(root, ENV_DIR)
    if not os.path.isdir(d):
        return
    for n in os.listdir(d):
        if n not in keep:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(d, n))
