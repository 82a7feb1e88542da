"""Destinations the deploying user, or a function's user, cannot use are refused (or reported)
before anything is made, with the path and the fix; the previous group stays installed."""

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


@pytest.mark.skipif(not IS_ROOT, reason="an unprivileged core runs functions as the deploying "
                    "user, who can reach what it deployed; the warning is for a root core")
def test_destination_functions_cannot_traverse_is_reported(base: str) -> None:
    private = os.path.join(base, "private")
    os.makedirs(private, mode=0o700)
    os.chmod(private, 0o700)
    dest = os.path.join(private, "models", "m")
    d = dp.deploy(validate_group(_group(base, dest), os.path.join(base, "g.json")),
                  os.path.join(base, "root"))
    assert d.status == "Success"
    assert d.message is not None and d.message.startswith(
        f"warning: resources[0].model.destination: {dest!r}: {private} (mode 0700, owner 0:0) "
        "cannot be traversed by a function's user"), d.message
    assert f"chmod o+x {private}" in d.message
    # Not granted to any function: nothing to report.
    d = dp.deploy(validate_group(_group(base, dest, with_function=False),
                                 os.path.join(base, "g.json")), os.path.join(base, "root"))
    assert d.status == "Success" and not d.message
    # Traversable: nothing to report.
    os.chmod(private, 0o711)
    d = dp.deploy(validate_group(_group(base, dest), os.path.join(base, "g.json")),
                  os.path.join(base, "root"))
    assert d.status == "Success" and not d.message


@pytest.mark.skipif(not IS_ROOT, reason="an unprivileged core runs functions as the deploying "
                    "user, who can reach what it deployed; the warning is for a root core")
def test_directories_made_under_a_tight_umask_are_reported(base: str) -> None:
    dest = os.path.join(base, "new", "models", "m")
    path = os.path.join(base, "g.json")
    with open(path, "w") as f:
        json.dump(_group(base, dest), f)
    r = subprocess.run([sys.executable, "-m", "pyengine", "deploy", path, "--root",
                        os.path.join(base, "root")], capture_output=True, text=True, umask=0o077,
                       timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    # Checked once the deploy made them: the directory it made first is 0700.
    made = os.path.join(base, "new")
    assert (f"warning: resources[0].model.destination: {dest!r}: {made} (mode 0700, owner 0:0) "
            "cannot be traversed by a function's user") in r.stdout, r.stdout
    assert f"chmod o+x {made}" in r.stdout
