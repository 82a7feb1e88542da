"""Shared fixtures. Area-specific fixtures live in their own modules and are imported here."""

from __future__ import annotations

import os
import sys
import tempfile

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Tests import helpers (models.py, oprefs.py) from this directory.
sys.path.insert(0, os.path.dirname(__file__))
# Subprocesses (CLI runs, workers, fuzzers) import the same in-place build as the tests.
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (ROOT, os.environ.get("PYTHONPATH")) if p)

# Deploy-area fixtures: loopback S3 server, cutting proxy, package builders.
from deploy_fixtures import bucket, moto_auth_server, moto_endpoint, s3  # noqa: E402,F401

# Messaging fixtures: a Mosquitto broker on a free loopback port.
from mqtt_fixtures import mosquitto  # noqa: E402,F401


@pytest.fixture(scope="session", autouse=True)
def _scratch_mounts_unmounted():
    """A root core leaves each function's scratch tmpfs mounted when it stops (the files outlive
    a restart): unmount the ones this session's cores left in temporary directories."""
    with open("/proc/self/mountinfo") as fh:
        before = {line.split()[4] for line in fh}
    yield
    if os.geteuid() != 0:
        return
    from pyengine.core.scratch import FS_NAME, _libc

    tmp = tempfile.gettempdir()
    with open("/proc/self/mountinfo") as fh:
        left = [f[4] for f in (line.split() for line in fh)
                if FS_NAME in f and f[4] not in before and f[4].startswith(tmp)]
    for path in left:
        _libc().umount2(os.fsencode(path), 2)  # MNT_DETACH
        # The fixture that made the directory could not remove a mount point: do it now.
        while path.startswith(tmp + os.sep):
            try:
                os.rmdir(path)
            except OSError:
                break
            path = os.path.dirname(path)
