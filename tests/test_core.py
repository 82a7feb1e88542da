"""The core with real processes: a core subprocess, confined workers, HTTP and the CLI.

The core runs as root (functions as nobody) in most tests; the access tests also start it as
an ordinary user (uid 65534) over a root that user owns, where file modes allow everything and
only Landlock refuses.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from core_helpers import (
    CoreProcess,
    chown_tree,
    deploy_group,
    function,
    model_resource,
    package,
    redeploy,
    text_file,
    write_code,
)
from models import mlp

import pyengine
from pyengine.core import landlock
from pyengine.core.users import UidRange

NOBODY = 65534

OPS = """
import os, signal, time
import numpy as np
import pyengine

LOADED_PID = os.getpid()

def _try(fn):
    try:
        return {"ok": True, "value": fn()}
    except OSError as exc:
        return {"ok": False, "error": type(exc).__name__, "message": str(exc)}

def function_handler(event, context):
    op = event.get("op")
    if op == "read":
        return _try(lambda: open(event["path"], "rb").read(64).decode("latin-1"))
    if op == "listdir":
        return _try(lambda: sorted(os.listdir(event["path"])))
    if op == "write":
        def write():
            with open(event["path"], "w") as fh:
                fh.write("x")
            return "written"
        return _try(write)
    if op == "sleep":
        time.sleep(event["s"])
        return "slept"
    if op == "segv":
        os.kill(os.getpid(), signal.SIGSEGV)
    if op == "alloc":
        block = np.ones(event["mb"] << 18, np.float32)
        return float(block.sum())
    if op == "raise":
        raise ValueError(f"bad event {event['value']!r}")
    if op == "env":
        return {k: os.environ.get(k) for k in ("GREETING", "HOME", "PYENGINE_FUNCTION",
                                               "PYENGINE_GRANTED_DEVICES")}
    if op == "object":
        return object()
    if op == "context":
        context.logger.info("context asked")
        return {"name": context.function_name, "id": context.invocation_id,
                "remaining": context.get_remaining_time_in_millis(),
                "resources": context.resources}
    return {"pid": os.getpid(), "loaded_pid": LOADED_PID, "uid": os.getuid(), "echo": event}
"""

MODEL_FN = """
import os, time
import numpy as np
import pyengine

model = pyengine.load("hotmodel")
X = np.linspace(-1, 1, 64, dtype=np.float32).reshape(1, 64)

def function_handler(event, context):
    first = model.path
    y = model.predict(X)
    if event and event.get("slow"):
        time.sleep(event["slow"])
    y2 = model.predict(X)
    assert model.path == first and np.array_equal(y, y2), "version changed inside a call"
    return {"version": os.path.basename(model.path), "probs": y[0].tolist(), "pid": os.getpid()}
"""


@pytest.fixture(scope="module")
def open_tmp():
    """A directory every user can traverse (pytest's own tmp is private to root)."""
    path = tempfile.mkdtemp(prefix="pyengine-core-test-")
    os.chmod(path, 0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _x() -> np.ndarray:
    return np.linspace(-1, 1, 64, dtype=np.float32).reshape(1, 64)


def _fill_model(seed: int):
    return lambda d: mlp(os.path.join(d, "model.pyem"), seed=seed)


def build_root(base: str, owner: int | None = None) -> str:
    """Deploy a group covering access, failures, concurrency and hot updates; the root."""
    root = os.path.join(base, "root")
    resources = [
        model_resource(base, "ro-data", text_file("data.txt", "ro-content")),
        model_resource(base, "rw-data", text_file("data.txt", "rw-content"),
                       owner={"group": NOBODY if os.geteuid() == 0 else os.getgid(),
                              "permission": "rw"}),
        model_resource(base, "other-data", text_file("data.txt", "other-content")),
        model_resource(base, "hotmodel", _fill_model(1)),
        {"id": "zero", "name": "zero", "device": {"path": "/dev/zero"}},
    ]
    functions = [
        function(base, "guard", OPS, (("ro-data", "ro"), ("rw-data", "rw"), ("zero", "ro")),
                 pinned=True, environment={"GREETING": "hello"}),
        function(base, "other", OPS, (("other-data", "ro"),), pinned=False),
        function(base, "faulty", OPS, pinned=True, timeout_s=1.0, memory_mb=128),
        function(base, "ondemand", OPS, pinned=False),
        function(base, "classify", MODEL_FN, (("hotmodel", "ro"),), pinned=True),
        function(base, "broken", "raise RuntimeError('model missing')\n", pinned=False),
    ]
    deploy_group(base, root, resources, functions)
    if owner is not None:
        chown_tree(base, owner, owner)
    return root


@pytest.fixture(scope="module")
def core(open_tmp):
    base = os.path.join(open_tmp, "as-root")
    os.makedirs(base)
    root = build_root(base)
    proc = CoreProcess(root).wait_ready()
    yield proc
    proc.stop()


def _paths(root: str) -> dict[str, str]:
    base = os.path.dirname(root)
    return {
        "state": os.path.join(root, "state.db"),
        "ro": os.path.join(base, "dest", "ro-data", "data.txt"),
        "rw": os.path.join(base, "dest", "rw-data", "data.txt"),
        "other": os.path.join(base, "dest", "other-data", "data.txt"),
        "other_code": os.path.join(root, "functions", "other", "current", "handler.py"),
    }


def check_access(core: CoreProcess) -> None:
    p = _paths(core.root)

    def op(fn: str, **event):
        status, body = core.invoke(fn, event)
        assert status == 200, body
        return body["result"]

    assert op("guard", op="read", path=p["ro"]) == {"ok": True, "value": "ro-content"}
    denied = op("guard", op="write", path=p["ro"])
    assert denied["error"] == "PermissionError", denied
    assert op("guard", op="read", path=p["ro"])["value"] == "ro-content"
    assert op("guard", op="write", path=p["rw"]) == {"ok": True, "value": "written"}
    with open(p["rw"]) as fh:
        assert fh.read() == "x"
    # No policy for another function's resource, even though its modes let anyone read it.
    assert os.stat(os.path.realpath(p["other"])).st_mode & 0o004
    assert op("guard", op="read", path=p["other"])["error"] == "PermissionError"
    assert op("other", op="read", path=p["other"])["value"] == "other-content"
    assert op("other", op="read", path=p["ro"])["error"] == "PermissionError"
    # The core's state and other functions' code.
    for fn in ("guard", "other", "ondemand"):
        got = op(fn, op="read", path=p["state"])
        assert got["error"] == "PermissionError", (fn, got)
        assert "SQLite" not in str(got)
        assert op(fn, op="listdir", path=core.root)["error"] == "PermissionError"
    assert op("guard", op="read", path=p["other_code"])["error"] == "PermissionError"
    # Not through the core's /proc entries either (same uid when the core is unprivileged).
    via_proc = f"/proc/{core.proc.pid}/root{p['state']}"
    assert op("guard", op="read", path=via_proc)["ok"] is False
    # A rw grant is on the version in use, not on the deploy layer's store of versions.
    store = os.path.dirname(os.path.dirname(os.path.realpath(p["rw"])))
    assert op("guard", op="write", path=os.path.join(store, "planted"))["error"] == \
        "PermissionError"
    assert op("guard", op="read", path=p["ro"])["value"] == "ro-content"
    # Devices only for the functions that list them.
    assert op("guard", op="read", path="/dev/zero")["ok"] is True
    assert op("other", op="read", path="/dev/zero")["error"] == "PermissionError"


@pytest.mark.skipif(landlock.abi_version() == 0, reason="the kernel has no Landlock")
def test_access_enforced_core_as_this_user(core):
    assert "Landlock (ABI" in core.log()
    status, body = core.invoke("guard", {})
    if os.geteuid() == 0:  # a user of its own, from the default range
        assert body["result"]["uid"] in UidRange()
    else:
        assert body["result"]["uid"] == os.geteuid()
    check_access(core)


@pytest.mark.skipif(os.geteuid() != 0, reason="starting the core as another user needs root")
@pytest.mark.skipif(landlock.abi_version() == 0, reason="the kernel has no Landlock")
def test_access_enforced_core_as_ordinary_user(open_tmp):
    base = os.path.join(open_tmp, "as-user")
    os.makedirs(base)
    root = build_root(base, owner=NOBODY)
    proc = CoreProcess(root, user=NOBODY)
    try:
        proc.wait_ready()
        status, body = proc.invoke("guard", {})
        assert body["result"]["uid"] == NOBODY  # same user as the core: modes allow everything
        assert os.stat(os.path.join(root, "state.db")).st_uid == NOBODY
        check_access(proc)
    finally:
        proc.stop()


@pytest.mark.skipif(os.geteuid() != 0, reason="uid/gid confinement needs the core to run as root")
def test_without_landlock_uid_and_modes_protect_the_state(open_tmp):
    base = os.path.join(open_tmp, "no-landlock")
    os.makedirs(base)
    root = os.path.join(base, "root")
    deploy_group(base, root, [], [function(base, "guard", OPS, pinned=True)])
    state = os.path.join(root, "state.db")
    os.chmod(state, 0o644)
    proc = CoreProcess(root, env={"PYENGINE_LANDLOCK": "off"})
    try:
        proc.wait_ready()
        assert "Landlock is turned off: functions are confined by uid/gid and file modes only" \
            in proc.log()
        assert os.stat(state).st_mode & 0o777 == 0o600
        status, body = proc.invoke("guard", {"op": "read", "path": state})
        assert body["result"]["error"] == "PermissionError"
        assert body["result"]["ok"] is False
    finally:
        proc.stop()


def test_failures_fail_only_their_call(core):
    _, before = core.invoke("guard", {})
    _, first = core.invoke("faulty", {})
    assert first["result"]["loaded_pid"] == first["result"]["pid"]

    status, body = core.invoke("faulty", {"op": "sleep", "s": 5})
    assert status == 504 and body["error"]["type"] == "FunctionTimeout", body
    status, after = core.invoke("faulty", {})
    assert status == 200 and after["result"]["pid"] != first["result"]["pid"]

    status, body = core.invoke("faulty", {"op": "segv"})
    assert status == 502 and body["error"]["type"] == "WorkerDied", body
    assert "SIGSEGV" in body["error"]["message"]
    status, again = core.invoke("faulty", {"op": "echo"})
    assert status == 200 and again["result"]["echo"] == {"op": "echo"}

    status, body = core.invoke("faulty", {"op": "alloc", "mb": 1024})
    assert status == 500 and body["error"]["type"] == "MemoryError", body
    status, small = core.invoke("faulty", {"op": "alloc", "mb": 8})
    assert status == 200 and small["result"] == float(8 << 18)

    status, body = core.invoke("faulty", {"op": "raise", "value": 42})
    assert status == 500
    assert body["error"]["type"] == "ValueError"
    assert body["error"]["message"] == "bad event 42"
    assert "traceback" not in body["error"]  # the caller gets it only from a --debug core
    log = core.wait_log("Traceback", "bad event 42")
    assert "Traceback" in log and "bad event 42" in log

    status, body = core.invoke("faulty", {"op": "object"})
    assert status == 500 and body["error"]["type"] == "TypeError"
    assert "not JSON serializable" in body["error"]["message"]

    _, later = core.invoke("guard", {})
    assert later["result"]["pid"] == before["result"]["pid"]  # other functions untouched
    _, metrics = core.get("/metrics")
    assert 'pyengine_invocation_errors_total{function="faulty",type="FunctionTimeout"} 1' in metrics
    assert 'pyengine_invocation_errors_total{function="faulty",type="WorkerDied"} 1' in metrics


def test_function_that_fails_to_start(core):
    status, body = core.invoke("broken", {})
    assert status == 502 and body["error"]["type"] == "FunctionInitError"
    assert "RuntimeError: model missing" in body["error"]["message"]
    _, listing = core.get("/functions")
    broken = [f for f in listing["functions"] if f["name"] == "broken"][0]
    assert "model missing" in broken["last_error"] and broken["workers"] == 0
    assert core.invoke("guard", {})[0] == 200


def test_bad_requests(core):
    assert core.invoke("guard", raw=b"{not json")[0] == 400
    status, body = core.invoke("nope", {})
    assert status == 404 and body["error"]["type"] == "FunctionNotFound"
    assert "guard" not in body["error"]["message"]  # no list of what else is deployed
    assert core.get("/health/live")[0] == 200
    status, body = core.get("/functions")
    assert status == 200
    names = {f["name"]: f for f in body["functions"]}
    assert set(names) == {"guard", "other", "faulty", "ondemand", "classify", "broken"}
    assert names["guard"]["status"] == "ready" and names["guard"]["workers"] == 1


def test_environment(core):
    status, body = core.invoke("guard", {"op": "env"})
    assert status == 200
    env = body["result"]
    assert env["GREETING"] == "hello" and env["PYENGINE_FUNCTION"] == "guard"
    assert env["HOME"] == os.path.join(core.root, "run", "guard")
    # The devices the group grants (device="auto" picks only granted GPUs); none for the others.
    assert env["PYENGINE_GRANTED_DEVICES"] == "/dev/zero"
    status, body = core.invoke("ondemand", {"op": "env"})
    assert status == 200 and body["result"]["PYENGINE_GRANTED_DEVICES"] == ""


@pytest.mark.skipif(os.geteuid() != 0, reason="running functions as another user needs root")
def test_on_demand_workers_stop_when_idle_and_run_as_configured_user(open_tmp):
    from pyengine.core.group import FunctionSpec
    from pyengine.core.policy import plan
    from pyengine.core.pool import FunctionPool

    base = os.path.join(open_tmp, "idle")
    code = os.path.join(base, write_code(base, "idle", OPS))
    scratch = os.path.join(base, "scratch")
    os.makedirs(scratch, mode=0o777)
    os.chmod(scratch, 0o777)
    spec = FunctionSpec(name="idle", handler="handler.function_handler", code_dir=code,
                        pinned=False, idle_s=0.3, uid=4242, gid=4243)
    pool = FunctionPool(spec, plan(spec, os.path.join(base, "root"), scratch, []),
                        landlock.abi_version() > 0)
    try:
        assert pool.start() and pool.workers() == 0  # on demand: nothing until a call
        first = pool.invoke("a", {"x": 1})
        assert first["ok"] and first["result"]["echo"] == {"x": 1}
        assert first["result"]["uid"] == 4242
        assert pool.workers() == 1
        pool.reap_idle()
        assert pool.workers() == 1  # used just now
        time.sleep(0.5)
        pool.reap_idle()
        assert pool.workers() == 0
        again = pool.invoke("b", {})
        assert again["ok"] and again["result"]["pid"] != first["result"]["pid"]
    finally:
        pool.stop()


def test_context(core):
    status, body = core.invoke("guard", {"op": "context"})
    assert status == 200
    ctx = body["result"]
    assert ctx["name"] == "guard" and ctx["id"] == body["invocation_id"]
    assert 0 < ctx["remaining"] <= 3000
    assert os.path.dirname(ctx["resources"]["ro-data"]).endswith("/dest/.ro-data.pyengine")
    assert ctx["resources"]["zero"] == "/dev/zero"
    assert f"inv={body['invocation_id']}" not in core.log()
    assert body["invocation_id"] in core.wait_log(body["invocation_id"])


@pytest.mark.parametrize("name", ["guard", "ondemand"])
def test_32_concurrent_invocations(core, name):
    with ThreadPoolExecutor(32) as ex:
        answers = list(ex.map(lambda i: core.invoke(name, {"i": i}), range(32)))
    assert [s for s, _ in answers] == [200] * 32
    assert sorted(b["result"]["echo"]["i"] for _, b in answers) == list(range(32))
    pids = {b["result"]["pid"] for _, b in answers}
    if name == "guard":
        assert len(pids) == 1  # pinned: one worker, module code ran once
    else:
        assert 1 <= len(pids) <= 4


def test_cli_invoke(core, tmp_path):
    env = dict(os.environ)
    cmd = [sys.executable, "-m", "pyengine", "invoke", "ondemand", "--root", core.root]
    out = subprocess.run(cmd + ["--payload", '{"a": [1, 2]}'], capture_output=True, text=True,
                         env=env, check=True)
    assert '"echo": {"a": [1, 2]}' in out.stdout
    payload = tmp_path / "event.json"
    payload.write_text('{"op": "raise", "value": "cli"}')
    out = subprocess.run(cmd + ["--payload", f"@{payload}"], capture_output=True, text=True,
                         env=env)
    assert out.returncode == 1
    assert "ValueError: bad event 'cli'" in out.stderr
    out = subprocess.run(cmd + ["--payload", "{oops"], capture_output=True, text=True, env=env)
    assert out.returncode == 2 and "--payload is not JSON" in out.stderr


def test_hot_model_update_under_load(core, open_tmp):
    base = os.path.dirname(core.root)
    dest = os.path.join(base, "dest", "hotmodel")
    v1 = os.path.realpath(dest)
    first = pyengine.load(os.path.join(v1, "model.pyem"))
    expected = {os.path.basename(v1): first.predict(_x())[0]}
    before = _pids(core)

    results: list[tuple[int, dict]] = []
    stop = threading.Event()

    def stream() -> None:
        while not stop.is_set():
            results.append(core.invoke("classify", {}))

    threads = [threading.Thread(target=stream) for _ in range(3)]
    for t in threads:
        t.start()
    time.sleep(0.5)
    with ThreadPoolExecutor(1) as ex:
        slow = ex.submit(core.invoke, "classify", {"slow": 1.0})
        time.sleep(0.2)
        package(os.path.join(base, "sources", "hotmodel.tar.gz"), _fill_model(2))
        redeploy(base, core.root)
        slow_status, slow_body = slow.result()
    v2 = os.path.realpath(dest)
    assert v2 != v1
    expected[os.path.basename(v2)] = pyengine.load(os.path.join(v2, "model.pyem")).predict(_x())[0]
    assert not np.allclose(*expected.values(), atol=1e-3)
    time.sleep(1.0)
    stop.set()
    for t in threads:
        t.join()

    failed = [r for r in results if r[0] != 200]
    assert failed == [] and len(results) > 20
    assert slow_status == 200 and slow_body["result"]["version"] == os.path.basename(v1)
    versions = [b["result"]["version"] for _, b in results]
    switch = versions.index(os.path.basename(v2))
    assert set(versions[:switch]) == {os.path.basename(v1)}
    assert set(versions[switch:]) == {os.path.basename(v2)}
    for _, b in results:
        np.testing.assert_allclose(b["result"]["probs"], expected[b["result"]["version"]],
                                   rtol=1e-5, atol=1e-6)
    assert _pids(core) == before  # the model changed, the code did not: no restart


def _pids(core: CoreProcess) -> dict[str, list[int]]:
    _, body = core.get("/functions")
    return {f["name"]: f["pids"] for f in body["functions"]}


def test_redeploy_changed_code_restarts_only_that_function(core):
    base = os.path.dirname(core.root)
    before = _pids(core)
    write_code(base, "ondemand", OPS.replace('"echo": event', '"echo": event, "v": 2'))
    results = []
    stop = threading.Event()

    def stream() -> None:
        while not stop.is_set():
            results.append(core.invoke("ondemand", {"n": 1}))

    t = threading.Thread(target=stream)
    t.start()
    time.sleep(0.3)
    redeploy(base, core.root)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not (results and results[-1][1]["result"].get("v") == 2):
        time.sleep(0.05)
    stop.set()
    t.join()
    assert [r for r in results if r[0] != 200] == []
    assert results[0][1]["result"].get("v") is None and results[-1][1]["result"]["v"] == 2
    after = _pids(core)
    for name in ("guard", "classify", "faulty", "other"):
        assert after[name] == before[name], name


def test_new_version_of_a_rw_resource_gets_new_workers(core):
    """Write access is bound to the version in use, so a new one needs (and gets) new workers."""
    base = os.path.dirname(core.root)
    before = _pids(core)
    old_version = os.path.realpath(os.path.join(base, "dest", "rw-data"))
    package(os.path.join(base, "sources", "rw-data.tar.gz"), text_file("data.txt", "rw-v2"))
    redeploy(base, core.root)
    path = os.path.join(base, "dest", "rw-data", "data.txt")
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and _pids(core)["guard"] == before["guard"]:
        time.sleep(0.05)
    assert _pids(core)["guard"] != before["guard"]
    assert _pids(core)["classify"] == before["classify"]
    status, body = core.invoke("guard", {"op": "read", "path": path})
    assert body["result"]["value"] == "rw-v2"
    status, body = core.invoke("guard", {"op": "write", "path": path})
    assert body["result"] == {"ok": True, "value": "written"}
    status, body = core.invoke("guard", {"op": "write",
                                         "path": os.path.join(old_version, "data.txt")})
    assert body["result"]["error"] == "PermissionError"  # the previous version is closed now
    _, body = core.invoke("guard", {"op": "context"})
    new_version = os.path.realpath(os.path.join(base, "dest", "rw-data"))
    assert body["result"]["resources"]["rw-data"] == new_version != old_version
