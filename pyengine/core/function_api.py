"""The core's API as a function sees it inside its worker: the call context, ``publish``,
``invoke``, ``capture`` and resource-backed model handles.

The worker sets ``PYENGINE_RESOURCES`` (JSON: resource id -> destination path) before the
handler's module is imported; ``pyengine.load("<id>")`` then comes here. At the start of each
call the worker pins every resource to the version its destination names at that instant
(:func:`begin_call`), so a call runs on one version from start to end, and a handle from
``pyengine.load`` switches to a newer version between calls.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import socket
import threading
import time
from typing import Any

from pyengine import loader
from pyengine.batching_config import BatchingConfig
from pyengine.core import protocol
from pyengine.model import Array, Inputs, Model, Outputs, TensorSpec

ENV_RESOURCES = "PYENGINE_RESOURCES"

_lock = threading.Lock()
#: The pins of the latest call (what threads outside a call see), and each call thread's own.
_pinned: dict[str, str] = {}
_local = threading.local()
#: Calls in progress: thread id -> the versions it pinned (old versions stay loaded meanwhile).
_active: dict[int, dict[str, str]] = {}
_fixed: dict[str, str] = {}
_batching: dict[str, BatchingConfig] = {}


def fix_versions(versions: dict[str, str]) -> None:
    """Resources this worker keeps on one version for its whole life (its rw grants)."""
    _fixed.update(versions)


def set_batching(configs: dict[str, BatchingConfig]) -> None:
    """Resources whose ``pyengine.load`` handle batches concurrent calls (set by the worker)."""
    _batching.clear()
    _batching.update(configs)


def _version(resource_id: str, destination: str) -> str:
    return _fixed.get(resource_id) or os.path.realpath(destination)


def destinations() -> dict[str, str]:
    """Resource id -> destination path of the function running in this process."""
    raw = os.environ.get(ENV_RESOURCES)
    return json.loads(raw) if raw else {}


def resolve(resource_id: str) -> str:
    """The version of ``resource_id`` the current call uses (the destination when not in a call).

    A call's own thread sees the versions that call pinned; other threads (a handler's helper
    threads) see those of the latest call.
    """
    local: dict[str, str] | None = getattr(_local, "pinned", None)
    pinned = local.get(resource_id) if local is not None else None
    if pinned is None:
        with _lock:
            pinned = _pinned.get(resource_id)
    if pinned is not None:
        return pinned
    dests = destinations()
    if resource_id not in dests:
        raise KeyError(f"resource {resource_id!r} is not granted to this function; "
                       f"its resources are {sorted(dests)}")
    return _version(resource_id, dests[resource_id])


def begin_call() -> dict[str, str]:
    """Pin each resource to the version its destination names now, for the calling thread's
    call; returns id -> that path. :func:`end_call` ends the call."""
    current = {rid: _version(rid, path) for rid, path in destinations().items()}
    _local.pinned = current
    with _lock:
        _pinned.clear()
        _pinned.update(current)
        _active[threading.get_ident()] = current
    return current


def end_call() -> None:
    """The calling thread's call is over: its versions may be unloaded."""
    _local.pinned = None
    with _lock:
        _active.pop(threading.get_ident(), None)


def in_use(resource_id: str) -> set[str]:
    """Versions of ``resource_id`` that calls in progress (or the latest call) pinned."""
    with _lock:
        used = {p[resource_id] for p in _active.values() if resource_id in p}
        if resource_id in _pinned:
            used.add(_pinned[resource_id])
    return used


class ResourceModel(Model):
    """A model loaded by resource id: follows the resource to its newest version between calls.

    Calls running at once in one worker (a batching function) may use two versions during an
    update: each version stays loaded while a call in progress uses it.
    """

    def __init__(self, resource_id: str, backend: str, device: str,
                 options: dict[str, Any]) -> None:
        self.resource_id = resource_id
        self._args = (backend, device, options)
        self._lock = threading.Lock()
        self._path = ""
        self._models: dict[str, Model] = {}
        self._current()

    def _load(self, path: str) -> Model:
        backend, device, options = self._args
        return loader.load(path, backend=backend, device=device, **options)

    def _unload(self, model: Model) -> None:
        """A version no call uses any more is dropped."""

    def _current(self) -> Model:
        path = resolve(self.resource_id)
        dropped: list[Model] = []
        with self._lock:
            model = self._models.get(path)
            if model is None:
                model = self._models[path] = self._load(path)
            if len(self._models) > 1:  # after an update, once no call uses the old version
                keep = in_use(self.resource_id) | {path}
                dropped = [self._models.pop(p) for p in list(self._models) if p not in keep]
            self._path = path
        for m in dropped:
            self._unload(m)
        return model

    @property
    def path(self) -> str:
        """The version directory the calling call uses."""
        self._current()
        return resolve(self.resource_id)

    @property
    def backend(self) -> str:  # type: ignore[override]
        return self._current().backend

    @property
    def inputs(self) -> list[TensorSpec]:
        return self._current().inputs

    @property
    def outputs(self) -> list[TensorSpec]:
        return self._current().outputs

    def _run(self, arrays: list[Array]) -> list[Array]:
        return self._current()._run(arrays)


class _Versioned(Model):
    """One version of a batched resource: the loaded model and its batcher."""

    def __init__(self, model: Model, config: BatchingConfig) -> None:
        self.model = model
        self.batcher = model.batched(config=config)

    @property
    def backend(self) -> str:  # type: ignore[override]
        return self.model.backend

    @property
    def inputs(self) -> list[TensorSpec]:
        return self.model.inputs

    @property
    def outputs(self) -> list[TensorSpec]:
        return self.model.outputs

    def _run(self, arrays: list[Array]) -> list[Array]:
        return self.model._run(arrays)


class BatchedResourceModel(ResourceModel):
    """``pyengine.load(id)`` for a resource with a ``batching`` block: concurrent calls of the
    function (running in one worker) go through one batcher per version of the model.

    ``predict`` and ``predict_async`` batch; ``stats()`` merges the counters of every version's
    batcher (see :meth:`pyengine.BatchedModel.stats`).
    """

    def __init__(self, resource_id: str, backend: str, device: str,
                 options: dict[str, Any], config: BatchingConfig) -> None:
        self.config = config
        self._retired: dict[str, Any] = {}
        super().__init__(resource_id, backend, device, options)
        _handles.append(self)

    def _load(self, path: str) -> Model:
        return _Versioned(super()._load(path), self.config)

    def _unload(self, model: Model) -> None:
        assert isinstance(model, _Versioned)
        model.batcher.close()  # nothing queued: no call uses this version any more
        with self._lock:
            self._retired = merge_stats([self._retired, model.batcher.stats()])

    def _version_now(self) -> _Versioned:
        v = self._current()
        assert isinstance(v, _Versioned)
        return v

    def predict(self, x: Inputs, timeout_s: float | None = None) -> Outputs:
        """Run ``x`` in a batch with other calls' requests (see :meth:`BatchedModel.predict`)."""
        return self._version_now().batcher.predict(x, timeout_s)

    async def predict_async(self, x: Inputs, timeout_s: float | None = None) -> Outputs:
        """:meth:`predict` for asyncio (see :meth:`BatchedModel.predict_async`)."""
        return await self._version_now().batcher.predict_async(x, timeout_s)

    def stats(self) -> dict[str, Any]:
        """The batchers' stats: counters over every version, percentiles of the newest."""
        with self._lock:
            live = [v.batcher.stats() for v in self._models.values()
                    if isinstance(v, _Versioned)]
            retired = self._retired
        return merge_stats([retired, *live])


_handles: list[BatchedResourceModel] = []
_shared: dict[tuple[str, str, str, str], BatchedResourceModel] = {}

_COUNTERS = ("requests", "completed", "failed", "queue_full", "timed_out", "closed",
             "cancelled", "batches", "rows", "isolation_runs")


def merge_stats(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """Several batchers' :meth:`BatchedModel.stats` as one: counters and histograms add up;
    each percentile is the highest of the parts' (the worst case), means are weighted."""
    out: dict[str, Any] = {k: 0 for k in _COUNTERS}
    hist: dict[str, int] = {}
    for p in parts:
        for k in _COUNTERS:
            out[k] += int(p.get(k, 0))
        for size, n in (p.get("batch_size_histogram") or {}).items():
            hist[str(size)] = hist.get(str(size), 0) + int(n)
    out["batch_size_histogram"] = hist
    out["mean_batch_size"] = out["rows"] / out["batches"] if out["batches"] else 0.0
    for key in ("queue_time_us", "latency_us"):
        windows = [p[key] for p in parts if p.get(key) and p[key].get("count")]
        count = sum(int(w["count"]) for w in windows)
        merged = {"count": count,
                  "mean": sum(w["mean"] * w["count"] for w in windows) / count if count else 0.0}
        for q in ("p50", "p90", "p99", "max"):
            merged[q] = max((float(w[q]) for w in windows), default=0.0)
        out[key] = merged
    return out


def batching_stats() -> dict[str, dict[str, Any]]:
    """Resource id -> the merged stats of this process's batched handles on it."""
    by_id: dict[str, list[dict[str, Any]]] = {}
    for h in list(_handles):
        by_id.setdefault(h.resource_id, []).append(h.stats())
    return {rid: merge_stats(parts) for rid, parts in by_id.items()}


def load_resource(name: str, backend: str = "auto", device: str = "auto",
                  **options: Any) -> Model | None:
    """``pyengine.load(name)`` in a function: a handle when ``name`` is a granted resource id
    (a batching one, shared by every load with the same arguments, when the function's entry for
    it has a ``batching`` block)."""
    if name not in destinations():
        return None
    config = _batching.get(name)
    if config is None:
        return ResourceModel(name, backend, device, options)
    # One handle (one batcher per version) for every load of the same model: calls only batch
    # together through a shared batcher, and a handler loading per call must not pile them up.
    key = (name, backend, device, repr(sorted(options.items())))
    with _lock:
        handle = _shared.get(key)
    if handle is None:
        handle = BatchedResourceModel(name, backend, device, options, config)
        with _lock:
            handle = _shared.setdefault(key, handle)
    return handle


class InvocationError(RuntimeError):
    """A function called with ``context.invoke`` failed.

    Attributes
    ----------
    status
        The HTTP status the call would have had (500 handler exception, 504 timeout, 404 not
        deployed...).
    error_type
        The failure's type (the handler's exception class name, ``FunctionTimeout``...).
    invocation_id
        The failed call's id (in the core's log).
    """

    def __init__(self, message: str, status: int = 500, error_type: str = "",
                 invocation_id: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.error_type = error_type
        self.invocation_id = invocation_id


_ERRORS: dict[str, type[Exception]] = {"ValueError": ValueError, "TypeError": TypeError,
                                       "PermissionError": PermissionError,
                                       "RecursionError": RecursionError}


class Channel:
    """The worker's side of its socket to the core, for requests made during a call.

    ``context.publish``, ``context.invoke`` and ``pyengine.capture`` send a request and wait for
    the core's answer
    (a captured sample is acknowledged only once the core has fsynced it). Requests are only
    possible while a call runs: between calls the core is not listening.
    """

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.lock = threading.Lock()
        self.in_call = False
        self.function = ""
        self.invocation = ""
        self.topic: str | None = None

    def request(self, msg: dict[str, Any]) -> dict[str, Any]:
        """Send ``msg`` to the core and return its answer; errors become exceptions."""
        with self.lock:
            if not self.in_call:
                raise RuntimeError(f"{msg['op']} is only possible while the function is "
                                   "handling a call (not at import or from a thread that "
                                   "outlives the call)")
            protocol.send(self.sock, msg)
            answer: dict[str, Any] = protocol.recv(self.sock)
        if answer.get("op") == "error":
            message = answer.get("message", "the core refused the request")
            if answer.get("type") == "InvocationError":
                raise InvocationError(message, int(answer.get("status") or 500),
                                      str(answer.get("error_type") or ""),
                                      str(answer.get("invocation_id") or ""))
            raise _ERRORS.get(str(answer.get("type")), RuntimeError)(message)
        return answer


_channel: Channel | None = None


def set_channel(channel: Channel | None, thread_only: bool = False) -> None:
    """Install the worker's channel (done by the worker before the first call); with
    ``thread_only`` for the calling thread only (each call thread of a multi-call worker has its
    own channel; other threads use the one installed for all)."""
    global _channel
    if thread_only:
        _local.channel = channel
    else:
        _channel = channel


def _require_channel(what: str) -> Channel:
    channel: Channel | None = getattr(_local, "channel", None) or _channel
    if channel is None:
        raise RuntimeError(f"{what} works inside a function run by the pyengine core "
                           "(`pyengine core start`), not in a plain Python process")
    return channel


def payload_bytes(payload: Any) -> bytes:
    """What ``context.publish`` sends: bytes as they are, str as UTF-8, the rest as JSON."""
    if isinstance(payload, (bytes, bytearray, memoryview)):
        return bytes(payload)
    if isinstance(payload, str):
        return payload.encode()
    return json.dumps(payload, default=protocol._json_default, separators=(",", ":")).encode()


def publish(topic: str, payload: Any, qos: int = 1, retain: bool = False) -> int:
    """Publish ``payload`` on ``topic`` from the running function; see :meth:`Context.publish`."""
    channel = _require_channel("context.publish")
    answer = channel.request({"op": "publish", "topic": topic, "qos": qos, "retain": retain,
                              "payload_b64": base64.b64encode(payload_bytes(payload)).decode()})
    return int(answer.get("routes", 0))


def invoke(function: str, payload: Any = None) -> Any:
    """Call another function of the group from the running one; see :meth:`Context.invoke`."""
    channel = _require_channel("context.invoke")
    msg: dict[str, Any] = {"op": "invoke", "function": function}
    if isinstance(payload, (bytes, bytearray, memoryview)):
        msg["payload_b64"] = base64.b64encode(bytes(payload)).decode()
    else:
        try:  # the same JSON the core sends on, checked here for a clear error
            msg["payload"] = json.loads(json.dumps(payload, default=protocol._json_default))
        except (TypeError, ValueError) as exc:
            raise TypeError(f"context.invoke: the payload is not serializable: {exc}") from None
    return channel.request(msg).get("result")


def capture(inputs: Any, outputs: Any = None, meta: Any = None) -> int:
    """Record a sample for training (``pyengine.capture``); its sequence number in the spool.

    Returns once the core has the sample on disk (fsynced): an acknowledged sample survives a
    crash. Inputs, outputs and meta must be JSON-serializable (numpy arrays become lists).
    """
    channel = _require_channel("pyengine.capture")
    sample = {"inputs": inputs, "outputs": outputs, "meta": meta}
    try:
        json.dumps(sample, default=protocol._json_default)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"pyengine.capture: the sample is not serializable: {exc}") from None
    # The core stamps the sample with the call's topic and source from its own record.
    answer = channel.request({"op": "capture", "sample": sample})
    return int(answer["seq"])


class Context:
    """The second argument of a handler.

    Attributes
    ----------
    function_name
        The function's name.
    invocation_id
        This call's id (also in the caller's answer and the log lines).
    resources
        Resource id -> local path of the version this call uses.
    logger
        A logger whose lines carry the function name and invocation id.
    topic
        The MQTT topic of the message that triggered the call; None for a direct invocation.
    """

    def __init__(self, function_name: str, invocation_id: str, deadline: float,
                 resources: dict[str, str], logger: logging.Logger,
                 topic: str | None = None) -> None:
        self.function_name = function_name
        self.invocation_id = invocation_id
        self.resources = resources
        self.topic = topic
        self.logger: logging.LoggerAdapter[logging.Logger] = logging.LoggerAdapter(
            logger, {"invocation": invocation_id})
        self._deadline = deadline

    def publish(self, topic: str, payload: Any, qos: int = 1, retain: bool = False) -> int:
        """Publish a message from this function; the group's subscriptions route it.

        Parameters
        ----------
        topic
            The topic (no wildcards).
        payload
            ``bytes`` (sent as they are), ``str`` (UTF-8) or anything JSON-serializable
            (numpy arrays become lists).
        qos, retain
            MQTT quality of service (0 or 1) and retain flag, for messages that go to a broker.

        Returns
        -------
        How many targets the subscriptions routed it to (0: none matched; it is dropped and
        counted in ``pyengine_messages_unrouted_total``).
        """
        return publish(topic, payload, qos, retain)

    def invoke(self, function: str, payload: Any = None) -> Any:
        """Call ``function`` (another function of the group) and return its result.

        The call goes through the core, not the network, and only to functions the group file
        lists in this function's ``invoke`` entry. It runs in the target's own workers, under
        the target's grants, and counts against this call's timeout.

        Parameters
        ----------
        function
            The target's name.
        payload
            Its event: ``bytes`` (passed as they are) or anything JSON-serializable.

        Raises
        ------
        PermissionError
            The group does not let this function invoke ``function``.
        RecursionError
            ``function`` is already waiting further up this chain of calls.
        InvocationError
            The target failed (its ``status`` and ``error_type`` say how).
        """
        return invoke(function, payload)

    def remaining_time(self) -> float:
        """Seconds left before the call times out."""
        return max(0.0, self._deadline - time.monotonic())

    def get_remaining_time_in_millis(self) -> int:
        """Milliseconds left before the call times out (the AWS Lambda spelling)."""
        return int(self.remaining_time() * 1000)

    def __repr__(self) -> str:
        return (f"<Context function={self.function_name} invocation={self.invocation_id} "
                f"remaining={self.remaining_time():.3f}s resources={sorted(self.resources)}>")
