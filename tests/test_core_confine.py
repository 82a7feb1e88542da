"""Attacks a tenant's function makes on the core's confinement, with real cores and workers.

Each test runs the attack the way a function would: it plants modules where a worker used to
import from, forks daemons and fork bombs, reads another function's scratch. Where it matters,
the core runs both as root (each function a user of its own) and as an ordinary user (uid
65534, every function that same user).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

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
)

from pyengine.core import landlock
from pyengine.core.group import FunctionSpec
from pyengine.core.policy import WorkerPlan, plan, python_paths, writable_imports
from pyengine.core.pool import FunctionPool, InvokeError
from pyengine.core.users import FunctionUsers, UidRange, id_in_use
from pyengine.deploy import GroupError, validate_group

NOBODY = 65534

TENANT = """
import os, sys, threading, time
import numpy as np

# What a tenant writes where the old worker imported from (its cwd, the scratch): each file
# records that it ran, then tries what an unconfined module could.
PLANT = '''
import os
open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "PLANT-RAN-" + __name__),
     "w").close()
'''
PLANTS = ("numpy.py", "sitecustomize.py", "usercustomize.py", "json.py", "socket.py",
          "encodings/__init__.py", "pyengine/__init__.py", "ctypes/__init__.py")


def _try(fn):
    try:
        return {"ok": True, "value": fn()}
    except OSError as exc:
        return {"ok": False, "error": type(exc).__name__, "message": str(exc)}


def _daemon(home):
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the classic double fork: setsid, fork again, the middle one exits
        os.setsid()
        if os.fork() == 0:
            try:  # never back into the worker's code: a forked copy must not answer the call
                with open(os.path.join(home, "daemon.pid"), "w") as fh:
                    fh.write(str(os.getpid()))
                os.write(w, str(os.getpid()).encode())
                time.sleep(600)
            finally:
                os._exit(0)
        os._exit(0)
    os.waitpid(pid, 0)
    os.close(w)
    got = int(os.read(r, 32))
    os.close(r)
    return got


def function_handler(event, context):
    op = event.get("op")
    home = os.environ["HOME"]
    if op == "plant":
        for rel in PLANTS:
            path = os.path.join(home, rel)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "w") as fh:
                fh.write(PLANT)
        return sorted(os.listdir(home))
    if op == "interpreter":
        return {"numpy": np.__file__, "sum": float(np.ones(3).sum()), "sys_path": sys.path,
                "cwd": os.getcwd(), "isolated": sys.flags.isolated, "env": dict(os.environ),
                "home_listing": sorted(os.listdir(home))}
    if op == "read":
        return _try(lambda: open(event["path"]).read())
    if op == "listdir":
        return _try(lambda: sorted(os.listdir(event["path"])))
    if op == "write":
        def write():
            with open(os.path.join(home, event["name"]), "w") as fh:
                fh.write(event["text"])
            return "written"
        return _try(write)
    if op == "sleep":
        time.sleep(event["s"])
    if op == "daemon":
        pid = _daemon(home)
        if event.get("then") == "exit":
            os._exit(3)  # the worker dies on its own; the daemon stays behind
        if event.get("then") == "sleep":
            time.sleep(event["s"])
        return pid
    if op == "fork":
        pids, error = [], ""
        for _ in range(event["n"]):
            try:
                pid = os.fork()
            except OSError as exc:
                error = type(exc).__name__
                break
            if pid == 0:
                time.sleep(30)
                os._exit(0)
            pids.append(pid)
        return {"pids": pids, "error": error}
    if op == "threads":
        started, error = 0, ""
        for _ in range(event["n"]):
            try:
                threading.Thread(target=time.sleep, args=(30,), daemon=True).start()
            except RuntimeError as exc:
                error = str(exc)
                break
            started += 1
        return {"started": started, "error": error}
    return {"uid": os.getuid(), "pid": os.getpid()}
"""


@pytest.fixture()
def open_tmp():
    """A directory every user can traverse (pytest's own tmp is private to root)."""
    path = tempfile.mkdtemp(prefix="pyengine-confine-test-")
    os.chmod(path, 0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _ok(core: CoreProcess, function_name: str, **event) -> Any:
    status, body = core.invoke(function_name, event)
    assert status == 200, body
    return body["result"]


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            state = fh.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


def _gone(pids: list[int], timeout_s: float = 5.0) -> list[int]:
    """The pids still alive after ``timeout_s`` (empty: all gone)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        alive = [p for p in pids if _alive(p)]
        if not alive:
            return []
        time.sleep(0.05)
    return [p for p in pids if _alive(p)]


def _start(base: str, kind: str, functions: list[dict], resources: list[dict] | None = None,
           config: dict | None = None, env: dict[str, str] | None = None) -> CoreProcess:
    """Deploy ``functions`` and start a core as root or as uid 65534 ("user")."""
    if kind == "user" and os.geteuid() != 0:
        pytest.skip("starting the core as another user needs root")
    root = os.path.join(base, "root")
    deploy_group(base, root, resources or [], functions)
    args: tuple[str, ...] = ()
    if config is not None:
        path = os.path.join(base, "core.json")
        with open(path, "w") as fh:
            json.dump(config, fh)
        args = ("--config", path)
    user = None
    if kind == "user":
        chown_tree(base, NOBODY, NOBODY)
        user = NOBODY
    return CoreProcess(root, user=user, env=env, args=args).wait_ready()


CORES = ["root", "user"]


@pytest.mark.parametrize("kind", CORES)
def test_planted_modules_are_never_imported(open_tmp, kind):
    base = os.path.join(open_tmp, kind)
    os.makedirs(base)
    resources = [model_resource(base, "secret", text_file("data.txt", "secret-content"))]
    functions = [function(base, "tenant", TENANT, timeout_s=1.0),
                 function(base, "victim", TENANT, (("secret", "ro"),))]
    core = _start(base, kind, functions, resources,
                  env={"PYENGINE_CORE_ONLY": "core-secret", "LD_LIBRARY_PATH": "/nonexistent"})
    try:
        planted = _ok(core, "tenant", op="plant")
        assert "numpy.py" in planted and "sitecustomize.py" in planted
        # A new worker (the timeout kills this one) starts where the plants lie.
        status, body = core.invoke("tenant", {"op": "sleep", "s": 5})
        assert status == 504, body
        got = _ok(core, "tenant", op="interpreter")
        scratch = os.path.join(core.root, "run", "tenant")
        assert not [n for n in got["home_listing"] if n.startswith("PLANT-RAN")], got
        assert not [n for n in os.listdir(scratch) if n.startswith("PLANT-RAN")]
        assert got["sum"] == 3.0 and "site-packages" in got["numpy"], got["numpy"]
        assert got["isolated"] == 1
        assert "" not in got["sys_path"] and not any(
            p.startswith(scratch) for p in got["sys_path"]), got["sys_path"]
        assert got["cwd"] == os.path.realpath(os.path.join(core.root, "functions", "tenant",
                                                           "current"))
        # The worker's environment is the core's allow-list, nothing inherited from the core.
        assert "PYENGINE_CORE_ONLY" not in got["env"] and "LD_LIBRARY_PATH" not in got["env"]
        assert not [k for k in got["env"] if k.startswith("PYTHON")], got["env"]
        if landlock.abi_version() > 0:
            secret = os.path.join(base, "dest", "secret", "data.txt")
            assert _ok(core, "tenant", op="read", path=secret)["error"] == "PermissionError"
            assert _ok(core, "victim", op="read", path=secret)["value"] == "secret-content"
    finally:
        core.stop()


def test_loader_and_interpreter_variables_are_refused(tmp_path):
    code = tmp_path / "fn"
    code.mkdir()
    (code / "handler.py").write_text("def function_handler(event, context):\n    return 1\n")
    env = {"LD_PRELOAD": "/tmp/evil.so", "PYTHONPATH": "/tmp", "PYTHONSTARTUP": "/tmp/s.py",
           "GCONV_PATH": "/tmp", "BASH_ENV": "/tmp/rc", "PYENGINE_RESOURCES": "{}",
           "bad-name": "x", "OMP_NUM_THREADS": "1", "GREETING": "hello"}
    data = {"name": "g", "functions": [{"name": "f", "handler": "handler.function_handler",
                                        "code": str(code), "environment": env}]}
    with pytest.raises(GroupError) as ei:
        validate_group(data, str(tmp_path / "group.yaml"))
    text = str(ei.value)
    for key in ("LD_PRELOAD", "PYTHONPATH", "PYTHONSTARTUP", "GCONV_PATH", "BASH_ENV",
                "PYENGINE_RESOURCES", "bad-name"):
        assert f"functions[0].environment.{key}: " in text, (key, text)
    assert "the dynamic loader" in text and "the Python interpreter" in text
    assert "OMP_NUM_THREADS" not in text and "GREETING" not in text
    # A state written before this check: the core refuses to start the function.
    spec = FunctionSpec(name="old", handler="handler.function_handler", code_dir=str(code),
                        environment={"LD_PRELOAD": "/tmp/evil.so"})
    pool = FunctionPool(spec, plan(spec, str(tmp_path / "root"), str(tmp_path), []), False)
    with pytest.raises(InvokeError) as ie:
        pool.invoke("x", {})
    assert ie.value.kind == "FunctionInitError" and "'LD_PRELOAD' is not allowed" in str(ie.value)


@pytest.mark.skipif(os.geteuid() != 0, reason="users of their own need the core to run as root")
def test_functions_cannot_read_each_others_scratch(open_tmp):
    """Without Landlock, only the uids and the 0700 scratch directories separate tenants."""
    base = os.path.join(open_tmp, "scratch")
    os.makedirs(base)
    core = _start(base, "root", [function(base, "alice", TENANT), function(base, "bob", TENANT)],
                  env={"PYENGINE_LANDLOCK": "off"})
    try:
        assert _ok(core, "alice", op="write", name="notes.txt", text="alice's")["ok"]
        alice_dir = os.path.join(core.root, "run", "alice")
        uid_a, uid_b = _ok(core, "alice")["uid"], _ok(core, "bob")["uid"]
        assert uid_a != uid_b and uid_a in UidRange() and uid_b in UidRange()
        st = os.stat(alice_dir)
        assert (st.st_uid, st.st_mode & 0o777) == (uid_a, 0o700)
        assert os.stat(os.path.join(alice_dir, "notes.txt")).st_uid == uid_a
        for op, path in (("read", os.path.join(alice_dir, "notes.txt")), ("listdir", alice_dir)):
            got = _ok(core, "bob", op=op, path=path)
            assert got["error"] == "PermissionError", (op, got)
        users = os.path.join(core.root, "users.json")
        assert os.stat(users).st_mode & 0o777 == 0o600
        assert "each function runs as a user of its own" in core.log()
    finally:
        core.stop()
    # The allocation outlives the core: the same uids after a restart.
    again = CoreProcess(core.root, env={"PYENGINE_LANDLOCK": "off"}).wait_ready()
    try:
        assert (_ok(again, "alice")["uid"], _ok(again, "bob")["uid"]) == (uid_a, uid_b)
        assert _ok(again, "alice", op="read", path=os.path.join(alice_dir, "notes.txt"))[
            "value"] == "alice's"
    finally:
        again.stop()


@pytest.mark.parametrize("kind", CORES)
def test_daemons_die_with_their_worker_and_the_core(open_tmp, kind):
    base = os.path.join(open_tmp, kind)
    os.makedirs(base)
    # 3 s: the call must outlive the double fork on a loaded machine, then time out.
    core = _start(base, kind, [function(base, "spawner", TENANT, timeout_s=3.0)])
    scratch = os.path.join(core.root, "run", "spawner")
    stopped = False
    try:
        # A daemon forked by a call that then times out.
        status, body = core.invoke("spawner", {"op": "daemon", "then": "sleep", "s": 30})
        assert status == 504, body
        with open(os.path.join(scratch, "daemon.pid")) as fh:
            timed_out = int(fh.read())
        assert _gone([timed_out]) == []
        # A daemon whose worker then dies on its own (the core is the orphans' subreaper).
        kept = _ok(core, "spawner", op="daemon")
        assert _alive(kept)  # while its worker lives
        if "a cgroup v2 per worker" in core.log():  # the daemon is in its worker's cgroup
            with open(f"/proc/{kept}/cgroup") as fh:
                assert "/pyengine-" in fh.read()
        status, body = core.invoke("spawner", {"op": "daemon", "then": "exit"})
        assert status == 502 and body["error"]["type"] == "WorkerDied", body
        with open(os.path.join(scratch, "daemon.pid")) as fh:
            orphan = int(fh.read())
        assert _gone([kept, orphan]) == []
        assert "left behind by workers that ended" in core.wait_log("left behind by workers that ended")
        # A daemon alive when the core stops.
        last = _ok(core, "spawner", op="daemon")
        assert _alive(last)
        core.stop()
        stopped = True
        assert _gone([last]) == []
    finally:
        if not stopped:
            core.stop()


@pytest.mark.parametrize("kind", CORES)
def test_daemons_die_when_the_core_is_killed(open_tmp, kind):
    base = os.path.join(open_tmp, kind)
    os.makedirs(base)
    core = _start(base, kind, [function(base, "idle", TENANT, pinned=True),
                               function(base, "stuck", TENANT, pinned=True, timeout_s=600)])
    stuck: list[int] = []
    try:
        daemon = _ok(core, "idle", op="daemon")
        worker = _ok(core, "idle")["pid"]
        stuck.append(_ok(core, "stuck")["pid"])
        pidfile = os.path.join(core.root, "run", "stuck", "daemon.pid")
        with ThreadPoolExecutor(1) as ex:  # a call that never ends, with a daemon of its own
            ex.submit(core.invoke, "stuck", {"op": "daemon", "then": "sleep", "s": 3600})
            deadline = time.monotonic() + 30
            while not os.path.exists(pidfile) and time.monotonic() < deadline:
                time.sleep(0.02)
            with open(pidfile) as fh:
                stuck.append(int(fh.read()))
            core.proc.kill()  # no stop: the core cannot clean up
            core.proc.wait()
        # An idle worker sees its sockets close, exits and takes what it started with it.
        assert _gone([worker, daemon]) == []
        if "a cgroup v2 per worker" not in core.log():
            return  # a worker busy in a call lingers until the call ends (docs/core.md)
        assert all(_alive(p) for p in stuck)
        # A core started again on the root kills what the killed core's cgroups still hold.
        os.unlink(os.path.join(core.root, "core.json"))  # the killed core's address
        again = CoreProcess(core.root, user=NOBODY if kind == "user" else None).wait_ready()
        again.stop()
        assert "worker cgroup(s) a previous core left" in again.log()
        assert _gone(stuck) == []
    finally:
        core.stop()
        for p in stuck:
            with contextlib.suppress(ProcessLookupError):
                os.kill(p, signal.SIGKILL)


@pytest.mark.parametrize("kind", CORES)
def test_fork_and_thread_bombs_are_bounded(open_tmp, kind):
    base = os.path.join(open_tmp, kind)
    os.makedirs(base)
    limit = 48
    core = _start(base, kind, [function(base, "bomber", TENANT, timeout_s=2.0),
                               function(base, "bystander", TENANT)],
                  config={"functions": {"processes_max": limit}})
    try:
        threads = _ok(core, "bomber", op="threads", n=200)
        assert threads["started"] < limit and "can't start new thread" in threads["error"]
        status, body = core.invoke("bomber", {"op": "sleep", "s": 5})
        assert status == 504, body
        got = _ok(core, "bomber", op="fork", n=200)  # a new worker: the threads went with the old
        assert got["error"] == "BlockingIOError", got
        if kind == "root":  # its own user: the limit counts this function's tasks only
            assert 0 < len(got["pids"]) < limit
        else:  # the core's user: the limit adds to what that user ran when the worker started
            # (other processes of that user ending meanwhile leave the bomber their share)
            assert 0 < len(got["pids"]) < 200
        # Another function starts and answers while the bomber's processes hold its limit.
        assert _ok(core, "bystander")["pid"] > 0
        status, body = core.invoke("bomber", {"op": "sleep", "s": 5})
        assert status == 504, body
        assert _gone(got["pids"]) == []
        assert _ok(core, "bomber")["pid"] > 0  # a new worker starts: the tasks were freed
    finally:
        core.stop()


def test_rw_resource_is_one_functions_alone(tmp_path):
    for name in ("writer", "reader"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "handler.py").write_text("def function_handler(e, c):\n    return 1\n")
    data = {"name": "g",
            "resources": [{"id": "weights", "model": {
                "source": "file:///nonexistent.tar.gz", "destination": str(tmp_path / "dest"),
                "owner": {"permission": "rw"}}}],
            "functions": [
                {"name": "writer", "handler": "handler.function_handler",
                 "code": str(tmp_path / "writer"),
                 "resources": [{"id": "weights", "permission": "rw"}]},
                {"name": "reader", "handler": "handler.function_handler",
                 "code": str(tmp_path / "reader"),
                 "resources": [{"id": "weights", "permission": "ro"}]}]}
    with pytest.raises(GroupError) as ei:
        validate_group(data, str(tmp_path / "group.yaml"))
    assert "functions[1].resources[0]: resource 'weights' is granted rw to function 'writer'" \
        in str(ei.value)
    data["functions"][1]["resources"] = []
    validate_group(data, str(tmp_path / "group.yaml"))  # one writer alone is fine
    # A device (a GPU) is shared rw as the group says: no file of it can be truncated.
    data["resources"].append({"id": "null", "device": {"path": "/dev/null"}})
    for f in data["functions"]:
        f["resources"] = [{"id": "null", "permission": "rw"}]
    validate_group(data, str(tmp_path / "group.yaml"))


def test_deploy_does_not_call_a_modified_rw_version_unchanged(tmp_path):
    base = str(tmp_path)
    root = os.path.join(base, "root")
    res = model_resource(base, "weights", text_file("w.bin", "A" * 4096),
                         owner={"permission": "rw"})
    fn = function(base, "writer", "def function_handler(e, c):\n    return 1\n",
                  (("weights", "rw"),))
    deploy_group(base, root, [res], [fn])
    again = redeploy(base, root)
    assert {i.key: i.outcome for i in again.items}["weights"] == "unchanged"
    data = os.path.join(base, "dest", "weights", "w.bin")
    before = os.path.realpath(data)
    with open(data, "r+b") as fh:  # what a function with rw (or an attacker) does in place
        fh.truncate(10)
    shown = subprocess.run([sys.executable, "-m", "pyengine", "deploy",
                            os.path.join(base, "group.json"), "--root", root],
                           capture_output=True, text=True)
    assert shown.returncode == 0, shown.stderr
    line = [ln for ln in shown.stdout.splitlines() if " weights " in ln]
    assert line and line[0].split()[2] == "modified", shown.stdout
    assert "no longer matches the source" in shown.stdout and "w.bin" in shown.stdout
    assert os.path.realpath(data) == before  # the writer keeps what it wrote
    # A new source version is installed as usual, and reported unchanged while untouched.
    package(os.path.join(base, "sources", "weights.tar.gz"), text_file("w.bin", "B" * 4096))
    d = redeploy(base, root)
    assert {i.key: i.outcome for i in d.items}["weights"] == "installed"
    with open(data) as fh:
        assert fh.read() == "B" * 4096
    assert {i.key: i.outcome for i in redeploy(base, root).items}["weights"] == "unchanged"


def test_function_users_skip_taken_ids_and_are_recorded(tmp_path):
    root = str(tmp_path / "root")
    os.makedirs(root)
    registry = str(tmp_path / "run" / "uids.json")
    # A range whose only id an account (root) uses: nothing to allocate.
    assert id_in_use(0) == "user 'root'"
    with pytest.raises(RuntimeError, match=r"no free uid left for function 'f' in the range 0-0"):
        FunctionUsers(root, UidRange(0, 1), registry).user_for("f")
    # nobody (65534) is skipped; the next id that no account uses is given and kept.
    users = FunctionUsers(root, UidRange(NOBODY, 200), registry)
    first = users.user_for("a")
    assert first[0] != NOBODY and first[0] == first[1] and not id_in_use(first[0])
    second = users.user_for("b")
    assert second != first
    with open(os.path.join(root, "users.json")) as fh:
        assert json.load(fh) == {"functions": {"a": first[0], "b": second[0]}}
    assert os.stat(os.path.join(root, "users.json")).st_mode & 0o777 == 0o600
    again = FunctionUsers(root, UidRange(NOBODY, 200), registry)
    assert again.user_for("b") == second and again.user_for("a") == first
    # Another root on the host never gets a uid this one holds.
    other_root = str(tmp_path / "other")
    os.makedirs(other_root)
    other = FunctionUsers(other_root, UidRange(NOBODY, 200), registry)
    assert other.user_for("a")[0] not in (first[0], second[0])
    # A uid two roots recorded (before the registry, or after a reboot): the second to start
    # gives it up.
    with open(os.path.join(other_root, "users.json"), "w") as fh:
        json.dump({"functions": {"a": first[0]}}, fh)
    assert FunctionUsers(other_root, UidRange(NOBODY, 200), registry).user_for("a")[0] not in (
        first[0], second[0])
    # A root that is gone frees its uids.
    shutil.rmtree(root)
    third = str(tmp_path / "third")
    os.makedirs(third)
    assert FunctionUsers(third, UidRange(NOBODY, 200), registry).user_for("x") == first


def test_writable_import_directories_are_found():
    """Where Landlock is off, the core warns when a function's user could plant a module in
    a directory every worker imports from (here: root owns the interpreter's)."""
    as_owner = WorkerPlan(uid=0, gid=0, groups=(), scratch="/nonexistent", rules=())
    as_other = WorkerPlan(uid=NOBODY + 1, gid=NOBODY + 1, groups=(), scratch="/nonexistent",
                          rules=())
    owned = [p for p in python_paths() if os.stat(p).st_uid == 0
             and os.stat(p).st_mode & 0o200 and os.path.isdir(p)]
    assert set(owned) <= set(writable_imports(as_owner))
    assert any("site-packages" in p for p in writable_imports(as_owner)) == any(
        "site-packages" in p for p in owned)
    assert [p for p in writable_imports(as_other)
            if not os.stat(p).st_mode & 0o002] == []  # only world-writable ones, if any
