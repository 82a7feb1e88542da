"""A function's worker process, after :mod:`pyengine.core.boot` confined it.

The core starts it (already as the function's user, see :mod:`pyengine.core.boot`) with one
end of a socket pair per call it may run at once (one, or for a function that batches calls to
a model up to its largest ``max_batch_size``; the core sends its configuration on the first)
and, when it batches, one more on which the core asks for the batchers' stats. Once the boot
module has applied Landlock and the other limits, this module is imported (numpy and pyengine
with it), starts a thread per extra call socket, sets the memory limit, imports the handler's
module (module-level code runs once) and then serves calls until the sockets close: one at a
time on each call socket.
"""

from __future__ import annotations

import base64
import importlib
import logging
import os
import resource
import socket
import sys
import threading
import time
import traceback
from typing import Any, Callable

# Part of the bare worker the memory limit starts from (imported after confinement).
import numpy  # noqa: F401, I001

import pyengine  # noqa: F401
from pyengine.core import function_api, protocol


def _error(exc: BaseException, tb: bool = True) -> dict[str, Any]:
    return {"type": type(exc).__name__, "message": str(exc),
            "traceback": traceback.format_exc() if tb else ""}


def _address_space_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) / 1024
    return 0.0


def _limit_memory(memory_mb: int) -> int:
    """Limit the address space to what the worker uses now plus ``memory_mb``; the limit in MB."""
    limit_mb = int(_address_space_mb()) + memory_mb
    resource.setrlimit(resource.RLIMIT_AS, (limit_mb << 20, limit_mb << 20))
    return limit_mb


def _load_handler(cfg: dict[str, Any]) -> Callable[[Any, Any], Any]:
    module_name, _, func_name = cfg["handler"].rpartition(".")
    if not module_name:
        raise ValueError(f"handler {cfg['handler']!r} is not 'module.function'")
    sys.path.insert(0, cfg["code_dir"])
    module = importlib.import_module(module_name)
    fn = getattr(module, func_name, None)
    if not callable(fn):
        raise AttributeError(f"module {module_name!r} (in {cfg['code_dir']}) has no function "
                             f"{func_name!r}")
    return fn


def _default_invocation(record: logging.LogRecord) -> bool:
    if not hasattr(record, "invocation"):
        record.invocation = "-"
    return True


#: Stack of each extra call thread: threads' stacks count against the memory limit.
THREAD_STACK = 2 << 20


def _serve_calls(sock: socket.socket, channel: function_api.Channel, fn: Callable[[Any, Any], Any],
                 name: str, logger: logging.Logger) -> None:
    """Answer invocations on one call socket until the core closes it."""
    function_api.set_channel(channel, thread_only=True)
    while True:
        try:
            msg = protocol.recv(sock)
        except (protocol.ChannelClosed, OSError):
            return
        deadline = time.monotonic() + float(msg["timeout_s"])
        topic = msg.get("topic")
        ctx = function_api.Context(name, msg["id"], deadline, function_api.begin_call(), logger, topic)
        if "message_b64" in msg:  # an MQTT message: JSON when it parses, else its bytes
            event = protocol.decode_event(base64.b64decode(msg["message_b64"]))
        elif "payload_b64" in msg:
            event = base64.b64decode(msg["payload_b64"])
        else:
            event = msg.get("payload")
        with channel.lock:
            channel.in_call, channel.invocation, channel.topic = True, msg["id"], topic
        try:
            result = fn(event, ctx)
            reply: dict[str, Any] = {"ok": True, "result": result}
            try:
                data = protocol.encode(reply)
            except (TypeError, ValueError) as exc:
                logger.error("result not serializable: %s", exc, extra={"invocation": msg["id"]})
                data = protocol.encode({"ok": False, "error": _error(exc, tb=False)})
        except BaseException as exc:  # noqa: BLE001 - the caller gets every handler failure
            logger.error("%s: %s\n%s", type(exc).__name__, exc, traceback.format_exc(),
                         extra={"invocation": msg["id"]})
            data = protocol.encode({"ok": False, "error": _error(exc)})
            del exc
        finally:
            function_api.end_call()
        with channel.lock:  # a thread of the handler publishing now gets a clear error
            channel.in_call = False
            try:
                sock.sendall(data)
            except OSError:
                return


def _serve_stats(sock: socket.socket) -> None:
    """Answer the core's ``stats`` requests (the batchers' stats) until it closes the socket."""
    while True:
        try:
            msg = protocol.recv(sock)
        except (protocol.ChannelClosed, OSError):
            return
        try:
            if msg.get("op") != "stats":
                raise ValueError(f"unknown request {msg.get('op')!r}")
            answer: dict[str, Any] = {"op": "stats", "batching": function_api.batching_stats()}
        except Exception as exc:  # noqa: BLE001 - the core logs it; the worker goes on
            answer = {"op": "error", "type": type(exc).__name__, "message": str(exc)}
        answer["seq"] = msg.get("seq")
        try:
            protocol.send(sock, answer)
        except OSError:
            return


def serve(socks: list[socket.socket], stats_sock: socket.socket | None, cfg: dict[str, Any],
          confinement: str) -> None:
    """Set up from ``cfg`` (the first message on ``socks[0]``, already applied by the boot
    module: ``confinement`` says how), then answer invocations on every call socket (one thread
    each; the first in this thread) until the core closes them."""
    sock = socks[0]
    name = cfg["name"]
    logger = logging.getLogger(f"pyengine.function.{name}")
    handler_out = logging.StreamHandler(sys.stderr)
    handler_out.setFormatter(logging.Formatter(
        f"%(asctime)s {name}[%(process)d] %(levelname)s %(invocation)s: %(message)s"))
    handler_out.addFilter(_default_invocation)
    logger.addHandler(handler_out)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    function_api.fix_versions(cfg.get("fixed") or {})
    channels = [function_api.Channel(s) for s in socks]
    for channel in channels:
        channel.function = name
    function_api.set_channel(channels[0])
    handler: list[Callable[[Any, Any], Any]] = []
    go = threading.Event()

    def slot(i: int) -> None:
        go.wait()
        if handler:
            _serve_calls(socks[i], channels[i], handler[0], name, logger)

    try:
        from pyengine.batching_config import BatchingConfig

        function_api.set_batching({rid: BatchingConfig.from_dict(block, f"batching of {rid!r}")
                              for rid, block in (cfg.get("batching") or {}).items()})
        # Threads first, so that their stacks are part of the bare worker the limit starts from.
        if len(socks) > 1 or stats_sock is not None:
            threading.stack_size(THREAD_STACK)
        for i in range(1, len(socks)):
            threading.Thread(target=slot, args=(i,), name=f"call-{i}", daemon=True).start()
        if stats_sock is not None:
            threading.Thread(target=_serve_stats, args=(stats_sock,), name="stats",
                             daemon=True).start()
        limit_mb = _limit_memory(int(cfg["memory_mb"]))
        os.chdir(cfg["code_dir"])
        handler.append(_load_handler(cfg))
    except BaseException as exc:  # noqa: BLE001 - every start failure is reported to the core
        logger.error("could not start: %s: %s\n%s", type(exc).__name__, exc, traceback.format_exc())
        protocol.send(sock, {"op": "init_error", "error": _error(exc)})
        go.set()
        return
    calls = f", {len(socks)} calls at once" if len(socks) > 1 else ""
    protocol.send(sock, {"op": "ready", "pid": os.getpid(),
                         "confinement": f"{confinement}, address space {limit_mb} MB{calls}"})
    go.set()
    _serve_calls(sock, channels[0], handler[0], name, logger)
