"""Deployment documents: what a publisher signs and a core applies.

A document (inside a signed envelope, see :mod:`pyengine.fleet.signing`)::

    {"format": "pyengine-fleet/1",
     "fleet": "s3://bucket/prefix",        # where it was published (elsewhere: refused)
     "serial": 7,                          # +1 for every document (publish, promote, rollback)
     "version": 3,                         # the group's version; a new publish is max + 1
     "rollback": null | {"from": 4},       # the signed marker that allows going back
     "group": "line-1", "created": 1764064000.0,
     "rollout": {"percent": 40, "cutoff": 0.37, "max_failures": 1},
     "group_file": {...},                  # the group; sources in the bucket, pinned by sha256
     "code": {"classify": {"uri": "s3://...", "sha256": "..."}}}

A core takes a document only when its serial is above the last one it accepted (a replayed old
document is refused), applies a version lower than its own only with the rollback marker, and
applies at all only when the rollout targets it: ``point(core name) < cutoff``, a stable hash of
the name in [0, 1). The publisher picks the cutoff so that exactly ``percent`` of the cores it
knows are inside.
"""

from __future__ import annotations

import hashlib
import math
from typing import Any

DOC_FORMAT = "pyengine-fleet/1"


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
    """Check a verified document's shape; ValueError naming the first problem."""

    def need(cond: bool, what: str) -> None:
        if not cond:
            raise ValueError(f"malformed document: {what}")

    need(doc.get("format") == DOC_FORMAT, f"format {doc.get('format')!r}, expected {DOC_FORMAT!r}")
    need(doc.get("fleet") == fleet_uri,
         f"published to fleet {doc.get('fleet')!r}, not this core's {fleet_uri!r}")
    for k in ("serial", "version"):
        v = doc.get(k)
        need(isinstance(v, int) and not isinstance(v, bool) and v >= 1,
             f"{k} {v!r} must be a positive integer")
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
    code = doc.get("code")
    if not isinstance(code, dict):
        raise ValueError("malformed document: code missing")
    for i, f in enumerate(g.get("functions") or []):
        name = f.get("name") if isinstance(f, dict) else None
        c = code.get(name) if isinstance(name, str) else None
        need(isinstance(c, dict) and isinstance(c.get("uri"), str)
             and isinstance(c.get("sha256"), str) and len(c["sha256"]) == 64,
             f"functions[{i}] ({name!r}) has no pinned code package")


def summary(doc: dict[str, Any]) -> str:
    """One line: "version 3 (serial 7, 40%, rollback from 4)"."""
    ro = doc.get("rollout", {})
    parts = [f"serial {doc.get('serial')}", f"{ro.get('percent', 100):g}%"]
    if doc.get("rollback"):
        parts.append(f"rollback from {doc['rollback'].get('from')}")
    return f"version {doc.get('version')} of {doc.get('group')} ({', '.join(parts)})"


def failures(statuses: dict[str, dict[str, Any]], version: int, group: str) -> list[str]:
    """The cores whose status says applying ``version`` of ``group`` failed."""
    return sorted(
        n for n, st in statuses.items()
        if st.get("failed_version") == version and st.get("group") in (group, None)
        and st.get("state") == "failed"
    )


def halted(doc: dict[str, Any], statuses: dict[str, dict[str, Any]]) -> bool:
    """True when more cores failed this document's version than its rollout allows."""
    mf = doc.get("rollout", {}).get("max_failures")
    if mf is None:
        return False
    return len(failures(statuses, int(doc["version"]), str(doc.get("group")))) > int(mf)
