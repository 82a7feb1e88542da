"""Deployed roots for the core's tests: code, versioned resources, a state database, a core.

A root here is laid out the way the deploy layer installs one: each function's code under
``functions/<name>``, each model resource's versions under ``resources/<id>/versions/<n>`` with
its destination a symlink to the current version (switched atomically by rename), the SQLite
state database, and the manifest the core reads (:func:`pyengine.core.group.write_deployed_group`).
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from dataclasses import replace
from typing import Any, Callable

from pyengine.core.group import DeployedGroup, FunctionSpec, ResourceGrant, write_deployed_group

SECRET = "core-state-secret-7f3a"


def make_state_db(root: str) -> str:
    """A real SQLite database in the root holding a value no function may read."""
    path = os.path.join(root, "state.db")
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE IF NOT EXISTS secrets (value TEXT)")
    con.execute("INSERT INTO secrets VALUES (?)", (SECRET,))
    con.commit()
    con.close()
    return path


def write_code(root: str, name: str, source: str) -> str:
    """Function code ``functions/<name>/handler.py``; returns the directory."""
    code = os.path.join(root, "functions", name)
    os.makedirs(code, exist_ok=True)
    with open(os.path.join(code, "handler.py"), "w") as fh:
        fh.write(textwrap.dedent(source))
    return code


def install_version(root: str, rid: str, destination: str, version: str,
                    fill: Callable[[str], None]) -> str:
    """Install ``version`` of resource ``rid`` and switch ``destination`` to it atomically."""
    vdir = os.path.join(root, "resources", rid, "versions", version)
    os.makedirs(vdir)
    fill(vdir)
    for dirpath, _, files in os.walk(vdir):
        os.chmod(dirpath, 0o777)  # modes open to all: the OS rule is what must refuse
        for f in files:
            os.chmod(os.path.join(dirpath, f), 0o666)
    os.makedirs(os.path.dirname(destination), exist_ok=True)
    tmp = f"{destination}.switch"
    if os.path.lexists(tmp):
        os.unlink(tmp)
    os.symlink(vdir, tmp)
    os.replace(tmp, destination)
    return vdir


def model_resource(root: str, rid: str, destination: str, fill: Callable[[str], None],
                   permission: str = "ro") -> ResourceGrant:
    """Install version 1 of a model resource; the grant functions get on it."""
    install_version(root, rid, destination, "1", fill)
    return ResourceGrant(id=rid, path=destination, permission=permission, kind="model",
                         grant=os.path.join(root, "resources", rid, "versions"))


def deploy(root: str, functions: list[FunctionSpec], name: str = "test-group",
           deployment: str = "1") -> DeployedGroup:
    """Write the manifest the core reads (atomically), as a deployment would."""
    group = DeployedGroup(name=name, root=root, functions=tuple(functions), deployment=deployment)
    write_deployed_group(group)
    return group


def function(root: str, name: str, source: str, **settings: Any) -> FunctionSpec:
    """A function whose handler is ``handler.function_handler`` in ``source``."""
    code = write_code(root, name, source)
    spec = FunctionSpec(name=name, handler="handler.function_handler", code_dir=code)
    return replace(spec, **settings)


def chown_tree(path: str, uid: int, gid: int) -> None:
    """Give ``path`` and everything below it to ``uid``/``gid``."""
    os.chown(path, uid, gid)
    for dirpath, dirs, files in os.walk(path):
        for n in dirs + files:
            os.lchown(os.path.join(dirpath, n), uid, gid)


class CoreProcess:
    """``pyengine core start`` in a real subprocess; stopped with SIGTERM."""

    def __init__(self, root: str, user: int | None = None,
                 env: dict[str, str] | None = None) -> None:
        self.root = root
        self.log_path = os.path.join(os.path.dirname(root), f"core-{os.path.basename(root)}.log")
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - open while the core runs
        full_env = dict(os.environ)
        full_env.update(env or {})
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pyengine", "core", "start", "--root", root, "--port", "0"],
            stdout=self._log, stderr=subprocess.STDOUT, env=full_env, user=user,
            group=user, extra_groups=[] if user is not None else None, cwd="/")
        self.url = ""

    def wait_ready(self, timeout: float = 60.0) -> CoreProcess:
        deadline = time.monotonic() + timeout
        address = os.path.join(self.root, "core.json")
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"core exited with {self.proc.returncode}:\n{self.log()}")
            if not self.url and os.path.exists(address):
                with open(address) as fh:
                    self.url = json.load(fh)["url"]
            if self.url:
                status, _ = self.get("/health/ready")
                if status == 200:
                    return self
            time.sleep(0.05)
        raise TimeoutError(f"core not ready in {timeout} s:\n{self.log()}")

    def get(self, path: str) -> tuple[int, Any]:
        try:
            with urllib.request.urlopen(self.url + path, timeout=30) as resp:
                body = resp.read()
                status = resp.status
        except urllib.error.HTTPError as exc:
            body, status = exc.read(), exc.code
        try:
            return status, json.loads(body)
        except json.JSONDecodeError:
            return status, body.decode()

    def invoke(self, name: str, payload: Any = None, raw: bytes | None = None,
               timeout: float = 60.0) -> tuple[int, Any]:
        data = raw if raw is not None else json.dumps(payload).encode()
        req = urllib.request.Request(f"{self.url}/functions/{name}/invoke", data=data,
                                     method="POST")
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())

    def log(self) -> str:
        self._log.flush()
        with open(self.log_path, errors="replace") as fh:
            return fh.read()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
