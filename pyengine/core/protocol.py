"""The core <-> worker wire format: length-prefixed JSON messages over a Unix socket pair."""

from __future__ import annotations

import json
import socket
import struct
from typing import Any

_HEADER = struct.Struct("!I")
#: Largest message either side accepts (payloads and results included).
MAX_MESSAGE = 64 << 20


class ChannelClosed(EOFError):
    """The other end closed the socket (for the core: the worker died)."""


def _json_default(obj: Any) -> Any:
    # numpy arrays and scalars are the usual results of a handler; lists and numbers are JSON.
    tolist = getattr(obj, "tolist", None)
    if callable(tolist):
        return tolist()
    raise TypeError(f"a {type(obj).__name__} is not JSON serializable; return lists, dicts, "
                    "strings, numbers, booleans, None or numpy arrays")


def encode(msg: Any) -> bytes:
    """One framed message."""
    body = json.dumps(msg, default=_json_default, separators=(",", ":")).encode()
    if len(body) > MAX_MESSAGE:
        raise ValueError(f"message of {len(body)} bytes is over the limit of {MAX_MESSAGE}")
    return _HEADER.pack(len(body)) + body


def send(sock: socket.socket, msg: Any) -> None:
    """Send one message (blocking)."""
    sock.sendall(encode(msg))


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ChannelClosed("the other end closed the channel")
        buf += chunk
    return bytes(buf)


def recv(sock: socket.socket) -> Any:
    """Receive one message; ChannelClosed at end of stream, socket.timeout past the timeout."""
    (n,) = _HEADER.unpack(_recv_exact(sock, _HEADER.size))
    if n > MAX_MESSAGE:
        raise ValueError(f"message of {n} bytes is over the limit of {MAX_MESSAGE}")
    return json.loads(_recv_exact(sock, n))
