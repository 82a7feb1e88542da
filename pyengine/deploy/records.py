"""Deployment records: what each deployment did, item by item, as the state keeps it."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from pyengine.common.paths import resolve_root
from pyengine.deploy.errors import DeployError
from pyengine.deploy.schema import STATE_FILES
from pyengine.deploy.state import State

STATUSES = ("Building", "InProgress", "Success", "Failure")


@dataclass
class ProgressEvent:
    """What a deployment reports as it goes (the CLI renders these)."""

    event: str  # "start" | "resource" | "status" | "bytes" | "done" | "end"
    key: str = ""
    kind: str = ""
    done: int = 0
    total: Optional[int] = None
    message: str = ""


ProgressCallback = Callable[[ProgressEvent], None]


@dataclass
class ItemResult:
    """The outcome of one resource or function in a deployment.

    ``outcome`` is one of: installed, unchanged, modified (kept, but a function granted rw
    changed it since it was installed), verified (a device), removed, failed,
    rolled-back (prepared but not switched because the deployment failed), skipped.
    """

    kind: str
    key: str
    outcome: str
    version: Optional[str] = None
    path: Optional[str] = None
    source: Optional[str] = None
    bytes: int = 0
    attempts: int = 0
    seconds: float = 0.0
    message: str = ""
    token: Optional[str] = field(default=None, repr=False)
    version_path: Optional[str] = field(default=None, repr=False)
    spec: Optional[str] = field(default=None, repr=False)

    def row(self) -> tuple:
        """Its row in the state (:data:`pyengine.deploy.state.ITEM_COLUMNS`)."""
        return (self.kind, self.key, self.outcome, self.version, self.path, self.token,
                self.source, self.spec, self.bytes, self.attempts, self.seconds, self.message)

    def installed_row(self, version_path: Optional[str] = None) -> tuple:
        """Its row as installed (:data:`pyengine.deploy.state.INSTALLED_COLUMNS`); a verified
        resource (a device or volume) is recorded by its path alone."""
        if self.outcome == "verified":
            return (self.kind, self.key, self.path, None, None, None, None, None)
        return (self.kind, self.key, self.path, self.version,
                version_path or self.version_path, self.token, self.source, self.spec)


@dataclass
class Deployment:
    """A deployment as recorded in the state database."""

    id: int
    kind: str
    group_name: Optional[str]
    group_file: Optional[str]
    status: str
    on_failure: Optional[str]
    message: Optional[str]
    started: Optional[float]
    finished: Optional[float]
    applied: bool
    items: list[ItemResult] = field(default_factory=list)

    @property
    def bytes_downloaded(self) -> int:
        """Total bytes transferred by this deployment."""
        return sum(i.bytes for i in self.items)

    def as_dict(self, items: bool = True) -> dict[str, Any]:
        """The deployment as JSON data (``pyengine deployments --json``, the console): with
        ``items``, each resource's and function's outcome."""
        out: dict[str, Any] = {"id": self.id, "kind": self.kind, "group": self.group_name,
                               "status": self.status, "started": self.started,
                               "finished": self.finished, "message": self.message}
        if items:
            out["bytes_downloaded"] = self.bytes_downloaded
            out["items"] = [{"kind": i.kind, "key": i.key, "outcome": i.outcome,
                             "version": i.version, "path": i.path, "bytes": i.bytes,
                             "attempts": i.attempts, "message": i.message} for i in self.items]
        return out


def load_deployment(state: State, dep: int) -> Deployment:
    """Deployment ``dep`` with its items, as recorded in ``state``."""
    row = state.deployment(dep)
    if row is None:
        raise DeployError(f"no deployment {dep}")
    items = [
        ItemResult(
            r["kind"],
            r["key"],
            r["outcome"],
            r["version"],
            r["path"],
            r["source"],
            r["bytes"],
            r["attempts"],
            r["seconds"],
            r["message"] or "",
            r["token"],
        )
        for r in state.items(dep)
    ]
    return Deployment(
        int(row["id"]),
        row["kind"],
        row["group_name"],
        row["group_file"],
        row["status"],
        row["on_failure"],
        row["message"],
        row["started"],
        row["finished"],
        bool(row["applied"]),
        items,
    )


def open_state(root: Optional[str]) -> Optional[State]:
    """The state of ``root`` opened to read, or None when nothing was ever deployed there."""
    r = resolve_root(root)
    if not os.path.exists(os.path.join(r, STATE_FILES[0])):
        return None
    return State(r, readonly=True)


def list_deployments(root: Optional[str] = None) -> list[Deployment]:
    """Every deployment recorded in ``root``, newest first."""
    state = open_state(root)
    if state is None:
        return []
    try:
        return [load_deployment(state, dep) for dep in state.deployment_ids()]
    finally:
        state.close()


def get_deployment(dep: int, root: Optional[str] = None) -> Deployment:
    """One deployment by id."""
    state = open_state(root)
    if state is None:
        raise DeployError(
            f"no deployment {dep}: nothing has been deployed into {resolve_root(root)}"
        )
    try:
        return load_deployment(state, dep)
    finally:
        state.close()
