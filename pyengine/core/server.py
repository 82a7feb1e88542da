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
import os
import shutil
import signal
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler
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
    TcpListener,
    UnixListener,
    check_settings,
    load_or_create_token,
    no_new_privs,
)
from pyengine.core.capture import Spool, Uploader
from pyengine.core.cgroups import WorkerCgroups
from pyengine.core.config import CoreConfig, client_id
from pyengine.core.group import (
    STATE_DB,
    DeployedGroup,
    FunctionSpec,
    change_token,
    read_deployed_group,
)
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
from pyengine.core.runtime import merge_stats
from pyengine.core.users import FunctionUsers

log = logging.getLogger("pyengine.core")

__all__ = ["ADDRESS_FILE", "DEFAULT_PORT", "Core"]

#: The usual port of the optional TCP listener.
DEFAULT_PORT = 8686
#: The capture spool in the root (core only; workers have no access).
CAPTURE_DIR = os.path.join("capture", "spool")

#: A refused request's body is read (and dropped) up to this size, for this long at most.
DRAIN_MAX = 1 << 20
DRAIN_TIMEOUT_S = 5.0

#: HTTP status of each failure kind.
STATUS = {"FunctionTimeout": 504, "WorkerDied": 502, "FunctionInitError": 502, "Busy": 503,
          "FunctionNotFound": 404, "Forbidden": 403, "InvokeCycle": 508,
          "PayloadTooLarge": 413, "BadPayload": 400}
#: Why a message that reached a function's queue got no answer from the function (its call
#: failed outside the handler): the reason it is counted under as dropped.
MESSAGE_DROP_REASON = {"WorkerDied": "worker_died", "FunctionTimeout": "timeout", "Busy": "busy",
                       "FunctionInitError": "function_failed",
                       "FunctionNotFound": "no_function", "PayloadTooLarge": "too_large_frame",
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
        self._listeners: list[TcpListener | UnixListener] = []
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

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        """Start the pinned functions, the HTTP API and the deploy watcher (returns at once)."""
        os.makedirs(self.root, exist_ok=True)
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
        self._listeners.append(UnixListener(self.socket_path, _handler_for(self, "unix"),
                                            self.api.socket_group))
        if self.api.port is not None:
            try:
                self._listeners.append(TcpListener((self.api.host, self.api.port),
                                                   _handler_for(self, "tcp")))
            except OSError as exc:
                raise OSError(exc.errno, f"cannot listen on {self.api.host}:{self.api.port} "
                              f"({exc.strerror}); is another core running? pick another "
                              "--port") from exc
        for listener in self._listeners:
            self._spawn(listener.serve_forever, listener.transport)
            log.info("API listening on %s%s", listener.describe(),
                     "" if listener.transport == "unix" else
                     f" (bearer token in {self.token_file})" if token is not None
                     else " (no token: any local user can call)")

    @property
    def url(self) -> str | None:
        """The TCP listener's base URL (None without one)."""
        tcp = [lis for lis in self._listeners if isinstance(lis, TcpListener)]
        return tcp[0].describe() if tcp else None

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
        # Orphans of a worker that died on its own come to the core, which kills them.
        self.subreaper = become_subreaper()
        try:
            self.start()
            while not self._stopping.wait(0.2):
                pass
        finally:
            self.stop()

    def stop(self) -> None:
        """Stop the API and every worker."""
        self._stopping.set()
        self._reload_now.set()
        for service in reversed(self.services):
            service.stop()
        for listener in self._listeners:
            listener.shutdown()
            listener.server_close()
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
                           self.config.functions.processes_max, self.network)
        os.chmod(os.path.join(self.root, "run"), 0o711)
        give_scratch(scratch, worker_plan.uid, worker_plan.gid)
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
                            cgroups=self.cgroups)

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


def _handler_for(core: Core, transport: str) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "pyengine-core"
        # Headers and body go out as separate writes (TCP only: a Unix socket has no Nagle).
        disable_nagle_algorithm = transport == "tcp"

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            log.debug("http: " + format, *args)

        def _send(self, status: int, body: Any, ctype: str = "application/json",
                  headers: dict[str, str] | None = None) -> None:
            if isinstance(body, dict) and isinstance(body.get("error"), dict) \
                    and not core.api.debug:
                body = {**body, "error": {k: v for k, v in body["error"].items()
                                          if k != "traceback"}}
            data = body.encode() if isinstance(body, str) else \
                json.dumps(body, default=protocol._json_default).encode()
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data)))
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(data)

        def _drain(self) -> None:
            """Read a small request body nobody will use, so that the refusal reaches the caller
            (closing with unread data resets a TCP connection; a client still sending its body
            to a closed socket gets EPIPE instead of the answer)."""
            try:
                n = int(self.headers.get("Content-Length") or 0)
            except ValueError:
                return
            if 0 < n <= DRAIN_MAX:
                self.connection.settimeout(DRAIN_TIMEOUT_S)
                with contextlib.suppress(OSError):
                    self.rfile.read(n)

        def _authorized(self, path: str) -> bool:
            """Ask the authorizer; answer 401/403 (and close) when it refuses."""
            peer = self.server.peer(self.request, self.client_address)  # type: ignore[attr-defined]
            try:
                core.authorizer.check(peer, path, self.headers.get("Authorization"))
                return True
            except ApiError as exc:
                log.warning("API: %s %s from %s refused (%d): %s", self.command, path,
                            peer.describe(), exc.status, exc)
                self.close_connection = True
                self._drain()
                self._send(exc.status, {"error": {"type": exc.kind, "message": str(exc)}},
                           headers={"WWW-Authenticate": "Bearer"} if exc.status == 401 else None)
                return False

        def do_GET(self) -> None:  # noqa: N802
            path = self.path.split("?", 1)[0].rstrip("/")
            if not self._authorized(path):
                return
            if path == "/health/live":
                self._send(200, {"status": "live"})
            elif path == "/health/ready":
                ok = core.ready()
                self._send(200 if ok else 503, {"status": "ready" if ok else "starting",
                                                "functions": core.functions()})
            elif path == "/functions":
                self._send(200, {"group": core.group.name if core.group else None,
                                 "deployment": core.group.deployment if core.group else None,
                                 "functions": core.functions()})
            elif path == "/metrics":
                self._send(200, core.metrics_text(), "text/plain; version=0.0.4")
            else:
                self._send(404, {"error": {"type": "NotFound", "message": f"no route GET {path}"}})

        def do_POST(self) -> None:  # noqa: N802
            if not self._authorized(self.path.split("?", 1)[0].rstrip("/")):
                return
            parts = self.path.split("?", 1)[0].strip("/").split("/")
            if len(parts) != 3 or parts[0] != "functions" or parts[2] != "invoke":
                self._send(404, {"error": {"type": "NotFound",
                                           "message": f"no route POST {self.path}; "
                                                      "use POST /functions/{name}/invoke"}})
                return
            try:
                n = int(self.headers.get("Content-Length") or 0)
            except ValueError:
                n = -1
            if n < 0 or n > protocol.MAX_MESSAGE:
                self.close_connection = True
                self._send(413 if n > 0 else 400, {"error": {
                    "type": "BadRequest",
                    "message": f"Content-Length {self.headers.get('Content-Length')!r} is not "
                               f"a size up to {protocol.MAX_MESSAGE} bytes"}})
                return
            raw = self.rfile.read(n) if n else b""
            try:
                payload = json.loads(raw) if raw.strip() else None
            except (ValueError, RecursionError) as exc:  # JSONDecodeError, UTF-8, digits
                self._send(400, {"error": {"type": "MalformedPayload",
                                           "message": f"the payload is not JSON: {exc}"}})
                return
            status, body = core.invoke(parts[1], payload)
            self._send(status, body)

    return Handler
