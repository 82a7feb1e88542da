"""The core's HTTP/1.1 server: one asyncio event loop for every connection, bounded everywhere.

Why asyncio from the standard library (see docs/core.md): an idle connection costs a few KiB
and no thread, so a flood of them cannot exhaust threads; timeouts, a connection cap and body
limits are a few lines each; and it adds no dependency to an edge device's core. Only the
routes run on threads, from a bounded pool, because a call waits on a worker.

Limits, each answered rather than hung:

- **Connections**: at most ``connections_max`` (below the fd limit). A new connection over the
  cap closes the longest-idle one; with none idle it gets 503 and is closed.
- **Time**: a connection waiting for its next request closes after ``idle_timeout_s``; a
  request's line and headers must arrive within ``header_timeout_s``; each body or write stall
  longer than ``idle_timeout_s`` closes the connection.
- **Size**: request line and headers 64 KiB in all (431); a body over ``body_max`` is refused
  with 413 from its Content-Length before it is read, or while a chunked body streams in.
- **Framing** (no request smuggling): ``Transfer-Encoding: chunked`` is decoded; any other
  transfer coding is 501; Transfer-Encoding with Content-Length, or two different
  Content-Lengths, is 400 and the connection closes.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import re
import socket
import stat
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, Callable, Iterator, Optional

from pyengine.core.api import SOCKET_MODE, Peer, _short_path

log = logging.getLogger("pyengine.core")

#: Request line plus headers, in bytes (asyncio's StreamReader limit for one line too).
HEAD_MAX = 64 << 10
HEADERS_MAX = 100
#: A refused body is read and dropped (so the caller sees the answer) up to this much.
DRAIN_MAX = 64 << 20
DRAIN_TIMEOUT_S = 5.0
_DECIMAL = re.compile(r"[0-9]{1,18}")
_HEX = re.compile(rb"[0-9A-Fa-f]{1,15}")
#: Connections waiting in the kernel to be accepted.
ACCEPT_BACKLOG = 128


@dataclass
class Request:
    """One parsed request, as the routes see it."""

    method: str
    target: str
    headers: dict[str, str]
    peer: Peer
    body: bytes = b""

    @property
    def path(self) -> str:
        """The path without the query and trailing slashes ('/' stays)."""
        p = self.target.split("?", 1)[0]
        return p.rstrip("/") or "/"


@dataclass
class Response:
    """What a route answers."""

    status: int
    body: bytes = b""
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)
    close: bool = False
    #: A body sent as it is produced (server-sent events): each chunk is written as it comes,
    #: with no Content-Length, and the connection closes at its end. ``next`` runs on a pool
    #: thread, so it may block; it should yield within ``idle_timeout_s`` (a heartbeat) so a
    #: gone client is noticed.
    stream: Optional[Iterator[bytes]] = None


class HttpError(Exception):
    """A request refused while it is read: answered with ``status`` and closed."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


#: (request head without body) -> a Response to send instead of reading the body, or None.
Precheck = Callable[[Request], Optional[Response]]
#: (request with body) -> its Response (runs on a pool thread).
App = Callable[[Request], Response]
#: (status, message) -> a JSON error Response (the routes' own format).
ErrorPage = Callable[[int, str], Response]


@dataclass(frozen=True)
class Limits:
    """The server's limits (see the module docstring)."""

    body_max: int = 16 << 20
    connections_max: int = 512
    idle_timeout_s: float = 10.0
    header_timeout_s: float = 10.0
    threads: int = 128


def raise_fd_limit() -> int:
    """Raise RLIMIT_NOFILE's soft limit to the hard one; the soft limit now."""
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = max(soft, 1 << 16)
    if soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
    return soft


def connections_cap(fd_limit: int, wanted: int) -> int:
    """At most ``wanted`` connections, leaving room for one burst of accepts (asyncio accepts up
    to the backlog at once, before any connection is looked at) and an eighth of the fds (at
    least 64) for workers' sockets and pipes, logs and the state database."""
    return max(16, min(wanted, fd_limit - ACCEPT_BACKLOG - max(64, fd_limit // 8)))


class _Conn:
    __slots__ = ("writer", "idle")

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self.writer = writer
        self.idle = True


class HttpServer:
    """The event loop (in a thread of its own), its listeners and its bounded route pool.

    Parameters
    ----------
    app
        Runs a route (on a pool thread).
    precheck
        Runs on the loop after the headers, before the body is read (authorization): a
        Response refuses the request.
    error
        Formats the server's own refusals.
    limits
        See :class:`Limits`.
    """

    def __init__(self, app: App, precheck: Precheck, error: ErrorPage, limits: Limits) -> None:
        self.app = app
        self.precheck = precheck
        self.error = error
        self.limits = limits
        self.loop = asyncio.new_event_loop()
        self.pool = ThreadPoolExecutor(limits.threads, thread_name_prefix="pyengine-api")
        self._servers: list[asyncio.base_events.Server] = []
        self._unix_paths: list[str] = []
        #: Open connections, oldest first (the idle ones are evicted first over the cap).
        self._conns: collections.OrderedDict[int, _Conn] = collections.OrderedDict()
        self._thread = threading.Thread(target=self.loop.run_forever, name="pyengine-http",
                                        daemon=True)
        self._thread.start()
        self.refused = 0

    # -- listeners -----------------------------------------------------------------------------

    def _run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    def listen_unix(self, path: str, group: Optional[int]) -> str:
        """Listen on a Unix socket at ``path`` (mode 0660, ``group``); a dead core's socket is
        replaced, a live one's is not."""
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            pass
        else:
            if not stat.S_ISSOCK(st.st_mode):
                raise OSError(17, f"{path} exists and is not a socket; remove it or choose "
                              "another --socket")
            probe = socket.socket(socket.AF_UNIX)
            try:
                with _short_path(path) as address:
                    probe.connect(address)
            except ConnectionRefusedError:
                os.unlink(path)  # a dead core's socket
            else:
                raise OSError(98, f"another core answers on {path}")
            finally:
                probe.close()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        with _short_path(path) as address:
            sock.bind(address)
        # Before listen(): nobody can connect until the modes are right.
        os.chmod(path, SOCKET_MODE)
        if group is not None:
            try:
                os.chown(path, -1, group)
            except PermissionError:
                sock.close()
                os.unlink(path)
                raise PermissionError(f"cannot give {path} to group {group}: the core's user "
                                      "must be root or a member of that group") from None
        self._unix_paths.append(path)
        self._start(sock, "unix")
        return f"unix:{path}"

    def listen_tcp(self, host: str, port: int) -> str:
        """Listen on TCP; the URL."""
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            sock.close()
            raise
        h, p = sock.getsockname()[:2]
        self._start(sock, "tcp")
        return f"http://[{h}]:{p}" if ":" in h else f"http://{h}:{p}"

    def _start(self, sock: socket.socket, transport: str) -> None:
        sock.listen(ACCEPT_BACKLOG)
        sock.setblocking(False)

        async def start() -> asyncio.base_events.Server:
            def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> Any:
                return self._connection(reader, writer, transport)
            if transport == "unix":
                return await asyncio.start_unix_server(on_connect, sock=sock, limit=HEAD_MAX)
            return await asyncio.start_server(on_connect, sock=sock, limit=HEAD_MAX)
        self._servers.append(self._run(start()))

    def connections(self) -> int:
        """Connections open now."""
        return len(self._conns)

    def close(self) -> None:
        """Stop listening, close every connection, stop the loop."""
        async def shut() -> None:
            for srv in self._servers:
                srv.close()
            for conn in list(self._conns.values()):
                conn.writer.transport.abort()
        if self.loop.is_running():
            self._run(shut())
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(5)
        for path in self._unix_paths:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        self.pool.shutdown(wait=False, cancel_futures=True)

    # -- one connection ------------------------------------------------------------------------

    def _admit(self, key: int, conn: _Conn) -> bool:
        """Make room for a new connection: evict the longest-idle one over the cap."""
        if len(self._conns) < self.limits.connections_max:
            self._conns[key] = conn
            return True
        for k, other in self._conns.items():
            if other.idle:
                del self._conns[k]
                other.writer.transport.abort()
                self._conns[key] = conn
                return True
        return False

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                          transport: str) -> None:
        key = id(writer)
        conn = _Conn(writer)
        try:
            if not self._admit(key, conn):
                self.refused += 1
                await self._send(writer, self.error(503, "the core has too many connections "
                                                    "open; try again"), close=True)
                return
            peer = _peer(writer, transport)
            while True:
                conn.idle = True
                keep = await self._one(reader, writer, peer, conn)
                if not keep:
                    return
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.TimeoutError, OSError):
            pass
        except Exception:  # noqa: BLE001 - one connection's failure never stops the server
            log.exception("API: a connection failed")
        finally:
            self._conns.pop(key, None)
            writer.close()

    async def _one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                   peer: Peer, conn: _Conn) -> bool:
        """Read and answer one request; whether the connection stays open."""
        lim = self.limits
        try:
            line = await asyncio.wait_for(reader.readline(), lim.idle_timeout_s)
        except ValueError:  # a request line past HEAD_MAX
            await self._send(writer, self.error(414, f"request line over {HEAD_MAX} bytes"),
                             close=True)
            return False
        if not line:
            return False
        conn.idle = False
        try:
            req, http10 = await asyncio.wait_for(self._head(line, reader, peer),
                                                 lim.header_timeout_s)
        except HttpError as exc:
            await self._send(writer, self.error(exc.status, str(exc)), close=True)
            return False
        except (asyncio.LimitOverrunError, ValueError):  # a line past HEAD_MAX
            await self._send(writer, self.error(431, "request headers over "
                                                f"{HEAD_MAX} bytes"), close=True)
            return False
        close = http10 or "close" in req.headers.get("connection", "").lower()
        refusal = self.precheck(req)
        if refusal is None and req.headers.get("expect", "").lower() == "100-continue":
            cl = req.headers.get("content-length")
            if cl is not None and int(cl) > lim.body_max:
                refusal = self.error(413, f"the body of {cl} bytes is over the core's limit of "
                                     f"{lim.body_max} bytes (api.body_max_mb)")
            else:  # curl waits a second for this before a body over 1 MB
                writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        if refusal is None:
            try:
                req.body = await self._body(req, reader)
            except HttpError as exc:
                refusal = self.error(exc.status, str(exc))
                refusal.close = True
        if refusal is not None:
            unread = refusal.close or refusal.status >= 400 and not _body_read(req)
            await self._send(writer, refusal, close=close or unread)
            if unread:  # the answer first: a caller may wait for it before sending its body
                await self._drain(req, reader)
            return not (close or unread)
        try:
            resp = await self.loop.run_in_executor(self.pool, self.app, req)
        except Exception as exc:  # noqa: BLE001 - every request gets an answer
            log.exception("API: %s %s failed", req.method, req.path)
            resp = self.error(500, f"the core failed to answer: {type(exc).__name__}: {exc}")
        if resp.stream is not None:
            await self._stream(writer, resp)
            return False
        close = close or resp.close
        await self._send(writer, resp, close=close)
        return not close

    async def _head(self, line: bytes, reader: asyncio.StreamReader,
                    peer: Peer) -> tuple[Request, bool]:
        parts = line.decode("latin-1").rstrip("\r\n").split(" ")
        if len(parts) != 3 or not parts[0].isalpha() or not parts[2].startswith("HTTP/1."):
            raise HttpError(400, f"not an HTTP/1.x request line: {line[:80]!r}")
        method, target, version = parts
        headers: dict[str, str] = {}
        size = len(line)
        for _ in range(HEADERS_MAX + 1):
            raw = await reader.readline()
            size += len(raw)
            if size > HEAD_MAX:
                raise HttpError(431, f"request headers over {HEAD_MAX} bytes")
            if raw in (b"\r\n", b"\n"):
                break
            if not raw.endswith(b"\n"):
                raise asyncio.IncompleteReadError(raw, None)
            name, sep, value = raw.decode("latin-1").partition(":")
            if not sep or not name or name != name.strip():
                raise HttpError(400, f"malformed header line {raw[:80]!r}")
            key = name.lower()
            value = value.strip()
            if key in headers:
                if key == "content-length" and headers[key] != value:
                    raise HttpError(400, "two different Content-Length headers")
                if key != "content-length":
                    value = f"{headers[key]}, {value}"
            headers[key] = value
        else:
            raise HttpError(431, f"more than {HEADERS_MAX} request headers")
        if "transfer-encoding" in headers and "content-length" in headers:
            raise HttpError(400, "a request with both Transfer-Encoding and Content-Length is "
                            "refused (it could smuggle a second request)")
        te = headers.get("transfer-encoding")
        if te is not None and te.lower() != "chunked":
            raise HttpError(501, f"Transfer-Encoding {te!r} is not supported; send the body "
                            "with Content-Length or chunked")
        cl = headers.get("content-length")
        if cl is not None and not _DECIMAL.fullmatch(cl):
            raise HttpError(400, f"Content-Length {cl[:40]!r} is not a byte count")
        return Request(method, target, headers, peer), version == "HTTP/1.0"

    async def _body(self, req: Request, reader: asyncio.StreamReader) -> bytes:
        lim = self.limits
        cl = req.headers.get("content-length")
        if cl is not None:
            n = int(cl)
            if n > lim.body_max:
                raise HttpError(413, f"the body of {n} bytes is over the core's limit of "
                                f"{lim.body_max} bytes (api.body_max_mb)")
            return await _read_exact(reader, n, lim.idle_timeout_s)
        if "transfer-encoding" not in req.headers:
            return b""
        body = bytearray()
        while True:
            line = await asyncio.wait_for(reader.readline(), lim.idle_timeout_s)
            size_text = line.split(b";", 1)[0].strip()
            if not _HEX.fullmatch(size_text):  # int(x, 16) would take "0x", "_" and "+"
                raise HttpError(400, f"bad chunk size line {line[:40]!r}")
            n = int(size_text, 16)
            if n == 0:
                break
            if len(body) + n > lim.body_max:
                raise HttpError(413, f"the chunked body is over the core's limit of "
                                f"{lim.body_max} bytes (api.body_max_mb)")
            body += await _read_exact(reader, n, lim.idle_timeout_s)
            if await asyncio.wait_for(reader.readline(), lim.idle_timeout_s) not in (
                    b"\r\n", b"\n"):
                raise HttpError(400, "a chunk is longer than its size line says")
        for _ in range(HEADERS_MAX):  # trailers, dropped
            line = await asyncio.wait_for(reader.readline(), lim.idle_timeout_s)
            if line in (b"\r\n", b"\n", b""):
                break
        req.headers.pop("transfer-encoding")
        return bytes(body)

    async def _drain(self, req: Request, reader: asyncio.StreamReader) -> None:
        """Read and drop a refused request's declared body (bounded in size and time), so the
        caller gets the answer instead of a reset."""
        cl = req.headers.get("content-length")
        if "transfer-encoding" in req.headers:
            left = DRAIN_MAX  # the rest of a chunked body, until the caller stops sending
        elif cl is None or not _DECIMAL.fullmatch(cl):
            return
        else:
            left = min(int(cl), DRAIN_MAX)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + DRAIN_TIMEOUT_S
        with contextlib.suppress(asyncio.TimeoutError, ConnectionError, OSError):
            while left > 0:
                chunk = await asyncio.wait_for(reader.read(min(left, 1 << 16)),
                                               max(0.01, deadline - loop.time()))
                if not chunk:
                    break
                left -= len(chunk)

    async def _send(self, writer: asyncio.StreamWriter, resp: Response, close: bool) -> None:
        try:
            reason = HTTPStatus(resp.status).phrase
        except ValueError:
            reason = "Status"
        head = [f"HTTP/1.1 {resp.status} {reason}", "Server: pyengine-core",
                f"Content-Type: {resp.content_type}", f"Content-Length: {len(resp.body)}"]
        head += [f"{k}: {v}" for k, v in resp.headers.items()]
        if close:
            head.append("Connection: close")
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + resp.body)
        await asyncio.wait_for(writer.drain(), self.limits.idle_timeout_s)
        if close:
            with contextlib.suppress(OSError, RuntimeError):
                if writer.can_write_eof():
                    writer.write_eof()


    async def _stream(self, writer: asyncio.StreamWriter, resp: Response) -> None:
        """Send ``resp``'s head, then each chunk of its stream as it comes, then close."""
        assert resp.stream is not None
        stream = resp.stream
        head = [f"HTTP/1.1 {resp.status} {HTTPStatus(resp.status).phrase}",
                "Server: pyengine-core", f"Content-Type: {resp.content_type}",
                "Connection: close"]
        head += [f"{k}: {v}" for k, v in {"Cache-Control": "no-store", **resp.headers}.items()]
        try:
            writer.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1"))
            await asyncio.wait_for(writer.drain(), self.limits.idle_timeout_s)
            while not writer.is_closing():
                chunk = await self.loop.run_in_executor(self.pool, next, stream, None)
                if chunk is None:
                    break
                writer.write(chunk)
                await asyncio.wait_for(writer.drain(), self.limits.idle_timeout_s)
        finally:
            close = getattr(stream, "close", None)
            if close is not None:  # a generator's finally runs: it lets go of what it holds
                await self.loop.run_in_executor(self.pool, close)


def _body_read(req: Request) -> bool:
    return not req.headers.get("content-length", "0").strip("0") and \
        "transfer-encoding" not in req.headers


async def _read_exact(reader: asyncio.StreamReader, n: int, idle_s: float) -> bytes:
    """``n`` bytes of a body; a sender silent for ``idle_s`` is cut off."""
    buf = bytearray()
    while len(buf) < n:
        chunk = await asyncio.wait_for(reader.read(min(n - len(buf), 1 << 16)), idle_s)
        if not chunk:
            raise asyncio.IncompleteReadError(bytes(buf), n)
        buf += chunk
    return bytes(buf)


def _peer(writer: asyncio.StreamWriter, transport: str) -> Peer:
    if transport == "unix":
        sock = writer.get_extra_info("socket")
        import struct
        creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        pid, uid, gid = struct.unpack("3i", creds)
        return Peer("unix", pid=pid, uid=uid, gid=gid)
    addr = writer.get_extra_info("peername") or ("?", 0)
    return Peer("tcp", address=f"{addr[0]}:{addr[1]}")
