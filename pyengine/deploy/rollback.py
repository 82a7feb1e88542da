"""Rollback (back to the previous successful group, as a new deployment) and reset (remove
everything deployed into a root)."""

from __future__ import annotations

import contextlib
import os
from typing import Optional

from pyengine.common.paths import resolve_root
from pyengine.deploy import private
from pyengine.deploy.commit import commit, switch_all
from pyengine.deploy.errors import DeployError
from pyengine.deploy.group import Group
from pyengine.deploy.layout import rmtree
from pyengine.deploy.plan import VERIFIED_KINDS, Planner
from pyengine.deploy.records import Deployment, ItemResult, ProgressCallback, load_deployment
from pyengine.deploy.recovery import Session
from pyengine.deploy.schema import BACKUP_FILE, STATE_FILES, STORES_FILE


def rollback(
    root: Optional[str] = None, *, wait_s: float = 0.0, progress: Optional[ProgressCallback] = None
) -> Deployment:
    """Switch every resource back to the previous successful group (as a new deployment)."""
    s = Session(root, wait_s, "rollback")
    try:
        state = s.state
        applied = state.applied()
        earlier = [d for d in applied[1:] if d["status"] == "Success"]
        target = earlier[0] if earlier else None
        if not applied or target is None:
            raise DeployError("there is no previous successful deployment to roll back to")
        plan: list[tuple[ItemResult, Optional[str]]] = []
        for row in state.kept_items(target["id"]):
            v = None
            if row["kind"] not in VERIFIED_KINDS:
                vrow = state.version(row["kind"], row["key"], row["version"])
                if not vrow or not os.path.isdir(vrow["path"]):
                    raise DeployError(
                        f"version {row['version']} of {row['kind']} {row['key']!r} is no "
                        "longer kept; cannot roll back"
                    )
                v = vrow["path"]
            it = ItemResult(row["kind"], row["key"], "installed", version=row["version"],
                            path=row["path"], token=row["token"], source=row["source"],
                            version_path=v, spec=row["spec"])
            plan.append((it, v))
        keys = {(it.kind, it.key) for it, _ in plan}
        for row in state.installed():
            if (row["kind"], row["key"]) not in keys and row["kind"] not in VERIFIED_KINDS:
                plan.append(
                    (ItemResult(row["kind"], row["key"], "removed", path=row["destination"]), None)
                )
        p = Planner(s, Group(str(target["group_name"] or "")), "rollback", progress, 1, 0.0)
        p.dep = state.start_deployment(
            "rollback", target["group_name"], target["group_file"], target["group_json"],
            "InProgress", "rollback", f"rollback to deployment {target['id']}")
        switch_all(p, [(it, v) for it, v in plan if it.kind not in VERIFIED_KINDS and it.path])
        # The group rolled back to is now also the one a further rollback returns from.
        commit(p, [it for it, _ in plan], status="Success", applied=True, message=None,
               install=[it.installed_row(v) for it, v in plan if it.outcome != "removed"],
               replace_all=True)
        return load_deployment(state, p.dep)
    finally:
        s.close()


def reset(root: Optional[str] = None, *, wait_s: float = 0.0) -> list[str]:
    """Remove everything deployed into ``root`` (destinations' links, versions, function code)
    and the state. Returns the paths removed."""
    r = resolve_root(root)
    if not os.path.exists(os.path.join(r, STATE_FILES[0])):
        return []
    s = Session(r, wait_s, "reset")
    removed: list[str] = []
    try:
        state = s.state
        for row in state.installed("model"):
            dest = row["destination"]
            if dest and os.path.islink(dest):
                os.unlink(dest)
                removed.append(dest)
        for store in state.stores():
            if os.path.exists(store):
                rmtree(store)
                removed.append(store)
        for sub in ("functions", "downloads", private.ENV_DIR):
            p = os.path.join(r, sub)
            if os.path.exists(p):
                rmtree(p)
                removed.append(p)
    finally:
        s.close()
    for n in (*STATE_FILES, BACKUP_FILE, STORES_FILE):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(r, n))
    removed.append(os.path.join(r, STATE_FILES[0]))
    return removed
