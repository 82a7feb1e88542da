"""The deploy lock of a root: one deployment (or rollback, reset, repair, cleanup) at a time."""

from __future__ import annotations

import errno
import fcntl
import os
import time
from contextlib import suppress

from pyengine.deploy.errors import DeployBusyError
from pyengine.deploy.private import private_file


class RootLock:
    """An exclusive flock on ``ROOT/deploy.lock``; its file says who holds it."""

    def __init__(self, root: str) -> None:
        os.makedirs(root, exist_ok=True)
        self.path = os.path.join(root, "deploy.lock")
        self.fd = -1

    def acquire(self, wait_s: float = 0.0, what: str = "deploy") -> None:
        """Take the lock, waiting up to ``wait_s`` seconds; :class:`DeployBusyError` otherwise."""
        # Like state.db, owned by the root directory's owner (the core's user, which takes it
        # at start to clean up after a killed deploy).
        fd = private_file(self.path, os.path.dirname(self.path))
        deadline = time.monotonic() + max(0.0, wait_s)
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                    os.close(fd)
                    raise
            if time.monotonic() >= deadline:
                try:
                    holder = os.pread(fd, 512, 0).decode("utf-8", "replace").strip()
                except OSError:
                    holder = ""
                os.close(fd)
                root = os.path.dirname(self.path)
                raise DeployBusyError(
                    f"another deployment is running in {root} ({holder or 'holder unknown'}); "
                    f"wait for it to finish, or pass --wait SECONDS to wait for it"
                )
            time.sleep(0.05)
        self.fd = fd
        # Who holds it, for the message of the next one (best effort: a full filesystem has no
        # room for it, and the lock holds without it).
        with suppress(OSError):
            os.ftruncate(fd, 0)
            os.pwrite(
                fd,
                f"{what} by pid {os.getpid()} since {time.strftime('%Y-%m-%d %H:%M:%S')}".encode(),
                0,
            )

    def release(self) -> None:
        """Release the lock."""
        if self.fd >= 0:
            with suppress(OSError):
                os.ftruncate(self.fd, 0)
            os.close(self.fd)
            self.fd = -1

    def try_acquire(self) -> bool:
        """Take the lock if it is free; False when another process holds it."""
        try:
            self.acquire(0.0, "cleanup")
            return True
        except DeployBusyError:
            return False
