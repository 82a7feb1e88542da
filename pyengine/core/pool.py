"""Worker processes and the per-function pool that hands calls to them."""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import Any, Callable, Optional

from pyengine.common.environment import environment_problem
from pyengine.core import netns, protocol
from pyengine.core.cgroups import WorkerCgroups
from pyengine.core.function_api import ENV_RESOURCES
from pyengine.core.group import FunctionSpec
from pyengine.core.logs import PipeReader, RotatingLog
from pyengine.core.policy import PACKAGE_DIR, WorkerPlan
from pyengine.core.procs import kill_tree, reap, tasks_of
from pyengine.devices import GRANT_ENV

log = logging.getLogger("pyengine.core")

#: How long a worker may take to import its handler's module.
START_TIMEOUT_S = 120.0

#: Answers what a worker asks the core during a call (``context.publish``, ``pyengine.capture``):
#: (function name, invocation id, the request) -> the answer sent back.
OpHandler = Callable[[str, str, dict[str, Any]], dict[str, Any]]


def _no_ops(function: str, invocation_id: str, msg: dict[str, Any]) -> dict[str, Any]:
    return {"op": "error", "type": "RuntimeError",
            "message": f"{msg.get('op')!r} is not available in this core"}


class InvokeError(Exception):
    """A call that failed outside the handler: ``kind`` is the error type the caller sees."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


class PayloadError(InvokeError):
    """The event cannot be sent to a worker (too large, not JSON); the worker is unharmed."""


def _describe_exit(code: int | None) -> str:
    if code is None:
        return "still running"
    if code < 0:
        try:
            return f"killed by signal {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exited with status {code}"


#: Pids of the workers started and not yet reaped, in this process (see procs.kill_strays).
LIVE_PIDS: set[int] = set()
LIVE_LOCK = threading.Lock()

#: The worker's first code (run by path: importing ``pyengine`` would import numpy unconfined).
BOOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "boot.py")
#: The directory holding the ``pyengine`` package: the one entry the core adds to sys.path.
PKG_DIR = os.path.dirname(PACKAGE_DIR)


def worker_environment(spec: FunctionSpec, plan: WorkerPlan, threads: bool) -> dict[str, str]:
    """A worker's whole environment: what the core sets plus the function's ``environment``.

    Nothing is inherited from the core. A variable the group validation refuses (LD_*,
    PYTHON*...; see :mod:`pyengine.common.environment`) stops the function from starting, for
    a state deployed before that check existed.

    Raises
    ------
    InvokeError
        ``FunctionInitError`` naming the refused variable.
    """
    for key, value in spec.environment.items():
        problem = environment_problem(key, value)
        if problem:
            raise InvokeError("FunctionInitError", f"{spec.name!r} cannot start: environment: "
                              f"{problem}; deploy the group again without it")
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8"}
    if threads:
        env["MALLOC_ARENA_MAX"] = "2"  # an arena per thread would eat the address space
    env.update(spec.environment)
    env.update({
        "HOME": plan.scratch, "TMPDIR": plan.scratch, "PYENGINE_FUNCTION": spec.name,
        ENV_RESOURCES: protocol.json.dumps({r.id: r.path for r in spec.resources}),
        # The granted device paths: load(device="auto") uses only the GPUs listed here.
        GRANT_ENV: ",".join(r.path for r in spec.resources if r.kind == "device"),
    })
    return env


class Worker:
    """One worker process of a function, over socket pairs: one per call it may run at once
    (``spec.slots()``: 1, or more for a function that batches calls to a model), plus one for
    the core's ``stats`` requests when it batches."""

    def __init__(self, spec: FunctionSpec, plan: WorkerPlan, landlock: bool,
                 on_op: Optional[OpHandler] = None,
                 cgroups: Optional[WorkerCgroups] = None,
                 log_file: Optional[RotatingLog] = None) -> None:
        if plan.refused:
            raise InvokeError("FunctionInitError", plan.refused)
        self.spec = spec
        self.on_op = on_op or _no_ops
        #: The worker's own cgroup (None without cgroups).
        self.cgroup: Optional[str] = None
        batching = {r.id: dataclasses.asdict(r.batching) for r in spec.resources
                    if r.batching is not None}
        env = worker_environment(spec, plan, threads=spec.slots() > 1 or bool(batching))
        pairs = [socket.socketpair() for _ in range(spec.slots() + (1 if batching else 0))]
        children = [c for _, c in pairs]
        call_fds = [c.fileno() for c in children[:spec.slots()]]
        # Isolated (-I): no cwd or script directory on sys.path, no PYTHON* variables, no user
        # site; the boot module confines the worker before pyengine (and numpy) is imported.
        argv = [sys.executable, "-I", "-B", "-u", BOOT, PKG_DIR, ",".join(map(str, call_fds))]
        if batching:
            argv.append(str(children[-1].fileno()))
        try:
            with LIVE_LOCK:  # registered before a stray sweep can see it
                self.proc = subprocess.Popen(
                    argv, pass_fds=[c.fileno() for c in children], env=env, cwd="/",
                    stdin=subprocess.DEVNULL,
                    # One pipe the core reads into the function's log: the worker never holds
                    # the core's stderr or a log file (it could forge or truncate them).
                    stdout=subprocess.PIPE if log_file is not None else sys.stderr.fileno(),
                    stderr=subprocess.STDOUT, user=plan.uid, group=plan.gid,
                    extra_groups=list(plan.groups) if plan.uid is not None else None,
                    start_new_session=True,
                    # In the forked child, after the switch of user: no network at all.
                    preexec_fn=netns.isolate if plan.netns else None)
                LIVE_PIDS.add(self.proc.pid)
        except (OSError, subprocess.SubprocessError) as exc:
            for p, _ in pairs:
                p.close()
            raise InvokeError("FunctionInitError", f"cannot start a worker of {spec.name!r}: "
                              f"{exc}") from exc
        finally:
            for c in children:
                c.close()
        if log_file is not None and self.proc.stdout is not None:
            PipeReader(self.proc.stdout, log_file, spec.name, self.proc.pid).start()
        self.socks = [p for p, _ in pairs[:spec.slots()]]
        self.sock = self.socks[0]
        self.stats_sock = pairs[-1][0] if batching else None
        self._stats_lock = threading.Lock()
        self._stats_seq = 0
        #: Call sockets free now (the pool hands them out) and calls running.
        self.free = list(range(len(self.socks) - 1, -1, -1))
        self.inflight = 0
        #: Why the core killed it (the other calls in it fail with this).
        self.fate = ""
        self.pid = self.proc.pid
        self.last_used = time.monotonic()
        self.confinement = ""
        parent = self.sock
        if cgroups is not None:
            # Before the configuration goes out: the worker forks nothing until it has it.
            try:
                self.cgroup = cgroups.create(spec.name, plan.processes_max, spec.memory_mb)
                cgroups.enter(self.cgroup, self.pid)
            except OSError as exc:
                log.warning("function %s: worker %d runs without a cgroup: %s", spec.name,
                            self.pid, exc)
                self._drop_cgroup()
        try:
            protocol.send(parent, {
                "name": spec.name, "handler": spec.handler, "code_dir": spec.code_dir,
                "memory_mb": spec.memory_mb, "landlock": landlock, "rules": plan.rules,
                "net": None if plan.net is None else {"connect": list(plan.net.connect),
                                                      "bind": list(plan.net.bind)},
                "processes_max": plan.processes_max,
                "shared_tasks": tasks_of(os.geteuid()) if plan.uid is None else 0,
                "fixed": dict(plan.fixed), "batching": batching})
            parent.settimeout(START_TIMEOUT_S)
            msg = protocol.recv(parent)
        except (OSError, protocol.ChannelClosed, ValueError) as exc:
            self.kill()
            raise InvokeError("FunctionInitError", f"worker of {spec.name!r} did not start: "
                              f"{exc} ({_describe_exit(self.proc.poll())})") from exc
        if msg.get("op") != "ready":
            self.kill()
            err = msg.get("error", {})
            raise InvokeError("FunctionInitError", f"{spec.name!r} failed to start: "
                              f"{err.get('type')}: {err.get('message')}")
        self.confinement = msg.get("confinement", "")

    def call(self, invocation_id: str, payload: Any, topic: str | None = None,
             slot: int = 0) -> dict[str, Any]:
        """Run one call on call socket ``slot``; the reply ``{"ok": ..., "result" | "error": ...}``.

        ``payload`` is the event (bytes travel base64-encoded and reach the handler as bytes);
        ``topic`` the MQTT topic it came on (None for direct invocations). Requests the worker
        makes during the call (publish, capture) are answered by ``on_op``.

        Raises
        ------
        InvokeError
            ``FunctionTimeout`` (the worker was killed) or ``WorkerDied``.
        """
        timeout = self.spec.timeout_s
        deadline = time.monotonic() + timeout
        sock = self.socks[slot]
        msg: dict[str, Any] = {"id": invocation_id, "timeout_s": timeout, "topic": topic}
        if isinstance(payload, protocol.MessagePayload):  # the worker decodes it
            msg["message_b64"] = base64.b64encode(payload).decode()
        elif isinstance(payload, (bytes, bytearray)):
            msg["payload_b64"] = base64.b64encode(payload).decode()
        else:
            msg["payload"] = payload
        try:
            frame = protocol.encode(msg)
        except (ValueError, TypeError, RecursionError) as exc:
            # Nothing was sent: the worker is as good as before.
            raise PayloadError("PayloadTooLarge" if isinstance(exc, ValueError)
                               else "BadPayload",
                               f"the event cannot be sent to {self.spec.name!r}: {exc}") from None
        try:
            sock.settimeout(None)
            sock.sendall(frame)
            while True:
                sock.settimeout(max(0.001, deadline - time.monotonic()))
                reply: dict[str, Any] = protocol.recv(sock)
                if not isinstance(reply, dict):
                    raise ValueError(f"a frame that is not a JSON object: {reply!r:.80}")
                if "op" not in reply:
                    break
                answer = self.on_op(self.spec.name, invocation_id, reply)
                sock.settimeout(max(0.001, deadline - time.monotonic()))
                protocol.send(sock, answer)
        except (socket.timeout, TimeoutError) as exc:
            if not self.fate:
                self.fate = f"another call in it ({invocation_id}) timed out"
            self.kill()
            raise InvokeError("FunctionTimeout", f"{self.spec.name!r} did not finish in "
                              f"{timeout:g} s; its worker was stopped") from exc
        except (ValueError, RecursionError) as exc:
            # A frame the core cannot read (over the size limit, not JSON, too deep): the
            # channel is out of step, so the worker goes; the caller gets an answer.
            if not self.fate:
                self.fate = f"it sent a malformed frame during call {invocation_id}"
            self.kill()
            raise InvokeError("WorkerDied", f"the worker (pid {self.pid}) of "
                              f"{self.spec.name!r} sent a malformed answer ({exc}); it was "
                              "stopped") from exc
        except (protocol.ChannelClosed, OSError) as exc:
            try:
                code = self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.kill()
                code = self.proc.returncode
            why = f"; it was stopped because {self.fate}" if self.fate else ""
            raise InvokeError("WorkerDied", f"the worker (pid {self.pid}) of {self.spec.name!r} "
                              f"died during the call: {_describe_exit(code)}{why}") from exc
        finally:
            self.last_used = time.monotonic()
        return reply

    def stats(self, timeout_s: float = 2.0) -> dict[str, Any]:
        """The worker's batchers' stats by resource id ({} when it batches nothing or does not
        answer within ``timeout_s``; a late answer is skipped by the next request)."""
        sock = self.stats_sock
        if sock is None:
            return {}
        with self._stats_lock:
            self._stats_seq += 1
            seq = self._stats_seq
            deadline = time.monotonic() + timeout_s
            try:
                protocol.send(sock, {"op": "stats", "seq": seq})
                while True:
                    sock.settimeout(max(0.001, deadline - time.monotonic()))
                    answer = protocol.recv(sock)
                    if answer.get("seq") == seq:
                        break
            except (socket.timeout, TimeoutError):
                log.warning("function %s: worker %d did not report its batching stats in %g s",
                            self.spec.name, self.pid, timeout_s)
                return {}
            except (OSError, protocol.ChannelClosed, ValueError) as exc:
                if self.alive():
                    log.warning("function %s: worker %d: batching stats: %s", self.spec.name,
                                self.pid, exc)
                return {}
        if answer.get("op") != "stats":
            log.warning("function %s: worker %d: batching stats: %s", self.spec.name, self.pid,
                        answer.get("message"))
            return {}
        return dict(answer.get("batching") or {})

    def alive(self) -> bool:
        """Whether the process still runs."""
        return self.proc.poll() is None

    def stop(self, grace_s: float = 2.0) -> None:
        """Kill what the handler started, close the channels (the worker exits), then kill the
        worker if it lingers."""
        killed = kill_tree(self.pid, include_root=False) if self.proc.poll() is None else set()
        self._close()
        try:
            self.proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            self.kill()
        killed |= self._drop_cgroup()
        reap(killed)
        self._forget()

    def kill(self) -> None:
        """Kill the process and everything it started now, and reap it."""
        killed = kill_tree(self.pid) if self.proc.poll() is None else set()
        self.proc.wait()
        killed |= self._drop_cgroup()
        reap(killed)  # they count against the user's process limit until reaped
        self._close()
        self._forget()

    def _drop_cgroup(self) -> set[int]:
        """Kill whatever is still in the worker's cgroup and remove it; the pids killed."""
        path, self.cgroup = self.cgroup, None
        if path is None:
            return set()
        pids = WorkerCgroups.pids(path)
        WorkerCgroups.kill(path)
        return pids - {self.pid}

    def _forget(self) -> None:
        with LIVE_LOCK:
            LIVE_PIDS.discard(self.pid)

    def _close(self) -> None:
        for s in [*self.socks, self.stats_sock]:
            if s is not None:
                with contextlib.suppress(OSError):
                    s.close()


class FunctionPool:
    """The workers of one function (one deployment of it): start, hand out, retire.

    Pinned functions start all their workers at :meth:`start` and replace a worker that died;
    on-demand functions start workers on invocation, up to ``spec.max_workers()``, and stop
    those idle for ``spec.idle_s``. A worker takes up to ``spec.slots()`` calls at once; a call
    goes to the busiest worker with a free slot (so that concurrent calls of a batching function
    meet in one batcher), a new worker starts only when every slot is taken.
    """

    def __init__(self, spec: FunctionSpec, plan: WorkerPlan, landlock: bool,
                 queue_timeout_s: float = 60.0, on_op: Optional[OpHandler] = None,
                 cgroups: Optional[WorkerCgroups] = None,
                 log_file: Optional[RotatingLog] = None) -> None:
        self.spec = spec
        self.on_op = on_op
        self.cgroups = cgroups
        #: The function's log, where its workers' stdout and stderr go (None: the core's stderr).
        self.log_file = log_file
        self.plan = plan
        self.landlock = landlock
        self.queue_timeout_s = queue_timeout_s
        self._cond = threading.Condition()
        self._workers: set[Worker] = set()
        self._starting = 0
        #: Calls waiting for a slot of a worker that is starting.
        self._pending = 0
        self._busy = 0
        self._retired = False
        self.status = "stopped" if not spec.pinned else "starting"
        self.last_error = ""

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> bool:
        """Start a pinned function's workers (nothing for on-demand); True when all started."""
        if not self.spec.pinned:
            self.status = "ready"
            return True
        ok = True
        while True:
            with self._cond:
                if self._retired or len(self._workers) + self._starting >= self.spec.max_workers():
                    break
                self._starting += 1
            got = self._spawn()
            if got is None:
                ok = False
                break
            w = got[0]
            with self._cond:
                retired = self._retired
                if retired:
                    self._workers.discard(w)
                self._cond.notify_all()
            if retired:
                w.stop()
        self.status = "ready" if ok else "failed"
        return ok

    def _spawn(self, claim: bool = False) -> tuple[Worker, int] | None:
        """Start a worker and put it in service; ``claim`` takes one of its slots at once
        (returned with it; -1 without ``claim``)."""
        try:
            w = Worker(self.spec, self.plan, self.landlock, self.on_op, self.cgroups, self.log_file)
        except InvokeError as exc:
            with self._cond:
                self._starting -= 1
                self._cond.notify_all()
            self.last_error = str(exc)
            log.error("%s", exc)
            return None
        with self._cond:
            self._starting -= 1
            self._workers.add(w)
            slot = self._take(w) if claim else -1
            self._cond.notify_all()
        log.info("function %s: worker %d started (%s%s)", self.spec.name, w.pid, w.confinement,
                 ", in an empty network namespace" if self.plan.netns else "")
        return w, slot

    def retire(self) -> None:
        """Take no more workers into service; idle ones stop now, busy ones after their calls."""
        with self._cond:
            self._retired = True
            idle = [w for w in self._workers if w.inflight == 0]
            for w in idle:
                self._workers.discard(w)
            self._cond.notify_all()
        for w in idle:
            w.stop()
        self.status = "retired"

    def stop(self) -> None:
        """Retire, then kill what still runs."""
        self.retire()
        with self._cond:
            rest = list(self._workers)
        for w in rest:
            w.kill()

    def reap_idle(self) -> None:
        """Stop on-demand workers idle for longer than ``idle_s``; restart dead pinned ones."""
        now = time.monotonic()
        with self._cond:
            expired = not self.spec.pinned
            stale = [w for w in self._workers if w.inflight == 0 and (
                not w.alive() or (expired and now - w.last_used > self.spec.idle_s))]
            for w in stale:
                self._workers.discard(w)
        for w in stale:
            w.stop()
        if self.spec.pinned and not self._retired and stale:
            self.start()

    def workers(self) -> int:
        """Live workers."""
        with self._cond:
            return len(self._workers)

    def pids(self) -> list[int]:
        """Process ids of the live workers."""
        with self._cond:
            return sorted(w.pid for w in self._workers)

    def busy(self) -> int:
        """Calls running now."""
        with self._cond:
            return self._busy

    def batching_stats(self) -> list[dict[str, Any]]:
        """Each live worker's batching stats (resource id -> stats), for the metrics."""
        with self._cond:
            workers = list(self._workers)
        return [w.stats() for w in workers if w.stats_sock is not None and w.alive()]

    # -- calls -----------------------------------------------------------------------------

    def _take(self, w: Worker) -> int:
        slot = w.free.pop()
        w.inflight += 1
        self._busy += 1
        return slot

    def _acquire(self) -> tuple[Worker, int]:
        deadline = time.monotonic() + self.queue_timeout_s
        with self._cond:
            while True:
                best: Worker | None = None
                for w in list(self._workers):
                    if self._retired or not w.free:
                        continue
                    if not w.alive():
                        if w.inflight == 0:
                            self._workers.discard(w)
                        continue
                    if best is None or (w.inflight, w.last_used) > (best.inflight, best.last_used):
                        best = w
                if best is not None:
                    return best, self._take(best)
                left = deadline - time.monotonic()
                if self._starting * (self.spec.slots() - 1) > self._pending and left > 0:
                    # A worker starting now has a slot nobody waits for yet: wait for it rather
                    # than start another (calls of a batching function meet in one worker).
                    self._pending += 1
                    try:
                        self._cond.wait(left)
                    finally:
                        self._pending -= 1
                    continue
                if len(self._workers) + self._starting < self.spec.max_workers():
                    self._starting += 1
                    break
                left = deadline - time.monotonic()
                if left <= 0:
                    raise InvokeError("Busy", f"no worker of {self.spec.name!r} became free in "
                                      f"{self.queue_timeout_s:g} s")
                self._cond.wait(left)
        spawned = self._spawn(claim=True)
        if spawned is None:
            raise InvokeError("FunctionInitError", self.last_error)
        return spawned

    def _release(self, w: Worker, slot: int, healthy: bool) -> None:
        action = ""
        restart = False
        with self._cond:
            self._busy -= 1
            w.inflight -= 1
            w.last_used = time.monotonic()
            if not healthy or not w.alive():
                # A crash or timeout kills the whole process: its other calls fail too.
                restart = w in self._workers
                self._workers.discard(w)
                action = "kill" if not healthy else "stop"
            elif self._retired:
                if w.inflight == 0:
                    self._workers.discard(w)
                    action = "stop"
            else:
                w.free.append(slot)
            self._cond.notify_all()
        if action == "kill":
            w.kill()
        elif action == "stop":
            w.stop()
        if restart and self.spec.pinned and not self._retired:
            threading.Thread(target=self.start, name=f"restart-{self.spec.name}",
                             daemon=True).start()

    def invoke(self, invocation_id: str, payload: Any,
               topic: str | None = None) -> dict[str, Any]:
        """Run one call on a free slot of a worker; the worker's reply, or InvokeError."""
        w, slot = self._acquire()
        healthy = False
        try:
            reply = w.call(invocation_id, payload, topic, slot)
            healthy = True
            return reply
        except PayloadError:
            healthy = True
            raise
        finally:
            self._release(w, slot, healthy)
