"""One user per function: uids from a configured range, recorded in the root and on the host.

Where the core runs as root, each function's workers run as a uid of their own (with a primary
gid of the same number), so that file modes separate tenants even where Landlock is missing,
RLIMIT_NPROC counts one function's processes only, and the core can tell a function's
processes apart. The uids come from a range that no account uses (checked against the user and
group databases and the subordinate id ranges of /etc/subuid and /etc/subgid) and are recorded
in ``ROOT/users.json`` (mode 0600) so that a function keeps its uid, and the files it owns,
across core restarts and deployments. A removed function's uid is not given to another one.

Several cores (roots) on one host share the range: each registers its uids in
:data:`HOST_REGISTRY` (under a lock), and no core takes a uid another root holds. The registry
lives in /run: after a reboot each core registers its recorded uids again when it starts, and a
uid two roots recorded is given up by the one that starts second (its function gets a new uid).
A root whose ``users.json`` is gone is dropped from the registry.

An unprivileged core cannot switch users: its functions run as the core's own user.
"""

from __future__ import annotations

import contextlib
import fcntl
import grp
import json
import logging
import os
import pwd
import threading
from dataclasses import dataclass
from typing import Any, Iterator

log = logging.getLogger("pyengine.core")

#: The record of allocated uids in the core's root.
USERS_FILE = "users.json"


@dataclass(frozen=True)
class UidRange:
    """The uids functions may get: ``first`` to ``first + count - 1``.

    The default, 70000-99999, lies in the range systemd leaves unused (65536-524287), above
    nobody (65534) and below the first subordinate ids ``useradd`` hands out (100000).
    """

    first: int = 70000
    count: int = 30000

    def __contains__(self, uid: object) -> bool:
        return isinstance(uid, int) and self.first <= uid < self.first + self.count

    def __str__(self) -> str:
        return f"{self.first}-{self.first + self.count - 1}"


def _subordinate_ranges() -> list[tuple[int, int]]:
    """(first, count) of every range in /etc/subuid and /etc/subgid (user namespaces map them)."""
    out = []
    for path in ("/etc/subuid", "/etc/subgid"):
        try:
            with open(path) as fh:
                lines = fh.read().splitlines()
        except OSError:
            continue
        for line in lines:
            parts = line.split(":")
            if len(parts) == 3 and parts[1].isdigit() and parts[2].isdigit():
                out.append((int(parts[1]), int(parts[2])))
    return out


def id_in_use(uid: int) -> str:
    """What already uses ``uid`` as a user id, group id or subordinate id; "" when nothing."""
    try:
        return f"user {pwd.getpwuid(uid).pw_name!r}"
    except KeyError:
        pass
    try:
        return f"group {grp.getgrgid(uid).gr_name!r}"
    except KeyError:
        pass
    for first, count in _subordinate_ranges():
        if first <= uid < first + count:
            return f"the subordinate ids {first}-{first + count - 1} (/etc/subuid, /etc/subgid)"
    return ""


#: The host's registry of every root's function uids (see the module docstring).
HOST_REGISTRY = "/run/pyengine/function-uids.json"


class FunctionUsers:
    """The uid (and gid, the same number) of each function of the core in ``root``.

    Parameters
    ----------
    root
        The core's root; the allocation is kept in ``root/users.json``.
    uid_range
        Where new uids come from.
    registry
        The host-wide registry of the uids every root holds.

    Raises
    ------
    ValueError
        ``users.json`` or the registry is not a record of uids.
    """

    def __init__(self, root: str, uid_range: UidRange = UidRange(),
                 registry: str = HOST_REGISTRY) -> None:
        self.root = os.path.abspath(root)
        self.path = os.path.join(self.root, USERS_FILE)
        self.uid_range = uid_range
        self.registry = registry
        self._lock = threading.Lock()
        self._warned = False
        self._uids = _load(self.path)
        with self._host() as others:
            for name, uid in list(self._uids.items()):
                owner = others.get(uid)
                if owner is not None:
                    log.warning("function %s: its uid %d is held by %s on this host; it gets "
                                "a new one", name, uid, owner)
                    del self._uids[name]

    @contextlib.contextmanager
    def _host(self) -> Iterator[dict[int, str]]:
        """Hold the registry's lock; yields uid -> the root holding it, for other roots (live
        ones: a root without users.json is dropped), and records this root's uids on exit."""
        try:
            os.makedirs(os.path.dirname(self.registry), mode=0o700, exist_ok=True)
            fd = os.open(self.registry + ".lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        except OSError as exc:
            if not self._warned:
                log.warning("no host registry of function uids (%s): another core on this host "
                            "with the same uid range may give its functions the same uids", exc)
                self._warned = True
            yield {}
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                with open(self.registry) as fh:
                    roots = {str(r): {str(k): int(v) for k, v in fns.items()}
                             for r, fns in json.load(fh).items()}
            except FileNotFoundError:
                roots = {}
            except (OSError, ValueError, AttributeError) as exc:
                raise ValueError(f"{self.registry} is not a registry of function uids ({exc}); "
                                 "remove it (every core registers its uids again at start)"
                                 ) from exc
            roots = {r: fns for r, fns in roots.items()
                     if r != self.root and os.path.exists(os.path.join(r, USERS_FILE))}
            yield {uid: f"function {name!r} of the root {r}" for r, fns in roots.items()
                   for name, uid in fns.items()}
            if self._uids:
                roots[self.root] = dict(self._uids)
            _save(self.registry, roots)
        finally:
            os.close(fd)

    def user_for(self, function: str) -> tuple[int, int]:
        """The (uid, gid) ``function`` runs as: its recorded uid, else the lowest free one of the
        range (then recorded). A recorded uid that an account took since is replaced, with a
        warning.

        Raises
        ------
        RuntimeError
            Every uid of the range is taken; the message names the range.
        """
        with self._lock:
            uid = self._uids.get(function)
            if uid is not None:
                clash = id_in_use(uid)
                if not clash:
                    return uid, uid
                log.warning("function %s: its uid %d is now used by %s; it gets a new one",
                            function, uid, clash)
            with self._host() as others:
                taken = set(self._uids.values()) | set(others)
                for candidate in range(self.uid_range.first,
                                       self.uid_range.first + self.uid_range.count):
                    if candidate not in taken and not id_in_use(candidate):
                        self._uids[function] = candidate
                        _save(self.path, {"functions": self._uids})
                        return candidate, candidate
            raise RuntimeError(f"no free uid left for function {function!r} in the range "
                               f"{self.uid_range} (functions.uid_first / functions.uid_count "
                               "of the core's configuration)")


def _load(path: str) -> dict[str, int]:
    try:
        with open(path) as fh:
            raw = json.load(fh)
        return {str(k): int(v) for k, v in raw.get("functions", {}).items()}
    except FileNotFoundError:
        return {}
    except (OSError, ValueError, AttributeError) as exc:
        raise ValueError(f"{path} is not a record of function users ({exc}); move it away to "
                         "allocate new ones") from exc


def _save(path: str, data: Any) -> None:
    """Write ``data`` as JSON to ``path`` (mode 0600) atomically."""
    tmp = f"{path}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(data, fh, indent=1, sort_keys=True)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
