"""Shared fixtures. Area-specific fixtures live in their own modules and are imported here."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

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


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    """As root, temporary directories under a base of this session's own (see _traversable):
    pytest's shared /tmp/pytest-of-root is put back to 0700 by every session that starts."""
    if os.geteuid() == 0 and config.option.basetemp is None:
        config.option.basetemp = tempfile.mkdtemp(prefix="pytest-root-")
        config.stash[_OWN_BASETEMP] = config.option.basetemp


def pytest_unconfigure(config: pytest.Config) -> None:
    own = config.stash.get(_OWN_BASETEMP, None)
    if own:
        shutil.rmtree(own, ignore_errors=True)


_OWN_BASETEMP = pytest.StashKey[str]()


def _traversable(path: Path) -> Path:
    """``path`` and pytest's directories above it searchable (0711) by every user, when root.

    A core run as root runs each function as a user of its own, and the deploy refuses a model
    destination that user cannot reach; pytest makes its temporary directories 0700. Search
    only (no listing), and only pytest's own directories: the check itself stays as strict."""
    if os.geteuid() == 0:
        base = Path(tempfile.gettempdir())
        for p in (path, *path.parents):
            if p == base or base not in p.parents:
                break
            if p.stat().st_mode & 0o111 != 0o111:
                p.chmod(p.stat().st_mode | 0o711)
    return path


@pytest.fixture
def tmp_path(tmp_path: Path) -> Path:
    """pytest's tmp_path, searchable by a root core's function users (see _traversable)."""
    return _traversable(tmp_path)


class _TraversableFactory:
    """pytest's tmp_path_factory whose directories a root core's function users can search."""

    def __init__(self, factory: pytest.TempPathFactory) -> None:
        self._factory = factory

    def __getattr__(self, name: str) -> Any:  # pytest's own tmp_path reads its internals
        return getattr(self._factory, name)

    def mktemp(self, basename: str, numbered: bool = True) -> Path:
        return _traversable(self._factory.mktemp(basename, numbered))

    def getbasetemp(self) -> Path:
        return _traversable(self._factory.getbasetemp())


@pytest.fixture(scope="session")
def tmp_path_factory(tmp_path_factory: pytest.TempPathFactory) -> _TraversableFactory:
    """pytest's tmp_path_factory, its directories searchable (see _traversable)."""
    return _TraversableFactory(tmp_path_factory)


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
