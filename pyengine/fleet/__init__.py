"""A fleet of cores: one group deployed to many devices through an object store and MQTT.

No server of pyengine's own: the bucket holds signed deployment documents (and each core's
status), the broker announces new documents, and each core decides for itself.

- :func:`keygen`, :class:`SigningKey`, :class:`TrustedKey`: Ed25519 keys.
- :func:`publish`, :func:`promote`, :func:`rollback`, :func:`resume`, :func:`refresh`,
  :func:`enroll`, :func:`status`: the operator's side (each signing command verifies the whole
  history first and signs a new timestamp).
- :class:`FleetAgent`: the core's side (``pyengine core start --fleet``).

Imports the deploy layer and the sources, never a backend or the native core.
"""

from __future__ import annotations

from pyengine.fleet.agent import FleetAgent
from pyengine.fleet.history import FleetError, documents, history, verified_history
from pyengine.fleet.publish import (
    CORE_NAME_VAR,
    enroll,
    latest,
    promote,
    publish,
    refresh,
    resume,
    rollback,
    status,
)
from pyengine.fleet.signing import SignatureError, SigningKey, TrustedKey, keygen, open_envelope
from pyengine.fleet.store import Fleet

__all__ = [
    "CORE_NAME_VAR",
    "Fleet",
    "FleetAgent",
    "FleetError",
    "SignatureError",
    "SigningKey",
    "TrustedKey",
    "documents",
    "enroll",
    "history",
    "keygen",
    "latest",
    "open_envelope",
    "promote",
    "publish",
    "refresh",
    "resume",
    "rollback",
    "status",
    "verified_history",
]
