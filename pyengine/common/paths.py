"""Where pyengine keeps its state: the root directory."""

from __future__ import annotations

import os
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
