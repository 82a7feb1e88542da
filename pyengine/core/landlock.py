"""Landlock (Linux 5.13 and later) through ctypes: confine the calling process to a file allowlist
and, from ABI 4, to the TCP ports it may connect to or bind.

A worker builds a ruleset that handles every file-system right the kernel knows, adds one
rule per allowed path (read-only or read-write), sets ``PR_SET_NO_NEW_PRIVS`` and restricts
itself. From then on the kernel refuses every other file access of the process and of its
children, whatever the file modes say. With a :class:`NetRules` the ruleset also handles TCP
connect and bind (ABI 4+): only the listed ports are allowed, for any host (Landlock knows
ports, not addresses; UDP is not covered). From ABI 6 the process may not signal, nor connect
to abstract Unix sockets of, processes outside its domain. Nothing here needs privileges.

Connecting to a *pathname* Unix socket is not a file access Landlock mediates (up to ABI 7):
such sockets must be protected by their file modes and by the server checking its peer.
"""

from __future__ import annotations

import ctypes
import os
import platform
import stat
from typing import Iterable, NamedTuple

# Syscall numbers are the same on every architecture (added after the unified table).
_SYS_CREATE_RULESET = 444
_SYS_ADD_RULE = 445
_SYS_RESTRICT_SELF = 446
_CREATE_RULESET_VERSION = 1
_RULE_PATH_BENEATH = 1
_PR_SET_NO_NEW_PRIVS = 38

EXECUTE = 1 << 0
WRITE_FILE = 1 << 1
READ_FILE = 1 << 2
READ_DIR = 1 << 3
REMOVE_DIR = 1 << 4
REMOVE_FILE = 1 << 5
MAKE_CHAR = 1 << 6
MAKE_DIR = 1 << 7
MAKE_REG = 1 << 8
MAKE_SOCK = 1 << 9
MAKE_FIFO = 1 << 10
MAKE_BLOCK = 1 << 11
MAKE_SYM = 1 << 12
REFER = 1 << 13  # ABI 2
TRUNCATE = 1 << 14  # ABI 3
IOCTL_DEV = 1 << 15  # ABI 5
SCOPE_ABSTRACT_UNIX_SOCKET = 1 << 0  # ABI 6: no abstract Unix sockets outside the domain
SCOPE_SIGNAL = 1 << 1  # ABI 6: no signals to processes outside the domain
BIND_TCP = 1 << 0  # ABI 4 (handled_access_net)
CONNECT_TCP = 1 << 1  # ABI 4
_RULE_NET_PORT = 2
#: First ABI with TCP port rules, and with scoping.
NET_ABI = 4
SCOPE_ABI = 6

_FILE_RIGHTS = EXECUTE | WRITE_FILE | READ_FILE | TRUNCATE | IOCTL_DEV
READ = EXECUTE | READ_FILE | READ_DIR
WRITE = (WRITE_FILE | REMOVE_DIR | REMOVE_FILE | MAKE_DIR | MAKE_REG | MAKE_SYM | MAKE_SOCK
         | MAKE_FIFO | REFER | TRUNCATE)
#: What each permission of a rule (:class:`pyengine.core.policy.WorkerPlan` ``rules``) allows.
#: A device's ro opens it for reading and issues ioctls (a driver's calls: a camera's
#: controls, a GPU's work submission), rw also opens it for writing; ioctl is never a
#: write-only right, so a granted device is usable whatever its permission. A volume holds
#: data: read (and, rw, write) but never execute.
RIGHTS = {
    "ro": READ,
    "rw": READ | WRITE,
    "device-ro": READ_FILE | IOCTL_DEV,
    "device-rw": READ_FILE | WRITE_FILE | IOCTL_DEV,
    "volume-ro": READ_FILE | READ_DIR,
    "volume-rw": READ_FILE | READ_DIR | WRITE,
}


class _RulesetAttr(ctypes.Structure):
    _fields_ = [("handled_access_fs", ctypes.c_uint64), ("handled_access_net", ctypes.c_uint64),
                ("scoped", ctypes.c_uint64)]


class _PathBeneathAttr(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


class _NetPortAttr(ctypes.Structure):
    _fields_ = [("allowed_access", ctypes.c_uint64), ("port", ctypes.c_uint64)]


class NetRules(NamedTuple):
    """The TCP ports a process may connect to and bind (every other port is refused).

    (A NamedTuple rather than a dataclass: the worker's boot loads this module by path, outside
    ``sys.modules``, where dataclasses cannot resolve their annotations.)
    """

    connect: tuple[int, ...] = ()
    bind: tuple[int, ...] = ()


_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


def abi_version() -> int:
    """The kernel's Landlock ABI version; 0 when Landlock is missing or disabled."""
    if platform.system() != "Linux":
        return 0
    r = _libc.syscall(_SYS_CREATE_RULESET, None, ctypes.c_size_t(0),
                      ctypes.c_uint32(_CREATE_RULESET_VERSION))
    return int(r) if r > 0 else 0


def _handled(abi: int) -> int:
    rights = (1 << 13) - 1
    if abi >= 2:
        rights |= REFER
    if abi >= 3:
        rights |= TRUNCATE
    if abi >= 5:
        rights |= IOCTL_DEV
    return rights


def _error(what: str) -> OSError:
    err = ctypes.get_errno()
    return OSError(err, f"landlock {what}: {os.strerror(err)}")


def _add_rule(ruleset: int, kind: int, rule: ctypes.Structure, what: str) -> None:
    if _libc.syscall(_SYS_ADD_RULE, ctypes.c_int(ruleset), ctypes.c_int(kind), ctypes.byref(rule),
                     ctypes.c_uint32(0)) < 0:
        raise _error(f"add_rule({what})")


def restrict(rules: Iterable[tuple[str, int]], net: NetRules | None = None) -> int:
    """Confine this process (and its future children) to ``rules`` (and ``net``).

    Parameters
    ----------
    rules
        ``(path, rights)`` pairs; rights are ``READ``, ``READ | WRITE`` or finer bits. Paths
        that do not exist are skipped; on a file only the rights that apply to files are kept.
    net
        TCP ports allowed; every other TCP connect and bind is refused (EACCES). None leaves
        TCP unrestricted. Needs ABI 4: below it an OSError (EOPNOTSUPP) is raised rather than
        silently leaving the network open.

    Returns
    -------
    The ABI version used.

    Raises
    ------
    OSError
        Landlock is missing (errno ENOSYS/EOPNOTSUPP) or a syscall failed.
    """
    abi = abi_version()
    if abi <= 0:
        raise OSError(95, "Landlock is not available in this kernel")
    if net is not None and abi < NET_ABI:
        raise OSError(95, f"Landlock ABI {abi} has no network rules (ABI {NET_ABI}, Linux 6.7+)")
    handled = _handled(abi)
    handled_net = BIND_TCP | CONNECT_TCP if net is not None else 0
    attr = _RulesetAttr(handled_access_fs=handled, handled_access_net=handled_net,
                        scoped=SCOPE_SIGNAL | SCOPE_ABSTRACT_UNIX_SOCKET if abi >= SCOPE_ABI
                        else 0)
    size = ctypes.sizeof(_RulesetAttr) if abi >= SCOPE_ABI else 16
    ruleset = _libc.syscall(_SYS_CREATE_RULESET, ctypes.byref(attr), ctypes.c_size_t(size),
                            ctypes.c_uint32(0))
    if ruleset < 0:
        raise _error("create_ruleset")
    try:
        for path, rights in rules:
            try:
                fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
            except FileNotFoundError:
                continue
            try:
                allowed = rights & handled
                if not stat.S_ISDIR(os.fstat(fd).st_mode):
                    allowed &= _FILE_RIGHTS
                if not allowed:
                    continue
                _add_rule(ruleset, _RULE_PATH_BENEATH,
                          _PathBeneathAttr(allowed_access=allowed, parent_fd=fd), repr(path))
            finally:
                os.close(fd)
        if net is not None:
            ports: dict[int, int] = {}
            for port in net.connect:
                ports[port] = ports.get(port, 0) | CONNECT_TCP
            for port in net.bind:
                ports[port] = ports.get(port, 0) | BIND_TCP
            for port, access in sorted(ports.items()):
                _add_rule(ruleset, _RULE_NET_PORT, _NetPortAttr(allowed_access=access, port=port),
                          f"tcp port {port}")
        if _libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
            raise _error("prctl(PR_SET_NO_NEW_PRIVS)")
        if _libc.syscall(_SYS_RESTRICT_SELF, ctypes.c_int(ruleset), ctypes.c_uint32(0)) < 0:
            raise _error("restrict_self")
    finally:
        os.close(ruleset)
    return abi
