"""The running core: function pools, deploy watching, and the local HTTP API.

The API's transports and its authorization live in :mod:`pyengine.core.api`; the handler here
asks :class:`pyengine.core.api.Authorizer` before every route but ``/health/live``.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import json
import logging
import math
import os
import shutil
import signal
import threading
import time
import uuid
from typing import Any

from pyengine.core import landlock, protocol
from pyengine.core.api import (
    ADDRESS_FILE,
    SOCKET_FILE,
    TOKEN_FILE,
    ApiError,
    ApiSettings,
    Authorizer,
    Peer,
    check_settings,
    load_or_create_token,
    no_new_privs,
)
from pyengine.core.capture import Spool, Uploader
from pyengine.core.cgroups import WorkerCgroups
from pyengine.core.config import CoreConfig, client_id
from pyengine.core.function_api import merge_stats
from pyengine.core.group import (
    STATE_DB,
    DeployedGroup,
    FunctionSpec,
    change_token,
    read_deployed_group,
)
from pyengine.core.http import HttpServer, Limits, Request, Response, connections_cap, raise_fd_limit
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
from pyengine.core.pool import LIVE_LOCK, LIVE_PIDS, FunctionPool, InvokeError
from pyengine.core.procs import become_subreaper, kill_strays
from pyengine.core.scratch import ScratchQuota
from pyengine.core.users import FunctionUsers

log = logging.getLogger("pyengine.core")

__all__ = ["ADDRESS_FILE", "DEFAULT_PORT", "Core"]

#: The usual port of the optional TCP listener.
DEFAULT_PORT = 8686
#: The capture spool in the root (core only; workers have no access).
CAPTURE_DIR = os.path.join("capture", "spool")

#: The deepest JSON payload the API takes (400 deeper), and the longest integer in it.
JSON_DEPTH_MAX = 64
INT_DIGITS_MAX = 100
#: Request bodies that reach the handler as bytes, not JSON (and ``image/*``).
BINARY_TYPES = ("application/octet-stream",)

#: HTTP status of each failure kind.
STATUS = {"FunctionTimeout": 504, "WorkerDied": 502, "FunctionInitError": 502, "Busy": 503,
          "FunctionNotFound": 404, "Forbidden": 403, "InvokeCycle": 508,
          "PayloadTooLarge": 413, "BadPayload": 400, "ScratchFull": 507}
#: Why a message that reached a function's queue got no answer from the function (its call
#: failed outside the handler): the reason it is counted under as dropped.
MESSAGE_DROP_REASON = {"WorkerDied": "worker_died", "FunctionTimeout": "timeout", "Busy": "busy",
                       "FunctionInitError": "function_failed",
                       "FunctionNotFound": "no_function", "PayloadTooLarge": "too_large_frame",
                       "ScratchFull": "scratch_full",
                       "BadPayload": "bad_payload"}


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
        The core's root (see :func:`pyengine.deploy.default_root`).
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
        self._url: str | None = None
        self.logs: Logs | None = None
        #: Invocation id -> the functions calling each other down to it (context.invoke).
        self._chains: dict[str, tuple[str, ...]] = {}
        self._threads: list[threading.Thread] = []
        self.config = config or CoreConfig()
        for name in ("mqtt", "cloud", "fleet_mqtt"):  # the core's random id, unless set
            settings = getattr(self.config, name)
            if settings is not None and not settings.client_id:
                self.config = dataclasses.replace(self.config, **{name: dataclasses.replace(
                    settings, client_id=client_id(self.root, name))})
        self.router = Router(self.config, self.metrics, self._invoke_message, self._threads_for)
        #: Invocation id -> (topic, source) of the calls running: what a capture is stamped
        #: with (the core's record, never the worker's claim).
        self._calls: dict[str, tuple[str | None, str]] = {}
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
            for name in (STATE_DB, f"{STATE_DB}-wal", f"{STATE_DB}-shm"):
                path = os.path.join(self.root, name)
                if os.path.exists(path):
                    os.chmod(path, 0o600)
        log.info("network: %s", self.network.describe())
        if not self.network.netns and self.network.why_not_netns:
            log.info("no network namespaces for functions: %s", self.network.why_not_netns)
        self._listen()
        self._write_address()
        cap = self.config.capture
        self.spool = Spool(os.path.join(self.root, CAPTURE_DIR), int(cap.spool_mb * (1 << 20)),
                           self.metrics, int(cap.function_mb * (1 << 20)), cap.function_files)
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
        fds = raise_fd_limit()
        limits = Limits(body_max=int(self.api.body_max_mb * (1 << 20)),
                        connections_max=connections_cap(fds, self.api.connections_max),
                        idle_timeout_s=self.api.idle_timeout_s,
                        header_timeout_s=self.api.idle_timeout_s)
        api = _Api(self)
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
        return FunctionPool(spec, worker_plan, self.landlock, on_op=self._worker_op,
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
        """Invoke ``name`` with ``payload``; (HTTP status, answer).

        ``topic``: the MQTT topic of the message that triggers the call (``context.topic``);
        ``source``: where the message came from (``devices``, ``cloud``, a function; "invoke"
        for a direct call). ``chain``: the functions whose calls wait on this one
        (``context.invoke``), outermost first. The error of an answer carries the handler's
        traceback; the API drops it unless the core runs with ``--debug``.
        """
        with self._lock:
            pool = self._pools.get(name)
        if pool is None:
            # The names of the other functions are not the caller's business.
            return 404, {"error": {"type": "FunctionNotFound",
                                   "message": f"no function {name!r} is deployed"}}
        full = self.scratch.problem(pool.plan.scratch)
        if full:
            return 507, {"error": {"type": "ScratchFull", "message": f"{name!r}: {full}"}}
        inv = uuid.uuid4().hex
        t0 = time.perf_counter()
        self._calls[inv] = (topic, source)
        with self._lock:
            self._chains[inv] = (*chain, name)
        try:
            reply = pool.invoke(inv, payload, topic)
        except InvokeError as exc:
            self.metrics.record(name, time.perf_counter() - t0, exc.kind)
            log.error("%s %s: %s: %s", name, inv, exc.kind, exc)
            return STATUS.get(exc.kind, 500), {"invocation_id": inv, "error": {
                "type": exc.kind, "message": str(exc)}}
        finally:
            self._calls.pop(inv, None)
            with self._lock:
                self._chains.pop(inv, None)
        dt = time.perf_counter() - t0
        if reply.get("ok"):
            self.metrics.record(name, dt)
            return 200, {"invocation_id": inv, "result": reply.get("result")}
        err = reply.get("error") or {}
        if not isinstance(err, dict):  # a worker's word, checked like any other input
            err = {"type": "BadAnswer", "message": f"the worker's error is {err!r:.200}"}
        self.metrics.record(name, dt, str(err.get("type", "Error")))
        return 500, {"invocation_id": inv, "error": err}

    def _invoke_from(self, caller: str, invocation_id: str,
                     msg: dict[str, Any]) -> dict[str, Any]:
        """``context.invoke`` of ``caller``: only targets its group entry lists, no cycles."""
        target = msg.get("function")
        with self._lock:
            pool = self._pools.get(caller)
            chain = self._chains.get(invocation_id, (caller,))
        allowed = pool.spec.invoke if pool is not None else ()
        if not isinstance(target, str) or target not in allowed:
            log.warning("%s %s: context.invoke(%r) refused: not in its invoke list %s", caller,
                        invocation_id, target, list(allowed))
            return {"op": "error", "type": "PermissionError", "status": 403,
                    "message": f"function {caller!r} may not invoke {target!r}: the group "
                               f"grants it {list(allowed) or 'no functions'} (its 'invoke' list)"}
        if target in chain:
            return {"op": "error", "type": "RecursionError", "status": 508,
                    "message": f"invoking {target!r} would wait on itself: "
                               f"{' -> '.join((*chain, target))}"}
        payload = (base64.b64decode(msg["payload_b64"]) if "payload_b64" in msg
                   else msg.get("payload"))
        status, body = self.invoke(target, payload, source=caller, chain=chain)
        if status == 200:
            return {"op": "ack", "status": 200, "result": body.get("result"),
                    "invocation_id": body.get("invocation_id")}
        err = dict(body.get("error") or {})
        return {"op": "error", "type": "InvocationError", "status": status,
                "error_type": err.get("type"), "message": f"{target!r} failed ({status}): "
                f"{err.get('type')}: {err.get('message')}",
                "invocation_id": body.get("invocation_id")}

    # -- messaging and capture ---------------------------------------------------------------

    def _threads_for(self, name: str) -> int:
        with self._lock:
            pool = self._pools.get(name)
        # Calls that can run at once: messages to a batching function batch too.
        return pool.spec.max_workers() * pool.spec.slots() if pool is not None else 1

    def _invoke_message(self, name: str, payload: Any, topic: str, source: str) -> str:
        """A queued message's call (:data:`pyengine.core.messaging.Invoke`): "" once the
        handler got it, else why it was not delivered."""
        status, body = self.invoke(name, payload, topic, source)
        if status == 200:
            return ""
        err = body.get("error") or {}
        log.warning("%s: the message on %s failed: %s: %s", name, topic, err.get("type"),
                    err.get("message"))
        kind = str(err.get("type"))
        if status == 500 and kind not in MESSAGE_DROP_REASON:
            return ""  # the handler raised: it had the message (counted as an error)
        return MESSAGE_DROP_REASON.get(kind, "error")

    def _worker_op(self, function: str, invocation_id: str,
                   msg: dict[str, Any]) -> dict[str, Any]:
        """Answer a worker's request during a call: publish or capture."""
        op = msg.get("op")
        try:
            if op == "invoke":
                return self._invoke_from(function, invocation_id, msg)
            if op == "publish":
                payload = base64.b64decode(msg.get("payload_b64") or "")
                routes = self.router.from_function(function, msg.get("topic"), payload,
                                                   int(msg.get("qos", 1)),
                                                   bool(msg.get("retain", False)))
                return {"op": "ack", "routes": routes}
            if op == "capture":
                if self.spool is None:
                    raise RuntimeError("the core has not started its capture spool")
                sample = msg.get("sample")
                if not isinstance(sample, dict):
                    raise TypeError(f"a capture needs a sample mapping, not {sample!r:.80}")
                # Only the sample's own fields come from the function; the rest is the core's
                # (the topic and source of the call, from the core's own record of it).
                topic, source = self._calls.get(invocation_id, (None, "invoke"))
                seq = self.spool.append({
                    "time": time.time(), "function": function, "invocation_id": invocation_id,
                    "topic": topic, "source": source, "inputs": sample.get("inputs"),
                    "outputs": sample.get("outputs"), "meta": sample.get("meta")})
                return {"op": "ack", "seq": seq}
        except (ValueError, TypeError, OSError, RuntimeError) as exc:
            log.warning("%s %s: %s refused: %s", function, invocation_id, op, exc)
            return {"op": "error", "type": type(exc).__name__, "message": str(exc)}
        except Exception as exc:  # noqa: BLE001 - the function gets the failure, the call goes on
            log.exception("%s %s: %s failed", function, invocation_id, op)
            return {"op": "error", "type": "RuntimeError", "message": f"{op} failed in the "
                    f"core: {type(exc).__name__}: {exc}"}
        return {"op": "error", "type": "ValueError", "message": f"unknown request {op!r}"}

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


def _json(body: Any) -> tuple[bytes, int]:
    """An answer as strict JSON and the count of non-finite numbers sent as null.

    The rule (docs/core.md): NaN, Infinity and -Infinity in a result are sent as ``null`` and
    the answer carries ``"nonfinite": N``; the output is always valid JSON.
    """
    try:
        return json.dumps(body, default=protocol._json_default, allow_nan=False).encode(), 0
    except ValueError:
        pass
    count = 0

    def clean(v: Any) -> Any:
        nonlocal count
        if isinstance(v, float) and not math.isfinite(v):
            count += 1
            return None
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [clean(x) for x in v]
        tolist = getattr(v, "tolist", None)
        return clean(tolist()) if callable(tolist) else v
    cleaned = clean(body)
    if isinstance(cleaned, dict):
        cleaned["nonfinite"] = count
    return json.dumps(cleaned, default=protocol._json_default, allow_nan=False).encode(), count


def _parse_int(text: str) -> int:
    if len(text.lstrip("-")) > INT_DIGITS_MAX:
        raise ValueError(f"an integer of {len(text.lstrip('-'))} digits is over the limit of "
                         f"{INT_DIGITS_MAX}")
    return int(text)


def json_depth(value: Any) -> int:
    """How deep ``value`` nests (a scalar: 0), without recursion."""
    depth = 0
    stack = [(value, 1)]
    while stack:
        v, d = stack.pop()
        if isinstance(v, dict):
            v = list(v.values())
        if isinstance(v, list):
            depth = max(depth, d)
            stack.extend((x, d + 1) for x in v if isinstance(x, (dict, list)))
    return depth


def parse_payload(raw: bytes, content_type: str) -> Any:
    """A request body as the handler's event: bytes for ``application/octet-stream`` and
    ``image/*`` (as an MQTT message's bytes), else JSON with depth and integer caps.

    Raises
    ------
    ValueError
        Not JSON, nested deeper than :data:`JSON_DEPTH_MAX`, or an integer longer than
        :data:`INT_DIGITS_MAX` digits.
    """
    ctype = content_type.split(";", 1)[0].strip().lower()
    if ctype in BINARY_TYPES or ctype.startswith("image/"):
        return raw
    if not raw.strip():
        return None
    try:
        value = json.loads(raw, parse_int=_parse_int)
    except RecursionError:
        raise ValueError(f"the payload nests deeper than {JSON_DEPTH_MAX} levels") from None
    if json_depth(value) > JSON_DEPTH_MAX:
        raise ValueError(f"the payload nests deeper than {JSON_DEPTH_MAX} levels")
    return value


class _Api:
    """The routes, over :class:`pyengine.core.http.HttpServer`."""

    ROUTES = {"/health/live": "GET", "/health/ready": "GET", "/functions": "GET",
              "/metrics": "GET"}

    def __init__(self, core: Core) -> None:
        self.core = core

    def error(self, status: int, message: str, kind: str = "") -> Response:
        kinds = {400: "BadRequest", 401: "Unauthorized", 403: "Forbidden", 404: "NotFound",
                 405: "MethodNotAllowed", 411: "LengthRequired", 413: "PayloadTooLarge",
                 431: "HeadersTooLarge", 501: "NotImplemented", 503: "Busy"}
        body = {"error": {"type": kind or kinds.get(status, "Error"), "message": message}}
        return Response(status, json.dumps(body).encode())

    def answer(self, status: int, body: Any, headers: dict[str, str] | None = None) -> Response:
        if isinstance(body, dict) and isinstance(body.get("error"), dict) \
                and not self.core.api.debug:
            body = {**body, "error": {k: v for k, v in body["error"].items()
                                      if k != "traceback"}}
        try:
            data, nonfinite = _json(body)
        except (ValueError, TypeError, RecursionError) as exc:
            log.warning("API: an answer that is not JSON: %s", exc)
            return self.error(500, f"the function's result cannot be sent as JSON: {exc}",
                              "BadResult")
        if nonfinite:
            log.warning("API: %d non-finite number(s) in an answer sent as null", nonfinite)
        return Response(status, data, headers=headers or {})

    def precheck(self, req: Request) -> Response | None:
        """Authorization and the route's method, before the body is read."""
        path = req.path
        try:
            self.core.authorizer.check(req.peer, path, req.headers.get("authorization"))
        except ApiError as exc:
            log.warning("API: %s %s from %s refused (%d): %s", req.method, path,
                        req.peer.describe(), exc.status, exc)
            resp = self.error(exc.status, str(exc), exc.kind)
            if exc.status == 401:
                resp.headers["WWW-Authenticate"] = "Bearer"
            resp.close = True
            return resp
        allowed = self.ROUTES.get(path) or ("POST" if _invoke_target(path) else None)
        if allowed is None:
            return self.error(404, f"no route {req.method} {path}; the routes are GET "
                              f"{', '.join(self.ROUTES)} and POST /functions/NAME/invoke")
        if req.method != allowed:
            resp = self.error(405, f"{path} takes {allowed}, not {req.method}")
            resp.headers["Allow"] = allowed
            return resp
        if req.method == "POST" and "content-length" not in req.headers \
                and "transfer-encoding" not in req.headers:
            return self.error(411, "POST needs a Content-Length (or a chunked body)")
        return None

    def __call__(self, req: Request) -> Response:
        core = self.core
        path = req.path
        if path == "/health/live":
            return self.answer(200, {"status": "live"})
        if path == "/health/ready":
            ok = core.ready()
            return self.answer(200 if ok else 503, {"status": "ready" if ok else "starting",
                                                    "functions": core.functions()})
        if path == "/functions":
            return self.answer(200, {"group": core.group.name if core.group else None,
                                     "deployment": core.group.deployment if core.group else None,
                                     "functions": core.functions()})
        if path == "/metrics":
            return Response(200, core.metrics_text().encode(), "text/plain; version=0.0.4")
        name = _invoke_target(path)
        assert name is not None  # precheck answered other paths
        try:
            payload = parse_payload(req.body, req.headers.get("content-type", ""))
        except (ValueError, UnicodeDecodeError) as exc:
            return self.error(400, f"the payload is not JSON the core accepts: {exc}",
                              "MalformedPayload")
        status, body = core.invoke(name, payload)
        return self.answer(status, body)


def _invoke_target(path: str) -> str | None:
    parts = path.strip("/").split("/")
    if len(parts) == 3 and parts[0] == "functions" and parts[2] == "invoke" and parts[1]:
        return parts[1]
    return None
