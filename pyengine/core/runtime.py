"""What a function sees inside its worker: the call context and resource-backed model handles.

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

from pyengine.model import Array, Model, TensorSpec

ENV_RESOURCES = "PYENGINE_RESOURCES"

_lock = threading.Lock()
_pinned: dict[str, str] = {}
_fixed: dict[str, str] = {}


def fix_versions(versions: dict[str, str]) -> None:
    """Resources this worker keeps on one version for its whole life (its rw grants)."""
    _fixed.update(versions)


def _version(resource_id: str, destination: str) -> str:
    return _fixed.get(resource_id) or os.path.realpath(destination)


def destinations() -> dict[str, str]:
    """Resource id -> destination path of the function running in this process."""
    raw = os.environ.get(ENV_RESOURCES)
    return json.loads(raw) if raw else {}


def resolve(resource_id: str) -> str:
    """The version of ``resource_id`` the current call uses (the destination when not in a call)."""
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
    """Pin each resource to the version its destination names now; returns id -> that path."""
    current = {rid: _version(rid, path) for rid, path in destinations().items()}
    with _lock:
        _pinned.clear()
        _pinned.update(current)
    return current


class ResourceModel(Model):
    """A model loaded by resource id: follows the resource to its newest version between calls."""

    def __init__(self, resource_id: str, backend: str, device: str,
                 options: dict[str, Any]) -> None:
        self.resource_id = resource_id
        self._args = (backend, device, options)
        self._lock = threading.Lock()
        self._path = ""
        self._model: Model | None = None
        self._current()

    def _current(self) -> Model:
        path = resolve(self.resource_id)
        with self._lock:
            if self._model is None or path != self._path:
                from pyengine.model import load

                backend, device, options = self._args
                self._model = load(path, backend=backend, device=device, **options)
                self._path = path
            return self._model

    @property
    def path(self) -> str:
        """The version directory the handle is using now."""
        self._current()
        return self._path

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


def load_resource(name: str, backend: str = "auto", device: str = "auto",
                  **options: Any) -> Model | None:
    """``pyengine.load(name)`` in a function: a handle when ``name`` is a granted resource id."""
    if name not in destinations():
        return None
    return ResourceModel(name, backend, device, options)


class Channel:
    """The worker's side of its socket to the core, for requests made during a call.

    ``context.publish`` and ``pyengine.capture`` send a request and wait for the core's answer
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
        from pyengine.core import protocol

        with self.lock:
            if not self.in_call:
                raise RuntimeError(f"{msg['op']} is only possible while the function is "
                                   "handling a call (not at import or from a thread that "
                                   "outlives the call)")
            protocol.send(self.sock, msg)
            answer: dict[str, Any] = protocol.recv(self.sock)
        if answer.get("op") == "error":
            exc_type = {"ValueError": ValueError, "TypeError": TypeError}.get(
                str(answer.get("type")), RuntimeError)
            raise exc_type(answer.get("message", "the core refused the request"))
        return answer


_channel: Channel | None = None


def set_channel(channel: Channel | None) -> None:
    """Install the worker's channel (done by the worker before the first call)."""
    global _channel
    _channel = channel


def _require_channel(what: str) -> Channel:
    if _channel is None:
        raise RuntimeError(f"{what} works inside a function run by the pyengine core "
                           "(`pyengine core start`), not in a plain Python process")
    return _channel


def payload_bytes(payload: Any) -> bytes:
    """What ``context.publish`` sends: bytes as they are, str as UTF-8, the rest as JSON."""
    if isinstance(payload, (bytes, bytearray, memoryview)):
        return bytes(payload)
    if isinstance(payload, str):
        return payload.encode()
    from pyengine.core.protocol import _json_default

    return json.dumps(payload, default=_json_default, separators=(",", ":")).encode()


def publish(topic: str, payload: Any, qos: int = 1, retain: bool = False) -> int:
    """Publish ``payload`` on ``topic`` from the running function; see :meth:`Context.publish`."""
    channel = _require_channel("context.publish")
    answer = channel.request({"op": "publish", "topic": topic, "qos": qos, "retain": retain,
                              "payload_b64": base64.b64encode(payload_bytes(payload)).decode()})
    return int(answer.get("routes", 0))


def capture(inputs: Any, outputs: Any = None, meta: Any = None) -> int:
    """Record a sample for training (``pyengine.capture``); its sequence number in the spool.

    Returns once the core has the sample on disk (fsynced): an acknowledged sample survives a
    crash. Inputs, outputs and meta must be JSON-serializable (numpy arrays become lists).
    """
    channel = _require_channel("pyengine.capture")
    from pyengine.core.protocol import _json_default

    sample = {"inputs": inputs, "outputs": outputs, "meta": meta}
    try:
        json.dumps(sample, default=_json_default)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"pyengine.capture: the sample is not serializable: {exc}") from None
    answer = channel.request({"op": "capture", "sample": sample, "topic": channel.topic})
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

    def remaining_time(self) -> float:
        """Seconds left before the call times out."""
        return max(0.0, self._deadline - time.monotonic())

    def get_remaining_time_in_millis(self) -> int:
        """Milliseconds left before the call times out (the AWS Lambda spelling)."""
        return int(self.remaining_time() * 1000)

    def __repr__(self) -> str:
        return (f"<Context function={self.function_name} invocation={self.invocation_id} "
                f"remaining={self.remaining_time():.3f}s resources={sorted(self.resources)}>")
