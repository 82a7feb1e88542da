"""Safe unpacking of .tar.gz/.tgz and .zip packages into a staging directory, and safe copying
of a directory tree (a function's code).

Refused in packages: absolute paths, ``..`` components, symbolic links that point outside the
package, hard links, device nodes, FIFOs, duplicate entries, writing through a link, encrypted zip
entries, and anything past the caps on unpacked size and file count. Files are created with
``O_EXCL | O_NOFOLLOW`` under the staging directory only, and fsynced before the caller switches
to them.

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
import tarfile
import zipfile
import zlib
from dataclasses import dataclass
from typing import IO, Any, Callable, Optional, cast

from pyengine.deploy.errors import UnpackError

#: Default cap on the unpacked size: this multiple of the package size (with a floor).
DEFAULT_RATIO = 20
DEFAULT_FLOOR = 64 << 20
DEFAULT_MAX_FILES = 100_000
#: Default caps on a copied tree (a function's code directory).
TREE_MAX_BYTES = 256 << 20
TREE_MAX_DEPTH = 64
_BUF = 1 << 20
#: fsync unpacked files before they are switched to (the crash-safety guarantee). Only a
#: benchmark turns it off, to show what durability costs on a given disk.
FSYNC = True
_INFLATE_MAX = 4 << 20


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


def default_max_bytes(package_size: int) -> int:
    """The default cap on unpacked bytes for a package of ``package_size`` bytes."""
    return max(DEFAULT_FLOOR, DEFAULT_RATIO * package_size)


def package_format(path: str, name: Optional[str] = None) -> str:
    """ "tar.gz" or "zip" from the name, checked against the first bytes of the file."""
    with open(path, "rb") as f:
        head = f.read(512)
    return classify_head(head, name or path)


def declared_format(name: str) -> str:
    """ "tar.gz", "zip" or "" (unsupported) from a package's name."""
    return (
        "zip" if name.endswith(".zip") else "tar.gz" if name.endswith((".tar.gz", ".tgz")) else ""
    )


def classify_head(head: bytes, name: str) -> str:
    """ "tar.gz" or "zip" from ``name``, checked against the package's first bytes ``head``."""
    declared = (
        "zip" if name.endswith(".zip") else "tar.gz" if name.endswith((".tar.gz", ".tgz")) else ""
    )
    if not declared:
        raise UnpackError(
            f"{os.path.basename(name)!r} is not a supported package: expected .tar.gz, .tgz or .zip"
        )
    if not head:
        raise UnpackError(f"the package {os.path.basename(name)!r} is empty (0 bytes)")
    actual = "tar.gz" if head[:2] == b"\x1f\x8b" else "zip" if head[:2] == b"PK" else ""
    if actual == declared:
        return actual
    text = head.lstrip().lower()
    if text.startswith((b"<!doctype html", b"<html", b"<?xml", b"<head", b"<error")):
        looks = "an HTML/XML page (an error page saved in place of the package?)"
    elif actual:
        looks = f"a {actual} file"
    elif head[:3] == b"BZh":
        looks = "a bzip2 file, which is not supported"
    elif head[:6] == b"\xfd7zXZ\x00":
        looks = "an xz file, which is not supported"
    elif head[257:262] == b"ustar":
        looks = "an uncompressed tar, which is not supported"
    else:
        looks = f"an unknown format (first bytes {head[:8].hex()})"
    raise UnpackError(
        f"{os.path.basename(name)!r} should be a {declared} package but its content is "
        f"{looks}; expected a gzip-compressed tar (.tar.gz/.tgz) or a zip"
    )


@dataclass(frozen=True)
class _Limits:
    """What the caps' messages call the thing and the fields that raise them."""

    what: str
    files_field: str
    bytes_field: str


_PACKAGE_LIMITS = _Limits("the package", "model.max_files", "model.max_unpacked_mb")
_TREE_LIMITS = _Limits("the directory", "max_code_files", "max_code_mb")


def narrow_mode(mode: int, is_dir: bool) -> int:
    """A copied entry's mode: the source's permission bits without setuid/setgid/sticky and
    without group or world write (never wider than the source); directories keep owner rwx so
    the copy can be filled, fsynced and removed."""
    bits = stat.S_IMODE(mode) & 0o755
    return bits | 0o700 if is_dir else bits


class _Writer:
    """Creates entries under ``root`` only, enforcing the caps and the link rules."""

    def __init__(
        self,
        root: str,
        max_bytes: int,
        max_files: int,
        do_fsync: bool,
        keep_modes: bool = False,
        limits: _Limits | None = None,
    ) -> None:
        self.root = root
        self.max_bytes = max_bytes
        self.max_files = max_files
        self.do_fsync = do_fsync
        # Packages get 0644/0755 (apply_owner decides later); a copied tree keeps its modes,
        # narrowed (see _narrow).
        self.keep_modes = keep_modes
        self.limits = limits or _PACKAGE_LIMITS
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
                    b = src.read(_BUF)
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


class _Gunzip:
    """Reads the decompressed bytes of a gzip stream (several members allowed; CRC and length
    checked by zlib). Each step inflates at most ``_INFLATE_MAX`` bytes, so a bomb costs time
    until the caps stop it, never memory; the input is read 1 MiB at a time."""

    def __init__(self, src: Any) -> None:
        self.src = src
        self.z = zlib.decompressobj(16 + zlib.MAX_WBITS)
        self.pending = b""  # compressed input not yet inflated
        self.started = False

    def read(self, n: int = -1) -> bytes:
        while True:
            if self.pending:
                out = self.z.decompress(self.pending, _INFLATE_MAX)
                self.pending = self.z.unconsumed_tail
                if self.z.eof:  # end of one gzip member; another may follow
                    rest = self.z.unused_data + self.pending
                    self.z = zlib.decompressobj(16 + zlib.MAX_WBITS)
                    self.pending = rest
                    self.started = False
                if out:
                    return out
                continue
            chunk = self.src.read(_BUF)
            if not chunk:
                if self.started:
                    raise EOFError("the gzip stream ends before its end marker (truncated)")
                return b""
            self.started = True
            self.pending = chunk


def _unpack_tar(path: str, w: _Writer) -> None:
    try:
        # A bounded gzip reader under tarfile's stream mode (members are read in order once).
        with open(path, "rb") as f:
            gz = cast(IO[bytes], _Gunzip(f))
            with tarfile.open(fileobj=gz, mode="r|", bufsize=_BUF) as tf:
                for m in tf:
                    if m.issparse():
                        raise UnpackError(
                            f"entry {m.name!r} is a sparse file, which is not supported"
                        )
                    if m.isreg():
                        src = tf.extractfile(m)
                        assert src is not None
                        w.file(m.name, m.size, src, m.mode, m.mtime)
                    elif m.isdir():
                        w.mkdir(m.name)
                    elif m.issym():
                        w.symlink(m.name, m.linkname)
                    elif m.islnk():
                        raise UnpackError(
                            f"hard link {m.name!r} -> {m.linkname!r}: hard links are refused"
                        )
                    elif m.ischr() or m.isblk():
                        raise UnpackError(f"device node {m.name!r}: packages may not hold devices")
                    elif m.isfifo():
                        raise UnpackError(f"FIFO {m.name!r}: packages may not hold named pipes")
                    else:
                        raise UnpackError(
                            f"entry {m.name!r} has an unsupported tar type {m.type!r}"
                        )
    except UnpackError:
        raise
    except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
        if isinstance(exc, OSError) and not isinstance(exc, (EOFError,)) and exc.errno is not None:
            raise  # a local I/O failure (disk full), not a damaged package
        raise UnpackError(
            f"the package is damaged or truncated (not a complete .tar.gz): {exc}"
        ) from None


def _unpack_zip(path: str, w: _Writer) -> None:
    try:
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
            if not infos:
                raise UnpackError("the package is an empty zip (no entries)")
            if len(infos) > w.max_files:
                raise UnpackError(
                    f"the package holds {len(infos)} entries, more than the limit of "
                    f"{w.max_files}; raise model.max_files if that is intended"
                )
            total = sum(i.file_size for i in infos)
            if total > w.max_bytes:
                raise UnpackError(
                    f"the package would unpack to {total} bytes, past the limit of "
                    f"{w.max_bytes} bytes — a decompression bomb, or a package bigger "
                    "than allowed (raise model.max_unpacked_mb if it is genuine)"
                )
            for info in infos:
                mode = (info.external_attr >> 16) & 0xFFFF if info.create_system == 3 else 0
                if not stat.S_IFMT(mode):
                    mode = 0  # permission bits without a type: a plain file (Python's writestr)
                if info.flag_bits & 0x1:
                    raise UnpackError(
                        f"entry {info.filename!r} is encrypted; encrypted zips are refused"
                    )
                if mode and stat.S_ISLNK(mode):
                    if info.file_size > 4096:
                        raise UnpackError(
                            f"symbolic link {info.filename!r} has a {info.file_size}-byte target"
                        )
                    target = zf.read(info).decode("utf-8", "surrogateescape")
                    w.symlink(info.filename, target)
                elif info.is_dir():
                    w.mkdir(info.filename)
                elif mode and (stat.S_ISCHR(mode) or stat.S_ISBLK(mode)):
                    raise UnpackError(
                        f"device node {info.filename!r}: packages may not hold devices"
                    )
                elif mode and stat.S_ISFIFO(mode):
                    raise UnpackError(f"FIFO {info.filename!r}: packages may not hold named pipes")
                elif mode and not stat.S_ISREG(mode):
                    raise UnpackError(
                        f"entry {info.filename!r} has an unsupported file type {oct(mode)}"
                    )
                else:
                    mt = None
                    with zf.open(info) as src:
                        w.file(info.filename, info.file_size, src, mode, mt)
    except UnpackError:
        raise
    except (
        zipfile.BadZipFile,
        zipfile.LargeZipFile,
        EOFError,
        zlib.error,
        NotImplementedError,
        RuntimeError,
    ) as exc:
        raise UnpackError(f"the package is damaged or truncated (not a valid zip): {exc}") from None


def unpack(
    package: str,
    staging: str,
    *,
    name: Optional[str] = None,
    max_bytes: Optional[int] = None,
    max_files: Optional[int] = None,
    do_fsync: Optional[bool] = None,
) -> UnpackStats:
    """Unpack ``package`` into the empty directory ``staging``.

    Parameters
    ----------
    package:
        The downloaded package file.
    staging:
        An existing empty directory; nothing is written outside it.
    name:
        The package's name as published (decides .tar.gz vs .zip); defaults to ``package``.
    max_bytes, max_files:
        Caps; default :func:`default_max_bytes` of the package size and 100000 entries.

    Raises
    ------
    UnpackError
        For hostile, damaged, empty or unsupported packages; the message says which entry and why.
    """
    do_fsync = FSYNC if do_fsync is None else do_fsync
    fmt = package_format(package, name)
    size = os.path.getsize(package)
    w = _Writer(
        staging, max_bytes or default_max_bytes(size), max_files or DEFAULT_MAX_FILES, do_fsync
    )
    if fmt == "zip":
        _unpack_zip(package, w)
    else:
        _unpack_tar(package, w)
    return w.finish()


def apply_owner(
    root: str,
    group: Optional[int],
    permission: Optional[str],
    chown: Callable[[str, int, int], None] = os.lchown,
) -> None:
    """Set modes (and group) on an unpacked tree: ro = group read-only, rw = group read-write.

    Without an owner setting, everything is readable by all and writable by no one but the owner.
    """
    if permission == "rw":
        dmode, fmode = 0o2770, 0o660
    elif permission == "ro":
        dmode, fmode = 0o750, 0o640
    else:
        dmode, fmode = 0o755, 0o644
    for dirpath, dirnames, filenames in os.walk(root):
        for n in filenames + dirnames:
            p = os.path.join(dirpath, n)
            st = os.lstat(p)
            if group is not None:
                try:
                    chown(p, -1, group)
                except PermissionError:
                    raise UnpackError(
                        f"cannot give group {group} ownership of the files: this user "
                        "is not a member of it; deploy as root or as a member"
                    ) from None
            if stat.S_ISLNK(st.st_mode):
                continue
            if stat.S_ISDIR(st.st_mode):
                os.chmod(p, dmode)
            else:
                x = (fmode >> 2) & 0o111 if st.st_mode & 0o100 else 0
                os.chmod(p, fmode | x)
    if group is not None:
        try:
            os.chown(root, -1, group)
        except PermissionError:
            raise UnpackError(
                f"cannot give group {group} ownership of {root}: this user is not a "
                "member of it; deploy as root or as a member"
            ) from None
    os.chmod(root, dmode)


# ----------------------------------------------------------------------------------- trees

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
                f"{sub!r}); raise {_TREE_LIMITS.files_field} if that is intended"
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
                    f"{max_bytes} bytes; raise {_TREE_LIMITS.bytes_field} if it is genuine"
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
            while hashing.read(_BUF):
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
    w = _Writer(
        dest,
        max_bytes,
        max_files,
        FSYNC if do_fsync is None else do_fsync,
        keep_modes=True,
        limits=_TREE_LIMITS,
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
                            b = os.read(fd, _BUF)
                            if not b:
                                break
                            h.update(b)
                    finally:
                        os.close(fd)

    walk(top, "")
    return h.hexdigest()
