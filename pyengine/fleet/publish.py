"""Publishing to a fleet: upload packages and code, sign a document, announce it.

Everything here runs on the operator's machine; cores only ever read what it wrote.
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
from dataclasses import dataclass
from typing import IO, Any, Iterator, Optional, cast

from pyengine.deploy.errors import UnpackError
from pyengine.deploy.group import read_group_file, validate_group
from pyengine.deploy.unpack import (
    DEFAULT_MAX_FILES,
    TREE_MAX_BYTES,
    ExactReader,
    narrow_mode,
    walk_tree,
)
from pyengine.fleet import document
from pyengine.fleet.notify import Broker, announce
from pyengine.fleet.signing import SignatureError, SigningKey, TrustedKey, open_envelope
from pyengine.fleet.store import LATEST, Fleet
from pyengine.sources import open_source
from pyengine.sources.file import file_sha256

log = logging.getLogger("pyengine.fleet")

#: Set on the publisher while validating (unless already set) and on every core to its name, so
#: destinations can differ per core: ``/srv/${PYENGINE_CORE_NAME}/models/digits``.
CORE_NAME_VAR = "PYENGINE_CORE_NAME"


class FleetError(RuntimeError):
    """A fleet operation that cannot be done as asked (the message says why and what to do)."""


@dataclass
class Signed:
    """A verified document from the fleet's history."""

    doc: dict[str, Any]
    key: str  # object name under deployments/


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

    The directory is walked as a deploy copies it (:func:`pyengine.deploy.unpack.walk_tree`):
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


def _stream_sha256(uri: str, group: Any) -> str:
    src = open_source(uri, group.s3, group.sagemaker)
    info = src.resolve()
    h = hashlib.sha256()
    for chunk in src.stream(info):
        h.update(chunk)
    return h.hexdigest()


def documents(fleet: Fleet, trusted: list[TrustedKey]) -> Iterator[Signed]:
    """The fleet's history, newest serial first, read lazily: only documents signed by a
    trusted key, for this fleet, stored under their own serial's name (a genuine old document
    copied under a newer name is skipped, like anything that fails verification)."""
    for name in sorted(fleet.list("deployments"), reverse=True):
        data = fleet.get("deployments", name)
        if data is None:
            continue
        try:
            doc, _ = open_envelope(data, trusted)
        except SignatureError as exc:
            log.warning("ignoring %s: %s", fleet.object_uri("deployments", name), exc)
            continue
        serial = doc.get("serial")
        if doc.get("fleet") != fleet.uri or not isinstance(serial, int) \
                or name != f"{serial:010d}.json":
            log.warning("ignoring %s: not this fleet's document number %s",
                        fleet.object_uri("deployments", name), name)
            continue
        yield Signed(doc, name)


def history(fleet: Fleet, trusted: list[TrustedKey]) -> list[Signed]:
    """Every verified document of the fleet (see :func:`documents`), newest first."""
    return list(documents(fleet, trusted))


def _write(fleet: Fleet, key: SigningKey, doc: dict[str, Any], mqtt: Optional[Broker]) -> None:
    env = key.seal(doc)
    fleet.put_json(env, "deployments", f"{int(doc['serial']):010d}.json")
    fleet.put_json(env, LATEST)
    if mqtt:
        announce(mqtt, f"{fleet.topic}/deployment",
                 {"serial": doc["serial"], "version": doc["version"]})


def _rollout(fleet: Fleet, percent: float, max_failures: Optional[int]) -> dict[str, Any]:
    if not 0 < percent <= 100:
        raise ValueError(f"--percent {percent!r} must be more than 0 and at most 100")
    if max_failures is not None and max_failures < 0:
        raise ValueError(f"--max-failures {max_failures!r} must be 0 or more")
    known = sorted(fleet.statuses())
    return {"percent": percent, "cutoff": document.cutoff(percent, known),
            "max_failures": max_failures, "known_cores": len(known)}


def publish(group_path: str, fleet: Fleet, key: SigningKey, *, percent: float = 100.0,
            max_failures: Optional[int] = None, mqtt: Optional[Broker] = None) -> dict[str, Any]:
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
        :class:`~pyengine.core.config.MqttSettings` (TLS, credentials, topic prefix).

    Returns
    -------
    dict
        The signed document.
    """
    path = os.path.abspath(group_path)
    raw = read_group_file(path)
    with _placeholder_core_name():
        group = validate_group(raw, path)
    raw = copy.deepcopy(raw)
    rollout = _rollout(fleet, percent, max_failures)
    raw_by_id = {r.get("id"): r for r in raw.get("resources") or [] if isinstance(r, dict)}
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
            if not fleet.exists("packages", name):
                fleet.upload_file(local, "packages", name)
            m["source"] = fleet.object_uri("packages", name)
        else:
            sha = r.model.sha256 or _stream_sha256(r.model.source, group)
            m["source"] = r.model.source
        m["sha256"] = sha
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
            if not fleet.exists("code", name):
                fleet.upload_file(out, "code", name)
            code[f.name] = {"uri": fleet.object_uri("code", name), "sha256": sha,
                            "size": os.path.getsize(out)}
            raw_fn[f.name]["code"] = f"fleet-code:{sha}"
    last = next(documents(fleet, [key.public]), None)
    serial = int(last.doc["serial"]) + 1 if last else 1
    high = int(last.doc.get("high", last.doc["version"])) if last else 0
    doc = {
        "format": document.DOC_FORMAT,
        "fleet": fleet.uri,
        "serial": serial,
        "version": high + 1,
        "high": high + 1,
        "rollback": None,
        "group": group.name,
        "created": time.time(),
        "rollout": rollout,
        "group_file": raw,
        "code": code,
    }
    _write(fleet, key, doc, mqtt)
    return doc


def latest(fleet: Fleet, trusted: list[TrustedKey]) -> dict[str, Any]:
    """The newest document signed by a trusted key; FleetError when there is none."""
    last = next(documents(fleet, trusted), None)
    if last is None:
        raise FleetError(f"nothing has been published to {fleet.uri} with a trusted key; "
                         "run `pyengine fleet publish` first")
    return last.doc


def promote(fleet: Fleet, key: SigningKey, *, percent: float = 100.0, force: bool = False,
            mqtt: Optional[Broker] = None) -> dict[str, Any]:
    """Widen the current rollout to ``percent`` of the cores (a new document, same version).

    Refused when the rollout is halted (more failures than it allows) unless ``force``; even
    then each core checks the failures itself and refuses to apply a halted version.
    """
    cur = latest(fleet, [key.public])
    statuses = fleet.statuses()
    if document.halted(cur, statuses) and not force:
        bad = document.failures(statuses, int(cur["version"]), str(cur["group"]))
        raise FleetError(
            f"the rollout of {document.summary(cur)} is halted: {len(bad)} core(s) failed "
            f"({', '.join(bad)}), more than the {cur['rollout']['max_failures']} allowed; "
            "publish a fixed version or roll back (`pyengine fleet rollback`)"
        )
    if percent <= float(cur["rollout"].get("percent", 100)) and not force:
        raise FleetError(f"{document.summary(cur)} already goes to {cur['rollout']['percent']:g}%"
                         f"; promote to a larger share than that")
    doc = dict(cur)
    doc["serial"] = int(cur["serial"]) + 1
    doc["created"] = time.time()
    doc["rollout"] = {**_rollout(fleet, percent, cur["rollout"].get("max_failures"))}
    _write(fleet, key, doc, mqtt)
    return doc


def rollback(fleet: Fleet, key: SigningKey, *, to: Optional[int] = None,
             mqtt: Optional[Broker] = None) -> dict[str, Any]:
    """Publish an earlier version again, with the signed rollback marker, to every core.

    Parameters
    ----------
    to
        The version to go back to; default: the newest earlier version that was promoted to
        every core (else the newest earlier version).
    """
    past = documents(fleet, [key.public])
    first = next(past, None)
    if first is None:
        raise FleetError(f"nothing has been published to {fleet.uri}; nothing to roll back")
    cur = first.doc
    older = [s.doc for s in past]
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
    doc = dict(prev)
    doc["serial"] = int(cur["serial"]) + 1
    doc["high"] = int(cur.get("high", cur["version"]))
    doc["rollback"] = {"from": int(cur["version"])}
    doc["created"] = time.time()
    doc["rollout"] = _rollout(fleet, 100.0, prev["rollout"].get("max_failures"))
    _write(fleet, key, doc, mqtt)
    return doc


def status(fleet: Fleet, trusted: list[TrustedKey]) -> dict[str, Any]:
    """The current document (or None) and every core's status, with rollout counts."""
    last = next(documents(fleet, trusted), None)
    cur = last.doc if last else None
    cores = fleet.statuses()
    out: dict[str, Any] = {"fleet": fleet.uri, "document": None, "cores": cores}
    if cur is not None:
        v = int(cur["version"])
        out["document"] = {
            "serial": cur["serial"], "version": v, "group": cur["group"],
            "rollback": cur.get("rollback"), "rollout": cur["rollout"],
            "summary": document.summary(cur),
            "on_version": sorted(n for n, s in cores.items() if s.get("version") == v),
            "targeted": sorted(n for n in cores if document.targets(cur, n)),
            "failed": document.failures(cores, v, str(cur["group"])),
            "halted": document.halted(cur, cores),
        }
    return out
