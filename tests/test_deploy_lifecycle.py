"""Deployments end to end with file:// sources: outcomes, rollback on failure or keep, the
rollback/reset/deployments/resources commands, change detection, ownership and modes, the root
lock, progress output, the API the core uses, and importing without the native core."""

from __future__ import annotations

import os
import pty
import stat
import subprocess
import sys
import threading
import time

import pytest
from deploy_fixtures import World, check_complete, run_cli, write_group

from pyengine import deploy as dp


@pytest.fixture
def world(tmp_path) -> World:
    return World(tmp_path)


def test_outcomes_and_current_api(world):
    d = dp.deploy(world.group(), world.root)
    assert d.status == "Success" and d.kind == "deploy" and d.applied
    assert {(i.kind, i.key): i.outcome for i in d.items} == {
        ("model", "alpha"): "installed",
        ("model", "beta"): "installed",
        ("device", "null"): "verified",
        ("function", "classify"): "installed",
    }
    cur = dp.current(world.root)
    assert cur is not None and cur.deployment_id == d.id and cur.name == "line-1"
    assert cur.resource_path("alpha") == world.dest["alpha"]
    assert cur.resources["alpha"].version_path == os.path.realpath(world.dest["alpha"])
    assert cur.resources["null"].path == "/dev/null" and cur.resources["null"].kind == "device"
    fn = cur.functions["classify"]
    assert fn.handler == "classify.function_handler" and fn.environment == {"MODE": "test"}
    with open(os.path.join(fn.code_dir, "classify.py")) as f:
        assert "TAG = 'v1'" in f.read()
    assert fn.code_dir.startswith(os.path.join(world.root, "functions", "classify"))
    assert os.path.realpath(fn.code_link) == fn.code_dir
    with pytest.raises(KeyError, match="no resource 'nope' is deployed"):
        cur.resource_path("nope")

    world.set_code("v2")
    d2 = dp.deploy(world.group(), world.root)
    outcomes = {i.key: i.outcome for i in d2.items}
    assert outcomes == {
        "alpha": "unchanged",
        "beta": "unchanged",
        "null": "verified",
        "classify": "installed",
    }
    assert d2.bytes_downloaded == 0
    fn2 = dp.current(world.root).functions["classify"]
    with open(os.path.join(fn2.code_dir, "classify.py")) as f:
        assert "TAG = 'v2'" in f.read()


def test_file_change_detection(world):
    dp.deploy(world.group(), world.root)
    st = os.stat(world.pkg["alpha"])
    os.utime(
        world.pkg["alpha"], ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000)
    )  # touched only
    d = dp.deploy(world.group(), world.root)
    assert {i.key: i.outcome for i in d.items}["alpha"] == "unchanged"
    world.set_pkg("alpha", "v2")
    d = dp.deploy(world.group(), world.root)
    assert {i.key: i.outcome for i in d.items}["alpha"] == "installed"
    assert world.tag("alpha") == "v2" and world.tag("beta") == "v1"


def test_failure_rolls_back_whole_deployment(world):
    dp.deploy(world.group(), world.root)
    world.set_pkg("alpha", "v2")
    with open(world.pkg["beta"], "w") as f:
        f.write("<html>error</html>")
    d = dp.deploy(world.group(), world.root)
    assert d.status == "Failure" and not d.applied
    out = {i.key: i for i in d.items}
    assert out["alpha"].outcome == "rolled-back"
    assert out["beta"].outcome == "failed" and "HTML" in out["beta"].message
    assert out["classify"].outcome == "unchanged"
    assert "rolled back to the previous group" in d.message
    assert world.tag("alpha") == "v1" and world.tag("beta") == "v1"
    assert (
        dp.current(world.root).resources["alpha"].version
        == dp.list_deployments(world.root)[1].items[0].version
    )


def test_failure_keep(world, capsys):
    dp.deploy(world.group(), world.root)
    world.set_pkg("alpha", "v2")
    with open(world.pkg["beta"], "w") as f:
        f.write("<html>error</html>")
    r = run_cli("deploy", world.group(), "--root", world.root, "--on-failure=keep")
    assert r.returncode == 1, r.stdout + r.stderr
    assert "Failure" in r.stdout and "--on-failure=keep" in r.stdout
    assert world.tag("alpha") == "v2" and world.tag("beta") == "v1"
    cur = dp.current(world.root)
    assert cur.resources["alpha"].deployment_id == 2 and cur.resources["beta"].deployment_id == 1


def test_rollback_command_and_removed_resources(world):
    dp.deploy(world.group(), world.root)
    world.set_pkg("alpha", "v2")
    world.set_code("v2")
    d2 = dp.deploy(world.group(("alpha",)), world.root)  # beta dropped from the group
    assert d2.status == "Success"
    assert {i.key: i.outcome for i in d2.items}["beta"] == "removed"
    assert not os.path.lexists(world.dest["beta"])
    assert world.tag("alpha") == "v2"

    r = run_cli("rollback", "--root", world.root)
    assert r.returncode == 0, r.stderr
    assert "rollback" in r.stdout and "Success" in r.stdout
    assert world.tag("alpha") == "v1" and world.tag("beta") == "v1"
    cur = dp.current(world.root)
    with open(os.path.join(cur.functions["classify"].code_dir, "classify.py")) as f:
        assert "'v1'" in f.read()
    assert set(cur.resources) == {"alpha", "beta", "null"}
    # deploying again after a rollback reinstalls what changed
    d = dp.deploy(world.group(("alpha",)), world.root)
    assert d.status == "Success" and world.tag("alpha") == "v2"

    r = run_cli("deployments", "list", "--root", world.root)
    header, *lines = r.stdout.strip().splitlines()
    assert header.split() == ["ID", "KIND", "STATUS", "STARTED", "GROUP", "MESSAGE"]
    assert len(lines) == 4 and "rollback" in lines[1] and all("Success" in ln for ln in lines)
    r = run_cli("deployments", "show", "2", "--root", world.root)
    assert "deployment 2 (deploy) of group line-1: Success" in r.stdout
    assert "removed" in r.stdout


def test_reset_removes_everything(world):
    dp.deploy(world.group(), world.root)
    r = run_cli("reset", "--yes", "--root", world.root)
    assert r.returncode == 0, r.stderr
    for k in ("alpha", "beta"):
        assert not os.path.lexists(world.dest[k])
    assert os.listdir(world.tmp / "models") == []
    assert not os.path.exists(os.path.join(world.root, "functions"))
    assert not os.path.exists(os.path.join(world.root, "state.db"))
    assert dp.current(world.root) is None
    assert run_cli("resources", "list", "--root", world.root).stdout.startswith("nothing deployed")
    assert dp.deploy(world.group(), world.root).status == "Success"


def test_resources_cli(world):
    dp.deploy(world.group(), world.root)
    r = run_cli("resources", "list", "--root", world.root)
    assert r.returncode == 0
    lines = r.stdout.strip().splitlines()[1:]  # under the header row
    assert [ln.split()[1] for ln in lines] == ["null", "classify", "alpha", "beta"]
    r = run_cli("resources", "show", "alpha", "--root", world.root)
    assert f"destination:   {world.dest['alpha']}" in r.stdout and "files:         3" in r.stdout
    r = run_cli("resources", "show", "nope", "--root", world.root)
    assert r.returncode == 2 and "no resource or function 'nope'" in r.stderr


@pytest.mark.parametrize("perm,dmode,fmode", [("ro", 0o750, 0o640), ("rw", 0o2770, 0o660)])
def test_owner_setting_modes(world, perm, dmode, fmode):
    gid = os.getgid()
    d = dp.deploy(world.group(owner={"group": gid, "permission": perm}), world.root)
    assert d.status == "Success", [i.message for i in d.items]
    real = os.path.realpath(world.dest["alpha"])
    assert stat.S_IMODE(os.stat(real).st_mode) == dmode
    st = os.stat(os.path.join(real, "w.bin"))
    assert stat.S_IMODE(st.st_mode) == fmode and st.st_gid == gid


def test_destination_not_ours_is_refused(world):
    os.makedirs(world.dest["alpha"])
    with open(os.path.join(world.dest["alpha"], "precious"), "w") as f:
        f.write("keep me")
    d = dp.deploy(world.group(), world.root)
    assert d.status == "Failure"
    assert "non-empty directory that pyengine does not manage" in d.items[0].message
    assert os.path.exists(os.path.join(world.dest["alpha"], "precious"))


def test_missing_device_fails(world, tmp_path):
    g = write_group(
        str(tmp_path / "dev.json"),
        {
            "name": "g",
            "resources": [
                {"id": "cam", "device": {"path": "/dev/pyengine-no-such-device"}},
                {"id": "shm", "device": {"path": "/dev/shm"}},
            ],
        },
    )
    d = dp.deploy(g, world.root, on_failure="keep")
    msgs = {i.key: i.message for i in d.items}
    assert "does not exist on this machine" in msgs["cam"]
    assert "is not a character or block device" in msgs["shm"]


def test_concurrent_deploy_refused_or_waits(world):
    # Another process holds the root's lock until it reads a line on stdin.
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            (
                "import sys; from pyengine.deploy.lock import RootLock; "
                f"lk = RootLock({world.root!r}); lk.acquire(0, 'deploy of group other'); "
                "print('held', flush=True); sys.stdin.readline(); lk.release()"
            ),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        r = run_cli("deploy", world.group(), "--root", world.root)
        assert r.returncode == 1  # the operation could not be done (docs/cli.md)
        assert "another deployment is running" in r.stderr and "deploy of group other" in r.stderr
        assert "--wait" in r.stderr

        def release() -> None:
            time.sleep(0.5)
            holder.stdin.write("go\n")
            holder.stdin.flush()

        releaser = threading.Thread(target=release)
        t0 = time.monotonic()
        releaser.start()
        d = dp.deploy(world.group(), world.root, wait_s=60)
        waited = time.monotonic() - t0
        releaser.join()
        assert d.status == "Success" and waited >= 0.5
    finally:
        holder.stdin.close()
        holder.wait(10)
        holder.stdout.close()


def test_progress_plain_and_tty(world):
    world.set_pkg("alpha", "big", size=3_000_000)
    r = run_cli("deploy", world.group(), "--root", world.root)
    assert r.returncode == 0
    assert "\r" not in r.stdout
    assert "  alpha: 100% (3.0 MB of 3.0 MB)" in r.stdout and "  alpha: installed" in r.stdout
    assert "deployment 1: group line-1: Building" in r.stdout
    assert r.stdout.index("deployment 1: InProgress") < r.stdout.index("alpha: 100%")

    world.set_pkg("alpha", "big2", size=3_000_000)
    master, slave = pty.openpty()
    p = subprocess.Popen(
        [sys.executable, "-m", "pyengine", "deploy", world.group(), "--root", world.root],
        stdout=slave,
        stderr=slave,
    )
    os.close(slave)
    out = b""
    while True:
        try:
            b = os.read(master, 65536)
        except OSError:
            break
        if not b:
            break
        out += b
    assert p.wait(60) == 0
    os.close(master)
    text = out.decode()
    assert "\r\x1b[K  alpha: [" in text and "100.0%" in text, text


def test_deploy_without_native_core(world):
    code = (
        "import sys\n"
        "sys.modules['pyengine._core'] = None  # as if the extension were not built\n"
        "from pyengine.cli import main\n"
        f"rc = main(['deploy', {world.group()!r}, '--root', {world.root!r}, '-q'])\n"
        "bad = [m for m in sys.modules\n"
        "       if m.startswith(('pyengine.backends', 'pyengine.model', 'boto3', 'tensorflow'))]\n"
        "assert not bad, bad\n"
        "assert sys.modules['pyengine._core'] is None\n"
        "import pyengine\n"
        "try:\n"
        "    pyengine.load\n"
        "except ImportError as e:\n"
        "    assert 'not built' in str(e)\n"
        "else:\n"
        "    raise AssertionError('pyengine.load should say the core is not built')\n"
        "sys.exit(rc)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Success" in r.stdout
    assert world.tag("alpha") == "v1"


def test_example_group_deploys(tmp_path):
    """The examples/group package builds and deploys (the quick group beside the
    image-classification example scripts/main.sh runs)."""
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYENGINE_DEMO_DIR=str(tmp_path / "demo"))
    pkg = str(tmp_path / "demo" / "packages" / "digits.tar.gz")
    r = subprocess.run(
        [sys.executable, os.path.join(repo, "examples", "group", "make_package.py"), pkg],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    group = os.path.join(repo, "examples", "group", "group.yaml")
    root = str(tmp_path / "demo" / "root")
    for expected in ("installed", "unchanged"):
        r = run_cli("deploy", group, "--root", root, env=env)
        assert r.returncode == 0, r.stdout + r.stderr
        assert f"model    digits                   {expected}" in r.stdout, r.stdout
    cur = dp.current(root)
    assert os.path.isfile(os.path.join(cur.resource_path("digits"), "digits.pyem"))
    assert os.path.isfile(os.path.join(cur.functions["classify"].code_dir, "classify.py"))
    assert cur.functions["classify"].environment == {"TOP_K": "3"}


def test_keep_removes_dropped_resources_and_keeps_failed_ones(world):
    dp.deploy(world.group(), world.root)
    world.set_pkg("alpha", "v2")
    with open(world.pkg["alpha"], "w") as f:
        f.write("<html>error</html>")
    d = dp.deploy(world.group(("alpha",)), world.root, on_failure="keep")  # beta dropped
    out = {i.key: i.outcome for i in d.items}
    assert d.status == "Failure" and d.applied
    assert out["alpha"] == "failed" and out["beta"] == "removed"
    assert world.tag("alpha") == "v1" and not os.path.lexists(world.dest["beta"])
    assert {r["key"] for r in dp.list_installed(world.root)} == {"alpha", "null", "classify"}


def test_moved_destination_removes_the_old_link(world, tmp_path):
    dp.deploy(world.group(), world.root)
    old = world.dest["alpha"]
    world.dest["alpha"] = str(tmp_path / "elsewhere" / "alpha")
    d = dp.deploy(world.group(), world.root)
    assert {i.key: i.outcome for i in d.items}["alpha"] == "installed"
    assert not os.path.lexists(old) and world.tag("alpha") == "v1"
    r = run_cli("rollback", "--root", world.root)
    assert r.returncode == 0, r.stderr
    assert os.path.islink(old) and not os.path.lexists(world.dest["alpha"])
    check_complete(old)


def test_missing_source_fails_before_any_download(world, tmp_path):
    """Sources are resolved while the deployment is Building: a missing package fails it before
    the other (changed) packages are transferred."""
    dp.deploy(world.group(), world.root)
    world.set_pkg("alpha", "v2", size=500_000)
    os.unlink(world.pkg["beta"])
    d = dp.deploy(world.group(), world.root)
    out = {i.key: i for i in d.items}
    assert d.status == "Failure"
    assert out["beta"].outcome == "failed" and "no such file" in out["beta"].message
    assert out["alpha"].outcome == "skipped" and out["alpha"].bytes == 0
    assert world.tag("alpha") == "v1"


def test_destination_of_another_root_is_refused(world, tmp_path):
    dp.deploy(world.group(), world.root)
    other = str(tmp_path / "other-root")
    d = dp.deploy(world.group(), other)
    assert d.status == "Failure"
    assert "managed by another pyengine root" in d.items[0].message, d.items[0].message
    assert world.tag("alpha") == "v1" and world.tag("beta") == "v1"
    assert dp.deploy(world.group(), world.root).status == "Success"


@pytest.mark.parametrize("change, fragment", [
    ({"run_as": {"uid": "nobody", "gid": 100}}, "functions[0].run_as.uid"),
    ({"concurrency": 0}, "functions[0].concurrency"),
    ({"idle_timeout_s": -1}, "functions[0].idle_timeout_s"),
    ({"volume": "captures"}, "is not an absolute path"),
    ({"volume": "/srv/pyengine-test-no-such-dir/captures"}, "is not an existing directory"),
])
def test_bad_new_fields_leave_the_installed_group(world, change, fragment):
    """run_as, concurrency, idle_timeout_s and volumes fail as every other field does: an error
    naming the field and the value, nothing installed, the previous group serving unchanged."""
    import json

    first = dp.deploy(world.group(), world.root)
    assert first.status == "Success"
    with open(world.group()) as fh:
        group = json.load(fh)
    if "volume" in change:
        group["resources"].append({"id": "cam", "volume": {"path": change["volume"]}})
        group["functions"][0]["resources"].append({"id": "cam", "permission": "ro"})
    else:
        group["functions"][0].update(change)
    world.set_code("v2")  # would be installed if the deploy went ahead
    path = write_group(str(world.tmp / "bad.json"), group)
    try:
        d = dp.deploy(path, world.root)
        message = d.message + " ".join(i.message for i in d.items)
        assert d.status == "Failure" and not d.applied, d
    except dp.GroupError as exc:
        message = str(exc)
    assert fragment in message, message
    cur = dp.current(world.root)
    assert cur is not None and cur.deployment_id == first.id
    with open(os.path.join(cur.functions["classify"].code_dir, "classify.py")) as f:
        assert "TAG = 'v1'" in f.read()
    assert world.tag("alpha") == "v1" and "cam" not in cur.resources
