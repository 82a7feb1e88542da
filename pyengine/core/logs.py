"""The core's logs: ``ROOT/logs/core.log`` and one ``ROOT/logs/<function>.log`` per function.

A worker's stdout and stderr are one pipe that the core reads (:class:`PipeReader`); each line
goes to the function's log prefixed with the time, the function and the worker's pid, so a
function never holds a log file's descriptor: it cannot forge the core's lines or truncate a
log. Lines are cut at :data:`LINE_MAX` bytes. The core writes no event payloads to any log.

Both kinds rotate at a size, keeping a number of old files (``<name>.log.1`` the newest), as
configured under ``logs:`` in the core's configuration; SIGUSR1 reopens every log (for an
external logrotate that moved them).

A line is ``2026-12-06T09:30:00.123Z name[pid] text``: :func:`line_time` reads the time back
(``pyengine logs --since``).
"""

from __future__ import annotations

import datetime
import logging
import logging.handlers
import os
import re
import threading
from typing import IO, Iterator, Optional

#: The directory of the logs in the root.
LOG_DIR = "logs"
CORE_LOG = "core.log"
#: Longest line kept from a function (the rest of the line is dropped, marked "...").
LINE_MAX = 16 << 10
_TIME = re.compile(rb"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3})Z ")


def stamp(t: Optional[float] = None) -> str:
    """A log line's time: UTC, milliseconds, ``Z``."""
    d = datetime.datetime.fromtimestamp(t if t is not None else datetime.datetime.now(
        datetime.timezone.utc).timestamp(), datetime.timezone.utc)
    return d.strftime("%Y-%m-%dT%H:%M:%S.") + f"{d.microsecond // 1000:03d}Z"


def line_time(line: bytes) -> Optional[float]:
    """The time a log line was written (None for a line without the stamp)."""
    m = _TIME.match(line)
    if m is None:
        return None
    d = datetime.datetime.strptime(m.group(1).decode(), "%Y-%m-%dT%H:%M:%S.%f")
    return d.replace(tzinfo=datetime.timezone.utc).timestamp()


def log_path(root: str, function: str) -> str:
    """Where function ``function``'s log is."""
    return os.path.join(root, LOG_DIR, f"{function}.log")


def log_files(path: str) -> list[str]:
    """``path`` and its rotated files that exist, oldest first."""
    old = []
    n = 1
    while os.path.exists(f"{path}.{n}"):
        old.append(f"{path}.{n}")
        n += 1
    return [*reversed(old), *([path] if os.path.exists(path) else [])]


class RotatingLog:
    """An append-only file rotated at ``max_bytes`` into ``files`` old ones; thread-safe."""

    def __init__(self, path: str, max_bytes: int, files: int) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.files = files
        self._lock = threading.Lock()
        self._fh: Optional[IO[bytes]] = None

    def _open(self) -> IO[bytes]:
        if self._fh is None:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
                         | os.O_NOFOLLOW, 0o640)
            self._fh = os.fdopen(fd, "ab", buffering=0)
        return self._fh

    def write(self, data: bytes) -> None:
        """Append ``data`` (whole lines), rotating first when it would pass the size."""
        with self._lock:
            fh = self._open()
            if fh.tell() + len(data) > self.max_bytes and fh.tell() > 0:
                self._rotate()
                fh = self._open()
            fh.write(data)

    def _rotate(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None
        if self.files <= 0:
            os.truncate(self.path, 0)
            return
        for n in range(self.files - 1, 0, -1):
            if os.path.exists(f"{self.path}.{n}"):
                os.replace(f"{self.path}.{n}", f"{self.path}.{n + 1}")
        os.replace(self.path, f"{self.path}.1")

    def reopen(self) -> None:
        """Close the file; the next write opens ``path`` again (after an outside rotation)."""
        with self._lock:
            if self._fh is not None:
                self._fh.close()
                self._fh = None

    close = reopen


class Logs:
    """The logs of one core: the core's own handler and each function's log."""

    def __init__(self, root: str, max_mb: float, files: int) -> None:
        self.dir = os.path.join(root, LOG_DIR)
        os.makedirs(self.dir, mode=0o750, exist_ok=True)
        os.chmod(self.dir, 0o750)  # functions' users have no business here
        self.root = root
        self.max_bytes = max(1024, int(max_mb * (1 << 20)))
        self.files = files
        self._lock = threading.Lock()
        self._functions: dict[str, RotatingLog] = {}
        self.core_handler = logging.handlers.RotatingFileHandler(
            os.path.join(self.dir, CORE_LOG), maxBytes=self.max_bytes, backupCount=files,
            encoding="utf-8", delay=True)
        self.core_handler.setFormatter(_CoreFormatter())

    def function(self, name: str) -> RotatingLog:
        """Function ``name``'s log."""
        with self._lock:
            log = self._functions.get(name)
            if log is None:
                log = self._functions[name] = RotatingLog(
                    log_path(self.root, name), self.max_bytes, self.files)
            return log

    def reopen(self) -> None:
        """Reopen every log (SIGUSR1)."""
        self.core_handler.acquire()
        try:
            if self.core_handler.stream is not None:
                self.core_handler.stream.close()
                self.core_handler.stream = None
        finally:
            self.core_handler.release()
        with self._lock:
            logs = list(self._functions.values())
        for log in logs:
            log.reopen()

    def close(self) -> None:
        """Close every file."""
        self.core_handler.close()
        with self._lock:
            for log in self._functions.values():
                log.close()


class _CoreFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record).replace("\n", "\n    ")  # no line looks like a new record
        return f"{stamp(record.created)} core[{os.getpid()}] {record.levelname} {text}"


class PipeReader(threading.Thread):
    """Copies a worker's stdout/stderr pipe into its function's log, line by line, prefixed."""

    def __init__(self, pipe: IO[bytes], log: RotatingLog, name: str, pid: int) -> None:
        super().__init__(name=f"pyengine-log-{name}-{pid}", daemon=True)
        self.pipe = pipe
        self.log = log
        self.prefix = f" {name}[{pid}] ".encode()

    def run(self) -> None:
        try:
            for line in _lines(self.pipe):
                try:
                    self.log.write(stamp().encode() + self.prefix + line)
                except OSError as exc:  # a full disk: the line is lost, the worker goes on
                    logging.getLogger("pyengine.core").warning(
                        "cannot write %s: %s", self.log.path, exc)
        except (OSError, ValueError):
            pass
        finally:
            self.pipe.close()


def _lines(pipe: IO[bytes]) -> Iterator[bytes]:
    """Lines of at most LINE_MAX bytes, each ending in one newline."""
    while True:
        line = pipe.readline(LINE_MAX)
        if not line:
            return
        if not line.endswith(b"\n"):
            rest = pipe.readline(LINE_MAX)  # drop the rest of an over-long line
            while rest and not rest.endswith(b"\n"):
                rest = pipe.readline(LINE_MAX)
            line += b"...\n" if rest or len(line) >= LINE_MAX else b"\n"
        yield line.replace(b"\r", b"\\r")
