"""A full filesystem: a deploy that cannot fit is refused before downloading (naming the
resource, the space needed and available), one that runs out of space on the way leaves no
partial file, and neither locks out the next valid deploy. Each test mounts its own small
tmpfs inside its temporary directory."""

from __future__ import annotations

import os
import subprocess
from typing import Iterator

import pytest
from deploy_fixtures import check_complete, run_cli, write_group, write_package

from pyengine import deploy as dp
from pyengine.deploy.layout import free_bytes

MiB = 1 << 20


@pytest.fixture
def fs(tmp_path) -> Iterator[str]:
    """An 8 MiB tmpfs mounted on a directory of the test's own."""
    d = tmp_path / "fs"
    d.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m,mode=0755", "tmpfs", str(d)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root or CAP_SYS_ADMIN): "
                    f"{r.stderr.strip()}")
    try:
        yield str(d)
    finally:
        subprocess.run(["umount", str(d)], check=False)
        if os.path.ismount(d):
            subprocess.run(["umount", "-l", str(d)], check=False)


def _group(tmp_path, fs: str, pkg: str) -> str:
    return write_group(str(tmp_path / "group.json"), {
        "name": "disk",
        "resources": [{"id": "big", "model": {"source": pkg,
                                              "destination": os.path.join(fs, "models", "big")}}],
    })


def _parts(root: str) -> list[str]:
    d = os.path.join(root, "downloads")
    return os.listdir(d) if os.path.isdir(d) else []


def test_a_package_that_cannot_fit_is_refused_before_downloading(tmp_path, fs):
    root = os.path.join(fs, "root")
    small = write_package(str(tmp_path / "small.tar.gz"), {"w": os.urandom(64 << 10)})
    group = _group(tmp_path, fs, small)
    assert dp.deploy(group, root).status == "Success"
    big = write_package(str(tmp_path / "small.tar.gz"), {"w": os.urandom(5 * MiB)})
    r = run_cli("deploy", group, "--root", root)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert "resource 'big': not enough disk space" in r.stdout
    size = os.path.getsize(big)
    assert f"{big} is {size} bytes" in r.stdout and f"needs {2 * size} bytes" in r.stdout
    assert "bytes are available on the filesystem of" in r.stdout
    assert _parts(root) == []
    check_complete(os.path.join(fs, "models", "big"))  # the previous version serves


def test_a_stale_partial_download_does_not_lock_out_the_next_deploy(tmp_path, fs):
    root = os.path.join(fs, "root")
    os.makedirs(os.path.join(root, "downloads"))
    stale = os.path.join(root, "downloads", "0123456789abcdef01234567.part")
    with open(stale, "wb") as f:  # what a killed deploy of another package left, just now
        f.write(os.urandom(7 * MiB))
    pkg = write_package(str(tmp_path / "p.tar.gz"), {"w": os.urandom(512 << 10)})
    d = dp.deploy(_group(tmp_path, fs, pkg), root)
    assert d.status == "Success", d.items
    assert not os.path.exists(stale) and _parts(root) == []
    check_complete(os.path.join(fs, "models", "big"))


def test_running_out_of_space_while_unpacking_leaves_nothing_behind(tmp_path, fs):
    root = os.path.join(fs, "root")
    first = write_package(str(tmp_path / "p.tar.gz"), {"w": os.urandom(64 << 10)})
    group = _group(tmp_path, fs, first)
    assert dp.deploy(group, root).status == "Success"
    before = free_bytes(fs)
    # 12 MiB of zeros: a tiny package that unpacks to more than the filesystem holds.
    write_package(first, {"w": b"\0" * (12 * MiB)})
    d = dp.deploy(group, root)
    assert d.status == "Failure"
    big = next(i for i in d.items if i.key == "big")
    assert "not enough disk space" in big.message and "unpacking into" in big.message
    store = os.path.join(fs, "models", ".big.pyengine")
    assert not [n for n in os.listdir(store) if n.startswith("staging-")]
    assert _parts(root) == []
    assert free_bytes(fs) >= before - (64 << 10)  # the space is given back
    check_complete(os.path.join(fs, "models", "big"))
    write_package(first, {"w": os.urandom(MiB)})
    assert dp.deploy(group, root).status == "Success"


def test_state_commands_answer_on_a_full_filesystem(tmp_path, fs):
    root = os.path.join(fs, "root")
    pkg = write_package(str(tmp_path / "p.tar.gz"), {"w": os.urandom(64 << 10)})
    assert dp.deploy(_group(tmp_path, fs, pkg), root).status == "Success"
    with open(os.path.join(fs, "filler"), "wb") as f:  # a function's scratch, say
        try:
            while True:
                f.write(b"\0" * (256 << 10))
        except OSError:
            pass
    assert free_bytes(fs) < 256 << 10
    # What the core reads at start (cleanup included) still answers.
    assert dp.current(root).resources["big"].path == os.path.join(fs, "models", "big")
    for args in (("deployments", "list"), ("resources", "list"), ("doctor",)):
        r = run_cli(*args, "--root", root)
        assert "Traceback" not in r.stderr, (args, r.stderr)
        assert r.returncode == 0, (args, r.stdout, r.stderr)
    r = run_cli("deploy", _group(tmp_path, fs, write_package(
        str(tmp_path / "p2.tar.gz"), {"w": os.urandom(MiB)})), "--root", root)
    assert r.returncode != 0 and "Traceback" not in r.stderr
    out = r.stdout + r.stderr
    assert "not enough disk space" in out or "no space left on the filesystem of" in out, out
    assert "bytes available" in out or "bytes are available" in out, out
    os.unlink(os.path.join(fs, "filler"))
    assert run_cli("deploy", str(tmp_path / "group.json"), "--root", root).returncode == 0
