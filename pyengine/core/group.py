"""What the core runs: the deployed group, as a small interface of its own.

The deploy layer (``pyengine.deploy``) owns the root: the group file, the installed
resource versions, the function code and its state. The core needs much less: for each
function its handler, code directory, limits and the resources it may touch. This module
defines that view (:class:`DeployedGroup`) and the one adapter, :func:`read_deployed_group`,
that builds it from the deploy layer's read API (:mod:`pyengine.deploy.installed`), the only
part of deploy the core sees.

Resources are installed so that a resource's *destination* always names one complete version
and switching versions is atomic: the destination is a symlink into a directory that holds
every installed version of that resource (its *grant*). A worker's Landlock rule is put on the
grant, so a new version installed beside the old one is reachable without restarting the
worker, while every other path stays closed.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import Any, Mapping

from pyengine.batching_config import BatchingConfig
from pyengine.deploy import installed
from pyengine.deploy.installed import Network, Subscription, change_token

__all__ = ["DeployedGroup", "FunctionSpec", "ResourceGrant", "change_token",
           "read_deployed_group"]

#: Most calls one worker of a batching function runs at once (one thread each).
MAX_SLOTS = 64


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
        ``"model"`` (a machine-learning resource), ``"device"`` or ``"volume"`` (a host
        directory).
    grant
        The path the OS rule is put on: the directory holding every version of a model
        resource (the destination points into it), the device node or the volume itself.
    owner_gid
        The group owning the installed files (the owner setting), added to the worker's
        groups when the core runs as root; None when the group file sets none.
    batching
        The worker batches the function's concurrent calls to this model with these options
        (``pyengine.load(id)`` returns a batched handle); None: no batching.
    """

    id: str
    path: str
    permission: str = "ro"
    kind: str = "model"
    grant: str = ""
    owner_gid: int | None = None
    batching: BatchingConfig | None = None

    def grant_path(self) -> str:
        """The path Landlock grants: ``grant`` when set, else the destination's directory."""
        if self.grant:
            return self.grant
        if self.kind != "model":
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
        What the handler may allocate: the worker's address space is limited (RLIMIT_AS) to
        what the bare worker uses at start (interpreter, numpy, pyengine: about 125 MB) plus
        this. Mapped model files count.
    environment
        Extra environment variables of the worker.
    resources
        What the function may touch, by resource id.
    concurrency
        Most workers at once (pinned functions start them all with the core): the group file's
        ``concurrency``, the calls the function runs at once (a worker runs one call, or up to
        its batch size for a batching function).
    uid, gid
        The group file's ``run_as``: run as this user and group when the core runs as root
        (default: the function's own user); ignored otherwise, since an unprivileged core cannot
        change user. 0 needs the core's ``functions.allow_root``.
    idle_s
        Idle time after which an on-demand worker stops (the group file's ``idle_timeout_s``).
    network
        None: no network at all; else what the group grants (``any``, or TCP ports to connect
        to and bind).
    invoke
        The functions this one may call with ``context.invoke``.
    """

    name: str
    handler: str
    code_dir: str
    pinned: bool = False
    timeout_s: float = 3.0
    memory_mb: int = 128
    environment: Mapping[str, str] = field(default_factory=dict)
    resources: tuple[ResourceGrant, ...] = ()
    concurrency: int = 0
    uid: int | None = None
    gid: int | None = None
    idle_s: float = 60.0
    network: Network | None = None
    invoke: tuple[str, ...] = ()

    def max_workers(self) -> int:
        """Most workers at once: ``concurrency``, else 1 (pinned) or 4 (on demand)."""
        if self.concurrency > 0:
            return self.concurrency
        return 1 if self.pinned else 4

    def slots(self) -> int:
        """Calls one worker runs at once: 1, or for a function that batches calls to a model the
        largest ``max_batch_size`` of its batching blocks (at most :data:`MAX_SLOTS`), so that
        concurrent invocations meet in one worker and its batcher."""
        sizes = [r.batching.max_batch_size for r in self.resources if r.batching is not None]
        return min(MAX_SLOTS, max(sizes)) if sizes else 1

    def shape(self) -> tuple[Any, ...]:
        """Everything that needs new workers when it changes (resource versions excluded)."""
        return (self.handler, self.code_dir, self.pinned, self.timeout_s, self.memory_mb,
                tuple(sorted(self.environment.items())), self.resources, self.max_workers(),
                self.uid, self.gid, self.network, self.idle_s)


@dataclass(frozen=True)
class DeployedGroup:
    """The functions of the group deployed into a root, and what identifies the deployment."""

    name: str
    root: str
    functions: tuple[FunctionSpec, ...] = ()
    deployment: str = ""
    #: Message routes (the group file's ``subscriptions``).
    subscriptions: tuple[Subscription, ...] = ()

    def function(self, name: str) -> FunctionSpec:
        """The function called ``name``; KeyError naming the functions there are otherwise."""
        for f in self.functions:
            if f.name == name:
                return f
        raise KeyError(f"no function {name!r} in group {self.name!r}; "
                       f"its functions are {[f.name for f in self.functions]}")


def read_deployed_group(root: str | os.PathLike[str],
                        cleanup: bool = False) -> DeployedGroup | None:
    """Build the core's view of the group deployed into ``root``; None when nothing is deployed.

    The one adapter between the deploy layer and the core, over
    :func:`pyengine.deploy.installed.current`.

    Parameters
    ----------
    root
        The root the deploy layer installs into.
    cleanup
        Let the deploy layer first roll back what a killed deploy left (done at core start).
    """
    root = os.path.abspath(os.fspath(root))
    group = installed.current(root, cleanup=cleanup)
    if group is None:
        return None
    if cleanup:  # at start: say which installed versions were changed in place (cheap check)
        for line in installed.changed_versions(root):
            logging.getLogger("pyengine.core").warning("%s", line)
    functions = []
    declared = {f.name: f for f in group.group.functions}
    for f in group.functions.values():
        grants = []
        for fr in f.resources:
            r = group.resources.get(fr.id)
            if r is None:
                continue  # not installed (a failed first deploy kept with --on-failure=keep)
            if r.kind != "model":
                grants.append(ResourceGrant(id=r.id, path=r.path, permission=fr.permission,
                                            kind=r.kind, grant=r.path))
            else:
                store = os.path.dirname(r.version_path) if r.version_path else ""
                grants.append(ResourceGrant(id=r.id, path=r.path, permission=fr.permission,
                                            kind="model", grant=store, owner_gid=r.owner_group,
                                            batching=getattr(fr, "batching", None)))
        fd = declared.get(f.name)
        run_as = fd.run_as if fd is not None else None
        functions.append(FunctionSpec(
            name=f.name, handler=f.handler, code_dir=f.code_dir, pinned=f.pinned,
            timeout_s=float(f.timeout_s), memory_mb=int(f.memory_mb),
            environment=dict(f.environment), resources=tuple(grants),
            network=f.network, invoke=tuple(f.invoke),
            concurrency=(fd.concurrency or 0) if fd is not None else 0,
            uid=run_as.uid if run_as is not None else None,
            gid=run_as.gid if run_as is not None else None,
            idle_s=fd.idle_timeout_s if fd is not None and fd.idle_timeout_s else 60.0))
    return DeployedGroup(name=group.name, root=root, functions=tuple(functions),
                         deployment=str(group.deployment_id),
                         subscriptions=tuple(group.group.subscriptions))
