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


#: The copy of ``state.db`` taken after every deployment that changed what is installed.
BACKUP_FILE = "state.db.backup"
#: Every version store this root made, one path a line: kept beside the database so a rebuilt
#: state knows which stores are this root's (they live beside destinations, outside the root).
STORES_FILE = "stores.list"
#: What only a deployment makes in a root: a ``state.db`` of 0 bytes beside one of these was
#: emptied, not just created.
DEPLOYED_MARKS = (BACKUP_FILE, STORES_FILE, "functions", "environments")


class StateError(DeployError):
    """The state database cannot be used: damaged, emptied, or its filesystem is full. The
    message says which and what to do (``pyengine doctor --repair``)."""


def repair_hint(root: str) -> str:
    """The command that repairs ``root``'s state."""
    return f"run `pyengine doctor --repair --root {root}`"


def state_error(path: str, exc: BaseException) -> StateError:
    """A :class:`StateError` for an SQLite error ``exc`` on the database at ``path``."""
    root = os.path.dirname(path)
    text = str(exc)
    if "full" in text or _space_short(root):
        try:
            st = os.statvfs(root)
            avail = f" ({st.f_bavail * st.f_frsize} bytes available)"
        except OSError:
            avail = ""
        return StateError(
            f"{path}: {text}: no space left on the filesystem of {root}{avail}; free some "
            "space (old files, a function's scratch) and try again")
    if "locked" in text or "busy" in text:
        return StateError(f"{path}: {text}: another process holds it; try again")
    if "readonly" in text or "read-only" in text:
        return StateError(f"{path}: {text}: run as the user that owns {root}")
    return StateError(f"{path} is damaged ({text}); {repair_hint(root)} (it restores the copy "
                      "taken after the last deployment, or rebuilds what it can)")


def _space_short(root: str) -> bool:
    """Whether the filesystem of ``root`` is (nearly) full: SQLite reports a failed write of
    its side files as a "disk I/O error"."""
    try:
        st = os.statvfs(root)
    except OSError:
        return False
    return st.f_bavail * st.f_frsize < (1 << 20)


def check_database(db: sqlite3.Connection) -> Optional[str]:
    """None when ``PRAGMA quick_check`` finds the open database sound, else what it found."""
    rows = [str(r[0]) for r in db.execute("PRAGMA quick_check(5)")]
    return None if rows == ["ok"] else "; ".join(rows)


class State:
    """The state database of one root.

    ``state.db`` and its -wal/-shm/-journal files are readable and writable by their owner only
    (0600 whatever the umask; SQLite gives its side files the database's mode and owner), and
    files of an existing install are tightened here. Functions' environments are not in it
    (:mod:`pyengine.deploy.environments`).

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
                _tighten(os.path.join(root, name))
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
            if not (readonly and _space_short(root) and not (
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
                _add_columns(self.db)
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


def known_stores(root: str) -> set[str]:
    """The version stores ``ROOT/stores.list`` says this root made."""
    try:
        with open(os.path.join(root, STORES_FILE), "rb") as f:
            return {ln.decode("utf-8", "surrogateescape") for ln in f.read().splitlines() if ln}
    except FileNotFoundError:
        return set()


#: Columns added after a table was first made: (table, column, type).
ADDED_COLUMNS = (("versions", "digest", "TEXT"),)


def _add_columns(db: sqlite3.Connection) -> None:
    """Add the columns of :data:`ADDED_COLUMNS` a database made by an older version lacks."""
    for table, column, kind in ADDED_COLUMNS:
        names = {r[1] for r in db.execute(f"PRAGMA table_info({table})")}
        if column not in names:
            db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")


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
        self.fd = fd
        # Who holds it, for the message of the next one (best effort: a full filesystem has no
        # room for it, and the lock holds without it).
        with suppress(OSError):
            os.ftruncate(fd, 0)
            os.pwrite(
                fd,
                f"{what} by pid {os.getpid()} since {time.strftime('%Y-%m-%d %H:%M:%S')}".encode(),
                0,
            )

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
