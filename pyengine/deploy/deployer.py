"""Deployments: plan -> fetch -> verify -> unpack -> switch atomically -> record; rollback, reset
and crash recovery.

Layout on disk
--------------
A model resource's destination is a symbolic link to one complete version directory kept next
to it, on the same filesystem::

    /srv/models/digits -> .digits.pyengine/v12-3f9a0c1d2e
    /srv/models/.digits.pyengine/{v12-..., v9-..., staging-13, .link-13}

A version directory only appears (by rename) once it is completely unpacked and fsynced, and the
link is replaced with rename(2), so the destination always names one complete version. Function
code lives the same way under ``ROOT/functions/<name>/current``.

Every filesystem change is written to the journal first; a deploy killed at any instant is rolled
back from the journal by the next deploy (or :func:`recover` at core start), then leftovers
(staging directories, unregistered versions, temporary links) are removed.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import errno
import functools
import hashlib
import json
import os
import secrets
import shutil
import sqlite3
import stat
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from pyengine.deploy import private
from pyengine.deploy.errors import DeployError, GroupError, UnpackError
from pyengine.deploy.fetch import fetch
from pyengine.deploy.group import (
    Function,
    Group,
    ModelSpec,
    Resource,
    denied_destination,
    destination_problems,
    load_group,
    real_destination,
    traversal_warnings,
)
from pyengine.deploy.state import (
    BACKUP_FILE,
    STATE_FILES,
    STORES_FILE,
    RootLock,
    State,
    StateError,
    dumps,
    known_stores,
)
from pyengine.deploy.unpack import (
    DEFAULT_MAX_FILES,
    SKIP_DIRS,
    TREE_MAX_BYTES,
    apply_owner,
    content_digest,
    copy_tree,
    fsync_dir,
    tree_digest,
    unpack,
)
from pyengine.device_files import device_nodes
from pyengine.sources import open_source
from pyengine.sources.base import Source, SourceError, SourceInfo

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


def default_root() -> str:
    """``$PYENGINE_ROOT``, else /var/lib/pyengine as root, else ~/.local/share/pyengine."""
    env = os.environ.get("PYENGINE_ROOT")
    if env:
        return os.path.abspath(env)
    if os.geteuid() == 0:
        return "/var/lib/pyengine"
    return os.path.join(os.path.expanduser("~"), ".local", "share", "pyengine")


def resolve_root(root: Optional[str] = None) -> str:
    """The root directory to use: ``root`` when given, else :func:`default_root`."""
    return os.path.abspath(root) if root else default_root()


def store_for(destination: str) -> str:
    """The version store of a destination: ``<parent>/.<name>.pyengine``."""
    parent, name = os.path.split(destination.rstrip("/"))
    return os.path.join(parent, f".{name}.pyengine")


def _model_spec(m: ModelSpec) -> str:
    """What, besides the source's token, decides whether an installed model is still right."""
    owner = None if m.owner is None else [m.owner.group, m.owner.permission]
    return dumps(
        {"source": m.source, "destination": m.destination, "owner": owner, "sha256": m.sha256}
    )


def _version_name(dep: int, token: str, store: str) -> str:
    """``v<deployment>-<token hash>``, made unique in ``store`` (which another root's state, or a
    removed state database, may have used before)."""
    name = f"v{dep}-{hashlib.sha256(token.encode()).hexdigest()[:10]}"
    while os.path.lexists(os.path.join(store, name)):
        name = f"v{dep}-{hashlib.sha256(token.encode()).hexdigest()[:10]}-{secrets.token_hex(3)}"
    return name


def _rmtree(path: str) -> None:
    """Remove a file, link or tree; missing is fine. Read-only directories are made writable."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISDIR(st.st_mode):
        os.unlink(path)
        return

    def onerror(func: Callable, p: str, exc: object) -> None:
        try:
            os.chmod(os.path.dirname(p), 0o700)
            func(p)
        except FileNotFoundError:
            pass

    for dirpath, dirnames, _ in os.walk(path):
        for d in dirnames:
            full = os.path.join(dirpath, d)
            if not os.path.islink(full):
                with contextlib.suppress(OSError):
                    os.chmod(full, 0o700)
    with contextlib.suppress(OSError):
        os.chmod(path, 0o700)
    shutil.rmtree(path, onerror=onerror)


def _fd_path(fd: int, fallback: str) -> str:
    """The real path of the directory open as ``fd`` (``fallback`` resolved where /proc is not
    mounted)."""
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return os.path.realpath(fallback)


def _open_dir(path: str, dir_fd: Optional[int] = None) -> int:
    """Open a directory without following a link at its last component."""
    return os.open(
        path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd
    )


PlaceCheck = Callable[[str], None]


def _point(
    dest: str, target: Optional[str], tmp_dir: str, check: Optional[PlaceCheck] = None
) -> None:
    """Atomically make ``dest`` a link to ``target`` (or remove it when ``target`` is None).

    ``dest``'s directory is opened once and every step goes through that descriptor, so what
    ``check`` is given (the real path of that directory, plus the name) is where the change
    lands: a link swapped into the path before this point is refused by ``check``, one swapped
    in after it changes nothing. ``tmp_dir`` is that directory or a subdirectory of it (the
    store) where the new link is made before it is renamed over ``dest``.
    """
    parent, name = os.path.split(dest)
    pfd = os.open(parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    tfd = -1
    try:
        if check is not None:
            check(os.path.join(_fd_path(pfd, parent), name))
        try:
            st: Optional[os.stat_result] = os.stat(name, dir_fd=pfd, follow_symlinks=False)
        except FileNotFoundError:
            st = None
        if target is None:
            if st is not None and stat.S_ISLNK(st.st_mode):
                os.unlink(name, dir_fd=pfd)
                os.fsync(pfd)
            return
        rel = os.path.relpath(target, parent)
        if os.path.normpath(tmp_dir) == os.path.normpath(parent):
            tfd = os.dup(pfd)
        elif os.path.dirname(os.path.normpath(tmp_dir)) == os.path.normpath(parent):
            tfd = _open_dir(os.path.basename(tmp_dir), pfd)
        else:
            raise ValueError(f"{tmp_dir} is not {parent} or a directory in it")
        tmp = f".link-{os.getpid()}"
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp, dir_fd=tfd)
        os.symlink(rel, tmp, dir_fd=tfd)
        if st is not None and stat.S_ISDIR(st.st_mode):
            os.rmdir(name, dir_fd=pfd)  # an empty directory left for us (checked during planning)
        os.rename(tmp, name, src_dir_fd=tfd, dst_dir_fd=pfd)
        os.fsync(pfd)
    finally:
        os.close(pfd)
        if tfd >= 0:
            os.close(tfd)


def _current_target(dest: str) -> Optional[str]:
    if not os.path.islink(dest):
        return None
    return os.path.normpath(os.path.join(os.path.dirname(dest), os.readlink(dest)))


def _keep_installed(it: ItemResult, prev: Optional[dict], token: str, dest: str) -> bool:
    """Whether the installed version ``prev`` (a state row) has ``token`` and is still complete
    and what ``dest`` points to; if so ``it`` is marked unchanged with that version."""
    if not (
        prev
        and prev["token"] == token
        and prev["version_path"]
        and os.path.isdir(prev["version_path"])
        and _current_target(dest) == prev["version_path"]
    ):
        return False
    it.outcome, it.version, it.version_path = ("unchanged", prev["version"], prev["version_path"])
    return True


def _changed_since(path: str, t: float) -> Optional[str]:
    """The first entry of the tree at ``path`` (itself included) whose inode changed after the
    time ``t`` (written, truncated, chmod-ed, an entry added or removed below it); None when none
    did or the tree is gone."""
    for dirpath, dirnames, filenames in os.walk(path):
        for p in (dirpath, *(os.path.join(dirpath, n) for n in dirnames + filenames)):
            try:
                if os.lstat(p).st_ctime > t:
                    return p
            except FileNotFoundError:
                return p
    return None


def _code_limits(f: Function) -> tuple[int, int]:
    """The caps (bytes, entries) on copying ``f``'s code: the group's, else the defaults."""
    return f.max_code_bytes or TREE_MAX_BYTES, f.max_code_files or DEFAULT_MAX_FILES


def version_digest(kind: str, path: str) -> str:
    """The content digest recorded for an installed version (:func:`content_digest`; a
    function's ``__pycache__`` is left out: Python may write it beside the code it imports)."""
    return content_digest(path, skip_dirs=SKIP_DIRS if kind == "function" else ())


def changed_in_place(state: State, kind: str, key: str, version: str, path: str,
                     thorough: bool = False) -> Optional[str]:
    """What changed in the installed version ``path`` since it was installed, or None when it
    is as installed (or was installed before digests were recorded).

    The cheap test first: no inode in the tree changed since the version was made (a write, a
    chmod, an entry added or removed moves its ctime, which no user can set back) means it is
    as installed. Otherwise, or with ``thorough`` (which also finds what a ctime cannot show,
    such as damage below the filesystem), its content digest is compared with the recorded one.
    """
    row = state.one("SELECT created, digest FROM versions WHERE kind=? AND key=? AND version=?",
                    kind, key, version)
    if row is None or not row["digest"]:
        return None
    changed = _changed_since(path, row["created"]) if row["created"] else path
    if changed is None and not thorough:
        return None
    try:
        now = version_digest(kind, path)
    except OSError as exc:
        return f"{exc.filename or path} cannot be read ({exc.strerror or exc})"
    if now == row["digest"]:
        return None
    where = f" ({changed} changed after it was installed)" if changed else ""
    return (f"its content digest is {now[:16]}..., not the {row['digest'][:16]}... recorded "
            f"when it was installed{where}")


def writable_by_function(spec_json: Optional[str]) -> bool:
    """Whether an installed model's recorded spec grants a function rw (its content is then
    the function's to change, not compared)."""
    try:
        owner = json.loads(spec_json or "{}").get("owner")
    except (ValueError, AttributeError):
        return False
    return isinstance(owner, list) and len(owner) == 2 and owner[1] == "rw"


def free_bytes(path: str) -> int:
    """Bytes an unprivileged writer may still use on ``path``'s filesystem (``statvfs``)."""
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def _no_space(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)


def remove_partial_downloads(root: str, keep: Optional[str] = None) -> int:
    """Remove the partial downloads (``ROOT/downloads/*.part``) other than ``keep``; the bytes
    freed."""
    downloads = os.path.join(root, "downloads")
    freed = 0
    try:
        names = os.listdir(downloads)
    except FileNotFoundError:
        return 0
    for n in names:
        p = os.path.join(downloads, n)
        if p == keep:
            continue
        with contextlib.suppress(FileNotFoundError):
            freed += os.lstat(p).st_size
            _rmtree(p)
    return freed


def _backup_state(state: State, emit: Callable[..., None]) -> None:
    """Copy the state after a deployment that changed what is installed; a failed copy is
    reported, not fatal (the deployment itself is done)."""
    try:
        state.backup()
    except (OSError, sqlite3.Error) as exc:
        emit(event="resource", message=f"warning: the state database was not copied to "
             f"{os.path.join(state.root, BACKUP_FILE)}: {exc}")


class _Session:
    """One locked use of a root."""

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
        self.state.close()
        self.lock.release()


# ----------------------------------------------------------------------------------- recovery


def recover_locked(state: State) -> list[int]:
    """Roll back deployments that died mid-way and remove leftovers; the lock must be held.

    Returns the ids of the deployments rolled back.
    """
    _move_environments_out(state)
    rolled: list[int] = []
    for dep in state.q(
        "SELECT id FROM deployments WHERE status IN ('Building','InProgress') ORDER BY id"
    ):
        dep_id = int(dep["id"])
        for j in state.q("SELECT * FROM journal WHERE deployment_id=? ORDER BY id DESC", dep_id):
            if j["op"] == "switch":
                dest = j["path"]
                if os.path.islink(dest) or not os.path.exists(dest):
                    prev = j["previous"]
                    tmp_dir = store_for(dest) if j["kind"] != "function" else os.path.dirname(dest)
                    if prev is not None and not os.path.isdir(prev):
                        prev = None
                    os.makedirs(tmp_dir, exist_ok=True)
                    _point(dest, prev, tmp_dir)
            elif j["op"] == "stage":
                _rmtree(j["path"])
                target = j["target"]
                if target and not state.one("SELECT 1 FROM versions WHERE path=?", target):
                    _rmtree(target)
        with state.tx() as db:
            db.execute("DELETE FROM journal WHERE deployment_id=?", (dep_id,))
            db.execute(
                "UPDATE items SET outcome='rolled-back', message='the deployment was "
                "interrupted' WHERE deployment_id=? AND outcome IN ('installed','pending',"
                "'removed')",
                (dep_id,),
            )
            db.execute(
                "UPDATE deployments SET status='Failure', finished=?, message=? WHERE id=?",
                (
                    time.time(),
                    "interrupted (the deploying process stopped); rolled back to "
                    "the previous group",
                    dep_id,
                ),
            )
        rolled.append(dep_id)
    _gc(state)
    return rolled


def _move_environments_out(state: State) -> None:
    """Groups recorded before environments left the database: move theirs out now, and
    overwrite what the database held (secure_delete, then a truncating checkpoint)."""
    rows = state.q(
        "SELECT id, group_json FROM deployments WHERE group_json LIKE '%\"environment\": {\"%'"
    )
    moved = False
    for row in rows:
        recorded = json.loads(row["group_json"])
        if any(f.get("environment") for f in recorded.get("functions", [])):
            inline = private.load_environments(state.root, recorded)
            kept = private.store_environments(state.root, inline)
            state.x("UPDATE deployments SET group_json=? WHERE id=?", json.dumps(kept), row["id"])
            moved = True
    if moved:
        state.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")


def _gc(state: State) -> None:
    """Remove versions no longer needed (kept: installed, and the previous group for rollback)
    and leftovers in every store (staging directories, temporary links, half-removed versions)."""
    applied = state.q(
        "SELECT id FROM deployments WHERE applied=1 AND status='Success' ORDER BY id DESC LIMIT 2"
    )
    keep = {
        r["version_path"]
        for r in state.q("SELECT version_path FROM installed")
        if r["version_path"]
    }
    for d in applied:
        for it in state.q(
            "SELECT kind, key, version FROM items WHERE deployment_id=? AND version IS NOT NULL",
            d["id"],
        ):
            v = state.one(
                "SELECT path FROM versions WHERE kind=? AND key=? AND version=?",
                it["kind"],
                it["key"],
                it["version"],
            )
            if v:
                keep.add(v["path"])
    for v in state.q("SELECT * FROM versions"):
        if v["path"] not in keep:
            # Renamed away first, so a half-deleted tree never carries a version's name.
            trash = os.path.join(os.path.dirname(v["path"]), "trash-" + os.path.basename(v["path"]))
            with contextlib.suppress(FileNotFoundError):
                os.rename(v["path"], trash)
            with state.tx() as db:
                db.execute(
                    "DELETE FROM versions WHERE kind=? AND key=? AND version=?",
                    (v["kind"], v["key"], v["version"]),
                )
            _rmtree(trash)
    for s in state.q("SELECT path FROM stores"):
        store = s["path"]
        try:
            names = os.listdir(store)
        except FileNotFoundError:
            continue
        for n in names:
            p = os.path.join(store, n)
            # Versions a killed deploy left unregistered are removed from its journal (above).
            if n.startswith(("staging-", ".link-", "trash-")):
                _rmtree(p)
    # Environments of the deployments that current() or rollback may still read.
    recorded = state.q(
        "SELECT group_json FROM deployments WHERE status IN ('Building','InProgress') "
        "OR id IN (SELECT id FROM deployments WHERE applied=1 ORDER BY id DESC LIMIT 1) "
        "OR id IN (SELECT id FROM deployments WHERE applied=1 AND status='Success' "
        "ORDER BY id DESC LIMIT 2)"
    )
    private.remove_unreferenced_environments(
        state.root, private.referenced_environments(r["group_json"] for r in recorded)
    )
    downloads = os.path.join(state.root, "downloads")
    if os.path.isdir(downloads) and not state.one(
        "SELECT 1 FROM deployments WHERE status IN ('Building','InProgress')"
    ):
        # Partial downloads of an interrupted deploy are kept for resuming, but only a day.
        now = time.time()
        for n in os.listdir(downloads):
            p = os.path.join(downloads, n)
            try:
                if now - os.path.getmtime(p) > 86400:
                    os.unlink(p)
            except FileNotFoundError:
                pass


def recover(root: Optional[str] = None) -> list[int]:
    """Clean up after a deploy that was killed (call at core start). Returns the rolled-back
    deployment ids; does nothing (returns []) while another process holds the root's lock.

    On a full filesystem, where nothing can be written, there is nothing to clean up unless a
    deployment was interrupted: then a :class:`DeployError` says to free space first.
    """
    r = resolve_root(root)
    if not os.path.exists(os.path.join(r, "state.db")):
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
        if not (_no_space(exc) or (isinstance(exc, StateError) and free_bytes(r) < 1 << 20)):
            raise
        state = State(r, readonly=True)
        try:
            left = state.one("SELECT id FROM deployments WHERE status IN ('Building', "
                             "'InProgress') ORDER BY id")
        finally:
            state.close()
        if left is not None:
            raise DeployError(
                f"deployment {left['id']} in {r} was interrupted and cannot be rolled back: no "
                f"space left on the filesystem ({free_bytes(r)} bytes available); free some "
                "space") from None
        return []


# ----------------------------------------------------------------------------------- deploy

#: Resources that are checked where they are, never installed (nothing to link or remove).
VERIFIED_KINDS = ("device", "volume")


class _Deployer:
    def __init__(
        self,
        s: _Session,
        group: Group,
        on_failure: str,
        progress: Optional[ProgressCallback],
        retries: int,
        backoff_s: float,
    ) -> None:
        self.s = s
        self.state = s.state
        self.group = group
        self.on_failure = on_failure
        self.progress = progress or (lambda e: None)
        self.retries = retries
        self.backoff_s = backoff_s
        self.items: list[ItemResult] = []
        self.dep = 0
        self.resolved: dict[str, tuple[Optional[Source], object]] = {}

    def emit(self, **kw: object) -> None:
        self.progress(ProgressEvent(**kw))  # type: ignore[arg-type]

    def _record(self, db: sqlite3.Connection, it: ItemResult) -> None:
        db.execute(
            "INSERT OR REPLACE INTO items(deployment_id, kind, key, outcome, version, path, "
            "token, source, spec, bytes, attempts, seconds, message) "
            "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (
                self.dep,
                it.kind,
                it.key,
                it.outcome,
                it.version,
                it.path,
                it.token,
                it.source,
                it.spec,
                it.bytes,
                it.attempts,
                it.seconds,
                it.message,
            ),
        )

    def record(self, it: ItemResult) -> None:
        with self.state.tx() as db:
            self._record(db, it)

    def installed(self, kind: str, key: str) -> Optional[dict]:
        row = self.state.one("SELECT * FROM installed WHERE kind=? AND key=?", kind, key)
        return dict(row) if row else None

    # -- planning checks that need the filesystem
    def protected(self, key: str, dest: str) -> list[tuple[str, str]]:
        """Real paths the destination ``dest`` of model ``key`` may neither be in nor contain,
        each with what it is: the root, and every other resource's destination, installed
        version and version store (those of this group, those installed, and every store this
        root has made)."""
        root = self.s.root
        out = [(os.path.realpath(root), f"pyengine's root {root}")]
        dests = {r.id: r.model.destination for r in self.group.resources if r.model}
        for row in self.state.q("SELECT key, destination FROM installed WHERE kind='model'"):
            # An installed resource's place may be taken over by another id in the same
            # deployment (the old one is removed); nesting stays refused.
            if row["destination"] != dest:
                dests.setdefault(row["key"], row["destination"])
        for rid, other in dests.items():
            if rid == key or not other:
                continue
            what = f"resource {rid!r}"
            out.append((real_destination(other), f"the destination of {what} ({other})"))
            out.append((os.path.realpath(other), f"the installed version of {what}"))
            out.append((os.path.realpath(store_for(other)), f"the version store of {what}"))
        own = store_for(dest)
        for row in self.state.q("SELECT path FROM stores"):
            if row["path"] != own:
                out.append((os.path.realpath(row["path"]), f"the version store {row['path']}"))
        return out

    def check_place(self, key: str, dest: str, real: Optional[str] = None) -> None:
        """Refuse (DeployError) a destination whose real path (its parent resolved) is denied
        by the group rules, or is in, is, or contains a place of :meth:`protected`."""
        real = real or real_destination(dest)
        ids = [r.id for r in self.group.resources]
        name = (
            f"resources[{ids.index(key)}].model.destination {dest}"
            if key in ids
            else f"the destination {dest} of resource {key!r}"
        )
        via = f" (through symbolic links: {real})" if real != dest else ""
        problem = denied_destination(real)
        if problem:
            raise DeployError(f"{name}{via} is {problem}; refused")
        for place, what in self.protected(key, dest):
            if real == place or real.startswith(place + "/"):
                rel = "is" if real == place else "is inside"
            elif place.startswith(real + "/"):
                rel = "contains"
            else:
                continue
            raise DeployError(
                f"{name}{via} {rel} {what}; refused: choose a directory of its own"
            )

    def check_destination(self, r: Resource) -> None:
        assert r.model is not None
        dest = r.model.destination
        self.check_place(r.id, dest)
        store = store_for(dest)
        if os.path.islink(store):
            raise DeployError(
                f"the version store {store} of {dest} is a symbolic link (to "
                f"{os.readlink(store)!r}), which pyengine did not make; remove it"
            )
        if os.path.lexists(dest):
            if os.path.islink(dest):
                target = _current_target(dest) or ""
                if not target.startswith(store_for(dest) + "/"):
                    raise DeployError(
                        f"destination {dest} is a link to {os.readlink(dest)!r}, which "
                        "pyengine did not make; remove it or choose another destination"
                    )
                if not self.state.one("SELECT 1 FROM versions WHERE path=?", target) and \
                        not self.adopt(r, target):
                    raise DeployError(
                        f"destination {dest} is managed by another pyengine root (it links to "
                        f"{target}, which {self.s.root} did not install); deploy with that "
                        "root, or `pyengine reset` it first"
                    )
            elif os.path.isdir(dest):
                if os.listdir(dest):
                    raise DeployError(
                        f"destination {dest} is a non-empty directory that pyengine does "
                        "not manage; move it away or choose another destination"
                    )
            else:
                raise DeployError(
                    f"destination {dest} exists and is not a directory; remove it or "
                    "choose another destination"
                )

    def adopt(self, r: Resource, target: str) -> bool:
        """Record the version ``target`` that ``r``'s destination links to when
        ``ROOT/stores.list`` says this root made its store (a state rebuilt by ``pyengine doctor
        --repair`` lost its rows); it keeps serving until this deployment replaces it. False
        when the store is not this root's."""
        assert r.model is not None
        store = store_for(r.model.destination)
        if store not in known_stores(self.s.root) or not os.path.isdir(target):
            return False
        version = os.path.basename(target)
        with self.state.tx() as db:
            db.execute("INSERT OR IGNORE INTO stores(path) VALUES (?)", (store,))
            db.execute("INSERT OR IGNORE INTO versions(kind, key, version, path, deployment_id, "
                       "created) VALUES ('model',?,?,?,0,?)", (r.id, version, target, time.time()))
            db.execute("INSERT OR IGNORE INTO installed(kind, key, destination, version, "
                       "version_path, deployment_id) VALUES ('model',?,?,?,?,0)",
                       (r.id, r.model.destination, version, target))
        return True

    def resolve_all(self) -> None:
        """Resolve every model's source at once (HEAD requests, file hashes run in parallel);
        the results wait in ``self.resolved`` for :meth:`prepare_model`."""
        jobs: list[tuple[str, Source, Optional[str]]] = []
        for r in self.group.resources:
            if r.model is None:
                continue
            prev = self.installed("model", r.id)
            spec = _model_spec(r.model)
            try:
                source = open_source(r.model.source, self.group.s3, self.group.sagemaker)
            except (SourceError, ValueError) as exc:
                self.resolved[r.id] = (None, exc)
                continue
            jobs.append(
                (r.id, source, prev["token"] if prev and prev["spec_json"] == spec else None)
            )
        if not jobs:
            return
        self.emit(
            event="resource", key="", kind="model", message=f"resolving {len(jobs)} source(s)"
        )

        def one(job: tuple[str, Source, Optional[str]]) -> tuple[Source, object]:
            try:
                return job[1], job[1].resolve(job[2])
            except (SourceError, ValueError, OSError) as exc:
                return job[1], exc

        with concurrent.futures.ThreadPoolExecutor(max_workers=min(8, len(jobs))) as pool:
            for job, res in zip(jobs, pool.map(one, jobs)):
                self.resolved[job[0]] = res

    def prepare_model(self, r: Resource, it: ItemResult) -> Optional[Callable[[], None]]:
        assert r.model is not None
        m = r.model
        spec = _model_spec(m)
        it.path = m.destination
        it.source = m.source
        it.spec = spec
        self.check_destination(r)
        prev = self.installed("model", r.id)
        source, got = self.resolved.pop(r.id)
        if isinstance(got, BaseException):
            raise got
        assert source is not None and isinstance(got, SourceInfo)
        info = got
        it.token = info.token
        if prev and prev["spec_json"] == spec and _keep_installed(it, prev, info.token, m.destination):
            if m.owner and m.owner.permission == "rw":
                # The function granted rw writes this version in place and keeps what it wrote;
                # a deploy that did not install it cannot vouch for it, so it does not call it
                # "unchanged" once anything in it changed (a change moves an inode's ctime,
                # which no user can set back).
                row = self.state.one("SELECT created FROM versions WHERE kind='model' AND "
                                     "key=? AND version=?", r.id, prev["version"])
                changed = (_changed_since(prev["version_path"], row["created"])
                           if row is not None and row["created"] else None)
                if changed is not None:
                    it.outcome = "modified"
                    it.message = (f"kept as the function granted rw left it: {changed} changed "
                                  "after the deploy installed it, so it no longer matches the "
                                  "source (change the source, or reset, to install it again)")
                return None
            damage = changed_in_place(self.state, "model", r.id, prev["version"],
                                      prev["version_path"])
            if damage is None:
                return None
            # Changed in place (not by a function: none may write it): installed again.
            it.outcome, it.version, it.version_path = "pending", None, None
            it.message = f"installed again: version {prev['version']} {damage}"

        def build() -> None:
            store = store_for(m.destination)
            parent, store_name = os.path.split(store)
            # Checked again before anything is made on the way (the download took a while).
            self.check_place(r.id, m.destination)
            os.makedirs(parent, exist_ok=True)
            pfd = os.open(parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            sfd = gfd = -1
            try:
                # From here every step goes through descriptors of directories whose real path
                # was checked: a link swapped into the destination's path changes nothing.
                self.check_place(
                    r.id, m.destination, os.path.join(_fd_path(pfd, parent), os.path.basename(
                        m.destination))
                )
                with contextlib.suppress(FileExistsError):
                    os.mkdir(store_name, 0o755, dir_fd=pfd)
                try:
                    sfd = _open_dir(store_name, pfd)
                except OSError as exc:
                    raise DeployError(
                        f"the version store {store} cannot be opened as a directory of its "
                        f"own ({exc.strerror}); is it a symbolic link? remove it"
                    ) from None
                self.state.add_store(store)
                version = _version_name(self.dep, info.token, store)
                vpath = os.path.join(store, version)
                staging_name = f"staging-{self.dep}"
                staging = os.path.join(store, staging_name)
                self.state.journal(self.dep, "stage", "model", r.id, staging, vpath, None)
                downloads = os.path.join(self.s.root, "downloads")
                os.makedirs(downloads, exist_ok=True)
                part = os.path.join(
                    downloads,
                    hashlib.sha256(f"{r.id}\0{info.token}".encode()).hexdigest()[:24] + ".part",
                )
                self.emit(
                    event="resource",
                    key=r.id,
                    kind="model",
                    total=info.size,
                    message=f"downloading {info.location}",
                )

                def on_bytes(done: int, total: Optional[int]) -> None:
                    self.emit(event="bytes", key=r.id, kind="model", done=done, total=total)

                name = info.location.rsplit("/", 1)[-1]
                self.check_space(r, info, part, store)
                # Only verified bytes are unpacked: the download (and its digests) completes
                # first.
                try:
                    res = fetch(
                        source,
                        info,
                        part,
                        sha256=m.sha256,
                        attempts=self.retries,
                        backoff_s=self.backoff_s,
                        progress=on_bytes,
                    )
                except OSError as exc:
                    if not _no_space(exc):
                        raise
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(part)  # a partial file no one can finish only takes space
                    raise DeployError(self.space_message(r, f"the download into {part} ran "
                                                         f"out of space ({exc.strerror})",
                                                         info.size, downloads)) from None
                it.bytes, it.attempts = res.downloaded, res.attempts
                self.emit(event="resource", key=r.id, kind="model", message="unpacking")
                _rmtree(os.path.join(_fd_path(sfd, store), staging_name))
                os.mkdir(staging_name, 0o700, dir_fd=sfd)
                gfd = _open_dir(staging_name, sfd)
                # The staging directory by its descriptor: unpacking and ownership go there
                # whatever happens to the path above it.
                at = f"/proc/self/fd/{gfd}" if os.path.isdir(f"/proc/self/fd/{gfd}") else staging
                try:
                    unpack(
                        part,
                        at,
                        name=name,
                        max_bytes=m.max_unpacked_bytes,
                        max_files=m.max_files,
                    )
                    apply_owner(
                        at,
                        m.owner.group if m.owner else None,
                        m.owner.permission if m.owner else None,
                    )
                except UnpackError as exc:
                    _rmtree(os.path.join(_fd_path(sfd, store), staging_name))
                    os.unlink(part)
                    raise UnpackError(f"{name}: {exc}") from None
                except OSError as exc:
                    if not _no_space(exc):
                        raise
                    _rmtree(os.path.join(_fd_path(sfd, store), staging_name))
                    os.unlink(part)
                    raise DeployError(self.space_message(r, f"unpacking into {store} ran out "
                                                         f"of space ({exc.strerror})", None,
                                                         store)) from None
                digest = version_digest("model", at)
                os.fsync(gfd)
                os.rename(staging_name, version, src_dir_fd=sfd, dst_dir_fd=sfd)
                os.fsync(sfd)
            finally:
                for fd in (gfd, sfd, pfd):
                    if fd >= 0:
                        os.close(fd)
            with self.state.tx() as db:
                db.execute(
                    "INSERT OR REPLACE INTO versions(kind, key, version, path, token, "
                    "deployment_id, created, digest) VALUES (?,?,?,?,?,?,?,?)",
                    ("model", r.id, version, vpath, info.token, self.dep, time.time(), digest),
                )
            os.unlink(part)
            it.outcome, it.version, it.version_path = "installed", version, vpath

        return build

    def prepare_device(self, r: Resource, it: ItemResult) -> Optional[Callable[[], None]]:
        assert r.device is not None
        p = r.device.path
        it.path = p
        try:
            st = os.stat(p)
        except FileNotFoundError:
            raise DeployError(f"device {p} does not exist on this machine") from None
        if not (stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode)):
            raise DeployError(f"{p} is not a character or block device; device resources must be")
        _, missing = device_nodes(p)
        if missing:
            raise DeployError(
                f"GPU {p} needs {', '.join(missing)}, which does not exist on this machine: load "
                "the driver's modules (for /dev/nvidia-uvm: `nvidia-modprobe -u -c 0`, or run "
                "one CUDA program as root) and deploy again"
            )
        it.outcome = "verified"
        return None

    def prepare_volume(self, r: Resource, it: ItemResult) -> Optional[Callable[[], None]]:
        assert r.volume is not None
        p = r.volume.path
        it.path = p
        real = os.path.realpath(p)
        if not os.path.isdir(real):
            raise DeployError(f"volume {p} is not an existing directory on this machine; create "
                              "it (owned by the group the functions should share it through)")
        problem = denied_destination(real)  # again: links may have moved since validation
        if problem:
            raise DeployError(f"volume {p} is, through symbolic links, {real}, which is {problem}")
        root = os.path.realpath(self.s.root)
        if real == root or real.startswith(root.rstrip("/") + "/") or \
                root.startswith(real.rstrip("/") + "/"):
            raise DeployError(f"volume {p} ({real}) overlaps the core's root {root}, which no "
                              "function may see; choose a directory outside it")
        it.outcome = "verified"
        return None

    def prepare_function(self, f: Function, it: ItemResult) -> Optional[Callable[[], None]]:
        where = f"functions[{self.group.functions.index(f)}].code"

        def refused(exc: Exception) -> UnpackError:
            return UnpackError(f"{where} ({f.code}): {exc}")

        max_bytes, max_files = _code_limits(f)
        try:
            token = "code:" + tree_digest(f.code, max_bytes=max_bytes, max_files=max_files)
        except (UnpackError, OSError) as exc:
            raise refused(exc) from None
        it.token, it.source = token, f.code
        store = os.path.join(self.s.root, "functions", f.name)
        dest = os.path.join(store, "current")
        it.path = dest
        prev = self.installed("function", f.name)
        if _keep_installed(it, prev, token, dest):
            assert prev is not None
            damage = changed_in_place(self.state, "function", f.name, prev["version"],
                                      prev["version_path"])
            if damage is None:
                return None
            it.outcome, it.version, it.version_path = "pending", None, None
            it.message = f"installed again: version {prev['version']} {damage}"

        def build() -> None:
            os.makedirs(store, exist_ok=True)
            self.state.add_store(store)
            staging = os.path.join(store, f"staging-{self.dep}")
            self.state.journal(self.dep, "stage", "function", f.name, staging, None, None)
            _rmtree(staging)
            os.mkdir(staging, 0o700)
            try:
                _, digest = copy_tree(
                    f.code, staging, max_bytes=max_bytes, max_files=max_files
                )
            except (UnpackError, OSError) as exc:
                _rmtree(staging)
                raise refused(exc) from None
            # What was copied decides the version (the tree may have changed since planning).
            it.token = "code:" + digest
            installed_digest = version_digest("function", staging)
            version = _version_name(self.dep, it.token, store)
            vpath = os.path.join(store, version)
            self.state.journal(self.dep, "stage", "function", f.name, staging, vpath, None)
            os.rename(staging, vpath)
            fsync_dir(store)
            self.state.x(
                "INSERT OR REPLACE INTO versions(kind, key, version, path, token, deployment_id, "
                "created, digest) VALUES (?,?,?,?,?,?,?,?)",
                "function",
                f.name,
                version,
                vpath,
                it.token,
                self.dep,
                time.time(),
                installed_digest,
            )
            it.outcome, it.version, it.version_path = "installed", version, vpath

        return build

    def space_message(self, r: Resource, what: str, need: Optional[int], where: str) -> str:
        """The error for resource ``r`` lacking space on ``where``'s filesystem."""
        needs = f"needs {need} bytes, " if need is not None else ""
        return (f"resource {r.id!r}: not enough disk space: {what}; {needs}"
                f"{free_bytes(where)} bytes are available on the filesystem of {where}; "
                "free some space and deploy again (the previous version keeps serving)")

    def check_space(self, r: Resource, info: SourceInfo, part: str, store: str) -> None:
        """Refuse (DeployError) to start a download that cannot fit: what is left of the
        package goes to ``part``, and at least the package's size (more once unpacked, up to
        the resource's cap) into ``store``. Partial downloads of other deployments are given up
        first when they stand in the way."""
        if info.size is None:
            return  # unknown until it arrives: running out of space is caught as it happens
        have = os.path.getsize(part) if os.path.exists(part) else 0
        need_dl, need_store = max(0, info.size - have), info.size
        downloads = os.path.dirname(part)
        same = os.stat(downloads).st_dev == os.stat(store).st_dev
        needs = [(downloads, need_dl + (need_store if same else 0))]
        if not same:
            needs.append((store, need_store))
        for where, need in needs:
            if free_bytes(where) < need and where == downloads:
                remove_partial_downloads(self.s.root, keep=part)
            if free_bytes(where) < need:
                cap = r.model.max_unpacked_bytes if r.model else None
                what = (f"{info.location} is {info.size} bytes (downloaded to {downloads}"
                        f"{', then unpacked on the same filesystem' if same else ''}"
                        f"{f', up to {cap} bytes unpacked' if cap else ''})")
                raise DeployError(self.space_message(r, what, need, where))

    def switch(self, it: ItemResult, target: Optional[str]) -> None:
        assert it.path is not None
        dest = it.path
        check: Optional[PlaceCheck] = None
        if it.kind == "model":
            # Checked again here, right before the switch: a link swapped into the path since
            # validation is refused as it would have been then.
            def check(real: str) -> None:
                self.check_place(it.key, dest, real)

            check(real_destination(dest))  # before any directory is made on the way
        tmp_dir = os.path.dirname(dest) if it.kind == "function" else store_for(dest)
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        os.makedirs(tmp_dir, exist_ok=True)
        self.state.journal(self.dep, "switch", it.kind, it.key, dest, target, _current_target(dest))
        _point(dest, target, tmp_dir, check)

    def run(self) -> int:
        g = self.group
        started = time.time()
        with self.state.tx() as db:
            cur = db.execute(
                "INSERT INTO deployments(kind, group_name, group_file, group_json, status, "
                "on_failure, pid, started) VALUES ('deploy',?,?,?,?,?,?,?)",
                (
                    g.name,
                    g.path,
                    json.dumps(private.store_environments(self.s.root, g.to_dict())),
                    "Building",
                    self.on_failure,
                    os.getpid(),
                    started,
                ),
            )
            self.dep = int(cur.lastrowid or 0)
        self.emit(event="start", key=str(self.dep), message=g.name)
        units: list[tuple[str, str, Callable[[ItemResult], Optional[Callable[[], None]]]]] = []
        for r in g.resources:
            if r.model is not None:
                units.append(("model", r.id, functools.partial(self.prepare_model, r)))
            elif r.device is not None:
                units.append(("device", r.id, functools.partial(self.prepare_device, r)))
            else:
                units.append(("volume", r.id, functools.partial(self.prepare_volume, r)))
        for f in g.functions:
            units.append(("function", f.name, functools.partial(self.prepare_function, f)))
        failed = False
        errors = (DeployError, UnpackError, SourceError, OSError, ValueError)
        # Building: resolve every source and decide what changed (nothing is downloaded yet, so
        # a missing object or a bad device fails the deployment before any transfer).
        builds: list[tuple[ItemResult, Callable[[], None]]] = []
        self.resolve_all()
        for kind, key, plan in units:
            it = ItemResult(kind, key, "pending")
            self.items.append(it)
            t0 = time.monotonic()
            try:
                build = plan(it)
            except errors as exc:
                it.outcome, it.message = "failed", str(exc)
                failed = True
                build = None
            it.seconds = time.monotonic() - t0
            if build is not None:
                builds.append((it, build))
            else:
                self.record(it)
                self.emit(event="done", key=key, kind=kind, message=it.outcome)
        # InProgress: fetch, verify and unpack what changed.
        self.state.x("UPDATE deployments SET status='InProgress' WHERE id=?", self.dep)
        self.emit(event="status", key=str(self.dep), message="InProgress")
        for it, build in builds:
            if failed and self.on_failure == "rollback":
                it.outcome, it.message = "skipped", "not attempted: another resource failed"
            else:
                t0 = time.monotonic()
                try:
                    build()
                except errors as exc:
                    it.outcome, it.message = "failed", str(exc)
                    failed = True
                it.seconds += time.monotonic() - t0
            if it.outcome != "installed":
                self.record(it)
            self.emit(event="done", key=it.key, kind=it.kind, done=it.bytes, message=it.outcome)

        in_group = {(it.kind, it.key) for it in self.items}
        removed = [
            ItemResult(row["kind"], row["key"], "removed", path=row["destination"])
            for row in self.state.q("SELECT * FROM installed")
            if (row["kind"], row["key"]) not in in_group and row["kind"] not in VERIFIED_KINDS
        ]
        apply = not failed or self.on_failure == "keep"
        switched: list[ItemResult] = []
        if apply:
            try:
                for it in self.items:
                    if it.outcome == "installed":
                        prev = self.installed(it.kind, it.key)
                        if prev and prev["destination"] and prev["destination"] != it.path:
                            # The destination moved: the old link goes (journalled like a switch).
                            old = ItemResult(it.kind, it.key, "moved", path=prev["destination"])
                            self.switch(old, None)
                            switched.append(old)
                        self.switch(it, it.version_path)
                        switched.append(it)
                # Resources dropped from the group go too (with --on-failure=keep as well: only
                # the failed resources keep their previous version).
                for it in removed:
                    self.switch(it, None)
                    switched.append(it)
            except (OSError, DeployError) as exc:
                for it in reversed(switched):  # undo from the journal's previous targets
                    j = self.state.one(
                        "SELECT previous FROM journal WHERE deployment_id=? AND op='switch' "
                        "AND kind=? AND key=? ORDER BY id DESC",
                        self.dep,
                        it.kind,
                        it.key,
                    )
                    tmp = (
                        os.path.dirname(it.path or "")
                        if it.kind == "function"
                        else store_for(it.path or "")
                    )
                    _point(it.path or "", j["previous"] if j else None, tmp)
                failed, apply = True, False
                for it in self.items:
                    if it.outcome == "installed":
                        it.outcome, it.message = "rolled-back", f"switching failed: {exc}"
        if not apply:
            for it in self.items:
                if it.outcome == "installed":
                    it.outcome = "rolled-back"
                    it.message = (
                        "prepared, not installed: the deployment failed and was rolled back"
                    )
            removed = []
        status = "Failure" if failed else "Success"
        bad = [it for it in self.items if it.outcome == "failed"]
        if not failed:
            msg = "\n".join(f"warning: {w}" for w in traversal_warnings(g))
        elif apply:
            msg = f"{len(bad)} resource(s) failed; the others were installed (--on-failure=keep)"
        else:
            msg = f"{len(bad) or 1} resource(s) failed; rolled back to the previous group"
        with self.state.tx() as db:
            if apply:
                for it in self.items:
                    if it.outcome == "installed":
                        db.execute(
                            "INSERT OR REPLACE INTO installed(kind, key, destination, version, "
                            "version_path, token, source, spec_json, deployment_id) "
                            "VALUES (?,?,?,?,?,?,?,?,?)",
                            (
                                it.kind,
                                it.key,
                                it.path,
                                it.version,
                                it.version_path,
                                it.token,
                                it.source,
                                it.spec,
                                self.dep,
                            ),
                        )
                    elif it.outcome == "verified":
                        db.execute(
                            "INSERT OR REPLACE INTO installed(kind, key, destination, "
                            "deployment_id) VALUES (?,?,?,?)",
                            (it.kind, it.key, it.path, self.dep),
                        )
                for it in removed:
                    db.execute("DELETE FROM installed WHERE kind=? AND key=?", (it.kind, it.key))
                if apply:
                    for row in list(
                        db.execute("SELECT kind, key FROM installed WHERE kind IN "
                                   "('device', 'volume')")
                    ):
                        if (row[0], row[1]) not in in_group:
                            db.execute(
                                "DELETE FROM installed WHERE kind=? AND key=?", (row[0], row[1])
                            )
            for it in self.items + removed:
                self._record(db, it)
            db.execute("DELETE FROM journal WHERE deployment_id=?", (self.dep,))
            db.execute(
                "UPDATE deployments SET status=?, applied=?, finished=?, message=? WHERE id=?",
                (status, 1 if apply else 0, time.time(), msg, self.dep),
            )
        _gc(self.state)
        remove_partial_downloads(self.s.root)
        if apply:
            _backup_state(self.state, self.emit)
        self.emit(event="end", key=str(self.dep), message=status)
        return self.dep


def deploy(
    group: Group | str,
    root: Optional[str] = None,
    *,
    on_failure: str = "rollback",
    wait_s: float = 0.0,
    progress: Optional[ProgressCallback] = None,
    retries: int = 4,
    backoff_s: float = 0.2,
) -> Deployment:
    """Deploy a group into ``root``.

    Parameters
    ----------
    group:
        A validated :class:`Group` or the path of a group file.
    root:
        pyengine's directory (see :func:`default_root`).
    on_failure:
        "rollback" (default): any failing resource leaves the previous group in place.
        "keep": install what succeeded; failed resources keep their previous version.
    wait_s:
        How long to wait for another running deployment before refusing.
    progress:
        Called with :class:`ProgressEvent` as the deployment goes.
    retries, backoff_s:
        Download attempts per resource and the first backoff (doubling, at most 5 s).

    Returns
    -------
    Deployment
        Its ``status`` is "Success" or "Failure"; ``items`` hold each resource's outcome.
    """
    if on_failure not in ("rollback", "keep"):
        raise ValueError(f"on_failure={on_failure!r}; expected 'rollback' or 'keep'")
    g = load_group(group) if isinstance(group, str) else group
    # Checked on this machine, as this user (a fleet's publisher validates elsewhere): nothing
    # is made, and the previous group stays, when a destination cannot be installed at.
    problems = destination_problems(g)
    if problems:
        raise GroupError(g.path or "<group>", problems)
    try:
        s = _Session(root, wait_s, f"deploy of group {g.name}")
        try:
            dep = _Deployer(s, g, on_failure, progress, max(1, retries + 1), backoff_s).run()
            return _load_deployment(s.state, dep)
        finally:
            s.close()
    except OSError as exc:
        if not _no_space(exc):
            raise
        r = resolve_root(root)
        raise DeployError(
            f"no space left on the filesystem of {exc.filename or r} ({exc.strerror}; "
            f"{free_bytes(r)} bytes available in {r}); free some space and deploy again (the "
            "previous deployment keeps serving)") from None


# ----------------------------------------------------------------------------------- rollback/reset


def rollback(
    root: Optional[str] = None, *, wait_s: float = 0.0, progress: Optional[ProgressCallback] = None
) -> Deployment:
    """Switch every resource back to the previous successful group (as a new deployment)."""
    s = _Session(root, wait_s, "rollback")
    try:
        state = s.state
        applied = state.q("SELECT * FROM deployments WHERE applied=1 ORDER BY id DESC")
        earlier = [d for d in applied[1:] if d["status"] == "Success"]
        target = earlier[0] if earlier else None
        if not applied or target is None:
            raise DeployError("there is no previous successful deployment to roll back to")
        items = state.q(
            "SELECT * FROM items WHERE deployment_id=? AND outcome IN "
            "('installed','unchanged','modified','verified')",
            target["id"],
        )
        plan: list[tuple[ItemResult, Optional[str]]] = []
        for row in items:
            v = None
            if row["kind"] not in VERIFIED_KINDS:
                vrow = state.one(
                    "SELECT path FROM versions WHERE kind=? AND key=? AND version=?",
                    row["kind"],
                    row["key"],
                    row["version"],
                )
                if not vrow or not os.path.isdir(vrow["path"]):
                    raise DeployError(
                        f"version {row['version']} of {row['kind']} {row['key']!r} is no "
                        "longer kept; cannot roll back"
                    )
                v = vrow["path"]
            plan.append(
                (
                    ItemResult(
                        row["kind"],
                        row["key"],
                        "installed",
                        version=row["version"],
                        path=row["path"],
                        token=row["token"],
                        source=row["source"],
                        version_path=v,
                        spec=row["spec"],
                    ),
                    v,
                )
            )
        keys = {(it.kind, it.key) for it, _ in plan}
        for row in state.q("SELECT * FROM installed"):
            if (row["kind"], row["key"]) not in keys and row["kind"] not in VERIFIED_KINDS:
                plan.append(
                    (ItemResult(row["kind"], row["key"], "removed", path=row["destination"]), None)
                )
        with state.tx() as db:
            cur = db.execute(
                "INSERT INTO deployments(kind, group_name, group_file, group_json, status, "
                "on_failure, pid, started, message) VALUES ('rollback',?,?,?,?,?,?,?,?)",
                (
                    target["group_name"],
                    target["group_file"],
                    target["group_json"],
                    "InProgress",
                    "rollback",
                    os.getpid(),
                    time.time(),
                    f"rollback to deployment {target['id']}",
                ),
            )
            dep = int(cur.lastrowid or 0)
        d = _Deployer(s, Group(str(target["group_name"] or "")), "rollback", progress, 1, 0.0)
        d.dep = dep
        current_dest = {
            (row["kind"], row["key"]): row["destination"]
            for row in state.q("SELECT kind, key, destination FROM installed")
        }
        for it, v in plan:
            if it.kind not in VERIFIED_KINDS and it.path:
                old = current_dest.get((it.kind, it.key))
                if old and old != it.path:  # the destination moved since: its link goes
                    d.switch(ItemResult(it.kind, it.key, "moved", path=old), None)
                d.switch(it, v)
        with state.tx() as db:
            db.execute("DELETE FROM installed")
            for it, v in plan:
                if it.outcome == "removed":
                    continue
                db.execute(
                    "INSERT INTO installed(kind, key, destination, version, version_path, token, "
                    "source, spec_json, deployment_id) VALUES (?,?,?,?,?,?,?,?,?)",
                    (it.kind, it.key, it.path, it.version, v, it.token, it.source, it.spec, dep),
                )
            for it, _ in plan:
                d._record(db, it)
            db.execute("DELETE FROM journal WHERE deployment_id=?", (dep,))
            db.execute(
                "UPDATE deployments SET status='Success', applied=1, finished=? WHERE id=?",
                (time.time(), dep),
            )
        # The group rolled back to is now also the one a further rollback returns from.
        _gc(state)
        _backup_state(state, d.emit)
        return _load_deployment(state, dep)
    finally:
        s.close()


def reset(root: Optional[str] = None, *, wait_s: float = 0.0) -> list[str]:
    """Remove everything deployed into ``root`` (destinations' links, versions, function code)
    and the state. Returns the paths removed."""
    r = resolve_root(root)
    if not os.path.exists(os.path.join(r, "state.db")):
        return []
    s = _Session(r, wait_s, "reset")
    removed: list[str] = []
    try:
        state = s.state
        for row in state.q("SELECT * FROM installed WHERE kind='model'"):
            dest = row["destination"]
            if dest and os.path.islink(dest):
                os.unlink(dest)
                removed.append(dest)
        for row in state.q("SELECT path FROM stores"):
            if os.path.exists(row["path"]):
                _rmtree(row["path"])
                removed.append(row["path"])
        for sub in ("functions", "downloads", private.ENV_DIR):
            p = os.path.join(r, sub)
            if os.path.exists(p):
                _rmtree(p)
                removed.append(p)
    finally:
        s.close()
    for n in (*STATE_FILES, BACKUP_FILE, STORES_FILE):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(r, n))
    removed.append(os.path.join(r, "state.db"))
    return removed


# ----------------------------------------------------------------------------------- queries


def _load_deployment(state: State, dep: int) -> Deployment:
    row = state.one("SELECT * FROM deployments WHERE id=?", dep)
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
        for r in state.q("SELECT * FROM items WHERE deployment_id=? ORDER BY rowid", dep)
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


def _open_state(root: Optional[str]) -> Optional[State]:
    r = resolve_root(root)
    if not os.path.exists(os.path.join(r, "state.db")):
        return None
    return State(r, readonly=True)


def list_deployments(root: Optional[str] = None) -> list[Deployment]:
    """Every deployment recorded in ``root``, newest first."""
    state = _open_state(root)
    if state is None:
        return []
    try:
        return [
            _load_deployment(state, int(r["id"]))
            for r in state.q("SELECT id FROM deployments ORDER BY id DESC")
        ]
    finally:
        state.close()


def get_deployment(dep: int, root: Optional[str] = None) -> Deployment:
    """One deployment by id."""
    state = _open_state(root)
    if state is None:
        raise DeployError(
            f"no deployment {dep}: nothing has been deployed into {resolve_root(root)}"
        )
    try:
        return _load_deployment(state, dep)
    finally:
        state.close()
