"""The state database's tables, the files it is kept in, and its upgrade from older versions."""

from __future__ import annotations

import os
import sqlite3
from typing import Optional

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


#: The copy of ``state.db`` taken after every deployment that changed what is installed.
BACKUP_FILE = "state.db.backup"
#: Every version store this root made, one path a line: kept beside the database so a rebuilt
#: state knows which stores are this root's (they live beside destinations, outside the root).
STORES_FILE = "stores.list"
#: What only a deployment makes in a root: a ``state.db`` of 0 bytes beside one of these was
#: emptied, not just created.
DEPLOYED_MARKS = (BACKUP_FILE, STORES_FILE, "functions", "environments")


#: Columns added after a table was first made: (table, column, type).
ADDED_COLUMNS = (("versions", "digest", "TEXT"),)


def add_columns(db: sqlite3.Connection) -> None:
    """Add the columns of :data:`ADDED_COLUMNS` a database made by an older version lacks."""
    for table, column, kind in ADDED_COLUMNS:
        names = {r[1] for r in db.execute(f"PRAGMA table_info({table})")}
        if column not in names:
            db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")


def check_database(db: sqlite3.Connection) -> Optional[str]:
    """None when ``PRAGMA quick_check`` finds the open database sound, else what it found."""
    rows = [str(r[0]) for r in db.execute("PRAGMA quick_check(5)")]
    return None if rows == ["ok"] else "; ".join(rows)


def tighten(path: str) -> None:
    """Make an existing file 0600 (without following a link); a missing one is fine."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return
    try:
        os.fchmod(fd, 0o600)
    finally:
        os.close(fd)


def known_stores(root: str) -> set[str]:
    """The version stores ``ROOT/stores.list`` says this root made."""
    try:
        with open(os.path.join(root, STORES_FILE), "rb") as f:
            return {ln.decode("utf-8", "surrogateescape") for ln in f.read().splitlines() if ln}
    except FileNotFoundError:
        return set()
