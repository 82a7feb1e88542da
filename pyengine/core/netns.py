"""An empty network namespace for a worker: no network at all, without privileges.

Landlock (ABI 4+) restricts TCP by port only; UDP, and TCP on kernels without network rules,
stay open. A worker that may not use the network at all is started in a network namespace of
its own, which has nothing but a loopback interface that is down: every connect fails
(ENETUNREACH), over any protocol, and abstract Unix sockets of the host are out of reach (they
belong to a network namespace). Pathname Unix sockets are files, not part of a namespace:
their modes (and the server's peer checks) protect them.

An unprivileged process may create a network namespace only inside a user namespace of its own
(``unshare(CLONE_NEWUSER | CLONE_NEWNET)``), in which its uid and gid are mapped to themselves;
the kernel must allow unprivileged user namespaces (``user.max_user_namespaces`` > 0 and no
LSM refusing them). :func:`isolate` runs in the forked child before it executes the worker
(a single-threaded process, as ``unshare(CLONE_NEWUSER)`` requires).
"""

from __future__ import annotations

import ctypes
import os

_CLONE_NEWUSER = 0x10000000
_CLONE_NEWNET = 0x40000000
_PR_SET_DUMPABLE = 4

_libc = ctypes.CDLL(None, use_errno=True)


def _write(path: str, text: str) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def isolate() -> None:
    """Move the calling (single-threaded) process into a new user and network namespace, with its
    uid and gid mapped to themselves; OSError when the kernel refuses."""
    uid, gid = os.geteuid(), os.getegid()
    # A process that just switched user (root -> nobody) is not dumpable, which makes its
    # /proc/self files root's; the exec that follows would make it dumpable again anyway.
    _libc.prctl(_PR_SET_DUMPABLE, 1, 0, 0, 0)
    if _libc.unshare(_CLONE_NEWUSER | _CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"unshare(CLONE_NEWUSER | CLONE_NEWNET): {os.strerror(err)}")
    _write("/proc/self/setgroups", "deny")  # required before an unprivileged gid_map
    _write("/proc/self/uid_map", f"{uid} {uid} 1")
    _write("/proc/self/gid_map", f"{gid} {gid} 1")


def available(uid: int | None = None, gid: int | None = None) -> str:
    """'' when a process running as ``uid``/``gid`` (None: as this one) can :func:`isolate`
    itself, else why not. Tried in a forked child."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through the pipe
        code = 0
        try:
            os.close(r)
            if gid is not None:
                os.setgroups([])
                os.setgid(gid)
            if uid is not None:
                os.setuid(uid)
            isolate()
        except BaseException as exc:  # noqa: BLE001 - every failure is the answer
            os.write(w, str(exc).encode()[:500])
            code = 1
        os._exit(code)
    os.close(w)
    with os.fdopen(r, "rb") as fh:
        why = fh.read().decode(errors="replace")
    _, status = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(status) != 0 and not why:
        why = "the probe process failed"
    return why
