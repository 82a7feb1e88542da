"""The core API's transports and who may use them, apart from the HTTP handling itself.

- **Listeners** (served by :mod:`pyengine.core.http`). A Unix socket in the root
  (``ROOT/core.sock``, mode 0660, owned by the core's user and a configurable group, like Docker's
  and containerd's) is always there; a TCP listener is optional (``--port``).
- **Authorization** (:class:`Authorizer`, called by the request handler before any route but
  ``/health/live``). On the Unix socket the kernel's peer credentials decide: root, the core's
  own user and members of the socket's group may call, unless the peer is a function's worker
  (403). On TCP a bearer token is required, read from a 0600 file (generated at first start)
  and compared in constant time; without credentials or with wrong ones: 401.
- **Client** (:class:`CoreClient`): what ``pyengine invoke``, the examples and the tests use to
  reach a running core through whichever listener it has, from the address file it writes.

The pieces do not depend on the HTTP server, so that a different server can call them.
"""

from __future__ import annotations

import contextlib
import grp
import hmac
import http.client
import ipaddress
import json
import os
import secrets
import socket
import stat
from dataclasses import dataclass
from typing import Any, Callable, Iterator

#: The file in the root that tells clients where the running core listens.
ADDRESS_FILE = "core.json"
#: The core's Unix socket in the root (default).
SOCKET_FILE = "core.sock"
#: The TCP listener's bearer token in the root (default).
TOKEN_FILE = "api.token"
#: Routes anyone who can connect may use.
OPEN_ROUTES = ("/health/live",)
SOCKET_MODE = 0o660
#: Longest path a Unix socket address holds (sun_path, with its NUL).
_SUN_PATH_MAX = 107


@contextlib.contextmanager
def _short_path(path: str) -> Iterator[str]:
    """``path``, or for one too long for a socket address the same file through
    /proc/self/fd/N of its directory (opened for the duration)."""
    if len(os.fsencode(path)) <= _SUN_PATH_MAX:
        yield path
        return
    fd = os.open(os.path.dirname(path) or ".", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        yield f"/proc/self/fd/{fd}/{os.path.basename(path)}"
    finally:
        os.close(fd)


@dataclass(frozen=True)
class ApiSettings:
    """Where the API listens and how callers authenticate.

    Attributes
    ----------
    socket
        The Unix socket's path (None: ``ROOT/core.sock``).
    socket_group
        The gid the socket is given (mode 0660); its members may call. None: the core's group.
    host, port
        The TCP listener; ``port`` None: none (0 picks a free port).
    token_file
        The bearer token of the TCP listener (None: ``ROOT/api.token``); created, mode 0600,
        when missing.
    token
        Require the token on TCP. Only a loopback ``host`` may go without.
    debug
        Error answers carry the handler's traceback (otherwise only the core's log has it).
    body_max_mb
        Largest request body (413 above it, refused from its Content-Length before it is read).
    connections_max
        Connections open at once (capped below the fd limit; see :mod:`pyengine.core.http`).
    idle_timeout_s
        A connection idle this long (or a request stalled this long) is closed.
    console
        Serve the local console (:mod:`pyengine.core.console`) under /console on the TCP
        listener; it needs ``port`` and ``token``.
    """

    socket: str | None = None
    socket_group: int | None = None
    host: str = "127.0.0.1"
    port: int | None = None
    token_file: str | None = None
    token: bool = True
    debug: bool = False
    body_max_mb: float = 16.0
    connections_max: int = 1024
    idle_timeout_s: float = 10.0
    console: bool = False


class ApiError(Exception):
    """A request refused before any route runs: ``status`` 401 or 403."""

    def __init__(self, status: int, kind: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.kind = kind


@dataclass(frozen=True)
class Peer:
    """Who is on the other end of a connection: the kernel's word on Unix sockets."""

    transport: str  # "unix" or "tcp"
    pid: int | None = None
    uid: int | None = None
    gid: int | None = None
    address: str = ""

    def describe(self) -> str:
        """For log lines."""
        if self.transport == "unix":
            return f"pid {self.pid} uid {self.uid}"
        return self.address


def group_id(value: str | int) -> int:
    """A group name or gid as a gid; ValueError naming the value otherwise."""
    if isinstance(value, int) or str(value).isdigit():
        return int(value)
    try:
        return grp.getgrnam(str(value)).gr_gid
    except KeyError:
        raise ValueError(f"socket group {value!r} does not exist on this machine") from None


def is_loopback(host: str) -> bool:
    """True for localhost and loopback addresses (127.0.0.0/8, ::1)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_settings(settings: ApiSettings) -> None:
    """Refuse what would expose the API: a TCP listener beyond loopback without the token."""
    if settings.port is not None and not settings.token and not is_loopback(settings.host):
        raise ValueError(f"--host {settings.host} without the API token would let anyone who "
                         "can reach this machine invoke functions; keep the token (drop "
                         "--no-token) or listen on 127.0.0.1")


def _read_token(path: str) -> bytes:
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as fh:
        st = os.fstat(fh.fileno())
        if st.st_mode & 0o077:
            raise PermissionError(f"the API token file {path} has mode "
                                  f"{stat.S_IMODE(st.st_mode):04o}; it must be readable by its "
                                  f"owner only: chmod 600 {path}")
        if st.st_uid != os.geteuid():
            raise PermissionError(f"the API token file {path} belongs to uid {st.st_uid}, not "
                                  f"to the core's user {os.geteuid()}")
        token = fh.read().strip()
    if len(token) < 16:
        raise ValueError(f"the API token in {path} is shorter than 16 characters; delete the file "
                         "and the core writes a new one")
    return token


def load_or_create_token(path: str) -> bytes:
    """The token in ``path``; a new random one written there (mode 0600) when it is missing.

    Raises
    ------
    PermissionError
        The file is readable by others than its owner, or is not the core's.
    """
    try:
        return _read_token(path)
    except FileNotFoundError:
        pass
    token = secrets.token_urlsafe(32).encode()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(token + b"\n")
    return token


def read_token(path: str) -> bytes:
    """A client's read of the token file (any mode): the token, stripped."""
    try:
        with open(path, "rb") as fh:
            return fh.read().strip()
    except PermissionError:
        raise PermissionError(f"cannot read the API token {path}: permission denied (it is "
                              "readable by the core's user only)") from None


def _proc_status(pid: int) -> dict[str, str]:
    out: dict[str, str] = {}
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                out[key] = value.strip()
    except OSError:
        pass
    return out


def peer_groups(pid: int) -> set[int]:
    """The supplementary groups of process ``pid`` (empty when it is gone)."""
    return {int(g) for g in _proc_status(pid).get("Groups", "").split()}


def no_new_privs(pid: int) -> bool:
    """Whether process ``pid`` runs with no_new_privs (as every confined worker and its children
    do; it cannot be cleared)."""
    return _proc_status(pid).get("NoNewPrivs") == "1"


class Authorizer:
    """Decides, per request, whether a caller may use the API.

    Parameters
    ----------
    token
        The TCP listener's bearer token; None: TCP needs none (loopback only).
    socket_gid
        The socket's group: its members may call over the Unix socket.
    is_function
        ``(peer) -> True`` when the peer is a function's process (refused with 403: functions
        call each other through ``context.invoke``, under the group's grants).
    """

    def __init__(self, token: bytes | None, socket_gid: int | None,
                 is_function: Callable[[Peer], bool]) -> None:
        self.token = token
        self.socket_gid = socket_gid
        self.is_function = is_function
        self.uid = os.geteuid()

    def _token_ok(self, authorization: str | None) -> bool | None:
        """None without an Authorization header; else whether it carries the token."""
        if not authorization:
            return None
        scheme, _, given = authorization.partition(" ")
        if scheme.lower() != "bearer" or self.token is None:
            return False
        return hmac.compare_digest(given.strip().encode(), self.token)

    def check(self, peer: Peer, path: str, authorization: str | None) -> str:
        """Who the caller is (for the log); ApiError 401/403 when it may not call ``path``."""
        if path in OPEN_ROUTES:
            return "anyone"
        if peer.transport == "unix":
            if self.is_function(peer):
                raise ApiError(403, "Forbidden", "a function's process may not use the core's "
                               "API; call other functions with context.invoke, under the grants "
                               "of the group's 'invoke' lists")
            if peer.uid in (0, self.uid):
                return f"uid {peer.uid}"
            if self.socket_gid is not None and peer.pid is not None and (
                    peer.gid == self.socket_gid or self.socket_gid in peer_groups(peer.pid)):
                return f"uid {peer.uid} (group {self.socket_gid})"
            if self._token_ok(authorization):
                return "token"
            raise ApiError(401, "Unauthorized", "this user may not use the core's socket (it is "
                           "for root, the core's user and the socket's group)")
        ok = self._token_ok(authorization)
        if self.token is None:
            return "loopback (no token required)"
        if ok:
            return "token"
        raise ApiError(401, "Unauthorized", "missing API token: send 'Authorization: Bearer "
                       "<token>' (the token is in the core's token file)" if ok is None
                       else "wrong API token")


# -- client ------------------------------------------------------------------------------------


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float | None = None) -> None:
        super().__init__("localhost", timeout=timeout)
        self.path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        if self.timeout is not None:
            sock.settimeout(self.timeout)
        try:
            with _short_path(self.path) as address:
                sock.connect(address)
        except PermissionError:
            sock.close()
            raise PermissionError(f"cannot connect to the core's socket {self.path}: permission "
                                  "denied (it is for root, the core's user and the socket's "
                                  "group)") from None
        except OSError:
            sock.close()
            raise
        self.sock = sock


class CoreClient:
    """Reaches a running core over its Unix socket or over TCP with the bearer token.

    Parameters
    ----------
    socket_path
        The core's Unix socket (preferred when given).
    url
        ``http://HOST:PORT`` of the TCP listener.
    token
        The bearer token for TCP (None: send none).
    timeout
        Seconds to wait for an answer.
    """

    def __init__(self, socket_path: str | None = None, url: str | None = None,
                 token: bytes | str | None = None, timeout: float = 600.0) -> None:
        if not socket_path and not url:
            raise ValueError("a CoreClient needs the core's socket path or URL")
        self.socket_path = socket_path
        self.url = url.rstrip("/") if url else None
        self.token = token.decode() if isinstance(token, bytes) else token
        self.timeout = timeout

    @staticmethod
    def address(root: str) -> dict[str, Any]:
        """The address file the core running in ``root`` wrote; OSError when none runs."""
        path = os.path.join(root, ADDRESS_FILE)
        try:
            with open(path) as fh:
                return dict(json.load(fh))
        except FileNotFoundError:
            raise OSError(f"no core is running in {root} (no {path}); start one with "
                          f"`pyengine core start --root {root}`") from None

    @classmethod
    def for_root(cls, root: str, tcp: bool = False, token_file: str | None = None,
                 timeout: float = 600.0) -> CoreClient:
        """A client of the core running in ``root``: its socket, or with ``tcp`` its TCP listener
        and the token from ``token_file`` (default: the one the core names)."""
        addr = cls.address(root)
        if not tcp:
            return cls(socket_path=addr["socket"], timeout=timeout)
        if not addr.get("url"):
            raise OSError(f"the core in {root} has no TCP listener (start it with --port)")
        path = token_file or addr.get("token_file")
        return cls(url=addr["url"], token=read_token(path) if path else None, timeout=timeout)

    def describe(self) -> str:
        """Where it sends requests."""
        return f"unix:{self.socket_path}" if self.socket_path else str(self.url)

    def connection(self) -> http.client.HTTPConnection:
        """A new (keep-alive) connection to the core; send :meth:`headers` with each request."""
        if self.socket_path:
            return _UnixConnection(self.socket_path, self.timeout)
        assert self.url is not None
        target = self.url.split("://", 1)[-1]
        return http.client.HTTPConnection(target, timeout=self.timeout)

    def headers(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        """The authentication header (TCP with a token) and ``extra``."""
        out = dict(extra or {})
        if self.token:
            out["Authorization"] = f"Bearer {self.token}"
        return out

    def request(self, method: str, path: str, body: bytes | None = None,
                headers: dict[str, str] | None = None) -> tuple[int, bytes]:
        """One request on a new connection: (status, body)."""
        conn = self.connection()
        try:
            conn.request(method, path, body=body, headers=self.headers(headers))
            resp = conn.getresponse()
            return resp.status, resp.read()
        finally:
            conn.close()

    def get(self, path: str) -> tuple[int, Any]:
        """GET ``path``: (status, JSON body, or the text when it is not JSON)."""
        status, data = self.request("GET", path)
        try:
            return status, json.loads(data)
        except (json.JSONDecodeError, UnicodeDecodeError):
            return status, data.decode(errors="replace")

    def invoke(self, name: str, payload: Any = None, raw: bytes | None = None
               ) -> tuple[int, dict[str, Any]]:
        """Invoke function ``name`` with ``payload`` (JSON) or ``raw`` bytes: (status, answer)."""
        data = raw if raw is not None else json.dumps(payload).encode()
        status, body = self.request("POST", f"/functions/{name}/invoke", data,
                                    {"Content-Type": "application/json"})
        try:
            answer = json.loads(body) if body else {}
        except json.JSONDecodeError:
            answer = {"error": {"type": "BadAnswer", "message": body[:200].decode(
                errors="replace")}}
        return status, answer
