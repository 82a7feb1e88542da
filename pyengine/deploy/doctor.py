"""``pyengine doctor``: how sound a root is, and ``--repair`` for a damaged state database.

What :func:`check` looks at: ``state.db`` (``PRAGMA quick_check``, or empty where a deployment
was made), its backup (``state.db.backup``, copied after every deployment that changed what is
installed), every installed version (present, what its destination points to, its content
digest against the one recorded at install), the functions' environment files, partial
downloads and the free space of the root's filesystem.

What :func:`repair` does with a damaged or emptied ``state.db`` (moved aside to
``state.db.damaged-<time>``, never deleted):

1. **Restore** the backup when it is sound: everything as it was after the last deployment
   that changed what is installed. Destinations are pointed back at the versions it records
   (a later deploy that was killed may have switched some), and leftovers are cleaned up.
2. **Rebuild** otherwise, from what can still be read:

   - every row SQLite can still read in the damaged file (table by table, row by row);
   - functions' installed code (``ROOT/functions/<name>/current``): recorded as installed, so
     a redeploy of the same code reports it unchanged;
   - model versions: they live beside their destinations, outside the root;
     ``ROOT/stores.list`` names every store this root made. The next deploy finds the version
     a destination in one of them links to, records it (it keeps serving) and installs the
     group's version over it.

   What cannot be rebuilt: deployments and groups in unreadable pages (functions' handlers,
   settings and resource grants, subscriptions) and the history. The core serves nothing
   until the group is deployed again. A store missing from ``stores.list`` (made before the
   list was kept) is refused by that deploy as managed by another root: remove its link.
   Environment files (``ROOT/environments``) stay until a deployment no longer names them.
"""

from __future__ import annotations

import os
import sqlite3
import time
from dataclasses import dataclass, field
from typing import Optional

from pyengine.common.paths import resolve_root
from pyengine.deploy import private
from pyengine.deploy.errors import DeployError, StateError
from pyengine.deploy.layout import current_target, free_bytes, point, store_for
from pyengine.deploy.lock import RootLock
from pyengine.deploy.recovery import recover_locked
from pyengine.deploy.schema import (
    BACKUP_FILE,
    DEPLOYED_MARKS,
    STATE_FILES,
    check_database,
    known_stores,
)
from pyengine.deploy.state import State
from pyengine.deploy.tree import tree_digest
from pyengine.deploy.versions import changed_in_place, version_digest, writable_by_function


@dataclass
class Finding:
    """One line of a report: ``level`` is "ok", "warning" or "error"."""

    level: str
    what: str


@dataclass
class Report:
    """What :func:`check` or :func:`repair` found (and did)."""

    root: str
    findings: list[Finding] = field(default_factory=list)
    repaired: list[str] = field(default_factory=list)

    @property
    def healthy(self) -> bool:
        """No finding is an error."""
        return not any(f.level == "error" for f in self.findings)

    def add(self, level: str, what: str) -> None:
        """Add a finding."""
        self.findings.append(Finding(level, what))


def _sound_file(path: str) -> Optional[str]:
    """None when the SQLite file at ``path`` opens read-only and passes quick_check, else why
    not."""
    if not os.path.exists(path):
        return "missing"
    if os.path.getsize(path) == 0:
        return "empty (0 bytes)"
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            return check_database(db)
        finally:
            db.close()
    except sqlite3.Error as exc:
        return str(exc)


def check(root: Optional[str] = None, thorough: bool = True) -> Report:
    """Report on the health of ``root`` (nothing is changed; no lock is taken).

    Parameters
    ----------
    root
        pyengine's directory (default :func:`pyengine.deploy.default_root`).
    thorough
        Hash every installed version (slow for large models) rather than only those whose
        files' ctime moved.
    """
    r = resolve_root(root)
    report = Report(r)
    path = os.path.join(r, STATE_FILES[0])
    backup = os.path.join(r, BACKUP_FILE)
    backup_problem = _sound_file(backup)
    if backup_problem is None:
        report.add("ok", f"backup {backup} is sound")
    elif backup_problem == "missing":
        report.add("warning" if os.path.exists(path) else "ok",
                   f"no backup {backup} (one is copied after each deployment)")
    else:
        report.add("warning", f"backup {backup} is unusable: {backup_problem}")
    if not os.path.exists(path):
        report.add("ok", f"nothing deployed in {r} (no {path})")
        return report
    try:
        state = State(r, readonly=True)
    except StateError as exc:
        report.add("error", str(exc))
        return report
    try:
        report.add("ok", f"{path} is sound (quick_check)")
        _check_installed(state, report, thorough)
        _check_environments(state, report)
    finally:
        state.close()
    _check_disk(r, report)
    return report


def _check_installed(state: State, report: Report, thorough: bool) -> None:
    for row in state.installed():
        if row["kind"] not in ("model", "function"):
            continue
        name = f"{row['kind']} {row['key']!r} version {row['version']}"
        vpath, dest = row["version_path"], row["destination"]
        if not vpath or not os.path.isdir(vpath):
            report.add("error", f"{name}: its directory {vpath} is missing; deploy the group "
                       "again")
            continue
        if current_target(dest) != vpath:
            report.add("error", f"{name}: {dest} does not point to it; `pyengine doctor "
                       f"--repair --root {state.root}` points it back")
            continue
        if row["kind"] == "model" and writable_by_function(row["spec_json"]):
            report.add("ok", f"{name}: writable by its function (owner.permission rw); its "
                       "content is not compared")
            continue
        try:
            damage = changed_in_place(state, row["kind"], row["key"], row["version"], vpath,
                                      thorough=thorough)
        except OSError as exc:
            damage = f"cannot be read ({exc})"
        if damage:
            report.add("error", f"{name} changed in place: {damage}; the next deploy of the "
                       "group installs it again")
        else:
            recorded = state.version(row["kind"], row["key"], row["version"])
            known = " (content digest matches)" if recorded and recorded["digest"] else (
                " (installed before digests were recorded: not compared)")
            report.add("ok", f"{name}: as installed{known}")


def _check_environments(state: State, report: Report) -> None:
    dep = state.latest_applied()
    names = private.referenced_environments([dep["group_json"]] if dep else [])
    for n in sorted(names):
        p = os.path.join(state.root, private.ENV_DIR, n)
        if not os.path.isfile(p):
            report.add("error", f"environment file {p} of the deployed group is missing; deploy "
                       "the group again")


def _check_disk(root: str, report: Report) -> None:
    downloads = os.path.join(root, "downloads")
    if os.path.isdir(downloads):
        parts = [os.path.join(downloads, n) for n in os.listdir(downloads)]
        if parts:
            size = sum(os.path.getsize(p) for p in parts if os.path.isfile(p))
            report.add("warning", f"{len(parts)} partial download(s) in {downloads} ({size} "
                       "bytes): removed by the next deploy, or when space runs short")
    report.add("ok", f"{free_bytes(root)} bytes free on the filesystem of {root}")


# ------------------------------------------------------------------------------------ repair


def repair(root: Optional[str] = None, *, wait_s: float = 0.0) -> Report:
    """Repair ``root``'s state database when it is damaged or emptied: restore the backup, or
    rebuild what can be read (see the module's description). A sound database is kept; with
    either, destinations are pointed back at the versions the state records. Returns the
    report of a :func:`check` made afterwards, with what was done in ``repaired``."""
    r = resolve_root(root)
    path = os.path.join(r, STATE_FILES[0])
    lock = RootLock(r)
    lock.acquire(wait_s, "repair")
    done: list[str] = []
    try:
        if os.path.exists(path):
            try:
                State(r).close()
                damaged = False
            except StateError:
                damaged = True
            if damaged:
                aside = _move_aside(r)
                done.append(f"moved the damaged database to {aside}")
                backup = os.path.join(r, BACKUP_FILE)
                if _sound_file(backup) is None:
                    _restore(backup, path, r)
                    done.append(f"restored {path} from {backup}")
                else:
                    done.extend(_rebuild(aside, r))
            state = State(r)
            try:
                # Destinations follow the state (restored, or sound with a link moved by hand).
                done.extend(_point_back(state))
                recover_locked(state)
                if damaged:
                    state.backup()
            finally:
                state.close()
    finally:
        lock.release()
    report = check(r)
    report.repaired = done
    return report


def _move_aside(root: str) -> str:
    """Rename state.db and its side files to ``*.damaged-<time>``; the new name of state.db."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for name in STATE_FILES:
        p = os.path.join(root, name)
        if os.path.exists(p):
            os.replace(p, os.path.join(root, f"{name}.damaged-{stamp}"))
    return os.path.join(root, f"{STATE_FILES[0]}.damaged-{stamp}")


def _restore(backup: str, path: str, root: str) -> None:
    os.close(private.private_file(path, root))  # 0600 before a byte is written
    src = sqlite3.connect(f"file:{backup}?mode=ro", uri=True)
    dst = sqlite3.connect(path, isolation_level=None)
    try:
        src.backup(dst)
    finally:
        src.close()
        dst.close()


def _rebuild(damaged: str, root: str) -> list[str]:
    """A new database with what can be read from ``damaged`` and from the functions
    installed in the root; lines saying what was recovered and what was not."""
    notes: list[str] = []
    state = State(root)
    try:
        copied = state.salvage(damaged)
        notes.append("rebuilt the state: " + (", ".join(f"{n} {t} row(s)" for t, n in
                                                         copied.items() if n) or
                                              "no row of the damaged database was readable"))
        for store in sorted(known_stores(root)):
            state.remember_store(store)
        notes.extend(_adopt_functions(state))
        lost = [t for t in ("deployments", "installed") if not copied.get(t)]
        if lost:
            notes.append(
                "not recoverable: the deployed group (handlers, settings, grants) and its "
                "history; the core serves nothing until the group is deployed again (that "
                "deploy takes over the model versions its destinations link to, and installs "
                "the group's)")
    finally:
        state.close()
    return notes


def _adopt_functions(state: State) -> list[str]:
    """Record each function's installed code (``ROOT/functions/<name>/current``) that the
    rebuilt state does not know."""
    notes = []
    top = os.path.join(state.root, "functions")
    for name in sorted(os.listdir(top)) if os.path.isdir(top) else []:
        link = os.path.join(top, name, "current")
        target = current_target(link)
        if not target or not os.path.isdir(target) or state.installed("function", name):
            continue
        try:
            digest = version_digest("function", target)
        except OSError as exc:
            notes.append(f"function {name!r}: {target} cannot be read ({exc}); not recorded")
            continue
        try:
            token = "code:" + tree_digest(target)
        except (OSError, ValueError):
            token = None
        state.adopt("function", name, os.path.dirname(link), link, target, token=token,
                    digest=digest, replace=True)
        notes.append(f"recorded function {name!r}'s installed code {target}")
    return notes


def _point_back(state: State) -> list[str]:
    """Point every destination back at the version the state records as installed (a deploy
    killed after the backup was taken may have switched some)."""
    notes = []
    for row in state.installed():
        if row["kind"] not in ("model", "function"):
            continue
        dest, vpath = row["destination"], row["version_path"]
        if not dest or not vpath or not os.path.isdir(vpath) or current_target(dest) == vpath:
            continue
        tmp = os.path.dirname(dest) if row["kind"] == "function" else store_for(dest)
        try:
            point(dest, vpath, tmp)
        except (OSError, ValueError) as exc:
            raise DeployError(f"cannot point {dest} back at {vpath}: {exc}") from None
        notes.append(f"pointed {dest} back at {vpath}")
    return notes


__all__ = ["DEPLOYED_MARKS", "Finding", "Report", "check", "repair"]
