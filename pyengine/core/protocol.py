"""The core <-> worker wire format: length-prefixed JSON messages over a Unix socket pair.

Bodies are UTF-8 JSON with non-ASCII characters as they are (not ``\\uXXXX``, which would
triple a string of 2-byte characters) and lone surrogates passed through, so any ``str`` a
handler gets or returns crosses intact and a frame is never much larger than its content.
"""

from __future__ import annotations

import json
import socket
import struct
from typing import Any

_HEADER = struct.Struct("!I")
#: Largest message either side accepts (payloads and results included).
MAX_MESSAGE = 64 << 20

#: The deepest JSON payload a caller may send (400 deeper), and the longest integer in it.
JSON_DEPTH_MAX = 64
INT_DIGITS_MAX = 100
#: Request bodies that reach the handler as bytes, not JSON (and ``image/*``).
BINARY_TYPES = ("application/octet-stream",)


class ChannelClosed(EOFError):
    """The other end closed the socket (for the core: the worker died)."""


def _json_default(obj: Any) -> Any:
    # numpy arrays and scalars are the usual results of a handler; lists and numbers are JSON.
    tolist = getattr(obj, "tolist", None)
    if callable(tolist):
        return tolist()
    raise TypeError(f"a {type(obj).__name__} is not JSON serializable; return lists, dicts, "
                    "strings, numbers, booleans, None or numpy arrays")


class MessagePayload(bytes):
    """An MQTT message's payload on its way to a function: it travels as bytes and the worker
    makes the event of it (:func:`decode_event`), so the core never holds it decoded."""


def decode_event(payload: bytes) -> Any:
    """A message's payload as a handler's event: the JSON value when the payload is JSON (UTF-8,
    nested less deep than Python's recursion limit), else the bytes as they came."""
    try:
        return json.loads(payload)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return bytes(payload)


def encode(msg: Any) -> bytes:
    """One framed message.

    Raises
    ------
    ValueError
        The message is larger than :data:`MAX_MESSAGE` or not JSON (TypeError: a value JSON
        has no form for; RecursionError: nested too deep).
    """
    body = json.dumps(msg, default=_json_default, separators=(",", ":"),
                      ensure_ascii=False).encode("utf-8", "surrogatepass")
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
    return json.loads(_recv_exact(sock, n).decode("utf-8", "surrogatepass"))


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
