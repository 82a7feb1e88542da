"""Fixtures for the deploy tests: a real S3 API server on loopback (moto's server mode over
HTTP), a TCP proxy that can cut connections mid-body, and package builders."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
import socket
import subprocess
import sys
import tarfile
import threading
import time
import uuid
import zipfile
from typing import Iterator, Optional

import pytest

AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def aws_env() -> None:
    """Fake credentials for the loopback server (set for this process and its children)."""
    os.environ.update(AWS_ENV)
    for k in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        os.environ.pop(k, None)


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """http://127.0.0.1:PORT of a moto S3/SageMaker/IAM server running for the session."""
    aws_env()
    from moto.server import ThreadedMotoServer

    srv = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    srv.start()
    host, port = srv.get_host_and_port()
    yield f"http://{host}:{port}"
    srv.stop()


@pytest.fixture
def s3(moto_endpoint: str):  # noqa: ANN201 - a boto3 client
    import boto3

    return boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1")


@pytest.fixture
def bucket(s3) -> str:  # noqa: ANN001
    name = f"models-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=name)
    return name


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return int(port)


def wait_port(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def start_moto_server(port: int, env: Optional[dict[str, str]] = None) -> subprocess.Popen[bytes]:
    """moto's server in its own process on 127.0.0.1:``port`` (output discarded; ``env``: its
    environment, default this process's). Wait for it with :func:`wait_port`."""
    exe = os.path.join(os.path.dirname(sys.executable), "moto_server")
    return subprocess.Popen(
        [exe, "-H", "127.0.0.1", "-p", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


@pytest.fixture
def moto_auth_server() -> Iterator[str]:
    """A moto server in its own process that enforces IAM after the first 4 requests."""
    aws_env()
    port = free_port()
    p = start_moto_server(port, dict(os.environ, INITIAL_NO_AUTH_ACTION_COUNT="4"))
    try:
        wait_port(port)
        yield f"http://127.0.0.1:{port}"
    finally:
        p.terminate()
        p.wait(10)


class CutProxy:
    """A loopback TCP proxy to an HTTP server.

    ``cut_after``: on the first ``cuts`` connections that carry a GET, close both sides after
    that many response bytes (a dropped connection mid-body). ``errors_400``: requests whose
    path contains one of its keys are answered ``400 Bad Request`` as S3 answers them, HEAD
    with no body and GET with the error document of the (code, message) given; S3 answers so
    for an SSE-C object requested without its key (:data:`SSE_C_400`), which moto does not
    (it serves such an object without the key). ``bad_request_heads``: HEAD requests whose path
    contains one of these get a bare 400, GETs go through. Every request line and Range header
    is logged.
    """

    def __init__(
        self,
        upstream: str,
        cut_after: Optional[int] = None,
        cuts: int = 0,
        errors_400: Optional[dict[str, tuple[str, str]]] = None,
        bad_request_heads: tuple[str, ...] = (),
    ) -> None:
        m = re.match(r"^http://([^:/]+):(\d+)", upstream)
        assert m
        self.up = (m.group(1), int(m.group(2)))
        self.cut_after = cut_after
        self.cuts_left = cuts
        self.errors_400 = dict(errors_400 or {})
        self.bad_heads = bad_request_heads
        self.requests: list[tuple[str, str, Optional[str]]] = []
        self.bytes_down = 0
        self.lock = threading.Lock()
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self) -> None:
        self.closed = True
        self.sock.close()

    def _accept(self) -> None:
        while not self.closed:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _serve(self, c: socket.socket) -> None:
        state = {"get": False, "sent": 0, "cut": False}
        try:
            u = socket.create_connection(self.up)
        except OSError:
            c.close()
            return

        def up_to_client() -> None:
            try:
                while True:
                    data = u.recv(1 << 16)
                    if not data:
                        break
                    if state["cut"] and self.cut_after is not None:
                        room = self.cut_after - state["sent"]
                        if room <= 0:
                            break
                        data = data[:room]
                    c.sendall(data)
                    state["sent"] += len(data)
                    with self.lock:
                        self.bytes_down += len(data)
            except OSError:
                pass
            for s in (c, u):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

        t = threading.Thread(target=up_to_client, daemon=True)
        t.start()
        try:
            while True:
                data = c.recv(1 << 16)
                if not data:
                    break
                text = data.decode("latin-1")
                for m in re.finditer(r"(GET|HEAD|PUT|POST) (\S+) HTTP/1\.1\r\n", text):
                    rng = re.search(r"(?i)\r\nrange: *([^\r\n]+)", text[m.end() - 2 :])
                    with self.lock:
                        self.requests.append(
                            (m.group(1), m.group(2), rng.group(1) if rng else None)
                        )
                    error = next((e for p, e in self.errors_400.items() if p in m.group(2)),
                                 None)
                    if error is None and m.group(1) == "HEAD" and any(
                            b in m.group(2) for b in self.bad_heads):
                        error = ("", "")
                    if error is not None and m.group(1) in ("HEAD", "GET"):
                        c.sendall(_answer_400(m.group(1), *error))
                        raise OSError("answered")
                    if m.group(1) == "GET":
                        with self.lock:
                            if self.cuts_left > 0 and not state["cut"]:
                                self.cuts_left -= 1
                                state["cut"] = True
                u.sendall(data)
        except OSError:
            pass
        t.join(30)
        c.close()
        u.close()


#: What AWS S3 answers a GET of an SSE-C object that carries no key (HEAD: the status only).
SSE_C_400 = ("InvalidRequest", "The object was stored using a form of Server Side Encryption. "
             "The correct parameters must be provided to retrieve the object.")


def _answer_400(method: str, code: str, message: str) -> bytes:
    body = b"" if method == "HEAD" else (
        f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code>'
        f"<Message>{message}</Message><RequestId>0</RequestId></Error>").encode()
    return (f"HTTP/1.1 400 Bad Request\r\nContent-Type: application/xml\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode() + body


def write_package(path: str, files: dict[str, bytes], manifest: bool = True) -> str:
    """A .tar.gz/.tgz or .zip at ``path`` holding ``files`` (and MANIFEST.json of their
    SHA-256s, so a test can check a destination holds one complete version)."""
    files = dict(files)
    if manifest:
        files["MANIFEST.json"] = json.dumps(
            {n: hashlib.sha256(b).hexdigest() for n, b in files.items()}
        ).encode()
    if path.endswith(".zip"):
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
            for n, b in files.items():
                zf.writestr(n, b)
    else:
        with tarfile.open(path, "w:gz") as tf:
            for n, b in files.items():
                ti = tarfile.TarInfo(n)
                ti.size = len(b)
                ti.mode = 0o644
                ti.mtime = int(time.time())
                tf.addfile(ti, io.BytesIO(b))
    return path


def check_complete(dest: str) -> dict[str, str]:
    """Assert ``dest`` holds one complete version (every MANIFEST file with its digest);
    returns the manifest."""
    with open(os.path.join(dest, "MANIFEST.json")) as f:
        manifest = json.load(f)
    for n, digest in manifest.items():
        with open(os.path.join(dest, n), "rb") as f:
            assert hashlib.sha256(f.read()).hexdigest() == digest, f"{dest}/{n} is not complete"
    return dict(manifest)


def write_group(path: str, group: dict) -> str:
    with open(path, "w") as f:
        json.dump(group, f, indent=2)
    return path


def run_cli(
    *args: str, env: Optional[dict] = None, timeout: float = 120
) -> subprocess.CompletedProcess:
    """``python -m pyengine ARGS`` in a subprocess."""
    return subprocess.run(
        [sys.executable, "-m", "pyengine", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
    )


class World:
    """A group of two models and a function, with packages the test can change."""

    def __init__(self, tmp_path) -> None:
        self.tmp = tmp_path
        self.root = str(tmp_path / "root")
        self.dest = {k: str(tmp_path / "models" / k) for k in ("alpha", "beta")}
        self.code = tmp_path / "functions" / "classify"
        self.code.mkdir(parents=True)
        self.set_code("v1")
        self.pkg = {k: str(tmp_path / f"{k}.tar.gz") for k in ("alpha", "beta")}
        for k in self.pkg:
            self.set_pkg(k, "v1")

    def set_code(self, tag: str) -> None:
        (self.code / "classify.py").write_text(
            f"TAG = {tag!r}\n\ndef function_handler(event, context):\n    return TAG\n"
        )

    def set_pkg(self, k: str, tag: str, size: int = 2000) -> None:
        write_package(self.pkg[k], {"tag": tag.encode(), "w.bin": os.urandom(size)})

    def tag(self, k: str) -> str:
        check_complete(self.dest[k])
        with open(os.path.join(self.dest[k], "tag")) as f:
            return f.read()

    def group(self, keys: tuple[str, ...] = ("alpha", "beta"), **model_extra: object) -> str:
        return write_group(
            str(self.tmp / "group.json"),
            {
                "name": "line-1",
                "resources": [
                    {
                        "id": k,
                        "name": k,
                        "model": {
                            "source": self.pkg[k],
                            "destination": self.dest[k],
                            **model_extra,
                        },
                    }
                    for k in keys
                ]
                + [{"id": "null", "device": {"path": "/dev/null"}}],
                "functions": [
                    {
                        "name": "classify",
                        "handler": "classify.function_handler",
                        "code": str(self.code),
                        "environment": {"MODE": "test"},
                        "resources": [
                            {"id": keys[0], "permission": "ro"},
                            {"id": "null", "permission": "rw"},
                        ],
                    }
                ],
            },
        )
