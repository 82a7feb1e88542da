"""The fleet's signed documents: what a publisher signs and a core checks.

Four kinds, each inside a signed envelope (see :mod:`pyengine.fleet.signing`), each with a
``serial`` that only grows and an ``expires`` time (after TUF's roles: targets, timestamp, and a
list of the devices' keys):

- the deployment (``deployments/<serial>.json``)::

    {"format": "pyengine-fleet/2", "fleet": "s3://bucket/prefix",
     "serial": 7,                          # +1 for every document (publish, promote, rollback)
     "version": 3,                         # the group's version; a new publish is high + 1
     "high": 4,                            # the highest version ever published
     "rollback": null | {"from": 4},       # the signed marker that allows going back
     "group": "line-1", "created": 1764064000.0, "expires": 1771840000.0,
     "rollout": {"percent": 40, "cutoff": 0.37, "max_failures": 1, "known_cores": 5,
                 "acknowledged": [],       # failures a `fleet resume` accepted
                 "since": 6},              # the serial that first carried this version
     "group_file": {...},                  # the group; sources in the bucket, pinned by sha256
     "code": {"classify": {"uri": "s3://...", "sha256": "...", "size": 403}}}

- the timestamp (``timestamp.json``, short-lived, re-signed by ``fleet refresh``): the latest
  deployment and enrollment by serial, SHA-256 and size of their stored bytes;
- the enrollment (``enrollment.json``): each enrolled core's Ed25519 public key;
- a core's status (``status/<core>.json``), signed by that core's own key.

A core takes a timestamp only while it is unexpired and newer than the last it took, follows it
to the deployment it names (reading no more than the signed size, checking the SHA-256), takes a
deployment only with a serial at least its high-water mark, applies a version lower than its
highest only with the rollback marker, and applies at all only when the rollout targets it:
``point(core name) < cutoff``, a stable hash of the name in [0, 1). The publisher picks the
cutoff so that exactly ``percent`` of the enrolled cores are inside.
"""

from __future__ import annotations

import hashlib
import math
import time
from typing import Any, Optional

DOC_FORMAT = "pyengine-fleet/2"
TIMESTAMP_FORMAT = "pyengine-fleet-timestamp/1"
ENROLLMENT_FORMAT = "pyengine-fleet-enrollment/1"
STATUS_FORMAT = "pyengine-fleet-status/1"
#: Default lifetimes: a deployment or enrollment is re-signed by `fleet refresh` once half of
#: this has passed; the timestamp must be refreshed (cron) more often than it expires.
DOC_EXPIRES_S = 90 * 86400.0
TIMESTAMP_EXPIRES_S = 86400.0


def _need(cond: bool, what: str, kind: str = "document") -> None:
    if not cond:
        raise ValueError(f"malformed {kind}: {what}")


def _count(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 1


def _header(doc: dict[str, Any], fmt: str, fleet_uri: str, kind: str) -> None:
    """The fields every signed document shares: format, fleet, serial, expires."""
    _need(doc.get("format") == fmt, f"format {doc.get('format')!r}, expected {fmt!r}", kind)
    _need(doc.get("fleet") == fleet_uri,
          f"published to fleet {doc.get('fleet')!r}, not this core's {fleet_uri!r}", kind)
    _need(_count(doc.get("serial")), f"serial {doc.get('serial')!r} must be a positive integer",
          kind)
    _need(isinstance(doc.get("expires"), (int, float)) and not isinstance(doc["expires"], bool),
          f"expires {doc.get('expires')!r} must be a time (seconds since the epoch)", kind)


def expired(doc: dict[str, Any], now: Optional[float] = None) -> bool:
    """Whether a checked document's ``expires`` has passed."""
    return float(doc["expires"]) <= (time.time() if now is None else now)


def renew_due(doc: dict[str, Any], now: Optional[float] = None) -> bool:
    """Whether less than half of a document's lifetime is left (``fleet refresh`` re-signs it)."""
    now = time.time() if now is None else now
    exp = doc.get("expires")
    if not isinstance(exp, (int, float)):
        return True
    created = float(doc.get("created") or now)
    return now >= created + (float(exp) - created) / 2


def pin(data: bytes, serial: int) -> dict[str, Any]:
    """How a timestamp names stored bytes: serial, SHA-256 and size (the read cap)."""
    return {"serial": serial, "sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}


def _check_pin(p: Any, where: str) -> None:
    _need(isinstance(p, dict) and _count(p.get("serial")) and isinstance(p.get("sha256"), str)
          and len(p["sha256"]) == 64 and isinstance(p.get("size"), int)
          and not isinstance(p["size"], bool) and p["size"] >= 0,
          f"{where} {p!r} must be {{'serial', 'sha256', 'size'}}", "timestamp")


def check_timestamp(doc: dict[str, Any], fleet_uri: str) -> None:
    """Check a verified timestamp's shape; ValueError naming the first problem."""
    _header(doc, TIMESTAMP_FORMAT, fleet_uri, "timestamp")
    _check_pin(doc.get("deployment"), "deployment")
    if doc.get("enrollment") is not None:
        _check_pin(doc["enrollment"], "enrollment")


def check_enrollment(doc: dict[str, Any], fleet_uri: str) -> None:
    """Check a verified enrollment's shape; ValueError naming the first problem."""
    _header(doc, ENROLLMENT_FORMAT, fleet_uri, "enrollment")
    cores = doc.get("cores")
    if not isinstance(cores, dict):
        raise ValueError("malformed enrollment: cores must be a mapping of core name -> key")
    for name, c in cores.items():
        _need(isinstance(c, dict) and isinstance(c.get("public"), str)
              and len(c["public"]) == 64, f"cores.{name}.public must be 64 hex digits",
              "enrollment")


def check_status(doc: dict[str, Any], fleet_uri: str, core: str) -> None:
    """Check a verified status: this fleet's, and about ``core`` (the name it is stored under)."""
    _need(doc.get("format") == STATUS_FORMAT,
          f"format {doc.get('format')!r}, expected {STATUS_FORMAT!r}", "status")
    _need(doc.get("fleet") == fleet_uri, f"for fleet {doc.get('fleet')!r}", "status")
    _need(doc.get("core") == core,
          f"core {doc.get('core')!r} stored as status/{core}.json", "status")


def point(core_name: str) -> float:
    """Where a core sits in [0, 1) for canary selection: a stable hash of its name."""
    h = hashlib.sha256(b"pyengine-fleet-canary\0" + core_name.encode()).digest()
    return int.from_bytes(h[:8], "big") / 2.0**64


def cutoff(percent: float, known_cores: list[str]) -> float:
    """The cutoff that puts ``percent`` of ``known_cores`` (rounded up) inside a rollout.

    Cores are ranked by :func:`point`; the cutoff lies between the last core inside and the first
    outside, so a core the publisher did not know falls inside with probability about
    ``percent``/100.
    """
    if percent >= 100:
        return 1.0
    if percent <= 0:
        return 0.0
    pts = sorted(point(n) for n in set(known_cores))
    if not pts:
        return percent / 100.0
    k = max(1, math.ceil(len(pts) * percent / 100.0 - 1e-9))
    if k >= len(pts):
        return 1.0
    return (pts[k - 1] + pts[k]) / 2.0


def targets(doc: dict[str, Any], core_name: str) -> bool:
    """Whether the document's rollout includes ``core_name``."""
    return point(core_name) < float(doc["rollout"]["cutoff"])


def check(doc: dict[str, Any], fleet_uri: str) -> None:
    """Check a verified deployment's shape; ValueError naming the first problem."""

    def need(cond: bool, what: str) -> None:
        _need(cond, what)

    _header(doc, DOC_FORMAT, fleet_uri, "document")
    need(_count(doc.get("version")), f"version {doc.get('version')!r} must be a positive integer")
    rb = doc.get("rollback")
    need(rb is None or (isinstance(rb, dict) and isinstance(rb.get("from"), int)),
         f"rollback {rb!r} must be null or {{'from': VERSION}}")
    ro = doc.get("rollout")
    if not isinstance(ro, dict):
        raise ValueError("malformed document: rollout missing")
    need(isinstance(ro.get("cutoff"), (int, float)) and 0 <= ro["cutoff"] <= 1,
         f"rollout.cutoff {ro.get('cutoff')!r} must be in [0, 1]")
    mf = ro.get("max_failures")
    need(mf is None or (isinstance(mf, int) and mf >= 0),
         f"rollout.max_failures {mf!r} must be null or a count")
    g = doc.get("group_file")
    if not isinstance(g, dict):
        raise ValueError("malformed document: group_file missing")
    for i, r in enumerate(g.get("resources") or []):
        m = r.get("model") if isinstance(r, dict) else None
        if m is not None:
            need(isinstance(m, dict) and isinstance(m.get("sha256"), str)
                 and len(m["sha256"]) == 64,
                 f"resources[{i}] has no sha256: every package must be pinned by the document")
    pk = doc.get("packages") or {}
    need(isinstance(pk, dict) and all(
        isinstance(v, dict) and isinstance(v.get("size"), int) and v["size"] >= 0
        for v in pk.values()), f"packages {pk!r} must map resource ids to {{'size': BYTES}}")
    code = doc.get("code")
    if not isinstance(code, dict):
        raise ValueError("malformed document: code missing")
    for i, f in enumerate(g.get("functions") or []):
        name = f.get("name") if isinstance(f, dict) else None
        c = code.get(name) if isinstance(name, str) else None
        need(isinstance(c, dict) and isinstance(c.get("uri"), str)
             and isinstance(c.get("sha256"), str) and len(c["sha256"]) == 64
             and isinstance(c.get("size"), int) and c["size"] >= 0,
             f"functions[{i}] ({name!r}) has no code package pinned by sha256 and size")


def summary(doc: dict[str, Any]) -> str:
    """One line: "version 3 (serial 7, 40%, rollback from 4)"."""
    ro = doc.get("rollout", {})
    parts = [f"serial {doc.get('serial')}", f"{ro.get('percent', 100):g}%"]
    if doc.get("rollback"):
        parts.append(f"rollback from {doc['rollback'].get('from')}")
    return f"version {doc.get('version')} of {doc.get('group')} ({', '.join(parts)})"


def current(status: dict[str, Any], doc: dict[str, Any]) -> bool:
    """Whether a status was written about this rollout: at or after ``rollout.since``, the serial
    that first carried the document's version (so a replayed status from an earlier rollout of
    the same version number says nothing about this one)."""
    since = int(doc.get("rollout", {}).get("since") or 0)
    serial = status.get("serial")
    return isinstance(serial, int) and serial >= since


def failures(statuses: dict[str, dict[str, Any]], doc: dict[str, Any]) -> list[str]:
    """The cores whose (verified) status says applying the document's version failed in this
    rollout, less the ones a ``fleet resume`` acknowledged."""
    version, group = doc.get("version"), doc.get("group")
    acknowledged = set(doc.get("rollout", {}).get("acknowledged") or [])
    return sorted(
        n for n, st in statuses.items()
        if st.get("failed_version") == version and st.get("group") in (group, None)
        and st.get("state") == "failed" and n not in acknowledged and current(st, doc)
    )


def halted(doc: dict[str, Any], statuses: dict[str, dict[str, Any]]) -> list[str]:
    """The failed cores when more failed this document's version than its rollout allows (a
    halt); an empty list otherwise."""
    mf = doc.get("rollout", {}).get("max_failures")
    if mf is None:
        return []
    bad = failures(statuses, doc)
    return bad if len(bad) > int(mf) else []
