"""The core's calls: an invocation's way to its function's pool, and what a worker asks of the
core during a call (``context.invoke``, ``context.publish``, ``pyengine.capture``), with the
bookkeeping they share: the chain of functions waiting on each call, and each call's topic
and source (what a captured sample is stamped with).
"""

from __future__ import annotations

import base64
import logging
import threading
import time
import uuid
from typing import Any, Callable

from pyengine.core.capture import Spool
from pyengine.core.messaging import Router
from pyengine.core.metrics import Metrics
from pyengine.core.pool import FunctionPool, InvokeError
from pyengine.core.scratch import ScratchQuota

log = logging.getLogger("pyengine.core")

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


class Calls:
    """Runs calls on the pools the core holds.

    Parameters
    ----------
    pool_of
        The current pool of a function (None: not deployed).
    scratch
        The scratch quota (a call to a function whose scratch is full is refused).
    metrics
        Where each call is counted.
    """

    def __init__(self, pool_of: Callable[[str], FunctionPool | None], scratch: ScratchQuota,
                 metrics: Metrics) -> None:
        self._pool_of = pool_of
        self.scratch = scratch
        self.metrics = metrics
        #: The message router (set by the core once it has one) and the capture spool (at start).
        self.router: Router | None = None
        self.spool: Spool | None = None
        self._lock = threading.Lock()
        #: Invocation id -> the functions calling each other down to it (context.invoke).
        self._chains: dict[str, tuple[str, ...]] = {}
        #: Invocation id -> (topic, source) of the calls running: what a capture is stamped
        #: with (the core's record, never the worker's claim).
        self._calls: dict[str, tuple[str | None, str]] = {}

    def invoke(self, name: str, payload: Any, topic: str | None = None,
               source: str = "invoke", chain: tuple[str, ...] = ()) -> tuple[int, dict[str, Any]]:
        """Invoke ``name`` with ``payload``; (HTTP status, answer).

        ``topic``: the MQTT topic of the message that triggers the call (``context.topic``);
        ``source``: where the message came from (``devices``, ``cloud``, a function; "invoke"
        for a direct call). ``chain``: the functions whose calls wait on this one
        (``context.invoke``), outermost first. The error of an answer carries the handler's
        traceback; the API drops it unless the core runs with ``--debug``.
        """
        pool = self._pool_of(name)
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
        pool = self._pool_of(caller)
        with self._lock:
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

    def threads_for(self, name: str) -> int:
        """How many calls of ``name`` can run at once (the router's threads for its queue)."""
        pool = self._pool_of(name)
        # Calls that can run at once: messages to a batching function batch too.
        return pool.spec.max_workers() * pool.spec.slots() if pool is not None else 1

    def message(self, name: str, payload: Any, topic: str, source: str) -> str:
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

    def worker_op(self, function: str, invocation_id: str,
                   msg: dict[str, Any]) -> dict[str, Any]:
        """Answer a worker's request during a call: publish or capture."""
        op = msg.get("op")
        try:
            if op == "invoke":
                return self._invoke_from(function, invocation_id, msg)
            if op == "publish":
                payload = base64.b64decode(msg.get("payload_b64") or "")
                assert self.router is not None  # set by the core before any worker starts
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

