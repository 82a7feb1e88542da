"""Who a worker runs as and which paths it may touch: one place for the access policy.

Each worker gets, read-only, what any Python process needs (the interpreter, its standard
library, site-packages, the pyengine package, shared libraries, a few files in /etc, /proc,
CPU topology in /sys) and, per function: its own code read-only, its own scratch directory
read-write, each granted resource with the granted permission, and the devices it lists.
Nothing else: not the core's root (state database, manifests, other functions' code) and not
resources the function was not given.
"""

from __future__ import annotations

import contextlib
import os
import site
import stat
import sys
from dataclasses import dataclass

from pyengine import device_files
from pyengine.common.paths import denied_destination
from pyengine.core import landlock, netns
from pyengine.core.group import FunctionSpec

#: uid and gid of functions run by a root core that allocates no user for them (nobody).
DEFAULT_ID = 65534
#: Most tasks (processes and threads) a function's user may run at once (RLIMIT_NPROC): room
#: for several workers, each with a BLAS and an inference thread pool per CPU and its call
#: threads, and still a bound on a fork bomb.
DEFAULT_PROCESSES_MAX = 512 + 16 * (os.cpu_count() or 1)

_SYSTEM_READ = (
    "/usr", "/lib", "/lib64", "/lib32", "/bin", "/sbin", "/opt",
    "/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/ld.so.conf.d", "/etc/localtime", "/etc/timezone",
    "/etc/ssl", "/etc/ca-certificates", "/etc/pki", "/etc/hosts", "/etc/resolv.conf",
    "/etc/nsswitch.conf", "/etc/host.conf", "/etc/gai.conf", "/etc/passwd", "/etc/group",
    "/etc/mime.types", "/etc/os-release", "/proc", "/sys/devices/system/cpu",
    "/sys/fs/cgroup",
)
_ESSENTIAL = ("/usr", "/lib", "/lib64", "/bin")
_SYSTEM_WRITE = ("/dev/null",)
_SYSTEM_READ_DEV = ("/dev/urandom", "/dev/random")


#: The ``pyengine`` package's directory (this file is pyengine/core/policy.py).
PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _contains(parent: str, child: str) -> bool:
    parent = parent.rstrip("/") or "/"
    return child == parent or child.startswith(parent if parent == "/" else parent + "/")


def python_paths() -> list[str]:
    """Directories this interpreter imports from, resolved."""
    paths = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix,
             os.path.dirname(os.path.realpath(sys.executable)),
             os.path.dirname(PACKAGE_DIR)}
    paths.update(p for p in sys.path if p)
    paths.update(site.getsitepackages())
    paths.add(site.getusersitepackages())
    return sorted({os.path.realpath(p) for p in paths if os.path.exists(p)})


#: ``PYENGINE_NETWORK``: which network mechanisms the core may use (auto: every one available;
#: landlock / netns: only that one, as on a machine lacking the other; off: none).
NETWORK_ENV = "PYENGINE_NETWORK"
_NETWORK_CHOICES = ("auto", "landlock", "netns", "off")


@dataclass(frozen=True)
class NetworkSupport:
    """How this core can take network access away from functions.

    Attributes
    ----------
    landlock_abi
        The Landlock ABI used for TCP port rules (4 or more); 0 when they are not available.
    netns
        Workers can be started in an empty network namespace.
    why_not_netns
        Why not, when ``netns`` is False.
    """

    landlock_abi: int = 0
    netns: bool = False
    why_not_netns: str = ""

    def describe(self) -> str:
        """The mechanism, as the core states it at start."""
        parts = []
        if self.landlock_abi:
            parts.append(f"landlock ABI {self.landlock_abi} (TCP connect/bind by port)")
        if self.netns:
            parts.append("netns (functions without a network grant get no network at all)")
        if not parts:
            return "none available — functions have unrestricted network"
        return " + ".join(parts)


def network_support(use_landlock: bool, worker_uid: int | None,
                    worker_gid: int | None) -> NetworkSupport:
    """What this machine offers to restrict workers' network (see :class:`NetworkSupport`).

    ``worker_uid``/``worker_gid``: the user workers run as (None: the core's own), for the probe
    of network namespaces; ``PYENGINE_NETWORK`` narrows the choice (for tests and for kernels
    where one mechanism misbehaves).
    """
    choice = os.environ.get(NETWORK_ENV, "auto")
    if choice not in _NETWORK_CHOICES:
        raise ValueError(f"{NETWORK_ENV}={choice!r}: expected one of {', '.join(_NETWORK_CHOICES)}")
    abi = landlock.abi_version() if use_landlock else 0
    use_abi = abi if abi >= landlock.NET_ABI and choice in ("auto", "landlock") else 0
    why = "turned off by PYENGINE_NETWORK"
    if choice in ("auto", "netns"):
        why = netns.available(worker_uid, worker_gid)
    return NetworkSupport(use_abi, not why, why)


@dataclass(frozen=True)
class WorkerPlan:
    """Everything the core decides about one function's workers before starting them."""

    uid: int | None
    gid: int | None
    groups: tuple[int, ...]
    scratch: str
    rules: tuple[tuple[str, str], ...]
    #: Resource id -> the version the workers keep using (rw resources: their write grant).
    fixed: tuple[tuple[str, str], ...] = ()
    #: TCP ports Landlock allows (None: TCP not restricted by Landlock).
    net: landlock.NetRules | None = None
    #: Start the workers in an empty network namespace (no network at all).
    netns: bool = False
    #: What the grant asks that this machine cannot enforce ('' when all of it is).
    network_gap: str = ""
    #: RLIMIT_NPROC of the workers: tasks the function may run beyond what its user runs.
    processes_max: int = DEFAULT_PROCESSES_MAX
    #: Why the core will not start this function's workers ('' when it will).
    refused: str = ""


def _network(spec: FunctionSpec, support: NetworkSupport
             ) -> tuple[landlock.NetRules | None, bool, str]:
    """(Landlock port rules, empty network namespace, what cannot be enforced) for ``spec``."""
    grant = spec.network
    if grant is not None and grant.any:
        return None, False, ""
    rules = None
    if support.landlock_abi:
        rules = landlock.NetRules() if grant is None else landlock.NetRules(
            grant.connect_ports(), grant.bind)
    if grant is None:
        if support.netns or rules is not None:
            return rules, support.netns, ""
        return None, False, ("it has no network grant, but this machine can take no network "
                             "away (no Landlock ABI 4, no network namespace): it has "
                             "unrestricted network")
    if rules is None:
        return None, False, ("its network grant lists ports, which only Landlock ABI 4+ can "
                             "enforce: it has unrestricted network")
    return rules, False, ""


def plan(spec: FunctionSpec, root: str, scratch: str, protected: list[str],
         user: tuple[int, int] | None = None,
         processes_max: int = DEFAULT_PROCESSES_MAX,
         network: NetworkSupport = NetworkSupport(), allow_root: bool = False) -> WorkerPlan:
    """The user, groups, path rules and network rules of ``spec``'s workers.

    Parameters
    ----------
    spec
        The function.
    root
        The core's root; no rule may open it (or anything above it) to the function.
    scratch
        The function's own read-write directory (HOME and TMPDIR of its workers).
    protected
        Other paths no system rule may cover (every function's code, every resource).
    user
        (uid, gid) the workers run as when the core runs as root (the function's own user, see
        :class:`pyengine.core.users.FunctionUsers`); ``spec.uid``/``spec.gid`` take precedence,
        and nobody (65534) is used when neither is given. Ignored by an unprivileged core.
    processes_max
        The workers' RLIMIT_NPROC (see :func:`pyengine.core.boot.limit_processes`).
    network
        What the machine offers to restrict the network (:func:`network_support`).
    allow_root
        The core's ``functions.allow_root``: without it a ``run_as`` uid or gid of 0 gives a
        plan whose ``refused`` says why (the core's own check; validation checks too).

    A device grant opens the node and its companions (a GPU's, see
    :func:`pyengine.device_files.device_nodes`), a volume grant its directory, each with the
    rights of :data:`landlock.RIGHTS`; a required companion that is missing, or a volume
    overlapping the root or what it guards, gives a plan whose ``refused`` names it: the
    workers do not start and each call fails with that reason.

    Raises
    ------
    ValueError
        A path a worker must read (the interpreter, a shared library directory) contains the
        root; the message names both.
    """
    root = os.path.realpath(root)
    guarded = [root, *(os.path.realpath(p) for p in protected)]
    package = os.path.realpath(PACKAGE_DIR)
    rules: list[tuple[str, str]] = []
    for path in (*_SYSTEM_READ, *python_paths(), *_SYSTEM_READ_DEV):
        real = os.path.realpath(path)
        hidden = [g for g in guarded if _contains(real, g)]
        if not hidden:
            rules.append((real, "ro"))
        elif path in _ESSENTIAL:
            raise ValueError(f"the core's root or a resource ({hidden[0]}) lies inside {real}, "
                             "which every function must read; choose a root and destinations "
                             "outside it")
        elif _contains(real, package):
            # An import directory that also holds the root: open only the pyengine package.
            rules.append((package, "ro"))
    rules.extend((p, "rw") for p in _SYSTEM_WRITE)
    rules.append((os.path.realpath(spec.code_dir), "ro"))
    rules.append((scratch, "rw"))
    fixed: list[tuple[str, str]] = []
    refusals: list[str] = []
    node_groups: set[int] = set()
    for r in spec.resources:
        if r.kind == "device":
            nodes, missing = device_files.device_nodes(r.path)
            refusals += [f"device resource {r.id!r} ({r.path}) needs {m}, which does not exist "
                         "on this machine (load the driver's module, e.g. nvidia-modprobe -u "
                         "-c 0 for /dev/nvidia-uvm)" for m in missing]
            for node in nodes:
                st = os.stat(node)
                if not (stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode)):
                    refusals.append(f"device resource {r.id!r}: {node} is no longer a device")
                    continue
                rules.append((node, f"device-{r.permission}"))
                node_groups.add(st.st_gid)
        elif r.kind == "volume":
            real = os.path.realpath(r.path)
            clash = [g for g in guarded if _contains(real, g) or _contains(g, real)]
            denied = denied_destination(real)  # a link swapped to /etc since the deploy
            if denied or not os.path.isdir(real):
                refusals.append(f"volume resource {r.id!r} ({r.path}, really {real}) is "
                                f"{denied or 'not an existing directory'} (it changed since "
                                "the deploy)")
            elif clash:
                refusals.append(f"volume resource {r.id!r} ({r.path}, really {real}) overlaps "
                                f"{clash[0]}, which the core keeps from functions (its root, "
                                "code and model stores); choose a directory outside them")
            else:
                rules.append((real, f"volume-{r.permission}"))
            with contextlib.suppress(OSError):
                node_groups.add(os.stat(real).st_gid)
        elif r.kind == "model" and r.permission == "rw":
            # Write access to the version in use only, not to the deploy layer's store around it
            # (a new version of a rw resource gets new workers: see Core.reload).
            version = os.path.realpath(r.path)
            rules.append((r.grant_path(), "ro"))
            rules.append((version, "rw"))
            fixed.append((r.id, version))
        else:
            rules.append((r.grant_path(), r.permission))
    uid: int | None = None
    gid: int | None = None
    groups: tuple[int, ...] = ()
    if os.geteuid() == 0:
        own_uid, own_gid = user if user is not None else (DEFAULT_ID, DEFAULT_ID)
        uid = own_uid if spec.uid is None else spec.uid
        gid = own_gid if spec.gid is None else spec.gid
        # The owner groups of its models, and the groups owning its devices and volumes (a
        # 0660 root:video GPU): never group 0, which owns much of the system.
        groups = tuple(sorted({r.owner_gid for r in spec.resources if r.owner_gid is not None}
                              | (node_groups - {0})))
        if 0 in (spec.uid, spec.gid) and not allow_root:
            refusals.append(f"its run_as ({spec.uid}:{spec.gid}) is root, which this core's "
                            "configuration does not allow (functions.allow_root: true)")
    net, in_netns, gap = _network(spec, network)
    return WorkerPlan(uid=uid, gid=gid, groups=groups, scratch=scratch, rules=tuple(rules),
                      fixed=tuple(fixed), processes_max=processes_max, net=net, netns=in_netns,
                      network_gap=gap,
                      refused="; ".join(f"{spec.name!r} cannot start: {r}" for r in refusals))



def unreadable(worker_plan: WorkerPlan, spec: FunctionSpec) -> list[str]:
    """Resources the workers' user cannot read by file modes (a group file mistake worth a warning).

    Only meaningful when the core runs as root and switches user; empty otherwise.
    """
    if worker_plan.uid is None:
        return []
    groups = {worker_plan.gid, *worker_plan.groups}
    out = []
    for r in spec.resources:
        path = os.path.realpath(r.path)
        try:
            st = os.stat(path)
        except OSError:
            continue
        if st.st_uid == worker_plan.uid:
            ok = bool(st.st_mode & stat.S_IRUSR)
        elif st.st_gid in groups:
            ok = bool(st.st_mode & stat.S_IRGRP)
        else:
            ok = bool(st.st_mode & stat.S_IROTH)
        if not ok:
            out.append(f"resource {r.id!r} ({path}, mode {stat.S_IMODE(st.st_mode):04o}, owner "
                       f"{st.st_uid}:{st.st_gid}) is not readable by the function's user "
                       f"{worker_plan.uid}:{worker_plan.gid}; give the resource an owner group "
                       "the function runs with, or no owner setting")
    return out


def give_scratch(scratch: str, uid: int | None, gid: int | None) -> None:
    """Make ``scratch`` private to the function's user: owned by it (everything inside too,
    when it belonged to another user before, e.g. nobody) and mode 0700."""
    st = os.lstat(scratch)
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode):
        raise ValueError(f"the scratch directory {scratch} is not a directory")
    if uid is not None and (st.st_uid, st.st_gid) != (uid, gid if gid is not None else st.st_gid):
        g = gid if gid is not None else -1
        # fwalk opens each directory by fd without following links: a link the old user swapped
        # in while this runs cannot lead the chown out of the scratch.
        for _, dirs, files, dir_fd in os.fwalk(scratch):
            for n in dirs + files:
                os.chown(n, uid, g, dir_fd=dir_fd, follow_symlinks=False)
        os.lchown(scratch, uid, g)
    os.chmod(scratch, 0o700)


def writable_imports(worker_plan: WorkerPlan) -> list[str]:
    """Directories workers import from (the interpreter's, pyengine's) that the workers' user
    could write by file modes: where Landlock is missing, a module planted there would run in
    every worker. Empty when none."""
    groups = {worker_plan.gid, *worker_plan.groups}
    out = []
    for path in python_paths():
        try:
            st = os.stat(path)
        except OSError:
            continue
        if not stat.S_ISDIR(st.st_mode):
            continue
        if worker_plan.uid is None:  # the core's own user
            writable = os.access(path, os.W_OK)
        elif st.st_uid == worker_plan.uid:
            writable = bool(st.st_mode & stat.S_IWUSR)
        elif st.st_gid in groups:
            writable = bool(st.st_mode & stat.S_IWGRP)
        else:
            writable = bool(st.st_mode & stat.S_IWOTH)
        if writable:
            out.append(path)
    return out
