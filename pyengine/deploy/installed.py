"""What is deployed now: the deploy layer's public read API, the one the core uses.

The core sees deploy only through this module: the installed group (:func:`current`, which also
runs the crash recovery the deploy layer owns when asked to), the versions changed in place
(:func:`changed_versions`), a cheap token that moves when anything is deployed
(:func:`change_token`), keeping the state private (:func:`protect_state`), and the types an
installed group is made of (re-exported here). It needs no file name, no SQL and no recovery
call of its own.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Optional

from pyengine.common.paths import resolve_root
from pyengine.deploy import private
from pyengine.deploy.group import FunctionResource, Group, Network
from pyengine.deploy.records import open_state
from pyengine.deploy.recovery import recover
from pyengine.deploy.schema import STATE_FILES
from pyengine.deploy.subscriptions import BROKERS, CLOUD, DEVICES, Subscription, routing_cycles
from pyengine.deploy.versions import changed_in_place, writable_by_function


@dataclass(frozen=True)
class InstalledResource:
    """A resource as installed.

    Attributes
    ----------
    id, name, kind:
        From the group; ``kind`` is "model" or "device".
    path:
        The destination (a model: a link to the installed version) or the device path.
    version, version_path:
        The installed version and the directory the destination points at (models only).
    max_permission:
        The most a function may be granted ("ro" or "rw").
    owner_group:
        The gid given ownership, when the group sets one.
    deployment_id:
        The deployment that installed this version.
    """

    id: str
    name: str
    kind: str
    path: str
    version: Optional[str]
    version_path: Optional[str]
    max_permission: str
    owner_group: Optional[int]
    deployment_id: int
    source: Optional[str] = None


@dataclass(frozen=True)
class InstalledFunction:
    """A function as installed: run ``handler`` with ``code_dir`` first on ``sys.path``."""

    name: str
    handler: str
    code_dir: str  # the installed version's directory (stable while a newer one is deployed)
    code_link: str  # ROOT/functions/<name>/current
    version: Optional[str]
    pinned: bool
    timeout_s: float
    memory_mb: int
    environment: dict[str, str]
    resources: tuple[FunctionResource, ...]
    network: Optional[Network] = None  # None: no network
    invoke: tuple[str, ...] = ()  # the functions it may call with context.invoke


@dataclass(frozen=True)
class InstalledGroup:
    """The group currently installed in a root, as the deploy layer recorded it."""

    root: str
    deployment_id: int
    name: str
    group: Group
    resources: dict[str, InstalledResource]
    functions: dict[str, InstalledFunction]

    def resource_path(self, rid: str) -> str:
        """The local path of resource ``rid`` (KeyError naming the known ids otherwise)."""
        try:
            return self.resources[rid].path
        except KeyError:
            raise KeyError(
                f"no resource {rid!r} is deployed (deployed: "
                f"{', '.join(sorted(self.resources)) or 'none'})"
            ) from None


def current(root: Optional[str] = None, *, cleanup: bool = True) -> Optional[InstalledGroup]:
    """The deployed group in ``root`` with each resource's local path and each function's code,
    or None when nothing is deployed. With ``cleanup`` (the default, as at core start), leftovers
    of a deploy that was killed are rolled back and removed first (skipped while one runs)."""
    if cleanup:
        recover(root)
    state = open_state(root)
    if state is None:
        return None
    try:
        dep = state.latest_applied()
        if dep is None:
            return None
        recorded = json.loads(dep["group_json"])
        group = Group.from_dict(private.load_environments(state.root, recorded))
        rows = {(r["kind"], r["key"]): dict(r) for r in state.installed()}
        resources: dict[str, InstalledResource] = {}
        for r in group.resources:
            row = rows.get((r.kind, r.id))
            if row is None:
                continue  # failed and kept nothing (--on-failure=keep on a first deploy)
            owner = r.model.owner if r.model else None
            resources[r.id] = InstalledResource(
                r.id,
                r.name,
                r.kind,
                row["destination"],
                row["version"],
                row["version_path"],
                r.max_permission,
                owner.group if owner else None,
                int(row["deployment_id"]),
                row["source"],
            )
        functions: dict[str, InstalledFunction] = {}
        for f in group.functions:
            row = rows.get(("function", f.name))
            if row is None:
                continue
            functions[f.name] = InstalledFunction(
                f.name,
                f.handler,
                row["version_path"] or row["destination"],
                row["destination"],
                row["version"],
                f.pinned,
                f.timeout_s,
                f.memory_mb,
                dict(f.environment),
                f.resources,
                f.network,
                f.invoke,
            )
        return InstalledGroup(state.root, int(dep["id"]), group.name, group, resources, functions)
    finally:
        state.close()


def list_installed(root: Optional[str] = None) -> list[dict]:
    """Rows of what is installed (kind, key, destination, version, version_path, source,
    deployment_id), sorted by kind and key."""
    state = open_state(root)
    if state is None:
        return []
    try:
        columns = ("kind", "key", "destination", "version", "version_path", "token", "source",
                   "deployment_id")
        return [{c: r[c] for c in columns} for r in state.installed()]
    finally:
        state.close()


def changed_versions(root: Optional[str] = None) -> list[str]:
    """One line for each installed version changed in place since it was installed (the
    cheap check: a version none of whose inodes' ctime moved is not hashed), for the core to
    report at start; the next deploy installs each again. Versions a function may write are
    left out."""
    state = open_state(root)
    if state is None:
        return []
    out = []
    try:
        for row in state.installed():
            if row["kind"] not in ("model", "function") or row["version_path"] is None:
                continue
            if row["kind"] == "model" and writable_by_function(row["spec_json"]):
                continue
            try:
                damage = changed_in_place(state, row["kind"], row["key"], row["version"],
                                          row["version_path"])
            except OSError as exc:
                damage = f"cannot be read ({exc})"
            if damage:
                out.append(f"{row['kind']} {row['key']!r} version {row['version']} changed in "
                           f"place: {damage}; deploy the group again to reinstall it")
    finally:
        state.close()
    return out


def has_state(root: Optional[str] = None) -> bool:
    """Whether ``root`` (default: :func:`pyengine.common.paths.default_root`) has a state,
    i.e. something was deployed into it (and not reset since)."""
    return os.path.exists(os.path.join(resolve_root(root), STATE_FILES[0]))


def change_token(root: str | os.PathLike[str]) -> tuple[tuple[int, int], ...]:
    """A cheap token that changes whenever the state in ``root`` changes (stat only: the
    database and its write-ahead log), so a reader knows when to call :func:`current` again."""
    out = []
    for name in STATE_FILES[:2]:
        try:
            st = os.stat(os.path.join(os.fspath(root), name))
            out.append((st.st_mtime_ns, st.st_size))
        except FileNotFoundError:
            out.append((0, 0))
    return tuple(out)


def protect_state(root: str | os.PathLike[str]) -> None:
    """Make the state files in ``root`` readable by their owner only (0600), for a core whose
    functions run without Landlock: no function may read the state."""
    for name in STATE_FILES[:3]:
        path = os.path.join(os.fspath(root), name)
        if os.path.exists(path):
            os.chmod(path, 0o600)


__all__ = [
    "BROKERS",
    "CLOUD",
    "DEVICES",
    "FunctionResource",
    "Group",
    "InstalledFunction",
    "InstalledGroup",
    "InstalledResource",
    "Network",
    "Subscription",
    "change_token",
    "changed_versions",
    "current",
    "has_state",
    "list_installed",
    "protect_state",
    "routing_cycles",
]
