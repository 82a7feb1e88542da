"""A counting HTTP proxy in front of the loopback moto S3 server.

The fleet tests point a core at it to count what the core asked the bucket for and how many body
bytes the bucket sent back, without touching the code under test: an independent witness of
"at most one GET per interval" and "no more than the cap was read".
"""

from __future__ import annotations

import http.client
import threading
import urllib.parse
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

HOP = {"connection", "keep-alive", "transfer-encoding", "proxy-connection", "content-length"}


@dataclass
class Request:
    method: str
    key: str  # the URL path without the bucket: "fleets/line-1/timestamp.json"
    sent: int  # response body bytes sent to the client


class S3Counter:
    """``endpoint`` forwards to ``upstream`` and records each request in ``requests``."""

    def __init__(self, upstream: str) -> None:
        u = urllib.parse.urlsplit(upstream)
        self.upstream = (u.hostname or "127.0.0.1", u.port or 80)
        self.requests: list[Request] = []
        self.lock = threading.Lock()
        counter = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _forward(self) -> None:
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n) if n else None
                headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP}
                if body is not None:
                    headers["Content-Length"] = str(len(body))
                conn = http.client.HTTPConnection(*counter.upstream, timeout=60)
                try:
                    conn.request(self.command, self.path, body=body, headers=headers)
                    resp = conn.getresponse()
                    data = resp.read()
                    self.send_response(resp.status, resp.reason)
                    for k, v in resp.getheaders():
                        if k.lower() not in HOP:
                            self.send_header(k, v)
                    # A HEAD answer keeps the object's length; others carry what is sent.
                    length = resp.getheader("Content-Length") if self.command == "HEAD" \
                        else None
                    self.send_header("Content-Length", length or str(len(data)))
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(data)
                finally:
                    conn.close()
                path = urllib.parse.urlsplit(self.path).path.lstrip("/")
                with counter.lock:
                    counter.requests.append(Request(self.command, path.partition("/")[2],
                                                    0 if self.command == "HEAD" else len(data)))

            do_GET = do_PUT = do_HEAD = do_POST = do_DELETE = _forward

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def count(self, method: str, key_suffix: str = "") -> int:
        """Requests of ``method`` whose key ends with ``key_suffix``."""
        with self.lock:
            return sum(1 for r in self.requests if r.method == method
                       and r.key.endswith(key_suffix))

    def sent(self, key_suffix: str) -> int:
        """Body bytes sent for keys ending with ``key_suffix``."""
        with self.lock:
            return sum(r.sent for r in self.requests if r.key.endswith(key_suffix))

    def reset(self) -> None:
        with self.lock:
            self.requests.clear()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
