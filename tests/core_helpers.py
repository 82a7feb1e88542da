"""Deployed roots for the core's tests: packages, a group file, real deploys, a core process.

Roots are made with the deploy layer itself (:func:`pyengine.deploy.deploy` over ``file://``
packages), so the core runs on exactly what a deployment installs.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import subprocess
import sys
import tarfile
import textwrap
import time
from typing import Any, Callable

from pyengine import deploy as dp
from pyengine.core.api import CoreClient


def package(path: str, fill: Callable[[str], None]) -> str:
    """A .tar.gz at ``path`` holding what ``fill(directory)`` writes."""
    staging = f"{path}.d"
    os.makedirs(staging, exist_ok=True)
    fill(staging)
    tmp = f"{path}.tmp"
    with tarfile.open(tmp, "w:gz") as tar:
        for name in sorted(os.listdir(staging)):
            tar.add(os.path.join(staging, name), arcname=name)
    os.replace(tmp, path)  # a new file: the source's change token moves
    for name in os.listdir(staging):
        os.unlink(os.path.join(staging, name))
    os.rmdir(staging)
    return path


def text_file(name: str, content: str) -> Callable[[str], None]:
    """A ``fill`` writing one text file."""
    def fill(d: str) -> None:
        with open(os.path.join(d, name), "w") as fh:
            fh.write(content)
    return fill


def write_code(base: str, name: str, source: str) -> str:
    """Function code ``functions/<name>/handler.py`` next to the group file."""
    code = os.path.join(base, "functions", name)
    os.makedirs(code, exist_ok=True)
    with open(os.path.join(code, "handler.py"), "w") as fh:
        fh.write(textwrap.dedent(source))
    return f"./functions/{name}"


def model_resource(base: str, rid: str, fill: Callable[[str], None],
                   owner: dict[str, Any] | None = None) -> dict[str, Any]:
    """A model resource entry with its package written under ``base/sources``."""
    os.makedirs(os.path.join(base, "sources"), exist_ok=True)
    src = package(os.path.join(base, "sources", f"{rid}.tar.gz"), fill)
    model: dict[str, Any] = {"source": f"file://{src}",
                             "destination": os.path.join(base, "dest", rid)}
    if owner:
        model["owner"] = owner
    return {"id": rid, "name": rid, "model": model}


def function(base: str, name: str, source: str, resources: tuple[tuple[str, str], ...] = (),
             **settings: Any) -> dict[str, Any]:
    """A function entry whose handler is ``handler.function_handler`` in ``source``."""
    entry = {"name": name, "handler": "handler.function_handler",
             "code": write_code(base, name, source),
             "resources": [{"id": rid, "permission": perm} for rid, perm in resources]}
    entry.update(settings)
    return entry


def deploy_group(base: str, root: str, resources: list[dict[str, Any]],
                 functions: list[dict[str, Any]], name: str = "test-group") -> dp.Deployment:
    """Write ``base/group.json`` and deploy it into ``root``; the deployment must succeed."""
    path = os.path.join(base, "group.json")
    with open(path, "w") as fh:
        json.dump({"name": name, "resources": resources, "functions": functions}, fh, indent=2)
    return redeploy(base, root)


def redeploy(base: str, root: str) -> dp.Deployment:
    """Deploy ``base/group.json`` (again) into ``root``."""
    d = dp.deploy(os.path.join(base, "group.json"), root, wait_s=30)
    assert d.status == "Success", (d.status, d.message, d.items)
    return d


def chown_tree(path: str, uid: int, gid: int) -> None:
    """Give ``path`` and everything below it to ``uid``/``gid``."""
    os.chown(path, uid, gid)
    for dirpath, dirs, files in os.walk(path):
        for n in dirs + files:
            os.lchown(os.path.join(dirpath, n), uid, gid)


class CoreProcess:
    """``pyengine core start`` in a real subprocess; stopped with SIGTERM.

    Requests go over the core's Unix socket as the test's own user (``client``); ``args`` adds
    options such as ``--port 0`` for the TCP listener (then ``tcp_client()``).
    """

    def __init__(self, root: str, user: int | None = None,
                 env: dict[str, str] | None = None, args: tuple[str, ...] = (),
                 nofile: int | None = None) -> None:
        self.root = root
        self.log_path = os.path.join(os.path.dirname(root), f"core-{os.path.basename(root)}.log")
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - open while the core runs
        full_env = dict(os.environ)
        full_env.update(env or {})

        def limit_fds() -> None:  # both limits: the core cannot raise it back
            if nofile is not None:
                resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pyengine", "core", "start", "--root", root, *args],
            stdout=self._log, stderr=subprocess.STDOUT, env=full_env, user=user,
            group=user, extra_groups=[] if user is not None else None, cwd="/",
            preexec_fn=limit_fds if nofile is not None else None)
        self.client: CoreClient | None = None
        #: The TCP listener's URL ('' without one).
        self.url = ""

    def wait_ready(self, timeout: float = 60.0) -> CoreProcess:
        deadline = time.monotonic() + timeout
        address = os.path.join(self.root, "core.json")
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self._log.close()  # no stop() follows: an open log would warn in a later test
                raise RuntimeError(f"core exited with {self.proc.returncode}:\n{self.log()}")
            if self.client is None and os.path.exists(address):
                addr = CoreClient.address(self.root)
                if addr.get("pid") == self.proc.pid:
                    self.client = CoreClient(socket_path=addr["socket"], timeout=60)
                    self.url = addr.get("url") or ""
            if self.client is not None:
                with contextlib.suppress(OSError):
                    status, _ = self.get("/health/ready")
                    if status == 200:
                        return self
            time.sleep(0.05)
        raise TimeoutError(f"core not ready in {timeout} s:\n{self.log()}")

    def tcp_client(self, token: bytes | str | None = None) -> CoreClient:
        """A client of the TCP listener: with ``token`` None, the core's own token file's."""
        if token is None:
            return CoreClient.for_root(self.root, tcp=True, timeout=60)
        return CoreClient(url=self.url, token=token, timeout=60)

    def get(self, path: str) -> tuple[int, Any]:
        assert self.client is not None, "wait_ready first"
        return self.client.get(path)

    def invoke(self, name: str, payload: Any = None, raw: bytes | None = None,
               timeout: float = 60.0) -> tuple[int, Any]:
        assert self.client is not None, "wait_ready first"
        return self.client.invoke(name, payload, raw)

    def core_log(self) -> str:
        """What the core wrote to its stderr."""
        if not self._log.closed:  # the log stays readable after stop()
            self._log.flush()
        with open(self.log_path, errors="replace") as fh:
            return fh.read()

    def function_log(self, name: str) -> str:
        """Function ``name``'s log, ROOT/logs/<name>.log ('' before it has one)."""
        try:
            with open(os.path.join(self.root, "logs", f"{name}.log"), errors="replace") as fh:
                return fh.read()
        except FileNotFoundError:
            return ""

    def log(self) -> str:
        """Everything: the core's stderr, then each function's log (its stdout and stderr)."""
        logs = os.path.join(self.root, "logs")
        names = sorted(n[:-4] for n in os.listdir(logs) if n.endswith(".log")
                       and n != "core.log") if os.path.isdir(logs) else []
        return "\n".join([self.core_log(), *(self.function_log(n) for n in names)])

    def wait_log(self, *texts: str, timeout: float = 15.0) -> str:
        """The whole log once every one of ``texts`` is in it. Workers' lines reach the log after
        their call has answered (a relay in between), so reading it right away races them."""
        deadline = time.monotonic() + timeout
        text = self.log()
        while not all(t in text for t in texts) and time.monotonic() < deadline:
            time.sleep(0.05)
            text = self.log()
        return text

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
