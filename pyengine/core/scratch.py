"""Each function's scratch (``ROOT/run/<function>``, its HOME and TMPDIR) under a quota.

- **A size-limited tmpfs** mounted on the scratch when the core is root and may mount: a
  function that writes past its quota gets ENOSPC, and the root's filesystem is not touched.
  The mount stays when the core stops, so a scratch keeps its files across core restarts (a
  new core takes the mount over), not across a reboot; it goes when the function is removed.
- **Otherwise a periodic check** of the space the scratch holds: a function over its quota gets
  no new calls (507 ``ScratchFull``, naming the directory, its size and the quota) until its
  scratch is back under it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import time
from typing import Optional

log = logging.getLogger("pyengine.core")

#: The tmpfs's source name in /proc/self/mountinfo: what tells the core's mounts from others.
FS_NAME = "pyengine-scratch"
#: Entries a check walks at most: a scratch with more is over its quota (a walk stays cheap).
WALK_MAX = 200_000
_MS_NOSUID, _MS_NODEV, _MS_REMOUNT = 2, 4, 32
_MNT_DETACH = 2


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def mounted_here(path: str) -> bool:
    """Whether a pyengine scratch tmpfs is mounted on ``path``."""
    real = os.path.realpath(path)
    try:
        with open("/proc/self/mountinfo") as fh:
            for line in fh:
                fields = line.split()
                sep = fields.index("-")
                if fields[4] == real and fields[sep + 2] == FS_NAME:
                    return True
    except (OSError, ValueError, IndexError):
        pass
    return False


def usage(path: str) -> int:
    """Bytes allocated under ``path`` (no links followed); past :data:`WALK_MAX` entries, a
    number over any quota."""
    total = 0
    seen = 0
    stack = [path]
    while stack:
        try:
            entries = list(os.scandir(stack.pop()))
        except OSError:
            continue
        for e in entries:
            seen += 1
            if seen > WALK_MAX:
                return 1 << 62
            try:
                st = e.stat(follow_symlinks=False)
            except OSError:
                continue
            total += st.st_blocks * 512
            if e.is_dir(follow_symlinks=False):
                stack.append(e.path)
    return total


class ScratchQuota:
    """The quota of every function's scratch.

    Parameters
    ----------
    limit_mb
        Each scratch's size.
    check_s
        How often the fallback check measures a scratch.
    """

    def __init__(self, limit_mb: float, check_s: float = 2.0) -> None:
        self.limit = int(limit_mb * (1 << 20))
        self.check_s = check_s
        self.can_mount = os.geteuid() == 0 and os.environ.get("PYENGINE_SCRATCH") != "check"
        self._checked: dict[str, tuple[float, int]] = {}
        #: The scratches on a tmpfs of their own.
        self._tmpfs: set[str] = set()

    def prepare(self, path: str, uid: Optional[int], gid: Optional[int]) -> str:
        """Put ``path`` under the quota; how: ``tmpfs`` or ``checked``."""
        if self.can_mount:
            opts = f"size={self.limit},mode=0700,uid={uid if uid is not None else 0}," \
                   f"gid={gid if gid is not None else 0}"
            libc = _libc()
            again = mounted_here(path)
            flags = _MS_NOSUID | _MS_NODEV | (_MS_REMOUNT if again else 0)
            if libc.mount(FS_NAME.encode(), os.fsencode(path), b"tmpfs", flags,
                          opts.encode()) == 0:
                self._tmpfs.add(path)
                return "tmpfs"
            err = ctypes.get_errno()
            log.warning("cannot mount a tmpfs on %s (%s): the scratch quota is checked every "
                        "%g s instead", path, os.strerror(err), self.check_s)
            self.can_mount = False
        return "checked"

    def release(self, path: str) -> None:
        """Unmount ``path``'s tmpfs (its files go with it)."""
        self._tmpfs.discard(path)
        self._checked.pop(path, None)
        if mounted_here(path) and _libc().umount2(os.fsencode(path), _MNT_DETACH) != 0:
            log.warning("cannot unmount the scratch %s: %s", path, os.strerror(ctypes.get_errno()))

    def problem(self, path: str) -> str:
        """Why ``path`` takes no calls now ('' while under its quota); measured at most every
        ``check_s`` (a tmpfs needs no check: the kernel enforces it)."""
        if path in self._tmpfs:
            return ""
        now = time.monotonic()
        last = self._checked.get(path)
        if last is None or now - last[0] >= self.check_s:
            last = (now, usage(path))
            self._checked[path] = last
        used = last[1]
        if used <= self.limit:
            return ""
        return (f"the function's scratch {path} holds {used / (1 << 20):.1f} MB, over its quota "
                f"of {self.limit / (1 << 20):g} MB (functions.scratch_mb in the core's "
                "configuration): it takes no calls until files there are removed")
