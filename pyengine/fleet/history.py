"""The fleet's signed history as the operator's commands read and extend it: verifying every
document (:func:`verified_history`), listing them for display, and signing a new document or
timestamp into the bucket.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from typing import Any, Iterator, Optional

from pyengine.fleet import document, enrollment
from pyengine.fleet.notify import Broker, announce
from pyengine.fleet.signing import SignatureError, SigningKey, TrustedKey, open_envelope
from pyengine.fleet.store import LATEST, TIMESTAMP, Fleet, OversizeError
from pyengine.sources import SourceError

log = logging.getLogger("pyengine.fleet")


class FleetError(RuntimeError):
    """A fleet operation that cannot be done as asked (the message says why and what to do)."""


@dataclass
class Signed:
    """A verified document from the fleet's history."""

    doc: dict[str, Any]
    key: str  # object name under deployments/
    data: bytes  # the stored envelope (what the timestamp pins)


def doc_name(serial: int) -> str:
    return f"{serial:010d}.json"


def documents(fleet: Fleet, trusted: list[TrustedKey]) -> Iterator[Signed]:
    """The fleet's history, newest serial first, read lazily, for display: only documents signed
    by a trusted key, for this fleet, stored under their own serial's name (anything else is
    skipped with a warning; :func:`verified_history` refuses it instead)."""
    for name in sorted(fleet.list("deployments"), reverse=True):
        try:
            yield _verified(fleet, name, trusted)
        except (FleetError, SourceError) as exc:
            log.warning("ignoring %s", exc)


def _verified(fleet: Fleet, name: str, trusted: list[TrustedKey]) -> Signed:
    """One history object, verified; FleetError naming it otherwise."""
    where = fleet.object_uri("deployments", name)
    data = fleet.get("deployments", name)
    if data is None:
        raise FleetError(f"{where} vanished while the history was read")
    try:
        doc, _ = open_envelope(data, trusted)
    except SignatureError as exc:
        raise FleetError(f"{where}: {exc}") from None
    serial = doc.get("serial")
    if doc.get("fleet") != fleet.uri or not isinstance(serial, int) \
            or name != doc_name(serial):
        raise FleetError(f"{where}: holds serial {serial!r} of fleet {doc.get('fleet')!r}, not "
                         f"this fleet's document {name} (a genuine document copied under "
                         "another name?)")
    return Signed(doc, name, data)


def history(fleet: Fleet, trusted: list[TrustedKey]) -> list[Signed]:
    """Every verified document of the fleet (see :func:`documents`), newest first."""
    return list(documents(fleet, trusted))


@dataclass
class History:
    """The fleet's history as a publisher must see it before signing anything new."""

    docs: list[Signed]  # newest first, every object verified, serials 1..N without a gap
    enrolled: enrollment.Enrollment
    statuses: enrollment.Statuses  # of the enrolled cores
    timestamp: Optional[dict[str, Any]]  # the current verified timestamp, if any

    @property
    def latest(self) -> Optional[dict[str, Any]]:
        return self.docs[0].doc if self.docs else None

    @property
    def next_serial(self) -> int:
        return int(self.docs[0].doc["serial"]) + 1 if self.docs else 1

    @property
    def high(self) -> int:
        """The highest version ever published."""
        return max((int(s.doc.get("high", s.doc["version"])) for s in self.docs), default=0)


def verified_history(fleet: Fleet, key: SigningKey,
                     trusted: Optional[list[TrustedKey]] = None) -> History:
    """Read and verify everything a new document is numbered from.

    Every object under ``deployments/`` must verify against ``key`` (or ``trusted``: the fleet
    keys, when ``key`` only signs timestamps) under its own serial's name,
    the serials must run 1..N without a gap, and nothing signed (the timestamp, an enrolled
    core's status) may name a serial above N: otherwise the history was tampered with or cut,
    and a publish would reuse a serial that cores already hold.

    Raises
    ------
    FleetError
        Naming the object that cannot be verified (or the serial that is missing) and what to do.
    """
    trusted = trusted or [key.public]
    fix = ("; restore it from a backup (S3 versioning keeps old versions) or, after checking "
           "how it got there, delete it, then run the command again")
    docs = []
    for name in sorted(fleet.list("deployments"), reverse=True):
        try:
            docs.append(_verified(fleet, name, trusted))
        except OversizeError as exc:
            raise FleetError(f"cannot verify the fleet's history: {exc}{fix}") from None
        except FleetError as exc:
            raise FleetError(f"cannot verify the fleet's history: {exc}{fix}") from None
    serials = [int(s.doc["serial"]) for s in docs]
    missing = sorted(set(range(1, (serials[0] if serials else 0) + 1)) - set(serials))
    if missing:
        shown = ", ".join(fleet.object_uri("deployments", doc_name(n)) for n in missing[:5])
        raise FleetError(f"the fleet's history has a gap: {shown}"
                         f"{' ...' if len(missing) > 5 else ''} missing; restore "
                         f"{'them' if len(missing) > 1 else 'it'} from a backup (S3 versioning)")
    top = serials[0] if serials else 0
    try:
        enrolled = enrollment.read(fleet, trusted)
    except ValueError as exc:
        raise FleetError(str(exc)) from None
    ts = current_timestamp(fleet, [*trusted, key.public])
    claims = []
    if ts is not None:
        claims.append((int(ts["deployment"]["serial"]), fleet.object_uri(TIMESTAMP), ""))
    sts = enrollment.statuses(fleet, enrolled)
    for n, st in sts.verified.items():
        if isinstance(st.get("serial"), int):
            claims.append((int(st["serial"]), f"enrolled core {n}'s signed status",
                           f" (if core {n} itself is compromised and lies, take it off the "
                           f"list: `pyengine fleet enroll --remove {n}`)"))
    for serial, who, otherwise in claims:
        if serial > top:
            raise FleetError(
                f"{who} names serial {serial}, but the history in "
                f"{fleet.object_uri('deployments')}/ ends at {top}: documents were deleted; "
                "restore them from a backup (S3 versioning) before publishing, or the new "
                f"document would reuse a serial that cores already hold{otherwise}")
    return History(docs, enrolled, sts, ts)


def current_timestamp(fleet: Fleet, trusted: list[TrustedKey]) -> Optional[dict[str, Any]]:
    """The current timestamp when it verifies (a forged one is replaced, with a warning)."""
    try:
        data = fleet.get(TIMESTAMP)
    except OversizeError as exc:
        log.warning("replacing %s", exc)
        return None
    if data is None:
        return None
    try:
        doc, _ = open_envelope(data, trusted)
        document.check_timestamp(doc, fleet.uri)
    except (SignatureError, ValueError) as exc:
        # Forged, or signed by a timestamp key this command does not know: the new one is
        # numbered from the clock either way.
        log.info("replacing %s (not verified with this command's keys: %s)",
                 fleet.object_uri(TIMESTAMP), exc)
        return None
    return doc


def put_signed(fleet: Fleet, key: SigningKey, doc: dict[str, Any], *parts: str) -> bytes:
    """Sign ``doc`` and store it under each of ``parts`` (one object per tuple element)."""
    data = json.dumps(key.seal(doc), indent=1, sort_keys=True).encode()
    for p in parts:
        fleet.put(data, *p.split("/"))
    return data


def write_timestamp(fleet: Fleet, key: SigningKey, latest: Signed,
                    enrolled: enrollment.Enrollment, previous: Optional[dict[str, Any]],
                    expires_s: float = document.TIMESTAMP_EXPIRES_S) -> dict[str, Any]:
    """Sign a timestamp naming ``latest`` and the enrollment; returns it."""
    if not expires_s > 0:
        raise ValueError(f"--timestamp-expires {expires_s!r} must be more than 0 seconds")
    now = time.time()
    prev = int(previous["serial"]) if previous else 0
    ts = {
        "format": document.TIMESTAMP_FORMAT, "fleet": fleet.uri,
        # Milliseconds keep it growing even when timestamp.json was lost or forged.
        "serial": max(prev + 1, int(now * 1000)),
        "created": now, "expires": now + expires_s,
        "deployment": document.pin(latest.data, int(latest.doc["serial"])),
        "enrollment": document.pin(enrolled.data, enrolled.serial) if enrolled.data else None,
    }
    put_signed(fleet, key, ts, TIMESTAMP)
    return ts


def write_document(fleet: Fleet, key: SigningKey, hist: History, doc: dict[str, Any],
           mqtt: Optional[Broker], timestamp_expires_s: float = document.TIMESTAMP_EXPIRES_S,
           ) -> None:
    """Sign a new document into the history and the timestamp, and announce it."""
    name = doc_name(int(doc["serial"]))
    data = put_signed(fleet, key, doc, f"deployments/{name}", LATEST)
    write_timestamp(fleet, key, Signed(doc, name, data), hist.enrolled, hist.timestamp,
                    timestamp_expires_s)
    if mqtt:
        announce(mqtt, f"{fleet.topic}/deployment",
                 {"serial": doc["serial"], "version": doc["version"]})
