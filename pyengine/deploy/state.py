"""The root's state: SQLite (WAL, synchronous=FULL) with a journal.

:class:`State` owns the connection and every statement the deploy layer runs on it: the other
modules call its methods and never write SQL (the tables are in :mod:`pyengine.deploy.schema`).
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from contextlib import contextmanager, suppress
from typing import Any, Iterable, Iterator, Optional, Sequence

from pyengine.deploy.errors import DeployError, StateError, repair_hint, space_short, state_error
from pyengine.deploy.private import private_file
from pyengine.deploy.schema import (
    BACKUP_FILE,
    DEPLOYED_MARKS,
    SCHEMA,
    STATE_FILES,
    STORES_FILE,
    add_columns,
    check_database,
    known_stores,
    tighten,
)

#: Tables copied row by row when the state is rebuilt, in this order.
TABLES = ("deployments", "items", "installed", "versions", "journal", "stores", "marks")
#: The columns of an item row (:meth:`State.record`), after its deployment's id.
ITEM_COLUMNS = ("kind", "key", "outcome", "version", "path", "token", "source", "spec", "bytes",
                "attempts", "seconds", "message")
#: The columns of an installed row (:meth:`State.finish`), before its deployment's id.
INSTALLED_COLUMNS = ("kind", "key", "destination", "version", "version_path", "token", "source",
                     "spec_json")


class State:
    """The state database of one root.

    ``state.db`` and its -wal/-shm/-journal files are readable and writable by their owner only
    (0600 whatever the umask; SQLite gives its side files the database's mode and owner), and
    files of an existing install are tightened here. Functions' environments are not in it
    (:mod:`pyengine.deploy.private`).

    The database is checked when opened (``PRAGMA quick_check``); a damaged one, or one emptied
    in a root that was deployed into, raises :class:`StateError`, as does any SQLite error
    later.
    """

    def __init__(self, root: str, readonly: bool = False) -> None:
        """Open ``root``'s state. ``readonly``: the caller only reads, so on a full filesystem
        (no room for SQLite's side files) the database file is read as it is."""
        self.root = root
        os.makedirs(root, exist_ok=True)
        self.path = os.path.join(root, STATE_FILES[0])
        try:
            if os.path.exists(self.path) and os.path.getsize(self.path) == 0:
                marks = [m for m in DEPLOYED_MARKS if os.path.exists(os.path.join(root, m))]
                if marks:
                    raise StateError(
                        f"{self.path} is empty (0 bytes), but {root} was deployed into (it holds "
                        f"{', '.join(marks)}); {repair_hint(root)}")
            os.close(private_file(self.path, root))
            for name in STATE_FILES[1:]:
                tighten(os.path.join(root, name))
        except PermissionError:
            raise DeployError(
                f"{self.path} is readable by its owner only (the core's user); run as that "
                "user (or root)"
            ) from None
        fallback = False
        try:
            self.db = sqlite3.connect(self.path, isolation_level=None, timeout=30)
        except sqlite3.Error as exc:
            raise state_error(self.path, exc) from None
        try:
            self.db.execute("PRAGMA journal_mode=WAL")
        except sqlite3.Error as exc:
            self.db.close()
            wal = os.path.join(root, STATE_FILES[1])
            if not (readonly and space_short(root) and not (
                    os.path.exists(wal) and os.path.getsize(wal) > 0)):
                raise state_error(self.path, exc) from None
            # A full filesystem has no room for the side files SQLite makes to open a WAL
            # database; with no WAL content, the database file alone is the state: read it.
            self.db = sqlite3.connect(f"file:{self.path}?immutable=1", uri=True,
                                      isolation_level=None)
            fallback = True
        self.db.row_factory = sqlite3.Row
        try:
            problem = check_database(self.db)
            if problem is not None:
                raise sqlite3.DatabaseError(problem)
            if fallback:
                return
            # Deleted and replaced content is overwritten, not left in free pages.
            self.db.execute("PRAGMA secure_delete=ON")
            self.db.execute("PRAGMA synchronous=FULL")
            self.db.execute("PRAGMA foreign_keys=ON")
            with self.tx():
                for stmt in SCHEMA.split(";"):
                    if stmt.strip():
                        self.db.execute(stmt)
                add_columns(self.db)
        except (sqlite3.Error, StateError) as exc:
            self.db.close()
            raise exc if isinstance(exc, StateError) else state_error(self.path, exc) from None

    def close(self) -> None:
        """Close the connection."""
        self.db.close()

    @contextmanager
    def tx(self) -> Iterator[sqlite3.Connection]:
        """One write transaction (BEGIN IMMEDIATE ... COMMIT, rolled back on error)."""
        try:
            self.db.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise state_error(self.path, exc) from None
        try:
            yield self.db
        except BaseException as exc:
            with suppress(sqlite3.Error):
                self.db.execute("ROLLBACK")
            if isinstance(exc, sqlite3.Error):
                raise state_error(self.path, exc) from None
            raise
        try:
            self.db.execute("COMMIT")
        except sqlite3.Error as exc:
            with suppress(sqlite3.Error):
                self.db.execute("ROLLBACK")
            raise state_error(self.path, exc) from None

    def q(self, sql: str, *args: Any) -> list[sqlite3.Row]:
        """Rows of a query."""
        try:
            return list(self.db.execute(sql, args))
        except sqlite3.Error as exc:
            raise state_error(self.path, exc) from None

    def one(self, sql: str, *args: Any) -> Optional[sqlite3.Row]:
        """First row of a query, or None."""
        rows = self.q(sql, *args)
        return rows[0] if rows else None

    def x(self, sql: str, *args: Any) -> int:
        """Execute one statement in its own transaction; the last row id."""
        with self.tx():
            return int(self.db.execute(sql, args).lastrowid or 0)

    def backup(self) -> str:
        """Copy the database to ``ROOT/state.db.backup`` (SQLite's backup API: a consistent
        copy; 0600, written beside and renamed into place, so a crash leaves the old copy).
        Returns its path."""
        dest = os.path.join(self.root, BACKUP_FILE)
        tmp = dest + ".tmp"
        with suppress(FileNotFoundError):
            os.unlink(tmp)
        os.close(private_file(tmp, self.root))
        try:
            out = sqlite3.connect(tmp, isolation_level=None)
            try:
                self.db.backup(out)
                out.execute("PRAGMA journal_mode=DELETE")  # one self-contained file
            finally:
                out.close()
            fd = os.open(tmp, os.O_RDONLY | os.O_CLOEXEC)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, dest)
        except BaseException:
            with suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        dfd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
        return dest

    def journal(
        self,
        dep: int,
        op: str,
        kind: str,
        key: str,
        path: str,
        target: Optional[str],
        previous: Optional[str],
    ) -> int:
        """Record an intended filesystem change before making it (durable on return)."""
        return self.x(
            "INSERT INTO journal(deployment_id, op, kind, key, path, target, previous) "
            "VALUES (?,?,?,?,?,?,?)",
            dep,
            op,
            kind,
            key,
            path,
            target,
            previous,
        )

    def add_store(self, path: str) -> None:
        """Remember a version store directory (for cleanup and reset), in the database and in
        ``ROOT/stores.list``."""
        self.x("INSERT OR IGNORE INTO stores(path) VALUES (?)", path)
        if path in known_stores(self.root):
            return
        fd = private_file(os.path.join(self.root, STORES_FILE), self.root)
        try:
            os.lseek(fd, 0, os.SEEK_END)
            os.write(fd, path.encode("utf-8", "surrogateescape") + b"\n")
            os.fsync(fd)
        finally:
            os.close(fd)

    # -- deployments
    def start_deployment(self, kind: str, group_name: Optional[str], group_file: Optional[str],
                         group_json: str, status: str, on_failure: str,
                         message: Optional[str] = None) -> int:
        """Record a new deployment (``kind`` "deploy" or "rollback") by this process; its id."""
        return self.x(
            "INSERT INTO deployments(kind, group_name, group_file, group_json, status, "
            "on_failure, pid, started, message) VALUES (?,?,?,?,?,?,?,?,?)",
            kind, group_name, group_file, group_json, status, on_failure, os.getpid(),
            time.time(), message)

    def set_status(self, dep: int, status: str) -> None:
        """Move deployment ``dep`` to ``status`` (Building -> InProgress)."""
        self.x("UPDATE deployments SET status=? WHERE id=?", status, dep)

    def deployment(self, dep: int) -> Optional[sqlite3.Row]:
        """The row of deployment ``dep``, or None."""
        return self.one("SELECT * FROM deployments WHERE id=?", dep)

    def deployment_ids(self) -> list[int]:
        """Every deployment's id, newest first."""
        return [int(r["id"]) for r in self.q("SELECT id FROM deployments ORDER BY id DESC")]

    def unfinished(self) -> list[int]:
        """The deployments still Building or InProgress (their process died, unless the lock is
        held), oldest first."""
        return [int(r["id"]) for r in self.q(
            "SELECT id FROM deployments WHERE status IN ('Building','InProgress') ORDER BY id")]

    def applied(self) -> list[sqlite3.Row]:
        """The deployments that changed what is installed, newest first."""
        return self.q("SELECT * FROM deployments WHERE applied=1 ORDER BY id DESC")

    def latest_applied(self) -> Optional[sqlite3.Row]:
        """The deployment whose group is installed now, or None."""
        return self.one("SELECT * FROM deployments WHERE applied=1 ORDER BY id DESC")

    def groups_in_use(self) -> list[str]:
        """The recorded groups (JSON) that :func:`current` or a rollback may still read: the
        unfinished deployments', the installed one's and the last two successful ones'."""
        return [r["group_json"] for r in self.q(
            "SELECT group_json FROM deployments WHERE status IN ('Building','InProgress') "
            "OR id IN (SELECT id FROM deployments WHERE applied=1 ORDER BY id DESC LIMIT 1) "
            "OR id IN (SELECT id FROM deployments WHERE applied=1 AND status='Success' "
            "ORDER BY id DESC LIMIT 2)")]

    def groups_with_inline_environments(self) -> list[sqlite3.Row]:
        """(id, group_json) of the deployments recorded with a function's environment inline
        (before environments left the database)."""
        return self.q("SELECT id, group_json FROM deployments "
                      "WHERE group_json LIKE '%\"environment\": {\"%'")

    def set_group_json(self, dep: int, group_json: str) -> None:
        """Replace the recorded group of deployment ``dep``."""
        self.x("UPDATE deployments SET group_json=? WHERE id=?", group_json, dep)

    def truncate_wal(self) -> None:
        """Checkpoint the WAL into the database and empty it (with secure_delete, what was
        replaced is then overwritten everywhere)."""
        self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def mark_interrupted(self, dep: int, message: str) -> None:
        """Record deployment ``dep`` as Failure after its changes were undone from the journal:
        the journal goes, and what it had installed or removed is rolled back."""
        with self.tx() as db:
            db.execute("DELETE FROM journal WHERE deployment_id=?", (dep,))
            db.execute(
                "UPDATE items SET outcome='rolled-back', message='the deployment was "
                "interrupted' WHERE deployment_id=? AND outcome IN ('installed','pending',"
                "'removed')", (dep,))
            db.execute("UPDATE deployments SET status='Failure', finished=?, message=? WHERE id=?",
                       (time.time(), message, dep))

    def finish(self, dep: int, *, status: str, applied: bool, message: Optional[str],
               items: Iterable[Sequence[Any]], install: Iterable[Sequence[Any]] = (),
               uninstall: Iterable[tuple[str, str]] = (), replace_all: bool = False) -> None:
        """Commit deployment ``dep`` in one transaction.

        ``install`` rows (:data:`INSTALLED_COLUMNS` without deployment_id) are recorded as
        installed by ``dep`` (with ``replace_all``, instead of everything installed before),
        ``uninstall`` (kind, key) pairs are no longer installed, ``items`` rows
        (:data:`ITEM_COLUMNS`) are its outcomes; its journal goes and its status is set.
        """
        with self.tx() as db:
            if replace_all:
                db.execute("DELETE FROM installed")
            marks = ",".join("?" * (len(INSTALLED_COLUMNS) + 1))
            for row in install:
                db.execute(f"INSERT OR REPLACE INTO installed({', '.join(INSTALLED_COLUMNS)}, "
                           f"deployment_id) VALUES ({marks})", (*row, dep))
            for kind, key in uninstall:
                db.execute("DELETE FROM installed WHERE kind=? AND key=?", (kind, key))
            self._record(db, dep, items)
            db.execute("DELETE FROM journal WHERE deployment_id=?", (dep,))
            db.execute(
                "UPDATE deployments SET status=?, applied=?, finished=?, "
                "message=coalesce(?, message) WHERE id=?",
                (status, 1 if applied else 0, time.time(), message, dep))

    # -- items (each resource's outcome in a deployment)
    def record(self, dep: int, items: Iterable[Sequence[Any]]) -> None:
        """Record outcomes (rows of :data:`ITEM_COLUMNS`) of deployment ``dep``."""
        with self.tx() as db:
            self._record(db, dep, items)

    @staticmethod
    def _record(db: sqlite3.Connection, dep: int, items: Iterable[Sequence[Any]]) -> None:
        marks = ",".join("?" * (len(ITEM_COLUMNS) + 1))
        for row in items:
            db.execute(f"INSERT OR REPLACE INTO items(deployment_id, {', '.join(ITEM_COLUMNS)}) "
                       f"VALUES ({marks})", (dep, *row))

    def items(self, dep: int) -> list[sqlite3.Row]:
        """The outcomes of deployment ``dep`` in the order they were first recorded."""
        return self.q("SELECT * FROM items WHERE deployment_id=? ORDER BY rowid", dep)

    def kept_items(self, dep: int) -> list[sqlite3.Row]:
        """The items deployment ``dep`` left installed (what a rollback to it installs)."""
        return self.q("SELECT * FROM items WHERE deployment_id=? AND outcome IN "
                      "('installed','unchanged','modified','verified')", dep)

    # -- installed
    def installed(self, kind: Optional[str] = None, key: Optional[str] = None
                  ) -> list[sqlite3.Row]:
        """What is installed (of ``kind``, and ``key``), sorted by kind and key."""
        return self.q("SELECT * FROM installed WHERE (? IS NULL OR kind=?) AND "
                      "(? IS NULL OR key=?) ORDER BY kind, key", kind, kind, key, key)

    def installed_one(self, kind: str, key: str) -> Optional[dict]:
        """The installed row of ``kind`` ``key`` as a dict, or None."""
        rows = self.installed(kind, key)
        return dict(rows[0]) if rows else None

    # -- versions (complete directories in a store)
    def version(self, kind: str, key: str, version: str) -> Optional[sqlite3.Row]:
        """The recorded version (path, token, created, digest), or None."""
        return self.one("SELECT * FROM versions WHERE kind=? AND key=? AND version=?",
                        kind, key, version)

    def versions(self) -> list[sqlite3.Row]:
        """Every recorded version."""
        return self.q("SELECT * FROM versions")

    def is_version(self, path: str) -> bool:
        """Whether ``path`` is a version this root recorded."""
        return self.one("SELECT 1 FROM versions WHERE path=?", path) is not None

    def add_version(self, kind: str, key: str, version: str, path: str, token: Optional[str],
                    dep: int, digest: Optional[str]) -> None:
        """Record a complete version directory, made now by deployment ``dep``."""
        self.x("INSERT OR REPLACE INTO versions(kind, key, version, path, token, deployment_id, "
               "created, digest) VALUES (?,?,?,?,?,?,?,?)",
               kind, key, version, path, token, dep, time.time(), digest)

    def drop_version(self, kind: str, key: str, version: str) -> None:
        """Forget a version (its directory is being removed)."""
        self.x("DELETE FROM versions WHERE kind=? AND key=? AND version=?", kind, key, version)

    def adopt(self, kind: str, key: str, store: str, destination: str, path: str, *,
              token: Optional[str] = None, digest: Optional[str] = None,
              replace: bool = False) -> None:
        """Record the version ``path`` that ``destination`` links to as installed (found on
        disk, not deployed: deployment 0). Without ``replace``, rows the state has are kept."""
        verb = "INSERT OR REPLACE" if replace else "INSERT OR IGNORE"
        version = os.path.basename(path)
        with self.tx() as db:
            db.execute("INSERT OR IGNORE INTO stores(path) VALUES (?)", (store,))
            db.execute(f"{verb} INTO versions(kind, key, version, path, token, deployment_id, "
                       "created, digest) VALUES (?,?,?,?,?,0,?,?)",
                       (kind, key, version, path, token, time.time(), digest))
            db.execute(f"{verb} INTO installed(kind, key, destination, version, version_path, "
                       "token, deployment_id) VALUES (?,?,?,?,?,?,0)",
                       (kind, key, destination, version, path, token))

    # -- stores and the journal
    def stores(self) -> list[str]:
        """Every version store this root recorded."""
        return [r["path"] for r in self.q("SELECT path FROM stores")]

    def journal_entries(self, dep: int) -> list[sqlite3.Row]:
        """Deployment ``dep``'s journal, newest first (the order to undo it in)."""
        return self.q("SELECT * FROM journal WHERE deployment_id=? ORDER BY id DESC", dep)

    def previous_target(self, dep: int, kind: str, key: str, path: str) -> Optional[str]:
        """What ``path`` (of ``kind`` ``key``) pointed to before deployment ``dep`` first
        switched it (None: it did not exist, or was not switched)."""
        row = self.one("SELECT previous FROM journal WHERE deployment_id=? AND op='switch' "
                       "AND kind=? AND key=? AND path=? ORDER BY id", dep, kind, key, path)
        return row["previous"] if row else None

    # -- high-water marks
    def mark(self, name: str) -> int:
        """The high-water mark ``name`` (0 when never raised)."""
        row = self.one("SELECT value FROM marks WHERE name=?", name)
        return int(row["value"]) if row else 0

    def raise_mark(self, name: str, value: int) -> int:
        """Raise the mark ``name`` to ``value`` (a lower value leaves it); the mark afterwards."""
        with self.tx() as db:
            db.execute("INSERT INTO marks(name, value) VALUES (?, ?) ON CONFLICT(name) "
                       "DO UPDATE SET value = MAX(value, excluded.value)", (name, int(value)))
            row = db.execute("SELECT value FROM marks WHERE name=?", (name,)).fetchone()
        return int(row["value"])

    # -- rebuilding from a damaged database
    def salvage(self, damaged: str) -> dict[str, int]:
        """Copy every readable row of the damaged database at ``damaged`` into this one; the
        rows copied per table."""
        copied: dict[str, int] = {}
        try:
            src = sqlite3.connect(f"file:{damaged}?mode=ro", uri=True)
        except sqlite3.Error:
            return copied
        try:
            for table in TABLES:
                n = 0
                for row in _readable_rows(src, table):
                    cols = ", ".join(row.keys())
                    marks = ", ".join("?" * len(row.keys()))
                    with suppress(sqlite3.Error, StateError):
                        self.x(f"INSERT OR IGNORE INTO {table}({cols}) VALUES ({marks})", *row)
                        n += 1
                copied[table] = n
        finally:
            src.close()
        return copied

    def remember_store(self, path: str) -> None:
        """Record a version store in the database only (``ROOT/stores.list`` has it)."""
        self.x("INSERT OR IGNORE INTO stores(path) VALUES (?)", path)


def _readable_rows(db: sqlite3.Connection, table: str) -> list[sqlite3.Row]:
    """The rows of ``table`` that can be read: all at once, else one rowid at a time."""
    db.row_factory = sqlite3.Row
    try:
        return list(db.execute(f"SELECT * FROM {table}"))
    except sqlite3.Error:
        pass
    try:
        top = db.execute(f"SELECT max(rowid) FROM {table}").fetchone()[0] or 0
    except sqlite3.Error:
        return []
    rows: list[sqlite3.Row] = []
    for rowid in range(1, min(int(top), 100_000) + 1):
        with suppress(sqlite3.Error):
            rows.extend(db.execute(f"SELECT * FROM {table} WHERE rowid=?", (rowid,)))
    return rows


def high_water(root: str, name: str) -> int:
    """The high-water mark ``name`` kept in ``ROOT/state.db`` (0 when never raised).

    Marks only grow (:func:`raise_high_water`); the fleet keeps the highest document serial and
    version a core accepted here, so losing a file beside them does not reset them.
    """
    if not os.path.exists(os.path.join(root, STATE_FILES[0])):
        return 0
    state = State(root)
    try:
        return state.mark(name)
    finally:
        state.close()


def raise_high_water(root: str, name: str, value: int) -> int:
    """Raise the mark ``name`` to ``value`` (a lower value leaves it); the mark afterwards."""
    state = State(root)
    try:
        return state.raise_mark(name, value)
    finally:
        state.close()


def dumps(obj: Any) -> str:
    """Canonical JSON (sorted keys) used for specs and groups."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))


