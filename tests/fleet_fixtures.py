"""Fixtures for the fleet tests: a real Mosquitto broker on a loopback port.

(Kept apart from the deploy fixtures; the messaging work adds its own broker fixture, which this
one should give way to once both are in main.)
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from typing import Iterator

import pytest
from deploy_fixtures import free_port, wait_port


def mosquitto_path() -> str:
    """The mosquitto binary (scripts/setup.sh installs it); a clear failure when missing."""
    exe = shutil.which("mosquitto") or next(
        (p for p in ("/usr/sbin/mosquitto", "/usr/bin/mosquitto") if os.path.exists(p)), None)
    if exe is None:
        pytest.fail("the fleet tests need the mosquitto broker: apt-get install -y mosquitto "
                    "(scripts/setup.sh does it)")
    return exe


@pytest.fixture(scope="session")
def mqtt_broker() -> Iterator[str]:
    """``127.0.0.1:PORT`` of a Mosquitto broker running for the session (anonymous, no
    persistence)."""
    port = free_port()
    d = tempfile.mkdtemp(prefix="pyengine-mosquitto-")
    conf = os.path.join(d, "mosquitto.conf")
    with open(conf, "w") as fh:
        fh.write(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
                 "log_dest stderr\n")
    log = open(os.path.join(d, "mosquitto.log"), "wb")  # noqa: SIM115 - open while it runs
    p = subprocess.Popen([mosquitto_path(), "-c", conf], stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_port(port)
        yield f"127.0.0.1:{port}"
    finally:
        p.terminate()
        p.wait(10)
        log.close()
        shutil.rmtree(d, ignore_errors=True)
