"""The local console: a web page served by the core itself (``pyengine core start --console``).

It lives under ``/console`` on the core's TCP listener, beside the API, and needs the API's
token once: logging in with it sets a session cookie (HttpOnly, SameSite=Strict, path
/console). The page (``console_static/``) is plain HTML, CSS and one script file, served from
the package with no CDN, and reads JSON routes under ``/console/api``; live logs and MQTT
messages come as server-sent events.

Security (docs/console.md):

- every route but the login page and the static files needs a live session;
- every POST (rollback, invoke, publish, logout) also needs the session's CSRF token in the
  ``X-CSRF-Token`` header, and an ``Origin``, when the browser sends one, of this host; a
  cross-site form can send neither;
- the Content-Security-Policy allows scripts only from the console's own files, so no inline
  script runs; the page renders everything from a function (results, logs, messages) as
  text, never as HTML.
"""

from __future__ import annotations

import contextlib
import hmac
import html
import json
import logging
import os
import queue
import secrets
import threading
import time
import urllib.parse
from collections import OrderedDict
from dataclasses import dataclass
from http.cookies import CookieError, SimpleCookie
from typing import TYPE_CHECKING, Any, Callable, Iterator, Optional

from pyengine import deploy as dp
from pyengine.common.topics import topic_problem
from pyengine.core import console_data as data
from pyengine.core.http import Request, Response
from pyengine.core.protocol import parse_payload
from pyengine.deploy.installed import DEVICES

if TYPE_CHECKING:  # the core holds the console; the console only reads it and calls invoke
    from pyengine.core.server import Core

log = logging.getLogger("pyengine.core")

STATIC_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "console_static")
#: The static files and their types (nothing else under STATIC_DIR is served).
STATIC = {"app.js": "text/javascript; charset=utf-8", "app.css": "text/css; charset=utf-8"}
COOKIE = "pyengine_console"
SESSION_TTL_S = 12 * 3600
#: Sessions kept at once; logging in past this ends the oldest.
SESSIONS_MAX = 32
#: Live streams (logs, MQTT) open at once: each holds a route thread while it waits.
STREAMS_MAX = 8
#: A stream ends after this long (the browser's EventSource reconnects), freeing its thread.
STREAM_MAX_S = 600.0
HEARTBEAT_S = 5.0
#: A wrong token costs this long (a guesser gets a few tries a second per connection).
LOGIN_FAIL_DELAY_S = 1.0
MQTT_MESSAGE_MAX = 64 << 10
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; "
                               "img-src 'self' data:; connect-src 'self'; form-action 'self'; "
                               "frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",  # no-referrer makes Chromium send "Origin: null"
    "Cache-Control": "no-store",
}


@dataclass
class _Session:
    csrf: str
    expires: float


@dataclass(frozen=True)
class _Route:
    method: str
    handler: str
    #: Needs a session (all but the login page and the static files).
    session: bool = True


#: Exact paths; the API routes that take a name (logs, invoke) are matched by prefix below.
_ROUTES = {
    "/console": _Route("GET", "_page"),
    "/console/login": _Route("GET", "_login_page", session=False),
    "/console/api/session": _Route("GET", "_session_info"),
    "/console/api/overview": _Route("GET", "_overview"),
    "/console/api/deployments": _Route("GET", "_deployments"),
    "/console/api/resources": _Route("GET", "_resources"),
    "/console/api/functions": _Route("GET", "_functions"),
    "/console/api/series": _Route("GET", "_series"),
    "/console/api/rollback": _Route("POST", "_rollback"),
    "/console/api/mqtt/watch": _Route("GET", "_mqtt_watch"),
    "/console/api/mqtt/publish": _Route("POST", "_mqtt_publish"),
    "/console/logout": _Route("POST", "_logout"),
}
_PREFIXES = {
    "/console/static/": _Route("GET", "_static", session=False),
    "/console/api/logs/": _Route("GET", "_logs"),
    "/console/api/invoke/": _Route("POST", "_invoke"),
}


def handles(path: str) -> bool:
    """Whether ``path`` belongs to the console."""
    return path == "/console" or path.startswith("/console/")


class Console:
    """The console's routes over the core's HTTP server (see the module docstring).

    Parameters
    ----------
    core
        The running core.
    token
        The API token: the one secret that logs in.
    sample_s
        Seconds between the charts' samples of the metrics.
    """

    def __init__(self, core: Core, token: bytes, sample_s: float = data.SERIES_INTERVAL_S
                 ) -> None:
        self.core = core
        self.token = token
        self.started = time.time()
        self.sampler = data.Sampler(core, sample_s)
        self._sessions: OrderedDict[str, _Session] = OrderedDict()
        self._lock = threading.Lock()
        self._streams = threading.BoundedSemaphore(STREAMS_MAX)
        self._stop = threading.Event()

    def start(self) -> None:
        """Start sampling the metrics for the charts."""
        self.sampler.start()

    def stop(self) -> None:
        """End every live stream and the sampling."""
        self._stop.set()
        self.sampler.stop()

    # -- requests ------------------------------------------------------------------------------

    def _route(self, path: str) -> Optional[_Route]:
        route = _ROUTES.get(path)
        if route is None:
            route = next((r for p, r in _PREFIXES.items()
                          if path.startswith(p) and len(path) > len(p)), None)
        return route

    def precheck(self, req: Request) -> Optional[Response]:
        """Route, method, session and CSRF, before the body is read; a Response refuses."""
        path = req.path
        if path == "/console/login" and req.method == "POST":
            return self._origin_refusal(req)
        route = self._route(path)
        if route is None:
            return self._error(404, f"no console route {path}")
        if req.method != route.method:
            resp = self._error(405, f"{path} takes {route.method}, not {req.method}")
            resp.headers["Allow"] = route.method
            return resp
        if not route.session:
            return None
        session = self._session(req)
        if session is None:
            if path == "/console":  # the page itself: to the login form
                return self._secure(Response(303, b"", "text/plain",
                                             {"Location": "/console/login"}))
            return self._error(401, "log in to the console first (POST /console/login with "
                               "the core's API token)")
        if req.method == "POST":
            given = req.headers.get("x-csrf-token", "")
            if not hmac.compare_digest(given.encode(), session.csrf.encode()):
                return self._error(403, "missing or wrong CSRF token (X-CSRF-Token header)")
            refusal = self._origin_refusal(req)
            if refusal is not None:
                return refusal
            if "content-length" not in req.headers and "transfer-encoding" not in req.headers:
                return self._error(411, "POST needs a Content-Length (or a chunked body)")
        return None

    def __call__(self, req: Request) -> Response:
        path = req.path
        if path == "/console/login" and req.method == "POST":
            return self._login(req)
        route = self._route(path)
        assert route is not None  # precheck answered the others
        try:
            resp: Response = getattr(self, route.handler)(req)
        except (ValueError, KeyError) as exc:
            msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
            resp = self._error(400, str(msg))
        except dp.DeployError as exc:
            resp = self._error(409, str(exc))
        return self._secure(resp)

    # -- sessions ------------------------------------------------------------------------------

    def _session(self, req: Request) -> Optional[_Session]:
        raw = req.headers.get("cookie")
        if not raw:
            return None
        try:
            morsel = SimpleCookie(raw).get(COOKIE)
        except CookieError:
            return None
        if morsel is None:
            return None
        with self._lock:
            s = self._sessions.get(morsel.value)
            if s is not None and s.expires < time.time():
                del self._sessions[morsel.value]
                s = None
        return s

    def _login(self, req: Request) -> Response:
        form = urllib.parse.parse_qs(req.body.decode("utf-8", "replace"), max_num_fields=4)
        given = (form.get("token") or [""])[0].strip()
        if not hmac.compare_digest(given.encode(), self.token):
            log.warning("console: a login with a wrong token from %s", req.peer.describe())
            time.sleep(LOGIN_FAIL_DELAY_S)
            return self._secure(self._login_form("wrong token", status=401))
        sid, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
        with self._lock:
            self._sessions[sid] = _Session(csrf, time.time() + SESSION_TTL_S)
            while len(self._sessions) > SESSIONS_MAX:
                self._sessions.popitem(last=False)
        log.info("console: a login from %s", req.peer.describe())
        cookie = (f"{COOKIE}={sid}; Path=/console; HttpOnly; SameSite=Strict; "
                  f"Max-Age={SESSION_TTL_S}")
        return self._secure(Response(303, b"", "text/plain",
                                     {"Location": "/console", "Set-Cookie": cookie}))

    def _logout(self, req: Request) -> Response:
        raw = SimpleCookie(req.headers.get("cookie", "")).get(COOKIE)
        with self._lock:
            if raw is not None:
                self._sessions.pop(raw.value, None)
        return Response(200, b'{"status": "logged out"}', headers={
            "Set-Cookie": f"{COOKIE}=; Path=/console; HttpOnly; SameSite=Strict; Max-Age=0"})

    def _origin_refusal(self, req: Request) -> Optional[Response]:
        origin = req.headers.get("origin")
        if origin is None:
            return None
        host = req.headers.get("host", "")
        if urllib.parse.urlsplit(origin).netloc != host:
            return self._error(403, f"a request from another site ({origin}) is refused")
        return None

    # -- pages ---------------------------------------------------------------------------------

    def _page(self, req: Request) -> Response:
        return Response(200, _read_static("index.html"), "text/html; charset=utf-8")

    def _login_page(self, req: Request) -> Response:
        return self._login_form("")

    def _login_form(self, message: str, status: int = 200) -> Response:
        page = _read_static("login.html").replace(
            b"<!--message-->", html.escape(message).encode())
        return Response(status, page, "text/html; charset=utf-8")

    def _static(self, req: Request) -> Response:
        name = req.path.rsplit("/", 1)[-1]
        if name not in STATIC:
            return self._error(404, f"no console file {name!r}")
        return Response(200, _read_static(name), STATIC[name])

    # -- data ----------------------------------------------------------------------------------

    def _json(self, body: Any, status: int = 200) -> Response:
        return Response(status, json.dumps(body, default=str).encode())

    def _session_info(self, req: Request) -> Response:
        s = self._session(req)
        assert s is not None
        return self._json({"csrf": s.csrf, "expires": s.expires,
                           "mqtt": DEVICES in self.core.router.links})

    def _overview(self, req: Request) -> Response:
        return self._json(data.overview(self.core, self.started))

    def _deployments(self, req: Request) -> Response:
        return self._json({"deployments": data.deployments(self.core)})

    def _resources(self, req: Request) -> Response:
        return self._json(data.resources(self.core))

    def _functions(self, req: Request) -> Response:
        return self._json(data.functions(self.core))

    def _series(self, req: Request) -> Response:
        return self._json(self.sampler.series())

    # -- actions -------------------------------------------------------------------------------

    def _rollback(self, req: Request) -> Response:
        d = dp.rollback(self.core.root)
        log.info("console: rollback from %s: deployment %s %s", req.peer.describe(), d.id,
                 d.status)
        if d.status == "Success":
            self.core.await_deployment(d.id, timeout_s=30.0)
        return self._json(d.as_dict(), 200 if d.status == "Success" else 409)

    def _invoke(self, req: Request) -> Response:
        name = req.path[len("/console/api/invoke/"):]
        payload = parse_payload(req.body, "application/json")
        t0 = time.perf_counter()
        status, body = self.core.invoke(name, payload)
        ms = (time.perf_counter() - t0) * 1e3
        if isinstance(body, dict) and isinstance(body.get("error"), dict) \
                and not self.core.api.debug:
            body = {**body, "error": {k: v for k, v in body["error"].items()
                                      if k != "traceback"}}
        return self._json({"status": status, "ms": round(ms, 3), "answer": body})

    def _mqtt_publish(self, req: Request) -> Response:
        body = json.loads(req.body or b"{}")
        if not isinstance(body, dict) or not isinstance(body.get("topic"), str):
            raise ValueError('the body must be {"topic": "...", "payload": "..."}')
        payload = body.get("payload", "")
        raw = payload.encode() if isinstance(payload, str) else json.dumps(payload).encode()
        link = self.core.router.links.get(DEVICES)
        if link is None:
            raise KeyError("the core has no MQTT broker (core start --mqtt HOST:PORT)")
        problem = topic_problem(body["topic"])
        if problem:
            raise ValueError(f"topic {body['topic']!r}: {problem}")
        why = link.publish(body["topic"], raw, qos=1)
        return self._json({"published": not why, "reason": why or None})

    # -- live streams --------------------------------------------------------------------------

    def _open_stream(self, events: Callable[[threading.Event], Iterator[Optional[dict[str, Any]]]]
                     ) -> Response:
        if not self._streams.acquire(blocking=False):
            return self._error(503, f"{STREAMS_MAX} live views are open already; close one")
        return Response(200, b"", "text/event-stream; charset=utf-8",
                        stream=_EventStream(events, self._stop, self._streams.release))

    def _logs(self, req: Request) -> Response:
        name = req.path[len("/console/api/logs/"):]
        if self.core.group is None or name not in {f.name for f in self.core.group.functions}:
            return self._error(404, f"no function {name!r} is deployed")
        query = urllib.parse.parse_qs(urllib.parse.urlsplit(req.target).query)
        pattern = (query.get("filter") or [""])[0][:200]
        root = self.core.root

        def events(stop: threading.Event) -> Iterator[Optional[dict[str, Any]]]:
            for line in data.follow_log(root, name, pattern, stop):
                yield None if line is None else {"line": line}
        return self._open_stream(events)

    def _mqtt_watch(self, req: Request) -> Response:
        query = urllib.parse.parse_qs(urllib.parse.urlsplit(req.target).query)
        topic_filter = (query.get("topic") or ["#"])[0]
        inbox: queue.Queue[tuple[str, bytes]] = queue.Queue(maxsize=256)

        def deliver(topic: str, payload: bytes) -> None:
            # A slow page loses messages; the core's network thread never waits for it.
            with contextlib.suppress(queue.Full):
                inbox.put_nowait((topic, payload[:MQTT_MESSAGE_MAX]))
        unwatch = self.core.router.watch(DEVICES, topic_filter, deliver)

        def events(stop: threading.Event) -> Iterator[Optional[dict[str, Any]]]:
            try:
                yield {"watching": topic_filter}
                while not stop.is_set():
                    try:
                        topic, payload = inbox.get(timeout=0.25)
                    except queue.Empty:
                        yield None
                        continue
                    yield {"topic": topic, "payload": payload.decode("utf-8", "replace"),
                           "t": time.time()}
            finally:
                unwatch()
        return self._open_stream(events)

    # -- answers -------------------------------------------------------------------------------

    def _error(self, status: int, message: str) -> Response:
        body = json.dumps({"error": {"status": status, "message": message}}).encode()
        return self._secure(Response(status, body))

    @staticmethod
    def _secure(resp: Response) -> Response:
        for k, v in SECURITY_HEADERS.items():
            resp.headers.setdefault(k, v)
        return resp


class _EventStream:
    """Server-sent events from ``events(stop)``: each dict as a ``data:`` line of JSON, a
    comment line as heartbeat after HEARTBEAT_S of Nones; ends at STREAM_MAX_S or when the
    console stops. ``release`` runs once, at close, whether or not the stream ever started."""

    def __init__(self, events: Callable[[threading.Event], Iterator[Optional[dict[str, Any]]]],
                 stopping: threading.Event, release: Callable[[], None]) -> None:
        self._stop = threading.Event()
        self._stopping = stopping
        self._events = events(self._stop)
        self._release: Optional[Callable[[], None]] = release
        self._deadline = time.monotonic() + STREAM_MAX_S
        self._started = False

    def __iter__(self) -> _EventStream:
        return self

    def __next__(self) -> bytes:
        if not self._started:
            self._started = True
            return b"retry: 2000\n\n"
        quiet_since = time.monotonic()
        while True:
            if self._stopping.is_set() or time.monotonic() > self._deadline:
                raise StopIteration
            event = next(self._events)  # StopIteration ends the stream
            if event is not None:
                return b"data: " + json.dumps(event).encode() + b"\n\n"
            if time.monotonic() - quiet_since >= HEARTBEAT_S:
                return b": heartbeat\n\n"

    def close(self) -> None:
        self._stop.set()
        try:
            close = getattr(self._events, "close", None)
            if close is not None:
                close()
        except ValueError:  # still running in another thread: it sees the stop flag
            pass
        finally:
            if self._release is not None:
                self._release()
                self._release = None


def _read_static(name: str) -> bytes:
    with open(os.path.join(STATIC_DIR, name), "rb") as f:
        return f.read()
