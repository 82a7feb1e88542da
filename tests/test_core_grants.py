"""What the group file grants a function, enforced by a real core run as root: ``run_as``,
``concurrency``, ``idle_timeout_s``, volume resources and device resources (a node made with
mknod, owned by a fresh group, mode 0660).

Each function runs as a user of its own (or its ``run_as``); Landlock decides what it may open,
the file modes and the supplementary groups the core gives it decide the rest.
"""

from __future__ import annotations

import grp
import json
import os
import shutil
import stat
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Iterator

import pytest
from core_helpers import CoreProcess, deploy_group, function

from pyengine import deploy as dp
from pyengine.core import landlock
from pyengine.core.group import FunctionSpec, ResourceGrant
from pyengine.core.policy import plan
from pyengine.device_files import device_nodes

root_only = pytest.mark.skipif(os.geteuid() != 0, reason="a core switches users (and mknod works) "
                               "only as root; these tests check what each function's user may do")

HANDLER = """
import errno, fcntl, os, termios, time


def _try(fn):
    try:
        return {"ok": True, "value": fn()}
    except OSError as exc:
        return {"ok": False, "errno": errno.errorcode.get(exc.errno, str(exc.errno))}


def _read(path):
    with open(path, "rb") as fh:
        return len(fh.read())


def _write(path):
    with open(path, "w") as fh:
        fh.write("written by " + os.environ["PYENGINE_FUNCTION"])
    return True


def _ioctl(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.ioctl(fd, termios.TCGETS, bytes(64))
        return "a terminal"
    except OSError as exc:
        if exc.errno == errno.ENOTTY:  # the driver answered: the ioctl was let through
            return "reached the driver"
        raise
    finally:
        os.close(fd)


def _run(path):
    os.execv(path, [path])


def function_handler(event, context):
    op = event.get("op")
    if op == "ids":
        return {"uid": os.getuid(), "gid": os.getgid(), "groups": sorted(os.getgroups()),
                "pid": os.getpid()}
    if op == "sleep":
        start = time.time()
        time.sleep(event["s"])
        return {"pid": os.getpid(), "start": start, "end": time.time()}
    if op == "volume":
        d = event["path"]
        name = "out-" + os.environ["PYENGINE_FUNCTION"] + ".txt"
        return {"read": _try(lambda: _read(os.path.join(d, "frame.txt"))),
                "list": _try(lambda: sorted(os.listdir(d))),
                "write": _try(lambda: _write(os.path.join(d, name)))}
    if op == "device":
        p = event["path"]
        return {"read": _try(lambda: _read(p)),
                "write": _try(lambda: os.close(os.open(p, os.O_WRONLY))),
                "ioctl": _try(lambda: _ioctl(p))}
    raise ValueError(op)
"""


def _free_gid() -> int:
    for gid in range(47000, 48000):
        try:
            grp.getgrgid(gid)
        except KeyError:
            return gid
    raise RuntimeError("no free gid in 47000-47999")


@pytest.fixture()
def open_tmp() -> Iterator[str]:
    """A directory every user can traverse (pytest's own tmp is private to root)."""
    path = tempfile.mkdtemp(prefix="pyengine-grants-test-")
    os.chmod(path, 0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture()
def null_copy() -> Iterator[tuple[str, int]]:
    """A character device with /dev/null's major/minor under /dev (device resources must be
    there), owned by root and a fresh group, mode 0660: (its path, the group)."""
    path = f"/dev/pyengine-test-{uuid.uuid4().hex[:12]}"
    gid = _free_gid()
    os.mknod(path, 0o600 | stat.S_IFCHR, os.makedev(1, 3))
    try:
        os.chown(path, 0, gid)
        os.chmod(path, 0o660)
        yield path, gid
    finally:
        os.unlink(path)


def _ok(core: CoreProcess, name: str, **event: Any) -> Any:
    status, body = core.invoke(name, event)
    assert status == 200, body
    return body["result"]


def _groups(core: CoreProcess, name: str) -> set[int]:
    """The supplementary groups of ``name``'s worker, as this (the initial) user namespace sees
    them: inside the worker's own namespace (an empty network) unmapped ids read as 65534."""
    pid = _ok(core, name, op="ids")["pid"]
    with open(f"/proc/{pid}/status") as fh:
        line = [ln for ln in fh if ln.startswith("Groups:")][0]
    return {int(g) for g in line.split()[1:]}


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except FileNotFoundError:
        return False


@root_only
def test_run_as_concurrency_and_idle_timeout(open_tmp, monkeypatch):
    base = open_tmp
    root = os.path.join(base, "root")
    allow = os.path.join(base, "allow-root.json")
    with open(allow, "w") as fh:
        json.dump({"functions": {"allow_root": True}}, fh)
    monkeypatch.setenv("PYENGINE_CORE_CONFIG", allow)  # validation lets run_as root through
    deploy_group(base, root, [], [
        function(base, "runas", HANDLER, run_as={"uid": 4242, "gid": 4343}),
        function(base, "asroot", HANDLER, run_as={"uid": 0, "gid": 0}),
        function(base, "limited", HANDLER, concurrency=2),
        function(base, "idler", HANDLER, idle_timeout_s=1.0),
    ])
    # `core start --config` defaults to the same variable: without it, the core's
    # configuration does not allow root.
    monkeypatch.delenv("PYENGINE_CORE_CONFIG")
    core = CoreProcess(root).wait_ready()
    try:
        ids = _ok(core, "runas", op="ids")
        assert (ids["uid"], ids["gid"]) == (4242, 4343), ids
        status, body = core.invoke("asroot", {"op": "ids"})
        assert status == 502 and body["error"]["type"] == "FunctionInitError", body
        assert "'asroot' cannot start: its run_as (0:0) is root" in body["error"]["message"]
        assert "functions.allow_root: true" in body["error"]["message"]

        with ThreadPoolExecutor(5) as ex:
            runs = list(ex.map(lambda _: _ok(core, "limited", op="sleep", s=0.5), range(5)))
        edges = sorted([(r["start"], 1) for r in runs] + [(r["end"], -1) for r in runs])
        at_once, most = 0, 0
        for _, step in edges:
            at_once += step
            most = max(most, at_once)
        assert most == 2, runs  # two ran together, never three
        assert len({r["pid"] for r in runs}) == 2, runs

        pid = _ok(core, "idler", op="ids")["pid"]
        kept = _ok(core, "limited", op="ids")["pid"]  # the default: 60 s idle
        deadline = time.monotonic() + 10
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _alive(pid), "the idle worker did not stop"
        assert _alive(kept)
        assert _ok(core, "idler", op="ids")["pid"] != pid  # the next call starts a new one
    finally:
        core.stop()
    assert "cannot start: its run_as (0:0) is root" in core.log()
    core = CoreProcess(root, args=("--config", allow)).wait_ready()
    try:
        ids = _ok(core, "asroot", op="ids")
        assert (ids["uid"], ids["gid"]) == (0, 0)
    finally:
        core.stop()


def _needs_landlock(abi: int) -> None:
    if landlock.abi_version() < abi:
        pytest.skip(f"the kernel lacks Landlock ABI {abi} (has {landlock.abi_version()})")


@root_only
def test_volume_grants(open_tmp):
    _needs_landlock(1)
    base = open_tmp
    root = os.path.join(base, "root")
    volume = os.path.join(base, "captures")
    os.mkdir(volume)
    gid = _free_gid()
    with open(os.path.join(volume, "frame.txt"), "w") as fh:
        fh.write("pixels")
    # Group-writable, other-nothing: only the group the core gives the functions reaches it,
    # and only Landlock keeps a ro function from writing.
    for p in (volume, os.path.join(volume, "frame.txt")):
        os.chown(p, 0, gid)
    os.chmod(volume, 0o2770)
    os.chmod(os.path.join(volume, "frame.txt"), 0o660)
    res = {"id": "captures", "volume": {"path": volume}}
    deploy_group(base, root, [res], [
        function(base, "vro", HANDLER, (("captures", "ro"),)),
        function(base, "vrw", HANDLER, (("captures", "rw"),)),
        function(base, "vnone", HANDLER),
    ])
    core = CoreProcess(root).wait_ready()
    try:
        ro = _ok(core, "vro", op="volume", path=volume)
        assert ro["read"] == {"ok": True, "value": 6} and ro["list"]["ok"], ro
        assert ro["write"] == {"ok": False, "errno": "EACCES"}, ro
        assert gid in _groups(core, "vro")
        rw = _ok(core, "vrw", op="volume", path=volume)
        assert rw["read"]["ok"] and rw["write"] == {"ok": True, "value": True}, rw
        with open(os.path.join(volume, "out-vrw.txt")) as fh:
            assert fh.read() == "written by vrw"
        none = _ok(core, "vnone", op="volume", path=volume)
        assert not none["read"]["ok"] and not none["list"]["ok"] and not none["write"]["ok"], none
        assert gid not in _groups(core, "vnone")
    finally:
        core.stop()
    assert not os.path.exists(os.path.join(volume, "out-vro.txt"))
    assert not os.path.exists(os.path.join(volume, "out-vnone.txt"))


@root_only
def test_volume_must_exist_outside_the_root(open_tmp):
    base = open_tmp
    root = os.path.join(base, "root")
    for path, fragment in ((os.path.join(base, "nowhere"), "is not an existing directory"),
                           (root, "overlaps the core's root")):
        os.makedirs(root, exist_ok=True)
        with open(os.path.join(base, "group.json"), "w") as fh:
            json.dump({"name": "g", "resources": [{"id": "v", "volume": {"path": path}}]}, fh)
        d = dp.deploy(os.path.join(base, "group.json"), root, wait_s=30)
        assert d.status == "Failure", d
        item = {i.key: i for i in d.items}["v"]
        assert item.outcome == "failed" and fragment in item.message and path in item.message


@root_only
def test_device_grants(open_tmp, null_copy):
    _needs_landlock(5)  # ioctl rights on devices
    node, gid = null_copy
    base = open_tmp
    root = os.path.join(base, "root")
    res = {"id": "sensor", "device": {"path": node}}
    deploy_group(base, root, [res], [
        function(base, "dro", HANDLER, (("sensor", "ro"),)),
        function(base, "drw", HANDLER, (("sensor", "rw"),)),
        function(base, "dnone", HANDLER),
    ])
    core = CoreProcess(root).wait_ready()
    try:
        assert _ok(core, "dro", op="ids")["uid"] != 0  # a user of its own
        assert gid in _groups(core, "dro")  # with the node's group
        ro = _ok(core, "dro", op="device", path=node)
        assert ro["read"] == {"ok": True, "value": 0}, ro  # /dev/null reads as empty
        assert ro["ioctl"] == {"ok": True, "value": "reached the driver"}, ro
        assert ro["write"] == {"ok": False, "errno": "EACCES"}, ro  # Landlock: the modes allow
        rw = _ok(core, "drw", op="device", path=node)
        assert rw["read"]["ok"] and rw["write"]["ok"] and rw["ioctl"]["ok"], rw
        none = _ok(core, "dnone", op="device", path=node)
        assert none["read"] == {"ok": False, "errno": "EACCES"}, none
        assert not none["write"]["ok"] and not none["ioctl"]["ok"], none
        assert gid not in _groups(core, "dnone")
    finally:
        core.stop()


@pytest.fixture()
def fake_gpu() -> Iterator[str]:
    """/dev/nvidiaN copied from /dev/null's numbers, where no NVIDIA driver is installed."""
    if os.path.exists("/dev/nvidiactl"):
        pytest.skip("an NVIDIA driver is installed: its nodes are not replaced by test copies")
    made: list[str] = []

    def mknod(path: str) -> None:
        os.mknod(path, 0o660 | stat.S_IFCHR, os.makedev(1, 3))
        made.append(path)

    mknod("/dev/nvidia250")
    try:
        yield mknod  # type: ignore[misc]
    finally:
        for p in made:
            os.unlink(p)


@root_only
def test_gpu_grants_its_companions_or_names_the_missing_one(open_tmp, fake_gpu):
    mknod = fake_gpu
    base = open_tmp
    root = os.path.join(base, "root")
    with open(os.path.join(base, "group.json"), "w") as fh:
        json.dump({"name": "g", "resources": [{"id": "gpu", "device": {
            "path": "/dev/nvidia250"}}]}, fh)
    d = dp.deploy(os.path.join(base, "group.json"), root, wait_s=30)
    item = {i.key: i for i in d.items}["gpu"]
    assert d.status == "Failure" and "GPU /dev/nvidia250 needs /dev/nvidiactl, /dev/nvidia-uvm, " \
        "which does not exist" in item.message, item
    spec = FunctionSpec("f", "h.f", base, resources=(ResourceGrant(
        "gpu", "/dev/nvidia250", "rw", "device", "/dev/nvidia250"),))
    refused = plan(spec, root, os.path.join(base, "scratch"), [])
    assert "needs /dev/nvidiactl" in refused.refused and "needs /dev/nvidia-uvm" in refused.refused
    mknod("/dev/nvidiactl")
    mknod("/dev/nvidia-uvm")
    video = _free_gid()
    os.chown("/dev/nvidia-uvm", 0, video)
    assert device_nodes("/dev/nvidia250") == (
        ["/dev/nvidia250", "/dev/nvidiactl", "/dev/nvidia-uvm"]
        + [p for p in ("/dev/nvidia-uvm-tools", "/dev/nvidia-modeset") if os.path.exists(p)], [])
    ok = plan(spec, root, os.path.join(base, "scratch"), [])
    assert not ok.refused
    rules = dict(ok.rules)
    assert all(rules[n] == "device-rw" for n in ("/dev/nvidia250", "/dev/nvidiactl",
                                                 "/dev/nvidia-uvm"))
    assert video in ok.groups and 0 not in ok.groups
    assert dp.deploy(os.path.join(base, "group.json"), root, wait_s=30).status == "Success"


def test_the_core_checks_volumes_again(open_tmp):
    """What changed since the deploy: a link swapped to a system directory, a volume that now
    overlaps the root (the core's own checks, in its plan)."""
    base = open_tmp
    root = os.path.join(base, "root")
    os.makedirs(root)
    link = os.path.join(base, "captures")
    os.symlink("/etc", link)

    def refused(path: str) -> str:
        spec = FunctionSpec("f", "h.f", base, resources=(ResourceGrant(
            "v", path, "rw", "volume", path),))
        return plan(spec, root, os.path.join(base, "scratch"), []).refused

    assert "'f' cannot start: volume resource 'v' (" + link + ", really /etc) is inside " \
        "/etc" in refused(link)
    os.mkdir(os.path.join(root, "run"))
    assert "overlaps " + os.path.realpath(root) in refused(os.path.join(root, "run"))
    assert "is not an existing directory" in refused(os.path.join(base, "gone"))
    os.unlink(link)
    os.mkdir(link)
    assert refused(link) == ""
