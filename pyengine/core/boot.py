"""The first code of a worker: confine, then import.

The core runs ``python -I -B -u .../pyengine/core/boot.py PKG_DIR CALL_FD[,CALL_FD...]
[STATS_FD]`` as the function's user, with ``/`` as the cwd and an environment it built itself.
``-I`` keeps the interpreter isolated: neither the cwd nor this file's directory is on
``sys.path``, no ``PYTHON*`` variable is read and there is no user site directory, so the
interpreter imports only from its standard library and site-packages.

This module reads the worker's configuration from the first call socket and applies every
limit before anything else is imported: it becomes the subreaper of what the handler forks,
sets RLIMIT_NPROC and RLIMIT_CORE, sets no_new_privs and applies the Landlock rules. It uses the
standard library and sibling modules loaded by path (:mod:`protocol`, :mod:`landlock`,
:mod:`procs`),
because ``import pyengine`` would import numpy and the native extension unconfined. Only then
is ``PKG_DIR`` (the directory holding the ``pyengine`` package, chosen by the core) put first
on ``sys.path`` and :func:`pyengine.core.worker.serve` called.
"""

from __future__ import annotations

import ctypes
import importlib.util
import os
import resource
import socket
import sys
from types import ModuleType
from typing import Any

_PR_SET_NO_NEW_PRIVS = 38
_PR_SET_CHILD_SUBREAPER = 36


def _sibling(name: str) -> ModuleType:
    """Load ``pyengine/core/<name>.py`` without importing the ``pyengine`` package."""
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), f"{name}.py")
    spec = importlib.util.spec_from_file_location(f"_pyengine_boot_{name}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def limit_processes(processes_max: int, running: int = 0) -> int:
    """Set RLIMIT_NPROC so that the function's user runs at most ``processes_max`` more tasks.

    With a user of its own (a root core) the limit is ``processes_max``; where the function
    shares the core's user (an unprivileged core), ``running`` is the tasks that user ran when
    the core started the worker (:func:`pyengine.core.procs.tasks_of`). Returns the limit set.
    """
    limit = processes_max + running
    resource.setrlimit(resource.RLIMIT_NPROC, (limit, limit))
    return limit


def confine(cfg: dict[str, Any]) -> str:
    """Apply every limit of ``cfg`` to this process (and its future children); what was done."""
    libc = ctypes.CDLL(None, use_errno=True)
    # Orphans of what the handler forks (a double-forked daemon) become our children, so the
    # core finds them below the worker and kills them with it.
    if libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER) failed")
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # no dumps of a worker's memory
    nproc = limit_processes(int(cfg["processes_max"]), int(cfg.get("shared_tasks") or 0))
    done = [f"processes {nproc}"]
    if cfg.get("landlock"):
        landlock = _sibling("landlock")
        rules = [(p, landlock.RIGHTS[mode]) for p, mode in cfg["rules"]]
        net = cfg.get("net")  # TCP ports (None: TCP is not restricted by Landlock)
        abi = landlock.restrict(rules, None if net is None else landlock.NetRules(
            tuple(net["connect"]), tuple(net["bind"])))
        ports = "" if net is None else \
            f", tcp connect {net['connect'] or 'none'} bind {net['bind'] or 'none'}"
        done.insert(0, f"landlock abi {abi}{ports}")
    elif libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS) failed")
    else:
        done.insert(0, "no landlock")
    return ", ".join(done)


def main() -> None:
    """Entry point: see the module docstring."""
    pkg_dir = sys.argv[1]
    socks = [socket.socket(fileno=int(fd)) for fd in sys.argv[2].split(",")]
    stats_sock = socket.socket(fileno=int(sys.argv[3])) if len(sys.argv) > 3 else None
    protocol = _sibling("protocol")
    cfg = protocol.recv(socks[0])
    try:
        confinement = confine(cfg)
    except BaseException as exc:  # noqa: BLE001 - the core reports why the worker did not start
        protocol.send(socks[0], {"op": "init_error", "error": {
            "type": type(exc).__name__, "message": f"confining the worker: {exc}",
            "traceback": ""}})
        raise SystemExit(1) from exc
    procs = _sibling("procs")
    sys.path.insert(0, pkg_dir)
    try:
        from pyengine.core import worker

        worker.serve(socks, stats_sock, cfg, confinement)
    finally:
        for s in socks:
            s.close()
        # The core closed the sockets (it stopped, or died without killing us): what the
        # handler started goes with this worker.
        procs.kill_tree(os.getpid(), include_root=False)


if __name__ == "__main__":
    main()
