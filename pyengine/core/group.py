"""What the core runs: the deployed group, as a small interface of its own.

The deploy layer (``pyengine.deploy``) owns the root: the group file, the installed
resource versions, the function code and ``state.db``. The core needs much less: for each
function its handler, code directory, limits and the resources it may touch. This module
defines that view (:class:`DeployedGroup`) and the one adapter, :func:`read_deployed_group`,
that builds it from a root.

Resources are installed so that a resource's *destination* always names one complete version
and switching versions is atomic: the destination is a symlink into a directory that holds
every installed version of that resource (its *grant*). A worker's Landlock rule is put on the
grant, so a new version installed beside the old one is reachable without restarting the
worker, while every other path stays closed.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any, Mapping

#: Name of the file the adapter reads in the root (see :func:`read_deployed_group`).
MANIFEST = "deployed.json"
#: The deploy layer's state database in the root; no function may read it.
STATE_DB = "state.db"


@dataclass(frozen=True)
class ResourceGrant:
    """One resource a function may use.

    Attributes
    ----------
    id
        The resource id (what ``pyengine.load(id)`` takes inside the function).
    path
        The destination: the path the function sees (a model directory, or a device node).
    permission
        ``"ro"`` or ``"rw"``.
    kind
        ``"model"`` (a machine-learning resource) or ``"device"``.
    grant
        The path the OS rule is put on: the directory holding every version of a model
        resource (the destination points into it), or the device node itself.
    owner_gid
        The group owning the installed files (the owner setting), added to the worker's
        groups when the core runs as root; None when the group file sets none.
    """

    id: str
    path: str
    permission: str = "ro"
    kind: str = "model"
    grant: str = ""
    owner_gid: int | None = None

    def grant_path(self) -> str:
        """The path Landlock grants: ``grant`` when set, else the destination's directory."""
        if self.grant:
            return self.grant
        if self.kind == "device":
            return self.path
        return os.path.dirname(os.path.realpath(self.path))


@dataclass(frozen=True)
class FunctionSpec:
    """One function of the deployed group.

    Attributes
    ----------
    name
        The function's name (``[a-zA-Z0-9:_-]+``).
    handler
        ``module.function`` inside ``code_dir``; called as ``function(event, context)``.
    code_dir
        The installed code; the worker imports the handler's module from here.
    pinned
        Started with the core and kept (module-level code runs once per worker); else workers
        start on invocation and stop after ``idle_s`` without calls.
    timeout_s
        A call running longer is killed with its worker and fails with ``FunctionTimeout``.
    memory_mb
        The worker's memory limit (address space).
    environment
        Extra environment variables of the worker.
    resources
        What the function may touch, by resource id.
    concurrency
        Most workers at once (pinned functions start them all with the core).
    uid, gid
        Run as this user and group when the core runs as root (default: nobody/nogroup, 65534);
        ignored otherwise, since an unprivileged core cannot change user.
    idle_s
        Idle time after which an on-demand worker stops.
    """

    name: str
    handler: str
    code_dir: str
    pinned: bool = False
    timeout_s: float = 3.0
    memory_mb: int = 256
    environment: Mapping[str, str] = field(default_factory=dict)
    resources: tuple[ResourceGrant, ...] = ()
    concurrency: int = 0
    uid: int | None = None
    gid: int | None = None
    idle_s: float = 60.0

    def max_workers(self) -> int:
        """Most workers at once: ``concurrency``, else 1 (pinned) or 4 (on demand)."""
        if self.concurrency > 0:
            return self.concurrency
        return 1 if self.pinned else 4

    def shape(self) -> tuple[Any, ...]:
        """Everything that needs new workers when it changes (resource versions excluded)."""
        return (self.handler, self.code_dir, self.pinned, self.timeout_s, self.memory_mb,
                tuple(sorted(self.environment.items())), self.resources, self.max_workers(),
                self.uid, self.gid)


@dataclass(frozen=True)
class DeployedGroup:
    """The functions of the group deployed into a root, and what identifies the deployment."""

    name: str
    root: str
    functions: tuple[FunctionSpec, ...] = ()
    deployment: str = ""

    def function(self, name: str) -> FunctionSpec:
        """The function called ``name``; KeyError naming the functions there are otherwise."""
        for f in self.functions:
            if f.name == name:
                return f
        raise KeyError(f"no function {name!r} in group {self.name!r}; "
                       f"its functions are {[f.name for f in self.functions]}")

    def to_json(self) -> dict[str, Any]:
        """The manifest form read by :func:`read_deployed_group`."""
        return {
            "name": self.name,
            "deployment": self.deployment,
            "functions": [
                {
                    "name": f.name, "handler": f.handler, "code": f.code_dir, "pinned": f.pinned,
                    "timeout_s": f.timeout_s, "memory_mb": f.memory_mb,
                    "environment": dict(f.environment), "concurrency": f.concurrency,
                    "run_as": {"uid": f.uid, "gid": f.gid}, "idle_s": f.idle_s,
                    "resources": [
                        {"id": r.id, "path": r.path, "permission": r.permission, "kind": r.kind,
                         "grant": r.grant, "owner_gid": r.owner_gid}
                        for r in f.resources
                    ],
                }
                for f in self.functions
            ],
        }


def _function_from_json(root: str, d: Mapping[str, Any], where: str) -> FunctionSpec:
    def need(key: str) -> Any:
        if key not in d:
            raise ValueError(f"{where}: missing '{key}'")
        return d[key]

    run_as = d.get("run_as") or {}
    code = str(need("code"))
    resources = []
    for j, r in enumerate(d.get("resources") or []):
        perm = r.get("permission", "ro")
        if perm not in ("ro", "rw"):
            raise ValueError(f"{where}.resources[{j}].permission: {perm!r} is not 'ro' or 'rw'")
        resources.append(ResourceGrant(
            id=str(r["id"]), path=str(r["path"]), permission=perm, kind=r.get("kind", "model"),
            grant=str(r.get("grant") or ""), owner_gid=r.get("owner_gid")))
    return FunctionSpec(
        name=str(need("name")), handler=str(need("handler")),
        code_dir=code if os.path.isabs(code) else os.path.join(root, code),
        pinned=bool(d.get("pinned", False)), timeout_s=float(d.get("timeout_s", 3.0)),
        memory_mb=int(d.get("memory_mb", 256)),
        environment={str(k): str(v) for k, v in (d.get("environment") or {}).items()},
        resources=tuple(resources), concurrency=int(d.get("concurrency", 0)),
        uid=run_as.get("uid"), gid=run_as.get("gid"), idle_s=float(d.get("idle_s", 60.0)))


def read_deployed_group(root: str | os.PathLike[str]) -> DeployedGroup | None:
    """Build the core's view of the group deployed into ``root``; None when nothing is deployed.

    The one adapter between the deploy layer and the core: it reads ``<root>/deployed.json``
    (the form :meth:`DeployedGroup.to_json` writes), which the deploy layer writes atomically
    at the end of each successful deployment.

    Raises
    ------
    ValueError
        The manifest is damaged; the message names the file and the field.
    """
    root = os.fspath(root)
    path = os.path.join(root, MANIFEST)
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except FileNotFoundError:
        return None
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected an object, got {type(data).__name__}")
    functions = tuple(_function_from_json(root, f, f"{path}: functions[{i}]")
                      for i, f in enumerate(data.get("functions") or []))
    return DeployedGroup(name=str(data.get("name", "")), root=root, functions=functions,
                         deployment=str(data.get("deployment", "")))


def write_deployed_group(group: DeployedGroup) -> str:
    """Write ``group``'s manifest into its root atomically (temporary file, fsync, rename)."""
    path = os.path.join(group.root, MANIFEST)
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(group.to_json(), fh, indent=2)
        fh.flush()
        os.fsync(fh.fileno())
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)
    return path
