"""Writing unpacked or copied entries safely under one directory (:class:`Writer`), with the
caps on size and count that packages and copied trees share, and their durability (fsync)."""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from typing import IO, Callable, Optional

from pyengine.deploy.errors import UnpackError

DEFAULT_MAX_FILES = 100_000


#: Default caps on a copied tree (a function's code directory).
TREE_MAX_BYTES = 256 << 20


TREE_MAX_DEPTH = 64


BUF_BYTES = 1 << 20


#: fsync unpacked files before they are switched to (the crash-safety guarantee). Only a
#: benchmark turns it off, to show what durability costs on a given disk.
FSYNC = True


@dataclass
class UnpackStats:
    """What was unpacked."""

    files: int = 0
    dirs: int = 0
    links: int = 0
    bytes: int = 0


def _sync_file_range() -> Optional[Callable[[int, int, int], None]]:
    """Linux sync_file_range(SYNC_FILE_RANGE_WRITE) through libc, or None where unavailable."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.sync_file_range
        fn.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    except (OSError, AttributeError):
        return None

    def start_writeback(fd: int, offset: int, nbytes: int) -> None:
        fn(fd, offset, nbytes, 2)  # SYNC_FILE_RANGE_WRITE: start writing, do not wait

    return start_writeback


_START_WRITEBACK = _sync_file_range()


_WRITEBACK_EVERY = 8 << 20


@dataclass(frozen=True)
class Limits:
    """What the caps' messages call the thing and the fields that raise them."""

    what: str
    files_field: str
    bytes_field: str


PACKAGE_LIMITS = Limits("the package", "model.max_files", "model.max_unpacked_mb")


TREE_LIMITS = Limits("the directory", "max_code_files", "max_code_mb")


def narrow_mode(mode: int, is_dir: bool) -> int:
    """A copied entry's mode: the source's permission bits without setuid/setgid/sticky and
    without group or world write (never wider than the source); directories keep owner rwx so
    the copy can be filled, fsynced and removed."""
    bits = stat.S_IMODE(mode) & 0o755
    return bits | 0o700 if is_dir else bits


class Writer:
    """Creates entries under ``root`` only, enforcing the caps and the link rules."""

    def __init__(
        self,
        root: str,
        max_bytes: int,
        max_files: int,
        do_fsync: bool,
        keep_modes: bool = False,
        limits: Limits | None = None,
    ) -> None:
        self.root = root
        self.max_bytes = max_bytes
        self.max_files = max_files
        self.do_fsync = do_fsync
        # Packages get 0644/0755 (apply_owner decides later); a copied tree keeps its modes,
        # narrowed (see _narrow).
        self.keep_modes = keep_modes
        self.limits = limits or PACKAGE_LIMITS
        self.dir_modes: dict[str, int] = {}
        self.stats = UnpackStats()
        self.kinds: dict[str, str] = {"": "dir"}  # relative path -> "dir" | "file" | "link"

    def clean(self, name: str, what: str = "entry") -> str:
        n = name
        if n.startswith("/") or (len(n) > 1 and n[1] == ":" and n[0].isalpha()):
            raise UnpackError(
                f"{what} {name!r} has an absolute path; packages must hold relative paths"
            )
        parts = [p for p in n.split("/") if p not in ("", ".")]
        if ".." in parts:
            raise UnpackError(f"{what} {name!r} contains '..' (path traversal); refused")
        if "\x00" in n:
            raise UnpackError(f"{what} {name!r} contains a NUL byte")
        return "/".join(parts)

    def _parent(self, rel: str) -> str:
        parent = os.path.dirname(rel)
        # Every ancestor must be a directory of ours: never write through a link or a file.
        acc = ""
        for part in parent.split("/") if parent else []:
            acc = f"{acc}/{part}" if acc else part
            kind = self.kinds.get(acc)
            if kind is None:
                os.mkdir(os.path.join(self.root, acc), 0o755)
                self.kinds[acc] = "dir"
                self.stats.dirs += 1
            elif kind != "dir":
                raise UnpackError(
                    f"entry {rel!r} would be written through {acc!r}, which is a {kind}; refused"
                )
        return os.path.join(self.root, rel)

    def _count(self, rel: str, kind: str) -> None:
        if rel in self.kinds:
            if kind == "dir" and self.kinds[rel] == "dir":
                return
            raise UnpackError(f"entry {rel!r} appears twice in the package; refused")
        if self.stats.files + self.stats.links + self.stats.dirs + 1 > self.max_files:
            raise UnpackError(
                f"{self.limits.what} holds more than {self.max_files} entries (the limit); "
                f"raise {self.limits.files_field} if that is intended"
            )

    def _reserve(self, rel: str, size: int) -> None:
        if self.stats.bytes + size > self.max_bytes:
            raise UnpackError(
                f"entry {rel!r} ({size} bytes) would bring the unpacked size past the limit of "
                f"{self.max_bytes} bytes — a decompression bomb, or {self.limits.what} is bigger "
                f"than allowed (raise {self.limits.bytes_field} if it is genuine)"
            )

    def mkdir(self, name: str, mode: Optional[int] = None) -> None:
        rel = self.clean(name)
        if mode is not None and self.keep_modes:
            self.dir_modes[rel] = narrow_mode(mode, True)
        if not rel:
            return
        self._count(rel, "dir")
        if self.kinds.get(rel) == "dir":
            return
        path = self._parent(rel)
        os.mkdir(path, 0o755)
        self.kinds[rel] = "dir"
        self.stats.dirs += 1

    def file(self, name: str, size: int, src: IO[bytes], mode: int, mtime: Optional[float]) -> None:
        rel = self.clean(name)
        if not rel:
            raise UnpackError(f"file entry {name!r} has an empty path")
        self._count(rel, "file")
        self._reserve(rel, size)
        path = self._parent(rel)
        fd = os.open(
            path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600
        )
        self.kinds[rel] = "file"
        self.stats.files += 1
        written = 0
        flushed = 0
        writeback = _START_WRITEBACK if self.do_fsync else None
        try:
            with os.fdopen(fd, "wb", buffering=0, closefd=False) as out:
                while True:
                    b = src.read(BUF_BYTES)
                    if not b:
                        break
                    written += len(b)
                    self._reserve(rel, written - size if written > size else 0)
                    out.write(b)
                    if writeback is not None and written - flushed >= _WRITEBACK_EVERY:
                        # Start writing back what is done so the final fsync has little left.
                        writeback(fd, flushed, written - flushed)
                        flushed = written
            if written != size:
                raise UnpackError(
                    f"entry {rel!r} holds {written} bytes but its header says {size}; "
                    "the package is damaged"
                )
            os.fchmod(
                fd,
                narrow_mode(mode, False) if self.keep_modes else 0o755 if mode & 0o111 else 0o644,
            )
            if mtime is not None:
                os.utime(fd, (mtime, mtime))
            if self.do_fsync:
                os.fsync(fd)
        finally:
            os.close(fd)
        self.stats.bytes += written

    def symlink(self, name: str, target: str) -> None:
        rel = self.clean(name, "link")
        if not rel:
            raise UnpackError(f"link entry {name!r} has an empty path")
        if not target or target.startswith("/"):
            raise UnpackError(
                f"symbolic link {rel!r} -> {target!r} points to an absolute path, outside "
                "the package; refused"
            )
        resolved = os.path.normpath(os.path.join(os.path.dirname(rel), target))
        if resolved == ".." or resolved.startswith("../"):
            raise UnpackError(
                f"symbolic link {rel!r} -> {target!r} points outside the package; refused"
            )
        self._count(rel, "link")
        path = self._parent(rel)
        os.symlink(target, path)
        self.kinds[rel] = "link"
        self.stats.links += 1

    def finish(self) -> UnpackStats:
        if self.stats.files + self.stats.links == 0:
            raise UnpackError(f"{self.limits.what} contains no files")
        real_root = os.path.realpath(self.root)
        for rel, kind in self.kinds.items():
            if kind != "link":
                continue
            real = os.path.realpath(os.path.join(self.root, rel))
            if real != real_root and not real.startswith(real_root + "/"):
                raise UnpackError(
                    f"symbolic link {rel!r} resolves outside the package (through other "
                    "links); refused"
                )
        for rel, dmode in self.dir_modes.items():
            os.chmod(os.path.join(self.root, rel) if rel else self.root, dmode)
        if self.do_fsync:
            for rel in sorted(
                (r for r, k in self.kinds.items() if k == "dir"), key=len, reverse=True
            ):
                fsync_dir(os.path.join(self.root, rel) if rel else self.root)
        return self.stats


def fsync_dir(path: str) -> None:
    """fsync a directory so the entries created in it survive a power cut."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
