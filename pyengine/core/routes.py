"""The core's HTTP routes: health, functions, metrics, ``POST /functions/NAME/invoke`` (payloads
as :func:`pyengine.core.protocol.parse_payload` reads them) and the console's paths, with the
answer's JSON encoding (non-finite numbers as null). :class:`pyengine.core.server.Core` serves
them.
"""

from __future__ import annotations

import json
import logging
import math
from typing import Any, Protocol

from pyengine.core import protocol
from pyengine.core.api import ApiError, ApiSettings, Authorizer
from pyengine.core.console import Console
from pyengine.core.console import handles as console_handles
from pyengine.core.group import DeployedGroup
from pyengine.core.http import Request, Response

log = logging.getLogger("pyengine.core")

class Served(Protocol):
    """What the routes need of the core (:class:`pyengine.core.server.Core` has it)."""

    api: ApiSettings
    authorizer: Authorizer
    console: Console | None
    group: DeployedGroup | None

    def ready(self) -> bool: ...

    def functions(self) -> list[dict[str, Any]]: ...

    def metrics_text(self) -> str: ...

    def invoke(self, name: str, payload: Any) -> tuple[int, dict[str, Any]]: ...


def _json(body: Any) -> tuple[bytes, int]:
    """An answer as strict JSON and the count of non-finite numbers sent as null.

    The rule (docs/core.md): NaN, Infinity and -Infinity in a result are sent as ``null`` and
    the answer carries ``"nonfinite": N``; the output is always valid JSON.
    """
    try:
        return json.dumps(body, default=protocol._json_default, allow_nan=False).encode(), 0
    except ValueError:
        pass
    count = 0

    def clean(v: Any) -> Any:
        nonlocal count
        if isinstance(v, float) and not math.isfinite(v):
            count += 1
            return None
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [clean(x) for x in v]
        tolist = getattr(v, "tolist", None)
        return clean(tolist()) if callable(tolist) else v
    cleaned = clean(body)
    if isinstance(cleaned, dict):
        cleaned["nonfinite"] = count
    return json.dumps(cleaned, default=protocol._json_default, allow_nan=False).encode(), count


class Routes:
    """The routes, over :class:`pyengine.core.http.HttpServer`."""

    ROUTES = {"/health/live": "GET", "/health/ready": "GET", "/functions": "GET",
              "/metrics": "GET"}

    def __init__(self, core: Served) -> None:
        self.core = core

    def error(self, status: int, message: str, kind: str = "") -> Response:
        kinds = {400: "BadRequest", 401: "Unauthorized", 403: "Forbidden", 404: "NotFound",
                 405: "MethodNotAllowed", 411: "LengthRequired", 413: "PayloadTooLarge",
                 431: "HeadersTooLarge", 501: "NotImplemented", 503: "Busy"}
        body = {"error": {"type": kind or kinds.get(status, "Error"), "message": message}}
        return Response(status, json.dumps(body).encode())

    def answer(self, status: int, body: Any, headers: dict[str, str] | None = None) -> Response:
        if isinstance(body, dict) and isinstance(body.get("error"), dict) \
                and not self.core.api.debug:
            body = {**body, "error": {k: v for k, v in body["error"].items()
                                      if k != "traceback"}}
        try:
            data, nonfinite = _json(body)
        except (ValueError, TypeError, RecursionError) as exc:
            log.warning("API: an answer that is not JSON: %s", exc)
            return self.error(500, f"the function's result cannot be sent as JSON: {exc}",
                              "BadResult")
        if nonfinite:
            log.warning("API: %d non-finite number(s) in an answer sent as null", nonfinite)
        return Response(status, data, headers=headers or {})

    def precheck(self, req: Request) -> Response | None:
        """Authorization and the route's method, before the body is read."""
        path = req.path
        if self.core.console is not None and console_handles(path):
            return self.core.console.precheck(req)  # its own login (a browser sends no token)
        try:
            self.core.authorizer.check(req.peer, path, req.headers.get("authorization"))
        except ApiError as exc:
            log.warning("API: %s %s from %s refused (%d): %s", req.method, path,
                        req.peer.describe(), exc.status, exc)
            resp = self.error(exc.status, str(exc), exc.kind)
            if exc.status == 401:
                resp.headers["WWW-Authenticate"] = "Bearer"
            resp.close = True
            return resp
        allowed = self.ROUTES.get(path) or ("POST" if _invoke_target(path) else None)
        if allowed is None:
            return self.error(404, f"no route {req.method} {path}; the routes are GET "
                              f"{', '.join(self.ROUTES)} and POST /functions/NAME/invoke")
        if req.method != allowed:
            resp = self.error(405, f"{path} takes {allowed}, not {req.method}")
            resp.headers["Allow"] = allowed
            return resp
        if req.method == "POST" and "content-length" not in req.headers \
                and "transfer-encoding" not in req.headers:
            return self.error(411, "POST needs a Content-Length (or a chunked body)")
        return None

    def __call__(self, req: Request) -> Response:
        core = self.core
        path = req.path
        if core.console is not None and console_handles(path):
            return core.console(req)
        if path == "/health/live":
            return self.answer(200, {"status": "live"})
        if path == "/health/ready":
            ok = core.ready()
            return self.answer(200 if ok else 503, {"status": "ready" if ok else "starting",
                                                    "functions": core.functions()})
        if path == "/functions":
            return self.answer(200, {"group": core.group.name if core.group else None,
                                     "deployment": core.group.deployment if core.group else None,
                                     "functions": core.functions()})
        if path == "/metrics":
            return Response(200, core.metrics_text().encode(), "text/plain; version=0.0.4")
        name = _invoke_target(path)
        assert name is not None  # precheck answered other paths
        try:
            payload = protocol.parse_payload(req.body, req.headers.get("content-type", ""))
        except (ValueError, UnicodeDecodeError) as exc:
            return self.error(400, f"the payload is not JSON the core accepts: {exc}",
                              "MalformedPayload")
        status, body = core.invoke(name, payload)
        return self.answer(status, body)


def _invoke_target(path: str) -> str | None:
    parts = path.strip("/").split("/")
    if len(parts) == 3 and parts[0] == "functions" and parts[2] == "invoke" and parts[1]:
        return parts[1]
    return None
