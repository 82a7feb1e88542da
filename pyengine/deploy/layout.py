"""The layout on disk: version stores beside destinations, atomic links, and disk space.

A model resource's destination is a symbolic link to one complete version directory kept next
to it, on the same filesystem::

    /srv/models/digits -> .digits.pyengine/v12-3f9a0c1d2e
    /srv/models/.digits.pyengine/{v12-..., v9-..., staging-13, .link-13}

A version directory only appears (by rename) once it is completely unpacked and fsynced, and the
link is replaced with rename(2), so the destination always names one complete version. Function
code lives the same way under ``ROOT/functions/<name>/current``.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import secrets
import shutil
import stat
from typing import Callable, Optional


def store_for(destination: str) -> str:
    """The version store of a destination: ``<parent>/.<name>.pyengine``."""
    parent, name = os.path.split(destination.rstrip("/"))
    return os.path.join(parent, f".{name}.pyengine")


def version_name(dep: int, token: str, store: str) -> str:
    """``v<deployment>-<token hash>``, made unique in ``store`` (which another root's state, or a
    removed state database, may have used before)."""
    name = f"v{dep}-{hashlib.sha256(token.encode()).hexdigest()[:10]}"
    while os.path.lexists(os.path.join(store, name)):
        name = f"v{dep}-{hashlib.sha256(token.encode()).hexdigest()[:10]}-{secrets.token_hex(3)}"
    return name


def rmtree(path: str) -> None:
    """Remove a file, link or tree; missing is fine. Read-only directories are made writable."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISDIR(st.st_mode):
        os.unlink(path)
        return

    def onerror(func: Callable, p: str, exc: object) -> None:
        try:
            os.chmod(os.path.dirname(p), 0o700)
            func(p)
        except FileNotFoundError:
            pass

    for dirpath, dirnames, _ in os.walk(path):
        for d in dirnames:
            full = os.path.join(dirpath, d)
            if not os.path.islink(full):
                with contextlib.suppress(OSError):
                    os.chmod(full, 0o700)
    with contextlib.suppress(OSError):
        os.chmod(path, 0o700)
    shutil.rmtree(path, onerror=onerror)


def fd_path(fd: int, fallback: str) -> str:
    """The real path of the directory open as ``fd`` (``fallback`` resolved where /proc is not
    mounted)."""
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return os.path.realpath(fallback)


def open_dir(path: str, dir_fd: Optional[int] = None) -> int:
    """Open a directory without following a link at its last component."""
    return os.open(
        path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd
    )


PlaceCheck = Callable[[str], None]


def point(
    dest: str, target: Optional[str], tmp_dir: str, check: Optional[PlaceCheck] = None
) -> None:
    """Atomically make ``dest`` a link to ``target`` (or remove it when ``target`` is None).

    ``dest``'s directory is opened once and every step goes through that descriptor, so what
    ``check`` is given (the real path of that directory, plus the name) is where the change
    lands: a link swapped into the path before this point is refused by ``check``, one swapped
    in after it changes nothing. ``tmp_dir`` is that directory or a subdirectory of it (the
    store) where the new link is made before it is renamed over ``dest``.
    """
    parent, name = os.path.split(dest)
    pfd = os.open(parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    tfd = -1
    try:
        if check is not None:
            check(os.path.join(fd_path(pfd, parent), name))
        try:
            st: Optional[os.stat_result] = os.stat(name, dir_fd=pfd, follow_symlinks=False)
        except FileNotFoundError:
            st = None
        if target is None:
            if st is not None and stat.S_ISLNK(st.st_mode):
                os.unlink(name, dir_fd=pfd)
                os.fsync(pfd)
            return
        rel = os.path.relpath(target, parent)
        if os.path.normpath(tmp_dir) == os.path.normpath(parent):
            tfd = os.dup(pfd)
        elif os.path.dirname(os.path.normpath(tmp_dir)) == os.path.normpath(parent):
            tfd = open_dir(os.path.basename(tmp_dir), pfd)
        else:
            raise ValueError(f"{tmp_dir} is not {parent} or a directory in it")
        tmp = f".link-{os.getpid()}"
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp, dir_fd=tfd)
        os.symlink(rel, tmp, dir_fd=tfd)
        if st is not None and stat.S_ISDIR(st.st_mode):
            os.rmdir(name, dir_fd=pfd)  # an empty directory left for us (checked during planning)
        os.rename(tmp, name, src_dir_fd=tfd, dst_dir_fd=pfd)
        os.fsync(pfd)
    finally:
        os.close(pfd)
        if tfd >= 0:
            os.close(tfd)


def current_target(dest: str) -> Optional[str]:
    """Where the link ``dest`` points (normalised), or None when it is not a link."""
    if not os.path.islink(dest):
        return None
    return os.path.normpath(os.path.join(os.path.dirname(dest), os.readlink(dest)))


def free_bytes(path: str) -> int:
    """Bytes an unprivileged writer may still use on ``path``'s filesystem (``statvfs``)."""
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def no_space(exc: BaseException) -> bool:
    """Whether ``exc`` says the filesystem (or the user's quota) is full."""
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)


def remove_partial_downloads(root: str, keep: Optional[str] = None) -> int:
    """Remove the partial downloads (``ROOT/downloads/*.part``) other than ``keep``; the bytes
    freed."""
    downloads = os.path.join(root, "downloads")
    freed = 0
    try:
        names = os.listdir(downloads)
    except FileNotFoundError:
        return 0
    for n in names:
        p = os.path.join(downloads, n)
        if p == keep:
            continue
        with contextlib.suppress(FileNotFoundError):
            freed += os.lstat(p).st_size
            rmtree(p)
    return freed
