"""Safe unpacking of .tar.gz/.tgz and .zip packages into a staging directory.

Refused in packages: absolute paths, ``..`` components, symbolic links that point outside the
package, hard links, device nodes, FIFOs, duplicate entries, writing through a link, encrypted zip
entries, and anything past the caps on unpacked size and file count. Files are created with
``O_EXCL | O_NOFOLLOW`` under the staging directory only (:class:`pyengine.deploy.writer.Writer`),
and fsynced before the caller switches to them.
"""

from __future__ import annotations

import os
import stat
import tarfile
import zipfile
import zlib
from typing import IO, Any, Callable, Optional, cast

from pyengine.deploy import writer
from pyengine.deploy.errors import UnpackError
from pyengine.deploy.writer import (
    BUF_BYTES,
    DEFAULT_MAX_FILES,
    UnpackStats,
    Writer,
)

#: Default cap on the unpacked size: this multiple of the package size (with a floor).
DEFAULT_RATIO = 20


DEFAULT_FLOOR = 64 << 20


_INFLATE_MAX = 4 << 20


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
            chunk = self.src.read(BUF_BYTES)
            if not chunk:
                if self.started:
                    raise EOFError("the gzip stream ends before its end marker (truncated)")
                return b""
            self.started = True
            self.pending = chunk


def _unpack_tar(path: str, w: Writer) -> None:
    try:
        # A bounded gzip reader under tarfile's stream mode (members are read in order once).
        with open(path, "rb") as f:
            gz = cast(IO[bytes], _Gunzip(f))
            with tarfile.open(fileobj=gz, mode="r|", bufsize=BUF_BYTES) as tf:
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


def _unpack_zip(path: str, w: Writer) -> None:
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
    do_fsync = writer.FSYNC if do_fsync is None else do_fsync
    fmt = package_format(package, name)
    size = os.path.getsize(package)
    w = Writer(
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
