"""Publishing to a fleet: upload packages and code, sign a document, announce it.

Everything here runs on the operator's machine; cores only ever read what it wrote. Every
command that signs first verifies the whole history (:func:`pyengine.fleet.history.verified_history`)
and numbers the new document above the highest verified one; each one also signs a new
timestamp.
"""

from __future__ import annotations

import contextlib
import copy
import gzip
import hashlib
import logging
import os
import tarfile
import tempfile
import time
from typing import IO, Any, Iterator, Optional, cast

from pyengine.deploy import (
    DEFAULT_MAX_FILES,
    TREE_MAX_BYTES,
    ExactReader,
    UnpackError,
    narrow_mode,
    read_group_file,
    validate_group,
    walk_tree,
)
from pyengine.fleet import document, enrollment
from pyengine.fleet.history import (
    FleetError,
    History,
    Signed,
    current_timestamp,
    doc_name,
    documents,
    put_signed,
    verified_history,
    write_document,
    write_timestamp,
)
from pyengine.fleet.notify import Broker, announce
from pyengine.fleet.signing import SigningKey, TrustedKey
from pyengine.fleet.store import ENROLLMENT, LATEST, Fleet
from pyengine.sources import file_sha256, open_source

log = logging.getLogger("pyengine.fleet")

#: Set on the publisher while validating (unless already set) and on every core to its name, so
#: destinations can differ per core: ``/srv/${PYENGINE_CORE_NAME}/models/digits``.
CORE_NAME_VAR = "PYENGINE_CORE_NAME"


@contextlib.contextmanager
def _placeholder_core_name() -> Iterator[None]:
    if CORE_NAME_VAR in os.environ:
        yield
        return
    os.environ[CORE_NAME_VAR] = "core"
    try:
        yield
    finally:
        os.environ.pop(CORE_NAME_VAR, None)


def code_package(code_dir: str, out_path: str, *, max_bytes: Optional[int] = None,
                 max_files: Optional[int] = None) -> str:
    """A reproducible .tar.gz of a function's code (caches skipped, times zeroed); its sha256.

    The directory is walked as a deploy copies it (:func:`pyengine.deploy.walk_tree`):
    symbolic links, FIFOs, sockets and devices are refused (:class:`UnpackError`), never
    followed or read; modes are kept, narrowed (no setuid/setgid, no group or world write).
    """
    with open(out_path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as gz, \
            tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar:

        def add(rel: str, st: os.stat_result, reader: Optional[ExactReader]) -> None:
            if reader is None:
                return  # directories come with their files (the unpacker makes them)
            ti = tarfile.TarInfo(rel)
            ti.size = st.st_size
            ti.mode = narrow_mode(st.st_mode, False)
            ti.mtime = 0
            tar.addfile(ti, cast(IO[bytes], reader))

        walk_tree(code_dir, add, max_bytes=max_bytes or TREE_MAX_BYTES,
                  max_files=max_files or DEFAULT_MAX_FILES)
    return file_sha256(out_path)


def _remote_package(uri: str, sha256: Optional[str], group: Any) -> tuple[str, Optional[int]]:
    """(SHA-256, size) of a package the publisher does not upload (streamed when the group does
    not give the digest)."""
    src = open_source(uri, group.s3, group.sagemaker)
    info = src.resolve()
    if sha256:
        return sha256, info.size
    h = hashlib.sha256()
    for chunk in src.stream(info):
        h.update(chunk)
    return h.hexdigest(), info.size


def _upload(fleet: Fleet, local: str, *parts: str) -> None:
    """Upload unless the bucket holds an object of the same size under this content-addressed
    name (one of another size was replaced: upload it again)."""
    if fleet.size(*parts) != os.path.getsize(local):
        fleet.upload_file(local, *parts)


def _rollout(hist: History, percent: float, max_failures: Optional[int],
             since: Optional[int] = None) -> dict[str, Any]:
    """A rollout over the enrolled cores. ``since``: the serial that first carried this version
    (statuses from before it are about another rollout, e.g. replayed old failures); the next
    serial by default."""
    if not 0 < percent <= 100:
        raise ValueError(f"--percent {percent!r} must be more than 0 and at most 100")
    if max_failures is not None and max_failures < 0:
        raise ValueError(f"--max-failures {max_failures!r} must be 0 or more")
    known = hist.enrolled.names
    if not known and percent < 100:
        log.warning("no core is enrolled: the %g%% canary is chosen by hash alone (enroll the "
                    "cores with `pyengine fleet enroll` for an exact share)", percent)
    return {"percent": percent, "cutoff": document.cutoff(percent, known),
            "max_failures": max_failures, "known_cores": len(known), "acknowledged": [],
            "since": hist.next_serial if since is None else since}


def _stamp(doc: dict[str, Any], serial: int, expires_s: float) -> dict[str, Any]:
    """``doc`` as a new document: the next serial, signed now, expiring after ``expires_s``."""
    if not expires_s > 0:
        raise ValueError(f"--expires {expires_s!r} must be more than 0 seconds")
    now = time.time()
    return {**doc, "format": document.DOC_FORMAT, "serial": serial, "created": now,
            "expires": now + expires_s}


def publish(group_path: str, fleet: Fleet, key: SigningKey, *, percent: float = 100.0,
            max_failures: Optional[int] = None, mqtt: Optional[Broker] = None,
            expires_s: float = document.DOC_EXPIRES_S,
            timestamp_expires_s: float = document.TIMESTAMP_EXPIRES_S) -> dict[str, Any]:
    """Publish a group file to ``fleet`` as a new version.

    Local packages and every function's code are uploaded (content-addressed, skipped when the
    bucket already has them); remote packages stay where they are, pinned by their SHA-256.

    Parameters
    ----------
    group_path
        The group file (YAML or JSON), as for ``pyengine deploy``.
    fleet, key
        Where to publish and the Ed25519 key that signs.
    percent
        The share of cores the version goes to first (the canary); the rest wait for
        :func:`promote`.
    max_failures
        The rollout halts when more cores than this report failure (None: never).
    mqtt
        The broker to announce the document on (cores also poll): ``host:port`` or
        :class:`~pyengine.common.mqtt.MqttSettings` (TLS, credentials, topic prefix).
    expires_s, timestamp_expires_s
        Lifetimes of the document and of the timestamp (`fleet refresh` renews both).

    Returns
    -------
    dict
        The signed document.

    Raises
    ------
    FleetError
        The bucket's history cannot be verified (see :func:`verified_history`).
    """
    path = os.path.abspath(group_path)
    raw = read_group_file(path)
    with _placeholder_core_name():
        group = validate_group(raw, path)
    raw = copy.deepcopy(raw)
    hist = verified_history(fleet, key)
    rollout = _rollout(hist, percent, max_failures)
    raw_by_id = {r.get("id"): r for r in raw.get("resources") or [] if isinstance(r, dict)}
    packages: dict[str, dict[str, int]] = {}  # resource id -> the size the document signs
    for r in group.resources:
        if r.model is None:
            continue
        m = raw_by_id[r.id]["model"]
        if r.model.source.startswith("file://"):
            local = r.model.source[len("file://"):]
            sha = file_sha256(local)
            if r.model.sha256 and r.model.sha256 != sha:
                raise FleetError(f"resource {r.id!r}: {local} has sha256 {sha}, but the group "
                                 f"says {r.model.sha256}")
            ext = next(e for e in (".tar.gz", ".tgz", ".zip") if local.endswith(e))
            name = f"{sha}{ext}"
            _upload(fleet, local, "packages", name)
            m["source"] = fleet.object_uri("packages", name)
            size: Optional[int] = os.path.getsize(local)
        else:
            sha, size = _remote_package(r.model.source, r.model.sha256, group)
            m["source"] = r.model.source
        m["sha256"] = sha
        if size is not None:
            packages[r.id] = {"size": size}
    code: dict[str, dict[str, Any]] = {}
    raw_fn = {f.get("name"): f for f in raw.get("functions") or [] if isinstance(f, dict)}
    with tempfile.TemporaryDirectory(prefix="pyengine-fleet-") as tmp:
        for f in group.functions:
            out = os.path.join(tmp, f"{f.name}.tar.gz")
            try:
                sha = code_package(f.code, out, max_bytes=f.max_code_bytes,
                                   max_files=f.max_code_files)
            except (UnpackError, OSError) as exc:
                where = f"functions[{group.functions.index(f)}].code"
                raise FleetError(f"{where} ({f.code}): {exc}") from None
            name = f"{sha}.tar.gz"
            _upload(fleet, out, "code", name)
            code[f.name] = {"uri": fleet.object_uri("code", name), "sha256": sha,
                            "size": os.path.getsize(out)}
            raw_fn[f.name]["code"] = f"fleet-code:{sha}"
    doc = _stamp({
        "fleet": fleet.uri,
        "version": hist.high + 1,
        "high": hist.high + 1,
        "rollback": None,
        "group": group.name,
        "rollout": rollout,
        "group_file": raw,
        "code": code,
        "packages": packages,
    }, hist.next_serial, expires_s)
    write_document(fleet, key, hist, doc, mqtt, timestamp_expires_s)
    return doc


def latest(fleet: Fleet, trusted: list[TrustedKey]) -> dict[str, Any]:
    """The newest document signed by a trusted key; FleetError when there is none."""
    last = next(documents(fleet, trusted), None)
    if last is None:
        raise FleetError(f"nothing has been published to {fleet.uri} with a trusted key; "
                         "run `pyengine fleet publish` first")
    return last.doc


def _current(fleet: Fleet, key: SigningKey) -> tuple[History, dict[str, Any]]:
    hist = verified_history(fleet, key)
    if hist.latest is None:
        raise FleetError(f"nothing has been published to {fleet.uri}; run `pyengine fleet "
                         "publish` first")
    return hist, hist.latest


def _halt_message(doc: dict[str, Any], bad: list[str]) -> str:
    return (f"the rollout of {document.summary(doc)} is halted: {len(bad)} enrolled core(s) "
            f"reported failure ({', '.join(bad)}), more than the "
            f"{doc['rollout']['max_failures']} allowed")


def promote(fleet: Fleet, key: SigningKey, *, percent: float = 100.0, force: bool = False,
            mqtt: Optional[Broker] = None, expires_s: float = document.DOC_EXPIRES_S,
            timestamp_expires_s: float = document.TIMESTAMP_EXPIRES_S) -> dict[str, Any]:
    """Widen the current rollout to ``percent`` of the cores (a new document, same version).

    Refused when the rollout is halted (more enrolled cores reported failure than it allows)
    unless ``force``; even then each core checks the failures itself and refuses to apply a
    halted version.
    """
    hist, cur = _current(fleet, key)
    bad = document.halted(cur, hist.statuses.verified)
    if bad and not force:
        raise FleetError(f"{_halt_message(cur, bad)}; publish a fixed version, roll back "
                         "(`pyengine fleet rollback`) or accept the failures (`pyengine fleet "
                         "resume`)")
    if percent <= float(cur["rollout"].get("percent", 100)) and not force:
        raise FleetError(f"{document.summary(cur)} already goes to {cur['rollout']['percent']:g}%"
                         f"; promote to a larger share than that")
    unconfirmed = _unconfirmed(hist, cur)
    if unconfirmed and not force:
        raise FleetError(
            f"the canary of {document.summary(cur)} is not confirmed: enrolled core(s) "
            f"{', '.join(f'{n} ({why})' for n, why in unconfirmed.items())} have no status "
            "signed by their enrolled key saying they applied it; wait for them, or --force")
    rollout = _rollout(hist, percent, cur["rollout"].get("max_failures"),
                       int(cur["rollout"].get("since", cur["serial"])))
    rollout["acknowledged"] = list(cur["rollout"].get("acknowledged") or [])
    doc = _stamp({**cur, "rollout": rollout}, hist.next_serial, expires_s)
    write_document(fleet, key, hist, doc, mqtt, timestamp_expires_s)
    return doc


def _unconfirmed(hist: History, doc: dict[str, Any]) -> dict[str, str]:
    """The enrolled cores the rollout targets that have not verifiably applied its version
    (core name -> what their status lacks): a deleted or forged status confirms nothing."""
    out = {}
    for n in hist.enrolled.names:
        if not document.targets(doc, n):
            continue
        st = hist.statuses.verified.get(n)
        if st is None:
            out[n] = hist.statuses.unverified.get(n, "no status")
        elif not (st.get("version") == doc["version"] and st.get("group") == doc["group"]
                  and st.get("state") == "applied" and document.current(st, doc)):
            out[n] = f"{st.get('state')} at version {st.get('version')}"
    return out


def resume(fleet: Fleet, key: SigningKey, *, mqtt: Optional[Broker] = None,
           expires_s: float = document.DOC_EXPIRES_S,
           timestamp_expires_s: float = document.TIMESTAMP_EXPIRES_S) -> dict[str, Any]:
    """Clear a halt: the current document again (a new serial) with today's failures
    acknowledged, so only new failures count against ``max_failures``.

    The cores that failed keep their version (a version that failed on a core is not retried
    there); the halted ones apply it.
    """
    hist, cur = _current(fleet, key)
    bad = document.failures(hist.statuses.verified, cur)
    if not bad:
        raise FleetError(f"{document.summary(cur)} has no failures to accept; nothing to resume")
    rollout = dict(cur["rollout"])
    rollout["acknowledged"] = sorted(set(rollout.get("acknowledged") or []) | set(bad))
    doc = _stamp({**cur, "rollout": rollout}, hist.next_serial, expires_s)
    write_document(fleet, key, hist, doc, mqtt, timestamp_expires_s)
    return doc


def rollback(fleet: Fleet, key: SigningKey, *, to: Optional[int] = None,
             mqtt: Optional[Broker] = None, expires_s: float = document.DOC_EXPIRES_S,
             timestamp_expires_s: float = document.TIMESTAMP_EXPIRES_S) -> dict[str, Any]:
    """Publish an earlier version again, with the signed rollback marker, to every core.

    The rollback is a new document with the next serial (above everything before it) that
    carries older content; cores accept a lower version only from such a document.

    Parameters
    ----------
    to
        The version to go back to; default: the newest earlier version that was promoted to
        every core (else the newest earlier version).
    """
    hist, cur = _current(fleet, key)
    older = [s.doc for s in hist.docs[1:]]
    earlier = [d for d in older if int(d["version"]) < int(cur["version"])]
    if to is not None:
        earlier = [d for d in earlier if int(d["version"]) == to]
        if not earlier:
            known = sorted({int(d["version"]) for d in [cur, *older]})
            raise FleetError(f"--to {to}: not an earlier version of {fleet.uri} (current "
                             f"{cur['version']}; published: {known})")
    if not earlier:
        raise FleetError(f"{document.summary(cur)} is the first version published to "
                         f"{fleet.uri}; there is no earlier version to roll back to")
    everywhere = [d for d in earlier if float(d["rollout"].get("percent", 100)) >= 100]
    prev = (everywhere or earlier)[0]
    doc = _stamp({**prev, "high": hist.high, "rollback": {"from": int(cur["version"])},
                  "rollout": _rollout(hist, 100.0, prev["rollout"].get("max_failures"))},
                 hist.next_serial, expires_s)
    write_document(fleet, key, hist, doc, mqtt, timestamp_expires_s)
    return doc


def refresh(fleet: Fleet, key: SigningKey, *, trusted: Optional[list[TrustedKey]] = None,
            mqtt: Optional[Broker] = None, expires_s: float = document.DOC_EXPIRES_S,
            timestamp_expires_s: float = document.TIMESTAMP_EXPIRES_S) -> dict[str, Any]:
    """Re-sign the timestamp (run it from cron more often than ``timestamp_expires_s``).

    With the fleet key, the current document and the enrollment are re-signed too (a new
    serial, same content) once half their lifetime has passed. With a timestamp-only key (cores
    trust it with ``--trust-timestamp``; ``trusted``: the fleet's public keys, to verify the
    history) only the timestamp is signed, so a machine that runs cron never holds the fleet
    key. Returns the new timestamp; cores that stop seeing fresh timestamps report "stale".
    """
    hist = verified_history(fleet, key, trusted)
    cur = hist.latest
    if cur is None:
        raise FleetError(f"nothing has been published to {fleet.uri}; run `pyengine fleet "
                         "publish` first")
    fleet_key = trusted is None or key.public.id in {k.id for k in trusted}
    if not fleet_key:
        for what, d in (("the document", cur), ("the enrollment", hist.enrolled.doc)):
            if d is not None and document.renew_due(d):
                log.warning("%s expires at %s; renew it with the fleet key (`pyengine fleet "
                            "refresh --key FLEET_KEY`)", what,
                            time.strftime("%Y-%m-%d %H:%M", time.gmtime(float(d["expires"])))
                            if isinstance(d.get("expires"), (int, float)) else "once")
    elif document.renew_due(cur):
        doc = _stamp(cur, hist.next_serial, expires_s)
        name = doc_name(int(doc["serial"]))
        data = put_signed(fleet, key, doc, f"deployments/{name}", LATEST)
        hist.docs.insert(0, Signed(doc, name, data))
        log.info("renewed %s (it expired or would soon)", document.summary(doc))
    if fleet_key and hist.enrolled.doc is not None and document.renew_due(hist.enrolled.doc):
        hist.enrolled = _sign_enrollment(fleet, key, enrollment.enroll(fleet, key,
                                                                          expires_s=expires_s))
    ts = write_timestamp(fleet, key, hist.docs[0], hist.enrolled, hist.timestamp,
                         timestamp_expires_s)
    if mqtt:
        announce(mqtt, f"{fleet.topic}/deployment",
                 {"serial": hist.docs[0].doc["serial"], "version": hist.docs[0].doc["version"]})
    return ts


def _sign_enrollment(fleet: Fleet, key: SigningKey,
                     doc: dict[str, Any]) -> enrollment.Enrollment:
    data = put_signed(fleet, key, doc, ENROLLMENT)
    return enrollment.parse(data, [key.public], fleet.uri)


def enroll(fleet: Fleet, key: SigningKey, *, add: Optional[dict[str, TrustedKey]] = None,
           remove: Optional[list[str]] = None, mqtt: Optional[Broker] = None,
           expires_s: float = document.DOC_EXPIRES_S,
           timestamp_expires_s: float = document.TIMESTAMP_EXPIRES_S) -> dict[str, Any]:
    """Enroll cores' status keys (``add``: name -> public key) or remove cores; returns the
    signed enrollment. Only enrolled cores' signed statuses count for halting, promotion and
    canary selection."""
    hist = verified_history(fleet, key)
    hist.enrolled = _sign_enrollment(
        fleet, key, enrollment.enroll(fleet, key, add=add, remove=remove, expires_s=expires_s))
    if hist.docs:  # cores learn of the list through the timestamp
        write_timestamp(fleet, key, hist.docs[0], hist.enrolled, hist.timestamp,
                        timestamp_expires_s)
        if mqtt:
            announce(mqtt, f"{fleet.topic}/deployment",
                     {"serial": hist.docs[0].doc["serial"],
                      "version": hist.docs[0].doc["version"]})
    assert hist.enrolled.doc is not None
    return hist.enrolled.doc


def status(fleet: Fleet, trusted: list[TrustedKey]) -> dict[str, Any]:
    """The current document (or None), the timestamp's freshness and every core's status.

    Rollout counts use only statuses signed by enrolled cores; the rest are listed under
    ``unverified`` with the reason, and ignored.
    """
    last = next(documents(fleet, trusted), None)
    cur = last.doc if last else None
    try:
        enrolled = enrollment.read(fleet, trusted)
        problem = None
    except ValueError as exc:
        enrolled, problem = enrollment.Enrollment(), str(exc)
    sts = enrollment.statuses(fleet, enrolled, every=True)
    cores = sts.verified
    ts = current_timestamp(fleet, trusted)
    out: dict[str, Any] = {
        "fleet": fleet.uri, "document": None, "cores": cores,
        "unverified": sts.unverified, "enrolled": enrolled.names, "enrollment_problem": problem,
        "timestamp": None if ts is None else {
            "serial": ts["serial"], "expires": ts["expires"], "stale": document.expired(ts)},
    }
    if cur is not None:
        v = int(cur["version"])
        bad = document.halted(cur, cores)
        out["document"] = {
            "serial": cur["serial"], "version": v, "group": cur["group"],
            "rollback": cur.get("rollback"), "rollout": cur["rollout"],
            "expires": cur.get("expires"),
            "summary": document.summary(cur),
            "on_version": sorted(n for n, s in cores.items() if s.get("version") == v),
            "targeted": sorted(n for n in cores if document.targets(cur, n)),
            "failed": document.failures(cores, cur),
            "halted": bool(bad), "halted_by": bad,
        }
    return out
