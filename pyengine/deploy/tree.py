"""Safe copying and hashing of a directory tree (a function's code).

Refused in a copied tree (:func:`walk_tree`): every symbolic link, FIFO, socket and device node,
a file that grows or shrinks while it is read, and anything past the caps. Entries are opened
relative to their directory's descriptor with ``O_NOFOLLOW | O_NONBLOCK`` and checked with
``fstat``, so a link or FIFO swapped in after the listing is refused too, never followed or
waited on.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
from typing import IO, Any, Callable, Optional, cast

from pyengine.deploy import writer
from pyengine.deploy.errors import UnpackError
from pyengine.deploy.writer import (
    BUF_BYTES,
    DEFAULT_MAX_FILES,
    TREE_LIMITS,
    TREE_MAX_BYTES,
    TREE_MAX_DEPTH,
    UnpackStats,
    Writer,
    narrow_mode,
)

#: Names a copied tree leaves out (bytecode caches are rebuilt where they are needed).
SKIP_DIRS = ("__pycache__",)


_SKIP_DIRS = SKIP_DIRS


_SKIP_SUFFIXES = (".pyc", ".pyo")


_TYPE_NAMES = {
    stat.S_IFIFO: "a FIFO (named pipe)",
    stat.S_IFSOCK: "a socket",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFLNK: "a symbolic link",
    stat.S_IFDIR: "a directory",
}


def _kind(mode: int) -> str:
    return _TYPE_NAMES.get(stat.S_IFMT(mode), f"a file of type {oct(stat.S_IFMT(mode))}")


class ExactReader:
    """Reads exactly ``size`` bytes (the size fstat gave) from ``f``: never more, so a file that
    keeps growing costs nothing past the caps, and a file that changed size while it was read
    is refused (:meth:`check_end`)."""

    def __init__(self, f: IO[bytes], size: int, rel: str) -> None:
        self.f, self.left, self.size, self.rel = f, size, size, rel

    def read(self, n: int = -1) -> bytes:
        if self.left == 0:
            return b""
        b = self.f.read(self.left if n < 0 else min(n, self.left))
        if not b:
            raise UnpackError(
                f"{self.rel!r} shrank to {self.size - self.left} bytes while it was read "
                f"(it had {self.size}); it is being changed: deploy again once it is not"
            )
        self.left -= len(b)
        return b

    def check_end(self) -> None:
        if self.left == 0 and self.f.read(1):
            raise UnpackError(
                f"{self.rel!r} grew past {self.size} bytes while it was read; it is being "
                "changed: deploy again once it is not"
            )


#: Called for each directory (``reader`` None, before its content) and each regular file.
TreeVisitor = Callable[[str, os.stat_result, Optional[ExactReader]], None]


_OPEN_ENTRY = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC


def walk_tree(
    top: str,
    visit: TreeVisitor,
    *,
    max_bytes: int = TREE_MAX_BYTES,
    max_files: int = DEFAULT_MAX_FILES,
) -> None:
    """Visit the directories and regular files under ``top`` in a fixed (sorted) order, without
    following any link inside it.

    ``top`` itself is opened as named (the operator chose it). Below it every entry is opened
    relative to its directory's descriptor with ``O_NOFOLLOW | O_NONBLOCK`` and checked with
    ``fstat``: symbolic links, FIFOs, sockets and devices are refused without being read (a
    link or FIFO swapped in after the listing is refused the same way, and never waited on).
    ``__pycache__`` directories and ``.pyc``/``.pyo`` files are skipped by name.

    Raises
    ------
    UnpackError
        Naming the entry (relative to ``top``) and why; also past ``max_files`` entries, past
        ``max_bytes`` in total, deeper than 64 directories, or when a file changes size while
        it is read.
    """
    budget = {"files": 0, "bytes": 0}
    fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        visit("", os.fstat(fd), None)
        _walk_dir(fd, "", visit, budget, max_bytes, max_files, 0)
    finally:
        os.close(fd)


def _walk_dir(
    dir_fd: int,
    rel: str,
    visit: TreeVisitor,
    budget: dict[str, int],
    max_bytes: int,
    max_files: int,
    depth: int,
) -> None:
    if depth >= TREE_MAX_DEPTH:
        raise UnpackError(f"{rel!r} is nested more than {TREE_MAX_DEPTH} directories deep")
    with os.scandir(dir_fd) as it:
        names = sorted(e.name for e in it)
    for name in names:
        if name in _SKIP_DIRS or name.endswith(_SKIP_SUFFIXES):
            continue
        sub = f"{rel}/{name}" if rel else name
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        if stat.S_ISLNK(st.st_mode):
            try:
                target = os.readlink(name, dir_fd=dir_fd)
            except OSError:
                target = "?"
            raise UnpackError(
                f"{sub!r} is a symbolic link (to {target!r}); links are not followed or "
                "copied: put the file itself in the directory"
            )
        if not (stat.S_ISDIR(st.st_mode) or stat.S_ISREG(st.st_mode)):
            raise UnpackError(
                f"{sub!r} is {_kind(st.st_mode)}; only regular files and directories are copied"
            )
        budget["files"] += 1
        if budget["files"] > max_files:
            raise UnpackError(
                f"the directory holds more than {max_files} entries (the limit, reached at "
                f"{sub!r}); raise {TREE_LIMITS.files_field} if that is intended"
            )
        try:
            fd = os.open(
                name, _OPEN_ENTRY | (os.O_DIRECTORY if stat.S_ISDIR(st.st_mode) else 0),
                dir_fd=dir_fd,
            )
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                raise UnpackError(
                    f"{sub!r} was replaced (by a symbolic link or another kind of file) while "
                    "the directory was read; refused"
                ) from None
            raise
        try:
            fst = os.fstat(fd)
            if stat.S_IFMT(fst.st_mode) != stat.S_IFMT(st.st_mode):
                raise UnpackError(
                    f"{sub!r} was replaced by {_kind(fst.st_mode)} while the directory was "
                    "read; refused"
                )
            if stat.S_ISDIR(fst.st_mode):
                visit(sub, fst, None)
                _walk_dir(fd, sub, visit, budget, max_bytes, max_files, depth + 1)
                continue
            budget["bytes"] += fst.st_size
            if budget["bytes"] > max_bytes:
                raise UnpackError(
                    f"{sub!r} ({fst.st_size} bytes) brings the directory past its limit of "
                    f"{max_bytes} bytes; raise {TREE_LIMITS.bytes_field} if it is genuine"
                )
            with os.fdopen(fd, "rb", buffering=0, closefd=False) as f:
                reader = ExactReader(f, fst.st_size, sub)
                visit(sub, fst, reader)
                reader.check_end()
        finally:
            os.close(fd)


def _digest_entry(h: Any, rel: str, st: os.stat_result) -> None:
    kind = b"d" if stat.S_ISDIR(st.st_mode) else b"f"
    perm = narrow_mode(st.st_mode, kind == b"d")
    h.update(kind + rel.encode("utf-8", "surrogateescape") + b"\0" + b"%o\0" % perm)


class _Hashing:
    """A reader that feeds what it reads into a hash."""

    def __init__(self, src: ExactReader, h: Any) -> None:
        self.src, self.h = src, h

    def read(self, n: int = -1) -> bytes:
        b = self.src.read(n)
        self.h.update(b)
        return b


def tree_digest(
    top: str, *, max_bytes: int = TREE_MAX_BYTES, max_files: int = DEFAULT_MAX_FILES
) -> str:
    """The SHA-256 of a tree's names, (narrowed) modes and contents, walked as
    :func:`walk_tree` walks it; the same value :func:`copy_tree` returns for it."""
    h = hashlib.sha256()

    def visit(rel: str, st: os.stat_result, reader: Optional[ExactReader]) -> None:
        _digest_entry(h, rel, st)
        if reader is not None:
            hashing = _Hashing(reader, h)
            while hashing.read(BUF_BYTES):
                pass

    walk_tree(top, visit, max_bytes=max_bytes, max_files=max_files)
    return h.hexdigest()


def copy_tree(
    top: str,
    dest: str,
    *,
    max_bytes: int = TREE_MAX_BYTES,
    max_files: int = DEFAULT_MAX_FILES,
    do_fsync: Optional[bool] = None,
) -> tuple[UnpackStats, str]:
    """Copy the tree ``top`` into the existing empty directory ``dest`` as :func:`walk_tree`
    walks it (links and special files refused, caps checked as it goes); modes are kept but
    narrowed (no setuid/setgid/sticky, no group or world write). Returns what was copied and
    the tree's :func:`tree_digest`, computed from the bytes copied."""
    h = hashlib.sha256()
    w = Writer(
        dest,
        max_bytes,
        max_files,
        writer.FSYNC if do_fsync is None else do_fsync,
        keep_modes=True,
        limits=TREE_LIMITS,
    )

    def visit(rel: str, st: os.stat_result, reader: Optional[ExactReader]) -> None:
        _digest_entry(h, rel, st)
        if reader is None:
            w.mkdir(rel, st.st_mode)
        else:
            w.file(rel, st.st_size, cast(IO[bytes], _Hashing(reader, h)), st.st_mode, st.st_mtime)

    walk_tree(top, visit, max_bytes=max_bytes, max_files=max_files)
    return w.finish(), h.hexdigest()


def content_digest(top: str, *, skip_dirs: tuple[str, ...] = ()) -> str:
    """The SHA-256 of an installed version as it is on disk: every entry's relative name,
    type and permission bits, each file's bytes and each link's target, in sorted order.

    Links are recorded, never followed. ``skip_dirs`` names directories left out wherever they
    are (a function's ``__pycache__``, which Python may write beside the code it imports).
    Raises OSError when the tree cannot be read.
    """
    h = hashlib.sha256()

    def entry(rel: str, st: os.stat_result) -> None:
        h.update(f"{_kind(st.st_mode)}\0{rel}\0{stat.S_IMODE(st.st_mode):o}\0".encode(
            "utf-8", "surrogateescape"))

    def walk(path: str, rel: str) -> None:
        for name in sorted(os.listdir(path)):
            p = os.path.join(path, name)
            r = f"{rel}/{name}" if rel else name
            st = os.lstat(p)
            if stat.S_ISDIR(st.st_mode):
                if name in skip_dirs:
                    continue
                entry(r, st)
                walk(p, r)
            elif stat.S_ISLNK(st.st_mode):
                entry(r, st)
                h.update(os.readlink(p).encode("utf-8", "surrogateescape") + b"\0")
            else:
                entry(r, st)
                if stat.S_ISREG(st.st_mode):
                    fd = os.open(p, _OPEN_ENTRY)
                    try:
                        h.update(f"{st.st_size}\0".encode())
                        while True:
                            b = os.read(fd, BUF_BYTES)
                            if not b:
                                break
                            h.update(b)
                    finally:
                        os.close(fd)

    walk(top, "")
    return h.hexdigest()
