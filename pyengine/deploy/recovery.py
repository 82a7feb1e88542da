"""Crash recovery: every filesystem change of a deployment is written to the journal first, so
a deploy killed at any instant is undone from the journal by the next locked use of the root
(a deploy, rollback, reset or repair) or by :func:`recover` (which the core asks for at start,
through :func:`pyengine.deploy.installed.current`); then leftovers (staging directories,
unregistered versions, temporary links) are removed and versions no longer kept are collected."""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import time
from typing import Callable, Optional

from pyengine.common.paths import resolve_root
from pyengine.deploy import private
from pyengine.deploy.errors import DeployError, StateError
from pyengine.deploy.layout import free_bytes, no_space, point, rmtree, store_for
from pyengine.deploy.lock import RootLock
from pyengine.deploy.schema import BACKUP_FILE, STATE_FILES
from pyengine.deploy.state import State


class Session:
    """One locked use of a root: the lock is taken and what a killed deploy left is undone."""

    def __init__(self, root: Optional[str], wait_s: float, what: str) -> None:
        self.root = resolve_root(root)
        self.lock = RootLock(self.root)
        self.lock.acquire(wait_s, what)
        try:
            self.state = State(self.root)
            recover_locked(self.state)
        except BaseException:
            self.lock.release()
            raise

    def close(self) -> None:
        """Close the state and release the lock."""
        self.state.close()
        self.lock.release()


def recover_locked(state: State) -> list[int]:
    """Roll back deployments that died mid-way and remove leftovers; the lock must be held.

    Returns the ids of the deployments rolled back.
    """
    _move_environments_out(state)
    rolled: list[int] = []
    for dep_id in state.unfinished():
        for j in state.journal_entries(dep_id):
            if j["op"] == "switch":
                dest = j["path"]
                if os.path.islink(dest) or not os.path.exists(dest):
                    prev = j["previous"]
                    tmp_dir = store_for(dest) if j["kind"] != "function" else os.path.dirname(dest)
                    if prev is not None and not os.path.isdir(prev):
                        prev = None
                    os.makedirs(tmp_dir, exist_ok=True)
                    point(dest, prev, tmp_dir)
            elif j["op"] == "stage":
                rmtree(j["path"])
                target = j["target"]
                if target and not state.is_version(target):
                    rmtree(target)
        state.mark_interrupted(dep_id, "interrupted (the deploying process stopped); rolled "
                               "back to the previous group")
        rolled.append(dep_id)
    collect(state)
    return rolled


def _move_environments_out(state: State) -> None:
    """Groups recorded before environments left the database: move theirs out now, and
    overwrite what the database held (secure_delete, then a truncating checkpoint)."""
    moved = False
    for row in state.groups_with_inline_environments():
        recorded = json.loads(row["group_json"])
        if any(f.get("environment") for f in recorded.get("functions", [])):
            inline = private.load_environments(state.root, recorded)
            kept = private.store_environments(state.root, inline)
            state.set_group_json(row["id"], json.dumps(kept))
            moved = True
    if moved:
        state.truncate_wal()


def collect(state: State) -> None:
    """Remove versions no longer needed (kept: installed, and the previous group for rollback)
    and leftovers in every store (staging directories, temporary links, half-removed versions)."""
    keep = {r["version_path"] for r in state.installed() if r["version_path"]}
    successful = [d for d in state.applied() if d["status"] == "Success"][:2]
    for d in successful:
        for it in state.items(d["id"]):
            if it["version"] is None:
                continue
            v = state.version(it["kind"], it["key"], it["version"])
            if v:
                keep.add(v["path"])
    for v in state.versions():
        if v["path"] not in keep:
            # Renamed away first, so a half-deleted tree never carries a version's name.
            trash = os.path.join(os.path.dirname(v["path"]), "trash-" + os.path.basename(v["path"]))
            with contextlib.suppress(FileNotFoundError):
                os.rename(v["path"], trash)
            state.drop_version(v["kind"], v["key"], v["version"])
            rmtree(trash)
    for store in state.stores():
        try:
            names = os.listdir(store)
        except FileNotFoundError:
            continue
        for n in names:
            # Versions a killed deploy left unregistered are removed from its journal (above).
            if n.startswith(("staging-", ".link-", "trash-")):
                rmtree(os.path.join(store, n))
    # Environments of the deployments that current() or rollback may still read.
    private.remove_unreferenced_environments(
        state.root, private.referenced_environments(state.groups_in_use())
    )
    downloads = os.path.join(state.root, "downloads")
    if os.path.isdir(downloads) and not state.unfinished():
        # Partial downloads of an interrupted deploy are kept for resuming, but only a day.
        now = time.time()
        for n in os.listdir(downloads):
            p = os.path.join(downloads, n)
            try:
                if now - os.path.getmtime(p) > 86400:
                    os.unlink(p)
            except FileNotFoundError:
                pass


def backup_state(state: State, emit: Callable[..., None]) -> None:
    """Copy the state after a deployment that changed what is installed; a failed copy is
    reported, not fatal (the deployment itself is done)."""
    try:
        state.backup()
    except (OSError, sqlite3.Error) as exc:
        emit(event="resource", message=f"warning: the state database was not copied to "
             f"{os.path.join(state.root, BACKUP_FILE)}: {exc}")


def recover(root: Optional[str] = None) -> list[int]:
    """Clean up after a deploy that was killed (the core asks for it at start). Returns the
    rolled-back deployment ids; does nothing (returns []) while another process holds the
    root's lock.

    On a full filesystem, where nothing can be written, there is nothing to clean up unless a
    deployment was interrupted: then a :class:`DeployError` says to free space first.
    """
    r = resolve_root(root)
    if not os.path.exists(os.path.join(r, STATE_FILES[0])):
        return []
    try:
        lock = RootLock(r)
        if not lock.try_acquire():
            return []
        try:
            state = State(r)
            try:
                return recover_locked(state)
            finally:
                state.close()
        finally:
            lock.release()
    except (OSError, StateError) as exc:
        if not (no_space(exc) or (isinstance(exc, StateError) and free_bytes(r) < 1 << 20)):
            raise
        state = State(r, readonly=True)
        try:
            left = state.unfinished()
        finally:
            state.close()
        if left:
            raise DeployError(
                f"deployment {left[0]} in {r} was interrupted and cannot be rolled back: no "
                f"space left on the filesystem ({free_bytes(r)} bytes available); free some "
                "space") from None
        return []
