"""A cgroup v2 per worker, where the core may create them.

The core looks for the cgroup v2 hierarchy (``/sys/fs/cgroup``, or ``/sys/fs/cgroup/unified``
on a hybrid host) and its own cgroup in it, and creates ``pyengine-<hash of the root>`` below
that (a systemd unit gets this with ``Delegate=yes``). Each worker is moved into a cgroup of its
own there right after it starts, before the core sends its configuration, so that everything
the handler ever forks is inside. Ending the worker writes ``cgroup.kill`` (Linux 5.14+), which
kills every process in it at once, whatever it re-parented to or however it left its session;
at start the core kills and removes what a previous core of the same root left (a crash).

Where the ``pids`` and ``memory`` controllers are delegated to the core's cgroup, each worker's
cgroup also gets ``pids.max`` (the function's process limit) and ``memory.max`` (its
``memory_mb`` plus what a bare worker uses). Without a writable cgroup v2 hierarchy, or without
``cgroup.kill``, the core does without (see :mod:`pyengine.core.procs` for what still holds).
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import logging
import os
import time
from typing import Optional

log = logging.getLogger("pyengine.core")

#: What memory.max adds to a function's memory_mb: the bare worker (interpreter, numpy,
#: pyengine) and the page cache of the model files it maps.
WORKER_BASE_MB = 256


def _v2_mount() -> Optional[str]:
    with open("/proc/self/mountinfo") as fh:
        for line in fh:
            left, _, right = line.partition(" - ")
            if right.split(" ", 1)[0] == "cgroup2":
                return left.split()[4]
    return None


def _own_cgroup() -> Optional[str]:
    with open("/proc/self/cgroup") as fh:
        for line in fh:
            if line.startswith("0::"):
                return line[3:].strip()
    return None


def _write(path: str, text: str) -> None:
    with open(path, "w") as fh:
        fh.write(text)


def _read(path: str) -> str:
    with open(path) as fh:
        return fh.read()


def _delegate_to_children(parent: str) -> None:
    """Make the controllers delegated to the core's cgroup (systemd ``Delegate=yes``) available
    to its children: cgroup v2 lets a cgroup with processes in it enable none, so a core that is
    alone in its cgroup first moves into a leaf of its own (``pyengine-core``)."""
    try:
        available = _read(os.path.join(parent, "cgroup.controllers")).split()
        enabled = _read(os.path.join(parent, "cgroup.subtree_control")).split()
        wanted = [c for c in ("memory", "pids") if c in available and c not in enabled]
        if not wanted or _read(os.path.join(parent, "cgroup.procs")).split() != [str(os.getpid())]:
            return
        leaf = os.path.join(parent, "pyengine-core")
        os.makedirs(leaf, exist_ok=True)
        _write(os.path.join(leaf, "cgroup.procs"), str(os.getpid()))
        for c in wanted:
            _write(os.path.join(parent, "cgroup.subtree_control"), f"+{c}")
    except OSError as exc:
        log.warning("cgroup %s: cannot delegate the memory and pids controllers to the workers' "
                    "cgroups: %s", parent, exc)


class WorkerCgroups:
    """The cgroups of one core's workers, below ``base``."""

    def __init__(self, base: str, controllers: tuple[str, ...]) -> None:
        self.base = base
        #: Limits each worker's cgroup gets ("memory", "pids"): the delegated controllers.
        self.controllers = controllers
        self._seq = itertools.count(1)  # next() is atomic: pools start workers concurrently

    @classmethod
    def detect(cls, root: str) -> tuple[Optional[WorkerCgroups], str]:
        """The cgroups of the core in ``root``, or None and why not (for the start message)."""
        try:
            mount, own = _v2_mount(), _own_cgroup()
        except OSError as exc:
            return None, f"cannot read the cgroup hierarchy ({exc})"
        if mount is None or own is None:
            return None, "no cgroup v2 hierarchy is mounted"
        parent = os.path.join(mount, own.lstrip("/"))
        if own != "/":
            _delegate_to_children(parent)
        name = "pyengine-" + hashlib.sha1(os.path.abspath(root).encode()).hexdigest()[:10]
        base = os.path.join(parent, name)
        try:
            os.makedirs(base, exist_ok=True)
        except OSError as exc:
            return None, (f"the core's cgroup {parent} is not writable ({exc.strerror}); a "
                          "systemd unit gives it one with Delegate=yes")
        if not os.path.exists(os.path.join(base, "cgroup.kill")):
            with contextlib.suppress(OSError):
                os.rmdir(base)
            return None, "the kernel has no cgroup.kill (it needs Linux 5.14+)"
        available = _read(os.path.join(base, "cgroup.controllers")).split()
        enabled = []
        for c in ("memory", "pids"):
            if c in available:
                try:
                    _write(os.path.join(base, "cgroup.subtree_control"), f"+{c}")
                    enabled.append(c)
                except OSError as exc:
                    log.warning("cgroup %s: cannot enable the %s controller: %s", base, c, exc)
        cgroups = cls(base, tuple(enabled))
        cgroups.sweep()
        return cgroups, ""

    def describe(self) -> str:
        """One line for the core's start message."""
        limits = " and ".join(f"{c}.max" for c in self.controllers) or "no limits (the pids " \
            "and memory controllers are not delegated to it)"
        return f"a cgroup v2 per worker under {self.base} (cgroup.kill; {limits})"

    def create(self, function: str, processes_max: int, memory_mb: int) -> str:
        """A new cgroup for one worker of ``function``, with its limits; its path."""
        path = os.path.join(self.base, f"{function}-{os.getpid()}-{next(self._seq)}")
        os.mkdir(path)
        try:
            if "pids" in self.controllers:
                _write(os.path.join(path, "pids.max"), str(processes_max))
            if "memory" in self.controllers:
                _write(os.path.join(path, "memory.max"),
                       str((memory_mb + WORKER_BASE_MB) << 20))
                with contextlib.suppress(OSError):  # older kernels lack it
                    _write(os.path.join(path, "memory.oom.group"), "1")
        except OSError:
            os.rmdir(path)
            raise
        return path

    @staticmethod
    def enter(path: str, pid: int) -> None:
        """Move process ``pid`` into the cgroup ``path``."""
        _write(os.path.join(path, "cgroup.procs"), str(pid))

    @staticmethod
    def pids(path: str) -> set[int]:
        """The processes in the cgroup ``path`` now (empty when it is gone)."""
        try:
            return {int(p) for p in _read(os.path.join(path, "cgroup.procs")).split()}
        except OSError:
            return set()

    def close(self) -> None:
        """Remove the (empty) base at the core's stop."""
        with contextlib.suppress(OSError):
            os.rmdir(self.base)

    @staticmethod
    def kill(path: str, timeout_s: float = 2.0) -> bool:
        """Kill every process in ``path`` and remove it; False when it is still there."""
        try:
            _write(os.path.join(path, "cgroup.kill"), "1")
        except FileNotFoundError:
            return True
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                os.rmdir(path)  # EBUSY until the last process is gone (and reaped)
                return True
            except FileNotFoundError:
                return True
            except OSError:
                if time.monotonic() > deadline:
                    log.warning("cgroup %s: processes still there %g s after cgroup.kill",
                                path, timeout_s)
                    return False
                time.sleep(0.01)

    def sweep(self) -> int:
        """Kill and remove every worker cgroup left below the base (a previous core's); how
        many there were."""
        n = 0
        for entry in os.scandir(self.base):
            if entry.is_dir(follow_symlinks=False):
                n += 1
                self.kill(entry.path)
        if n:
            log.warning("killed the processes of %d worker cgroup(s) a previous core left in %s",
                        n, self.base)
        return n
