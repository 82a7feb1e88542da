"""Paths: where pyengine keeps its state (the root directory), and the places no resource
may be (checked by group validation, by the deploy and again by the core)."""

from __future__ import annotations

import os
import re
from typing import Optional


def default_root() -> str:
    """``$PYENGINE_ROOT``, else /var/lib/pyengine as root, else ~/.local/share/pyengine."""
    env = os.environ.get("PYENGINE_ROOT")
    if env:
        return os.path.abspath(env)
    if os.geteuid() == 0:
        return "/var/lib/pyengine"
    return os.path.join(os.path.expanduser("~"), ".local", "share", "pyengine")


def resolve_root(root: Optional[str] = None) -> str:
    """The root directory to use: ``root`` when given, else :func:`default_root`."""
    return os.path.abspath(root) if root else default_root()


#: Destinations inside these need root (or are the system itself).
SYSTEM_DIRS = (
    "/bin",
    "/boot",
    "/dev",
    "/etc",
    "/lib",
    "/lib32",
    "/lib64",
    "/libx32",
    "/proc",
    "/sbin",
    "/sys",
    "/usr",
    "/run",
    "/var/run",
    "/var/lock",
    "/var/lib/dpkg",
    "/var/lib/apt",
    "/var/cache",
    "/var/log",
    "/snap",
)


#: Home directories only their owner may enter (a destination inside one is refused).
PRIVATE_HOMES = ("/root",)


#: Destinations equal to these would replace a top-level directory.
TOP_DIRS = ("/", "/home", "/tmp", "/var", "/var/lib", "/srv", "/opt", "/mnt", "/media", "/root")


def denied_destination(dest: str) -> Optional[str]:
    """Why ``dest`` (absolute, normalised) may not be a destination, or None when it may: inside
    a system directory or root's home, or a top-level directory itself. Validation applies it
    to the path as written and to its real path; the deploy applies it again right before
    installing."""
    for d in PRIVATE_HOMES:
        if dest.startswith(d + "/"):
            return (
                f"inside {d}, root's home directory, which only root may enter (mode 0700): the "
                "core runs each function as a user of its own, which could not reach the model; "
                "choose a directory such as /srv/models/NAME"
            )
    for d in SYSTEM_DIRS:
        if dest == d or dest.startswith(d + "/"):
            return (
                f"inside {d}, a system directory that needs root; "
                "choose a directory such as /srv/models/NAME"
            )
    if re.match(r"^/lib[^/]*(/|$)", dest):
        return "inside a system library directory; choose another directory"
    if dest in TOP_DIRS:
        return "a top-level directory; name a directory of its own inside it"
    return None
