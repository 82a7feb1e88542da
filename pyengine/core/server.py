"""The running core: function pools, deploy watching, and the local HTTP API.

The API's transports and its authorization live in :mod:`pyengine.core.api`, its routes in
:mod:`pyengine.core.routes` (which asks :class:`pyengine.core.api.Authorizer` before every route
but ``/health/live``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import shutil
import signal
import threading
import time
from typing import Any

from pyengine.core import landlock
from pyengine.core.api import (
    ADDRESS_FILE,
    SOCKET_FILE,
    TOKEN_FILE,
    ApiSettings,
    Authorizer,
    Peer,
    check_settings,
    load_or_create_token,
    no_new_privs,
)
from pyengine.core.calls import Calls
from pyengine.core.capture import Spool, Uploader
from pyengine.core.cgroups import WorkerCgroups
from pyengine.core.config import CoreConfig, client_id
from pyengine.core.console import Console
from pyengine.core.function_api import merge_stats
from pyengine.core.group import DeployedGroup, FunctionSpec, change_token, read_deployed_group
from pyengine.core.http import HttpServer, Limits, connections_cap, raise_fd_limit
from pyengine.core.logs import Logs
from pyengine.core.messaging import Router
from pyengine.core.metrics import Metrics, render_batching
from pyengine.core.policy import (
    DEFAULT_ID,
    give_scratch,
    network_support,
    plan,
    unreadable,
    writable_imports,
)
from pyengine.core.pool import LIVE_LOCK, LIVE_PIDS, FunctionPool
from pyengine.core.procs import become_subreaper, kill_strays
from pyengine.core.routes import Routes
from pyengine.core.scratch import ScratchQuota
from pyengine.core.users import FunctionUsers
from pyengine.deploy import installed

log = logging.getLogger("pyengine.core")

__all__ = ["ADDRESS_FILE", "DEFAULT_PORT", "Core"]

#: The usual port of the optional TCP listener.
DEFAULT_PORT = 8686
#: The capture spool in the root (core only; workers have no access).
CAPTURE_DIR = os.path.join("capture", "spool")

def _grant_ids(spec: FunctionSpec) -> tuple[tuple[int, int], ...]:
    """What the workers' Landlock rules are bound to: a change needs new workers."""
    paths = [r.grant_path() for r in spec.resources]
    paths += [r.path for r in spec.resources if r.kind == "model" and r.permission == "rw"]
    ids = []
    for path in paths:
        try:
            st = os.stat(path)
            ids.append((st.st_dev, st.st_ino))
        except OSError:
            ids.append((0, 0))
    return tuple(ids)


class Core:
    """Runs the functions of the group deployed into ``root`` and serves the invoke API.

    Parameters
    ----------
    root
        The core's root (see :func:`pyengine.common.paths.default_root`).
    api
        Where the API listens and who may call it (default: the Unix socket ``ROOT/core.sock``
        only; see :class:`pyengine.core.api.ApiSettings`).
    poll_s
        How often the deployed group is checked for a new deployment.
    use_landlock
        None: Landlock where the kernel has it (``PYENGINE_LANDLOCK=off`` turns it off);
        False: uid/gid and file modes only.
    config
        MQTT brokers, message queues and data capture (:mod:`pyengine.core.config`).
    """

    def __init__(self, root: str, api: ApiSettings | None = None,
                 poll_s: float = 0.5, use_landlock: bool | None = None,
                 config: CoreConfig | None = None) -> None:
        self.root = os.path.abspath(root)
        self.api = api or ApiSettings()
        check_settings(self.api)
        self.socket_path = os.path.abspath(self.api.socket or os.path.join(self.root, SOCKET_FILE))
        self.token_file = os.path.abspath(self.api.token_file
                                          or os.path.join(self.root, TOKEN_FILE))
        self.poll_s = poll_s
        abi = landlock.abi_version()
        if use_landlock is None:
            use_landlock = abi > 0 and os.environ.get("PYENGINE_LANDLOCK", "on") != "off"
        self.landlock = bool(use_landlock and abi > 0)
        self.landlock_abi = abi
        root_core = os.geteuid() == 0
        self.network = network_support(self.landlock, DEFAULT_ID if root_core else None,
                                       DEFAULT_ID if root_core else None)
        self.metrics = Metrics()
        self.group: DeployedGroup | None = None
        self._pools: dict[str, FunctionPool] = {}
        self._grants: dict[str, tuple[tuple[int, int], ...]] = {}
        self._retiring: list[FunctionPool] = []
        self._token: tuple[tuple[int, int], ...] = ()
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._reload_now = threading.Event()
        self._reopen_logs = threading.Event()
        self._dump_state = threading.Event()
        self.http: HttpServer | None = None
        #: The local console (api.console), on the TCP listener.
        self.console: Console | None = None
        self._url: str | None = None
        self.logs: Logs | None = None
        self._threads: list[threading.Thread] = []
        self.config = config or CoreConfig()
        for name in ("mqtt", "cloud", "fleet_mqtt"):  # the core's random id, unless set
            settings = getattr(self.config, name)
            if settings is not None and not settings.client_id:
                self.config = dataclasses.replace(self.config, **{name: dataclasses.replace(
                    settings, client_id=client_id(self.root, name))})
        self.spool: Spool | None = None
        self.uploader: Uploader | None = None
        #: Started after the core, stopped before it: objects with start() and stop() (the fleet
        #: agent of ``core start --fleet``).
        self.services: list[Any] = []
        #: Each function's own user (root core only: an unprivileged one cannot switch users).
        #: Whether orphans of workers come to this process (``serve_forever``; see procs).
        self.subreaper = False
        #: A cgroup v2 per worker where the core may create them (set at start).
        self.cgroups: WorkerCgroups | None = None
        self.users = (FunctionUsers(self.root, self.config.functions.uids)
                      if os.geteuid() == 0 else None)
        self.scratch = ScratchQuota(self.config.functions.scratch_mb)
        self.calls = Calls(self._pool, self.scratch, self.metrics)
        self.router = Router(self.config, self.metrics, self.calls.message, self.calls.threads_for)
        self.calls.router = self.router

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        """Start the pinned functions, the HTTP API and the deploy watcher (returns at once)."""
        os.makedirs(self.root, exist_ok=True)
        self.logs = Logs(self.root, self.config.logs.max_mb, self.config.logs.files)
        logging.getLogger("pyengine").addHandler(self.logs.core_handler)
        if self.landlock:
            log.info("functions are confined with Landlock (ABI %d)", self.landlock_abi)
        else:
            why = ("turned off" if self.landlock_abi > 0
                   else "not available in this kernel (it needs Linux 5.13+ with landlock enabled)")
            log.warning("Landlock is %s: functions are confined by uid/gid and file modes only",
                        why)
        self.cgroups, why = WorkerCgroups.detect(self.root)
        if self.cgroups is not None:
            log.info("each worker's processes are killed with it: %s", self.cgroups.describe())
        else:
            log.warning("no cgroup per worker (%s): a worker's processes are killed with it as "
                        "its process tree (it is their subreaper), the process limit is "
                        "RLIMIT_NPROC only", why)
        if self.users is not None:
            log.info("each function runs as a user of its own (uids %s, recorded in %s)",
                     self.users.uid_range, self.users.path)
        else:
            log.warning("the core runs as uid %d, not root: every function runs as uid %d too "
                        "(no user of its own without root)", os.geteuid(), os.geteuid())
        if not self.landlock:
            installed.protect_state(self.root)
        log.info("network: %s", self.network.describe())
        if not self.network.netns and self.network.why_not_netns:
            log.info("no network namespaces for functions: %s", self.network.why_not_netns)
        self._listen()
        self._write_address()
        cap = self.config.capture
        self.spool = Spool(os.path.join(self.root, CAPTURE_DIR), int(cap.spool_mb * (1 << 20)),
                           self.metrics, int(cap.function_mb * (1 << 20)), cap.function_files)
        self.calls.spool = self.spool
        if self.config.capture.s3:
            self.uploader = Uploader(self.spool, self.config.capture, self.metrics)
            self.uploader.start()
        self.reload(cleanup=True)
        self.router.start()
        self._spawn(self._watch, "watch")
        for service in self.services:
            service.start()

    def _listen(self) -> None:
        token = None
        if self.api.port is not None and self.api.token:
            token = load_or_create_token(self.token_file)
        self.authorizer = Authorizer(token, self.api.socket_group, self._is_function_peer)
        if self.api.console:
            if token is None:
                raise ValueError("the console is served on the TCP listener and logs in with "
                                 "its token: start the core with --port (and without "
                                 "--no-token) to use --console")
            self.console = Console(self, token)
            self.console.start()
        fds = raise_fd_limit()
        limits = Limits(body_max=int(self.api.body_max_mb * (1 << 20)),
                        connections_max=connections_cap(fds, self.api.connections_max),
                        idle_timeout_s=self.api.idle_timeout_s,
                        header_timeout_s=self.api.idle_timeout_s)
        api = Routes(self)
        self.http = HttpServer(api, api.precheck, api.error, limits)
        where = [self.http.listen_unix(self.socket_path, self.api.socket_group)]
        if self.api.port is not None:
            try:
                self._url = self.http.listen_tcp(self.api.host, self.api.port)
            except OSError as exc:
                raise OSError(exc.errno, f"cannot listen on {self.api.host}:{self.api.port} "
                              f"({exc.strerror}); is another core running? pick another "
                              "--port") from exc
            where.append(self._url + (f" (bearer token in {self.token_file})"
                                      if token is not None
                                      else " (no token: any local user can call)"))
        log.info("API listening on %s; at most %d connections (fd limit %d), bodies up to %d "
                 "bytes, idle timeout %g s", ", ".join(where), limits.connections_max, fds,
                 limits.body_max, limits.idle_timeout_s)

    @property
    def url(self) -> str | None:
        """The TCP listener's base URL (None without one)."""
        return self._url

    def _is_function_peer(self, peer: Peer) -> bool:
        """Whether a Unix socket peer is a process of a function (a worker or its child)."""
        if peer.pid is None:
            return False
        with self._lock:
            pools = list(self._pools.values()) + list(self._retiring)
        workers = {pid for p in pools for pid in p.pids()}
        pid = peer.pid
        for _ in range(64):  # up the parent chain: a worker's children count as the worker
            if pid in workers:
                return True
            try:
                with open(f"/proc/{pid}/stat") as fh:
                    pid = int(fh.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                break
            if pid <= 1:
                break
        # A child that left its worker's tree (double fork) keeps no_new_privs and the uid.
        uids = {p.plan.uid if p.plan.uid is not None else os.geteuid() for p in pools}
        return peer.uid in uids and no_new_privs(peer.pid)

    def _spawn(self, target: Any, name: str) -> None:
        t = threading.Thread(target=target, name=f"pyengine-{name}", daemon=True)
        t.start()
        self._threads.append(t)

    def _write_address(self) -> None:
        path = os.path.join(self.root, ADDRESS_FILE)
        tmp = f"{path}.tmp"
        with open(tmp, "w") as fh:
            json.dump({"socket": self.socket_path, "url": self.url,
                       "token_file": self.token_file if self.url and self.api.token else None,
                       "pid": os.getpid()}, fh)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)

    def serve_forever(self) -> None:
        """Start, then run until SIGTERM or SIGINT; SIGHUP checks for a new deployment now."""
        signal.signal(signal.SIGTERM, lambda *_: self._stopping.set())
        signal.signal(signal.SIGINT, lambda *_: self._stopping.set())
        signal.signal(signal.SIGHUP, lambda *_: self._reload_now.set())
        signal.signal(signal.SIGUSR1, lambda *_: self._reopen_logs.set())
        signal.signal(signal.SIGUSR2, lambda *_: self._dump_state.set())
        # A caller that hangs up mid-answer is an EPIPE error on that connection, not death.
        signal.signal(signal.SIGPIPE, signal.SIG_IGN)
        # Orphans of a worker that died on its own come to the core, which kills them.
        self.subreaper = become_subreaper()
        try:
            self.start()
            while not self._stopping.wait(0.2):
                if self._reopen_logs.is_set():
                    self._reopen_logs.clear()
                    if self.logs is not None:
                        self.logs.reopen()
                    log.info("SIGUSR1: logs reopened")
                if self._dump_state.is_set():
                    self._dump_state.clear()
                    self.dump_state()
        finally:
            self.stop()

    def dump_state(self) -> None:
        """Write the core's state to its log (SIGUSR2): functions, workers, connections."""
        log.info("SIGUSR2: state: group %s deployment %s; API connections %d (refused %d); "
                 "threads %d", self.group.name if self.group else None,
                 self.group.deployment if self.group else None,
                 self.http.connections() if self.http else 0,
                 self.http.refused if self.http else 0, threading.active_count())
        for f in self.functions():
            log.info("SIGUSR2: function %s: %s, workers %s (pids %s), busy %s, calls %s, last "
                     "error %r", f["name"], f["status"], f["workers"], f["pids"], f["busy"],
                     f["invocations"], f["last_error"])

    def stop(self) -> None:
        """Stop the API and every worker."""
        self._stopping.set()
        self._reload_now.set()
        for service in reversed(self.services):
            service.stop()
        if self.console is not None:
            self.console.stop()
        if self.http is not None:
            self.http.close()
        self.router.stop()
        if self.uploader is not None:
            self.uploader.stop()
        with self._lock:
            pools = list(self._pools.values()) + self._retiring
            self._pools.clear()
            self._retiring.clear()
        for p in pools:
            p.stop()
        self._kill_strays()
        if self.cgroups is not None:
            self.cgroups.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(self.root, ADDRESS_FILE))
        log.info("stopped")
        if self.logs is not None:
            logging.getLogger("pyengine").removeHandler(self.logs.core_handler)
            self.logs.close()

    # -- deployments -----------------------------------------------------------------------

    def _watch(self) -> None:
        while not self._stopping.is_set():
            self._reload_now.wait(self.poll_s)
            self._reload_now.clear()
            if self._stopping.is_set():
                return
            try:
                self.reload()
            except Exception:  # noqa: BLE001 - a bad deployment must not stop the core
                log.exception("could not apply the deployment in %s", self.root)
            with self._lock:
                pools = list(self._pools.values())
                self._retiring = [p for p in self._retiring if p.workers() > 0]
            for p in pools:
                p.reap_idle()
            self._kill_strays()

    def _kill_strays(self) -> None:
        if not self.subreaper:
            return
        with LIVE_LOCK:
            strays = kill_strays(LIVE_PIDS)
        if strays:
            log.warning("killed %d process(es) left behind by workers that ended: %s",
                        len(strays), strays)

    def _new_pool(self, spec: FunctionSpec, group: DeployedGroup) -> FunctionPool:
        scratch = os.path.join(self.root, "run", spec.name)
        os.makedirs(scratch, exist_ok=True)
        protected = [f.code_dir for f in group.functions]
        if self.api.port is not None:  # a token file outside the root (say in /opt) stays closed
            protected.append(self.token_file)
        protected += [r.grant_path() for f in group.functions for r in f.resources
                      if r.kind == "model"]
        user = self.users.user_for(spec.name) if self.users is not None else None
        worker_plan = plan(spec, self.root, scratch, protected, user,
                           self.config.functions.processes_max, self.network,
                           self.config.functions.allow_root)
        os.chmod(os.path.join(self.root, "run"), 0o711)
        how = self.scratch.prepare(scratch, worker_plan.uid, worker_plan.gid)
        log.info("function %s: scratch %s, %g MB (%s)", spec.name, scratch,
                 self.config.functions.scratch_mb,
                 "a tmpfs of its own" if how == "tmpfs" else "no new calls over it")
        give_scratch(scratch, worker_plan.uid, worker_plan.gid)
        if worker_plan.refused:
            log.error("%s", worker_plan.refused)
        if spec.uid is not None and worker_plan.uid is None:
            log.warning("function %s: run_as %s:%s is ignored: a core that is not root runs "
                        "every function as itself", spec.name, spec.uid, spec.gid)
        for problem in unreadable(worker_plan, spec):
            log.warning("function %s: %s", spec.name, problem)
        if worker_plan.network_gap:
            log.warning("function %s: %s", spec.name, worker_plan.network_gap)
        elif spec.network is not None and any(e.host != "*" for e in spec.network.connect):
            log.info("function %s: network grant %s is enforced by port only (any host on "
                     "those ports)", spec.name,
                     ", ".join(f"{e.host}:{e.port}" for e in spec.network.connect))
        if not self.landlock:
            for path in writable_imports(worker_plan):
                log.warning("function %s: its user can write %s, which every worker imports "
                            "from, and Landlock is off: install pyengine where functions "
                            "cannot write, or run the core as root", spec.name, path)
        return FunctionPool(spec, worker_plan, self.landlock, on_op=self.calls.worker_op,
                            cgroups=self.cgroups,
                            log_file=self.logs.function(spec.name) if self.logs else None)

    def reload(self, cleanup: bool = False) -> bool:
        """Apply the deployment in the root if it changed; True when something changed.

        A function whose code, settings or resource grants changed gets a new pool (pinned
        workers start before it takes calls); its old workers finish their calls and stop.
        Functions the deployment does not change keep their workers: a new version of a
        resource they use is picked up by their next call.
        """
        token = change_token(self.root)
        if token == self._token and not cleanup:
            return False
        group = read_deployed_group(self.root, cleanup=cleanup)
        self._token = token
        if group is None or group == self.group:
            return False
        started: list[FunctionPool] = []
        for spec in group.functions:
            old = self._pools.get(spec.name)
            grants = _grant_ids(spec)
            if old is not None and old.spec.shape() == spec.shape() \
                    and self._grants.get(spec.name) == grants:
                continue
            pool = self._new_pool(spec, group)
            pool.start()
            started.append(pool)
            self._grants[spec.name] = grants
        names = {f.name for f in group.functions}
        with self._lock:
            retired = [p for n, p in self._pools.items() if n not in names]
            for pool in started:
                old = self._pools.get(pool.spec.name)
                if old is not None:
                    retired.append(old)
                self._pools[pool.spec.name] = pool
            for n in [n for n in self._pools if n not in names]:
                del self._pools[n]
                self._grants.pop(n, None)
            self._retiring.extend(retired)
            self.group = group
        self.router.update(group)
        for p in retired:
            p.retire()
        for n in os.listdir(os.path.join(self.root, "run")) if os.path.isdir(
                os.path.join(self.root, "run")) else []:
            if n not in names:
                self.scratch.release(os.path.join(self.root, "run", n))
                shutil.rmtree(os.path.join(self.root, "run", n), ignore_errors=True)
        if started or retired:
            log.info("deployment %s of group %s applied: started %s, retired %s",
                     group.deployment or "-", group.name, [p.spec.name for p in started],
                     [p.spec.name for p in retired])
        return True

    def await_deployment(self, deployment: int | str, timeout_s: float = 30.0) -> bool:
        """Apply ``deployment`` now rather than at the next poll; True once the core runs it
        (its new workers started), False after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while not self._stopping.is_set():
            with self._lock:
                group = self.group
            if group is not None and group.deployment == str(deployment):
                return True
            if time.monotonic() > deadline:
                return False
            self._reload_now.set()
            time.sleep(0.02)
        return False

    # -- calls and status ------------------------------------------------------------------

    def invoke(self, name: str, payload: Any, topic: str | None = None,
               source: str = "invoke", chain: tuple[str, ...] = ()) -> tuple[int, dict[str, Any]]:
        """Invoke ``name`` with ``payload``; (HTTP status, answer). See :meth:`Calls.invoke`."""
        return self.calls.invoke(name, payload, topic, source, chain)

    def _pool(self, name: str) -> FunctionPool | None:
        with self._lock:
            return self._pools.get(name)

    def ready(self) -> bool:
        """True once every pinned function has started."""
        with self._lock:
            pools = list(self._pools.values())
        return self.group is not None and all(p.status == "ready" for p in pools)

    def functions(self) -> list[dict[str, Any]]:
        """Each function's status."""
        with self._lock:
            pools = dict(self._pools)
        return [{"name": n, "pinned": p.spec.pinned, "status": p.status, "workers": p.workers(),
                 "pids": p.pids(), "busy": p.busy(), "max_workers": p.spec.max_workers(),
                 "calls_per_worker": p.spec.slots(),
                 "invocations": self.metrics.calls(n), "last_error": p.last_error,
                 "confinement": "landlock" if self.landlock else "uid/gid and modes",
                 "network": ("any" if p.spec.network is not None and p.spec.network.any else
                             "none (netns)" if p.plan.netns else
                             f"tcp ports {list(p.plan.net.connect)}" if p.plan.net is not None
                             else "unrestricted"),
                 "invoke": list(p.spec.invoke)}
                for n, p in sorted(pools.items())]

    def metrics_text(self) -> str:
        """Prometheus text."""
        with self._lock:
            workers = {n: p.workers() for n, p in self._pools.items()}
            pools = dict(self._pools)
        gauges = self.router.gauges()
        if self.spool is not None:
            samples, size = self.spool.stats()
            gauges[("pyengine_capture_spool_samples", ())] = samples
            gauges[("pyengine_capture_spool_bytes", ())] = size
            for fn, (n, used) in self.spool.usage().items():
                gauges[("pyengine_capture_spool_function_samples", (("function", fn),))] = n
                gauges[("pyengine_capture_spool_function_bytes", (("function", fn),))] = used
        return self.metrics.render(workers, gauges) + render_batching(self.batching_stats(pools))

    def batching_stats(self, pools: dict[str, FunctionPool] | None = None
                       ) -> dict[tuple[str, str], dict[str, Any]]:
        """(function, resource id) -> its batchers' stats, merged over the live workers (asked
        now over each worker's stats socket)."""
        if pools is None:
            with self._lock:
                pools = dict(self._pools)
        out: dict[tuple[str, str], dict[str, Any]] = {}
        for name, pool in sorted(pools.items()):
            batched = [r.id for r in pool.spec.resources if r.batching is not None]
            if not batched:
                continue
            parts: dict[str, list[dict[str, Any]]] = {rid: [] for rid in batched}
            for worker_stats in pool.batching_stats():
                for rid, st in worker_stats.items():
                    parts.setdefault(rid, []).append(st)
            for rid, sts in parts.items():
                out[(name, rid)] = merge_stats(sts)
        return out
