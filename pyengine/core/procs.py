"""Ending a worker with everything it started.

A worker is the child subreaper of what its handler forks (see :mod:`pyengine.core.boot`): a
double-forked daemon that left its session (``setsid``) is re-parented to the worker, not to
init, so it stays in the worker's process tree. :func:`kill_tree` stops that tree (SIGSTOP,
repeated until no new process appears, so nothing forks away meanwhile) and then kills it.

The core process itself (``pyengine core start``) is a subreaper too (:func:`become_subreaper`):
what a worker leaves behind when it dies on its own (a crash, ``os._exit``) comes to the core,
and :func:`kill_strays` ends every child of the core that is not a live worker.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import time

_PR_SET_CHILD_SUBREAPER = 36


def become_subreaper() -> bool:
    """Make this process the subreaper of its descendants' orphans; False where the kernel
    refuses (then a crashed worker's children go to init)."""
    libc = ctypes.CDLL(None, use_errno=True)
    return libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0


def _parents() -> dict[int, int]:
    """pid -> parent pid of every process."""
    out = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as fh:
                data = fh.read()
        except OSError:
            continue
        # "pid (comm) state ppid ...": comm may hold spaces and parentheses.
        fields = data[data.rfind(b")") + 2:].split()
        if len(fields) > 1:
            out[int(entry)] = int(fields[1])
    return out


def descendants(pid: int) -> set[int]:
    """Every process below ``pid`` now."""
    children: dict[int, list[int]] = {}
    for child, parent in _parents().items():
        children.setdefault(parent, []).append(child)
    out: set[int] = set()
    todo = [pid]
    while todo:
        for c in children.get(todo.pop(), ()):
            if c not in out:
                out.add(c)
                todo.append(c)
    return out


def _signal(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)


def kill_tree(pid: int, include_root: bool = True) -> set[int]:
    """SIGKILL every descendant of ``pid`` (and ``pid`` itself with ``include_root``).

    Each process is stopped first and the tree read again until no new one appears, so a
    process forking in a loop cannot outrun the kill. Nothing is reaped here: ``pid`` by its
    parent, the descendants with :func:`reap`. Returns the descendants killed.
    """
    stopped: set[int] = set()
    if include_root:
        _signal(pid, signal.SIGSTOP)
    while True:
        new = descendants(pid) - stopped
        if not new:
            break
        for p in new:
            _signal(p, signal.SIGSTOP)
        stopped |= new
    for p in stopped | ({pid} if include_root else set()):
        _signal(p, signal.SIGKILL)
    return stopped


def _state(pid: int) -> tuple[str, int] | None:
    """(state letter, parent pid) of ``pid``; None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            fields = fh.read().rsplit(b")", 1)[1].split()
    except OSError:
        return None
    return fields[0].decode(), int(fields[1])


def reap(pids: set[int], timeout_s: float = 2.0) -> set[int]:
    """Wait until the killed ``pids`` are gone, reaping those that became this process's
    children (a subreaper's orphans); what still exists after ``timeout_s``.

    Until a task is reaped it still counts against its user's RLIMIT_NPROC: a worker started
    at once after a fork bomb was killed would find no task left to start its threads.
    """
    me = os.getpid()
    left = set(pids)
    deadline = time.monotonic() + timeout_s
    while left:
        for p in list(left):
            st = _state(p)
            if st is None:
                left.discard(p)
            elif st[0] in "ZX" and st[1] == me:
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(p, os.WNOHANG)
                left.discard(p)
        if not left or time.monotonic() > deadline:
            break
        time.sleep(0.01)
    return left


def kill_strays(keep: set[int]) -> list[int]:
    """Kill and reap each child of this process that is not in ``keep`` (with its subtree).

    Only meaningful in a subreaper whose only children are workers (the core process); the
    pids killed.
    """
    me = os.getpid()
    strays = [p for p, parent in _parents().items() if parent == me and p not in keep]
    for p in strays:
        reap(kill_tree(p))
        with contextlib.suppress(ChildProcessError):
            os.waitpid(p, 0)
    return strays


def tasks_of(uid: int) -> int:
    """Tasks (threads included, as RLIMIT_NPROC counts them) whose real uid is ``uid``.

    Counted by the core before it starts a worker: inside a worker's own user namespace (an
    empty network namespace, see :mod:`pyengine.core.netns`) every uid outside the mapping reads
    as the overflow uid, so a worker running as that uid (nobody) would count them all.
    """
    count = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/status") as fh:
                fields = dict(line.split(":", 1) for line in fh if ":" in line)
        except OSError:
            continue
        if int(fields.get("Uid", "-1").split()[0]) == uid:
            count += int(fields.get("Threads", "1"))
    return count
