"""Shared fixtures. Area-specific fixtures live in their own modules and are imported here."""

from __future__ import annotations

import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Tests import helpers (models.py, oprefs.py) from this directory.
sys.path.insert(0, os.path.dirname(__file__))
# Subprocesses (CLI runs, workers, fuzzers) import the same in-place build as the tests.
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (ROOT, os.environ.get("PYTHONPATH")) if p)

# Deploy-area fixtures: loopback S3 server, cutting proxy, package builders.
from deploy_fixtures import bucket, moto_auth_server, moto_endpoint, s3  # noqa: E402,F401

# Messaging fixtures: a Mosquitto broker on a free loopback port.
from mqtt_fixtures import mosquitto  # noqa: E402,F401
