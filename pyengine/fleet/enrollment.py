"""Which cores count: the signed enrollment list and the statuses signed by enrolled cores.

Anyone who can write to the bucket can write ``status/<name>.json``. So each core signs its
status with its own Ed25519 key (made at its first start, ``ROOT/fleet/core.pem``), and the
operator enrolls that key (``pyengine fleet enroll``) in ``enrollment.json``, which the fleet key
signs and the timestamp pins. Halting, promotion, the serial floor of a publish and canary
selection use only statuses that verify against the enrolled key of the core they name; the rest
are shown as unverified and ignored.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import time
from dataclasses import dataclass, field
from typing import Any, Optional

from pyengine.fleet import document
from pyengine.fleet.signing import SignatureError, SigningKey, TrustedKey, keygen, open_envelope
from pyengine.fleet.store import ENROLLMENT, Fleet, OversizeError, check_core_name

log = logging.getLogger("pyengine.fleet")

#: A core's own key pair, under ``ROOT/fleet/``.
CORE_KEY = "core.pem"


@dataclass
class Enrollment:
    """A verified enrollment list (empty when nothing is enrolled)."""

    serial: int = 0
    cores: dict[str, TrustedKey] = field(default_factory=dict)
    doc: Optional[dict[str, Any]] = None
    data: Optional[bytes] = None  # the stored bytes (what the timestamp pins)

    @property
    def names(self) -> list[str]:
        return sorted(self.cores)


def parse(data: bytes, trusted: list[TrustedKey], fleet_uri: str) -> Enrollment:
    """Verify an ``enrollment.json`` (signature, then shape).

    Raises
    ------
    SignatureError, ValueError
        Not signed by a trusted key, or malformed (the message says which field).
    """
    doc, _ = open_envelope(data, trusted)
    document.check_enrollment(doc, fleet_uri)
    cores = {}
    for name, c in doc["cores"].items():
        check_core_name(name)
        cores[name] = TrustedKey.from_raw(bytes.fromhex(c["public"]), f"enrollment of {name}")
    return Enrollment(int(doc["serial"]), cores, doc, data)


def read(fleet: Fleet, trusted: list[TrustedKey]) -> Enrollment:
    """The bucket's enrollment for an operator command: empty when there is none.

    Raises
    ------
    ValueError
        ``enrollment.json`` exists but cannot be verified (the message names it and says what to
        do): a publisher does not sign a timestamp over a list it cannot verify.
    """
    data = fleet.get(ENROLLMENT)
    if data is None:
        return Enrollment()
    try:
        return parse(data, trusted, fleet.uri)
    except (SignatureError, ValueError) as exc:
        raise ValueError(
            f"{fleet.object_uri(ENROLLMENT)} cannot be verified ({exc}); restore it from a backup "
            "(S3 versioning), or delete it and enroll the cores again with `pyengine fleet enroll`"
        ) from None


def core_key(fleet_dir: str) -> SigningKey:
    """This core's own signing key, made (mode 0600) at the first start."""
    path = os.path.join(fleet_dir, CORE_KEY)
    if not os.path.exists(path):
        keygen(path, overwrite=True)
        log.info("made this core's status key %s (enroll %s.pub with `pyengine fleet enroll`)",
                 path, path)
    key = SigningKey(path)
    pub = f"{path}.pub"
    if not os.path.exists(pub):  # the public half was removed: write it again from the key
        with open(pub, "w") as fh:
            fh.write(key.public.raw.hex() + "\n")
    return key


def verify_status(name: str, data: bytes, enrolled: Enrollment,
                  fleet_uri: str) -> dict[str, Any]:
    """The status of core ``name`` when it is signed by that core's enrolled key.

    Raises
    ------
    SignatureError, ValueError
        The core is not enrolled, the signature does not verify, or the status names another
        core or fleet.
    """
    key = enrolled.cores.get(name)
    if key is None:
        raise SignatureError(f"core {name!r} is not enrolled")
    try:
        doc, _ = open_envelope(data, [key])
    except SignatureError as exc:
        raise SignatureError(f"not signed by core {name}'s enrolled key {key.id}: "
                             f"{str(exc).partition('; this core trusts')[0]}") from None
    document.check_status(doc, fleet_uri, name)
    return doc


@dataclass
class Statuses:
    """Core statuses split by whether they count."""

    verified: dict[str, dict[str, Any]] = field(default_factory=dict)
    unverified: dict[str, str] = field(default_factory=dict)  # name -> why it does not count


def statuses(fleet: Fleet, enrolled: Enrollment, *, every: bool = False,
             exclude: Optional[str] = None) -> Statuses:
    """The statuses that count, read only for enrolled cores (so a flood of status files costs
    nothing), or with ``every`` all of them, the others reported as unverified."""
    names = fleet.status_names() if every else enrolled.names
    out = Statuses()
    for name in names:
        if name == exclude:
            continue
        try:
            data = fleet.status_object(name)
        except (OversizeError, ValueError) as exc:  # too large, or no core's name
            out.unverified[name] = str(exc)
            continue
        if data is None:
            continue  # an enrolled core that has not reported (or whose status was deleted)
        try:
            out.verified[name] = verify_status(name, data, enrolled, fleet.uri)
        except (SignatureError, ValueError) as exc:
            out.unverified[name] = str(exc)
    return out


def unverified_body(data: bytes) -> Optional[dict[str, Any]]:
    """What an unverified status claims, for display only (never for a decision)."""
    try:
        env = json.loads(data)
        body = json.loads(base64.b64decode(env["payload"])) \
            if isinstance(env, dict) and "payload" in env else env
    except (ValueError, KeyError, TypeError):
        return None
    return body if isinstance(body, dict) else None


def enroll(fleet: Fleet, key: SigningKey, *, add: Optional[dict[str, TrustedKey]] = None,
           remove: Optional[list[str]] = None,
           expires_s: float = document.DOC_EXPIRES_S) -> dict[str, Any]:
    """A new signed enrollment: the current one (verified) with cores added or removed.

    Returns the enrollment document; the caller writes it with a new timestamp.
    """
    cur = read(fleet, [key.public])
    cores = {n: {"public": k.raw.hex(), "key_id": k.id} for n, k in cur.cores.items()}
    for name in remove or []:
        if name not in cores:
            raise ValueError(f"--remove {name!r}: not enrolled (enrolled: {sorted(cores)})")
        del cores[name]
    for name, k in (add or {}).items():
        cores[check_core_name(name)] = {"public": k.raw.hex(), "key_id": k.id}
    now = time.time()
    return {
        "format": document.ENROLLMENT_FORMAT, "fleet": fleet.uri,
        # Above the last one even when enrollment.json was lost: the cores keep a high-water
        # mark of the serial, so a restarted list must still count up.
        "serial": max(cur.serial + 1, int(now * 1000)),
        "created": now, "expires": now + expires_s, "cores": cores,
    }
