"""The root's state: SQLite (WAL, synchronous=FULL) with a journal, and the deploy lock."""

from __future__ import annotations

import errno
import fcntl
import json
import os
import sqlite3
import time
from contextlib import contextmanager, suppress
from typing import Any, Iterator, Optional

from pyengine.deploy.errors import DeployBusyError, DeployError
from pyengine.deploy.private import private_file

SCHEMA = """
CREATE TABLE IF NOT EXISTS deployments(
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  kind TEXT NOT NULL,
  group_name TEXT,
  group_file TEXT,
  group_json TEXT,
  status TEXT NOT NULL,
  on_failure TEXT,
  applied INTEGER NOT NULL DEFAULT 0,
  message TEXT,
  pid INTEGER,
  started REAL,
  finished REAL
);
CREATE TABLE IF NOT EXISTS items(
  deployment_id INTEGER NOT NULL,
  kind TEXT NOT NULL,
  key TEXT NOT NULL,
  outcome TEXT NOT NULL,
  version TEXT,
  path TEXT,
  token TEXT,
  source TEXT,
  spec TEXT,
  bytes INTEGER NOT NULL DEFAULT 0,
  attempts INTEGER NOT NULL DEFAULT 0,
  seconds REAL NOT NULL DEFAULT 0,
  message TEXT,
  PRIMARY KEY(deployment_id, kind, key)
);
CREATE TABLE IF NOT EXISTS installed(
  kind TEXT NOT NULL,
  key TEXT NOT NULL,
  destination TEXT,
  version TEXT,
  version_path TEXT,
  token TEXT,
  source TEXT,
  spec_json TEXT,
  deployment_id INTEGER,
  PRIMARY KEY(kind, key)
);
CREATE TABLE IF NOT EXISTS versions(
  kind TEXT NOT NULL,
  key TEXT NOT NULL,
  version TEXT NOT NULL,
  path TEXT NOT NULL,
  token TEXT,
  deployment_id INTEGER,
  created REAL,
  PRIMARY KEY(kind, key, version)
);
CREATE TABLE IF NOT EXISTS journal(
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  deployment_id INTEGER NOT NULL,
  op TEXT NOT NULL,
  kind TEXT,
  key TEXT,
  path TEXT,
  target TEXT,
  previous TEXT
);
CREATE TABLE IF NOT EXISTS stores(path TEXT PRIMARY KEY);
CREATE TABLE IF NOT EXISTS marks(name TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""


#: The database and the files SQLite keeps beside it; all are made and kept 0600.
STATE_FILES = ("state.db", "state.db-wal", "state.db-shm", "state.db-journal")


def _tighten(path: str) -> None:
    """Make an existing file 0600 (without following a link); a missing one is fine."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return
    try:
        os.fchmod(fd, 0o600)
    finally:
        os.close(fd)


class State:
    """The state database of one root.

    ``state.db`` and its -wal/-shm/-journal files are readable and writable by their owner only
    (0600 whatever the umask; SQLite gives its side files the database's mode and owner), and
    files of an existing install are tightened here. Functions' environments are not in it
    (:mod:`pyengine.deploy.environments`).
    """

    def __init__(self, root: str) -> None:
        self.root = root
        os.makedirs(root, exist_ok=True)
        self.path = os.path.join(root, STATE_FILES[0])
        try:
            os.close(private_file(self.path, root))
            for name in STATE_FILES[1:]:
                _tighten(os.path.join(root, name))
        except PermissionError:
            raise DeployError(
                f"{self.path} is readable by its owner only (the core's user); run as that "
                "user (or root)"
            ) from None
        self.db = sqlite3.connect(self.path, isolation_level=None, timeout=30)
        self.db.row_factory = sqlite3.Row
        # Deleted and replaced content is overwritten, not left in free pages.
        self.db.execute("PRAGMA secure_delete=ON")
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.execute("PRAGMA foreign_keys=ON")
        with self.tx():
            for stmt in SCHEMA.split(";"):
                if stmt.strip():
                    self.db.execute(stmt)

    def close(self) -> None:
        """Close the connection."""
        self.db.close()

    @contextmanager
    def tx(self) -> Iterator[sqlite3.Connection]:
        """One write transaction (BEGIN IMMEDIATE ... COMMIT, rolled back on error)."""
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    def q(self, sql: str, *args: Any) -> list[sqlite3.Row]:
        """Rows of a query."""
        return list(self.db.execute(sql, args))

    def one(self, sql: str, *args: Any) -> Optional[sqlite3.Row]:
        """First row of a query, or None."""
        rows = self.q(sql, *args)
        return rows[0] if rows else None

    def x(self, sql: str, *args: Any) -> int:
        """Execute one statement in its own transaction; the last row id."""
        with self.tx():
            return int(self.db.execute(sql, args).lastrowid or 0)

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
        """Remember a version store directory (for cleanup and reset)."""
        self.x("INSERT OR IGNORE INTO stores(path) VALUES (?)", path)


def high_water(root: str, name: str) -> int:
    """The high-water mark ``name`` kept in ``ROOT/state.db`` (0 when never raised).

    Marks only grow (:func:`raise_high_water`); the fleet keeps the highest document serial and
    version a core accepted here, so losing a file beside them does not reset them.
    """
    if not os.path.exists(os.path.join(root, "state.db")):
        return 0
    state = State(root)
    try:
        row = state.one("SELECT value FROM marks WHERE name=?", name)
        return int(row["value"]) if row else 0
    finally:
        state.close()


def raise_high_water(root: str, name: str, value: int) -> int:
    """Raise the mark ``name`` to ``value`` (a lower value leaves it); the mark afterwards."""
    state = State(root)
    try:
        with state.tx() as db:
            db.execute(
                "INSERT INTO marks(name, value) VALUES (?, ?) ON CONFLICT(name) "
                "DO UPDATE SET value = MAX(value, excluded.value)",
                (name, int(value)),
            )
            row = db.execute("SELECT value FROM marks WHERE name=?", (name,)).fetchone()
        return int(row["value"])
    finally:
        state.close()


def dumps(obj: Any) -> str:
    """Canonical JSON (sorted keys) used for specs and groups."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))


class RootLock:
    """An exclusive flock on ``ROOT/deploy.lock``; its file says who holds it."""

    def __init__(self, root: str) -> None:
        os.makedirs(root, exist_ok=True)
        self.path = os.path.join(root, "deploy.lock")
        self.fd = -1

    def acquire(self, wait_s: float = 0.0, what: str = "deploy") -> None:
        """Take the lock, waiting up to ``wait_s`` seconds; :class:`DeployBusyError` otherwise."""
        # Like state.db, owned by the root directory's owner (the core's user, which takes it
        # at start to clean up after a killed deploy).
        fd = private_file(self.path, os.path.dirname(self.path))
        deadline = time.monotonic() + max(0.0, wait_s)
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                    os.close(fd)
                    raise
            if time.monotonic() >= deadline:
                try:
                    holder = os.pread(fd, 512, 0).decode("utf-8", "replace").strip()
                except OSError:
                    holder = ""
                os.close(fd)
                root = os.path.dirname(self.path)
                raise DeployBusyError(
                    f"another deployment is running in {root} ({holder or 'holder unknown'}); "
                    f"wait for it to finish, or pass --wait SECONDS to wait for it"
                )
            time.sleep(0.05)
        os.ftruncate(fd, 0)
        os.pwrite(
            fd,
            f"{what} by pid {os.getpid()} since {time.strftime('%Y-%m-%d %H:%M:%S')}".encode(),
            0,
        )
        self.fd = fd

    def release(self) -> None:
        """Release the lock."""
        if self.fd >= 0:
            with suppress(OSError):
                os.ftruncate(self.fd, 0)
            os.close(self.fd)
            self.fd = -1

    def try_acquire(self) -> bool:
        """Take the lock if it is free; False when another process holds it."""
        try:
            self.acquire(0.0, "cleanup")
            return True
        except DeployBusyError:
            return False
