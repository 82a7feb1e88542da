"""Destinations the deploying user, or a function's user, cannot use are refused before
anything is made, with the path and the fix; the previous group stays installed."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from typing import Any, Iterator

import pytest
from core_helpers import package, text_file, write_code

import pyengine.deploy as dp
from pyengine.deploy.validate import validate_group

IS_ROOT = os.geteuid() == 0


@pytest.fixture
def base() -> Iterator[str]:
    """A directory every user can traverse (pytest's own tmp is private to root)."""
    path = tempfile.mkdtemp(prefix="pyengine-dest-test-")
    os.chmod(path, 0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _group(base: str, dest: str, with_function: bool = True) -> dict[str, Any]:
    src = package(os.path.join(base, "sources", "m.tar.gz"), text_file("m.txt", "v1"))
    g: dict[str, Any] = {"name": "g", "resources": [
        {"id": "m", "model": {"source": src, "destination": dest}}]}
    if with_function:
        g["functions"] = [{"name": "f", "handler": "handler.function_handler",
                           "code": write_code(base, "f", "def function_handler(e, c):\n"
                                                         "    return 1\n"),
                           "resources": [{"id": "m"}]}]
    return g


def test_destination_in_root_home_refused_at_validation(base: str) -> None:
    os.makedirs(os.path.join(base, "sources"), exist_ok=True)
    with pytest.raises(dp.GroupError) as info:
        validate_group(_group(base, "/root/models/a"), os.path.join(base, "g.json"))
    message = str(info.value)
    assert "resources[0].model.destination: '/root/models/a' is inside /root" in message
    assert "root's home" in message and "/srv/models/NAME" in message


def _deploy_as_unprivileged(base: str, group: dict[str, Any], root: str
                            ) -> subprocess.CompletedProcess:
    """``pyengine deploy`` as an ordinary user: nobody when the tests run as root (the group
    file and root given to it), else this user."""
    path = os.path.join(base, "g.json")
    with open(path, "w") as f:
        json.dump(group, f)
    user = pwd.getpwnam("nobody").pw_uid if IS_ROOT else None
    if user is not None:
        os.makedirs(root, exist_ok=True)
        for d in (root, base, os.path.join(base, "sources"), os.path.join(base, "functions")):
            os.chown(d, user, user)
    return subprocess.run([sys.executable, "-m", "pyengine", "deploy", path, "--root", root],
                          capture_output=True, text=True, user=user, group=user,
                          extra_groups=[] if user is not None else None, cwd="/", timeout=120)


def test_unwritable_parent_refused_before_anything_is_made(base: str) -> None:
    root = os.path.join(base, "root")
    ok = os.path.join(base, "models", "m")
    os.makedirs(os.path.dirname(ok))
    locked = os.path.join(base, "locked")
    os.makedirs(locked)
    if IS_ROOT:
        os.chown(os.path.dirname(ok), pwd.getpwnam("nobody").pw_uid, -1)
    else:
        os.chmod(locked, 0o555)
    first = _deploy_as_unprivileged(base, _group(base, ok), root)
    assert first.returncode == 0, first.stdout + first.stderr
    # Missing directories under an unwritable one, and an unwritable parent that exists.
    for dest, says in ((os.path.join(locked, "models", "m"),
                        f"cannot create {locked}/models: {locked}, the nearest directory on the "
                        "way that exists, is not writable by it"),
                       (os.path.join(locked, "m"), f"cannot write in {locked} (mode 0")):
        r = _deploy_as_unprivileged(base, _group(base, dest), root)
        assert r.returncode != 0
        assert f"resources[0].model.destination: {dest!r}: the deploying user" in r.stderr, \
            r.stderr
        assert says in r.stderr and "install -d -o " in r.stderr, r.stderr
        assert "Errno" not in r.stderr
        assert os.listdir(locked) == []  # nothing made
    # The first group is still what is installed.
    cur = dp.current(root, cleanup=False)
    assert cur is not None and cur.resource_path("m") == ok
    with open(os.path.join(ok, "m.txt")) as f:
        assert f.read() == "v1"


def _deploy(base: str, group: dict[str, Any]) -> Any:
    return dp.deploy(validate_group(group, os.path.join(base, "g.json")), os.path.join(base, "root"))


def _refusal(base: str, group: dict[str, Any]) -> str:
    with pytest.raises(dp.GroupError) as info:
        _deploy(base, group)
    return str(info.value)


@pytest.mark.skipif(not IS_ROOT, reason="an unprivileged core runs functions as the deploying "
                    "user, who can reach what it deployed; the check is for a root core")
def test_destination_functions_cannot_traverse_is_refused(base: str) -> None:
    served = os.path.join(base, "served", "m")
    assert _deploy(base, _group(base, served)).status == "Success"
    private = os.path.join(base, "private")
    os.makedirs(private, mode=0o700)
    os.chmod(private, 0o700)
    dest = os.path.join(private, "models", "m")
    message = _refusal(base, _group(base, dest))
    assert (f"resources[0].model.destination: {dest!r}: function 'f' runs as a user of its own "
            "(a uid the core allocates, which owns no file, so the permission for others "
            f"applies), which cannot traverse {private} (mode 0700, owner 0:0): it lacks the "
            f"search (x) permission for others; run `chmod o+x {private}`") in message, message
    # Nothing was made, and the previous group is still what is installed.
    assert not os.path.exists(os.path.dirname(dest))
    cur = dp.current(os.path.join(base, "root"), cleanup=False)
    assert cur is not None and cur.resource_path("m") == served
    # Not granted to any function: nothing to check.
    assert _deploy(base, _group(base, dest, with_function=False)).status == "Success"
    # Traversable by others: deployed.
    os.chmod(private, 0o711)
    assert _deploy(base, _group(base, dest)).status == "Success"


@pytest.mark.skipif(not IS_ROOT, reason="run_as and owner groups apply only under a root core")
def test_traversal_follows_run_as_and_owner_groups(base: str) -> None:
    private = os.path.join(base, "owned")
    os.makedirs(private)
    os.chown(private, 4321, 4400)
    dest = os.path.join(private, "models", "m")

    def group(run_as: dict[str, int] | None = None, owner: int | None = None) -> dict[str, Any]:
        g = _group(base, dest)
        if run_as:
            g["functions"][0]["run_as"] = run_as
        if owner is not None:
            g["resources"][0]["model"]["owner"] = {"group": owner, "permission": "ro"}
        return g

    os.chmod(private, 0o700)  # its owner only
    assert _deploy(base, group({"uid": 4321, "gid": 4321})).status == "Success"
    message = _refusal(base, group({"uid": 4322, "gid": 4400}))
    assert (f"function 'f' runs as uid 4322 gid 4400 (its run_as), which cannot traverse "
            f"{private} (mode 0700, owner 4321:4400): it lacks the search (x) permission for "
            f"group; run `chmod g+x {private}`") in message, message
    os.chmod(private, 0o710)  # and its group: the run_as gid, or the model's owner group
    assert _deploy(base, group({"uid": 4322, "gid": 4400})).status == "Success"
    assert _deploy(base, group(owner=4400)).status == "Success"
    message = _refusal(base, group())
    assert f"permission for others; run `chmod o+x {private}`" in message, message


@pytest.mark.skipif(not IS_ROOT, reason="an unprivileged core runs functions as the deploying "
                    "user, who can reach what it deployed; the check is for a root core")
def test_directories_a_tight_umask_would_make_are_refused(base: str) -> None:
    dest = os.path.join(base, "new", "models", "m")
    path = os.path.join(base, "g.json")
    with open(path, "w") as f:
        json.dump(_group(base, dest), f)
    r = subprocess.run([sys.executable, "-m", "pyengine", "deploy", path, "--root",
                        os.path.join(base, "root")], capture_output=True, text=True, umask=0o077,
                       timeout=120)
    made = os.path.join(base, "new")
    assert r.returncode == 2, r.stdout + r.stderr
    assert (f"resources[0].model.destination: {dest!r}: function 'f' runs as a user of its own "
            "(a uid the core allocates, which owns no file, so the permission for others "
            f"applies), which could not traverse {made}: the deploy would make it with mode 0700 "
            "(umask 0077), without the search (x) permission for others; create it first "
            f"(`install -d -m 0755 {made}`)") in r.stderr, r.stderr
    assert not os.path.exists(made)  # refused before anything was made
