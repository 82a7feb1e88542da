"""The core's side of a fleet: find, verify and apply signed documents; report signed status.

A :class:`FleetAgent` runs inside ``pyengine core start --fleet``. It checks the fleet at start,
whenever the broker announces a document (at most once per ``debounce_s``; announcements during
a check coalesce), and every ``poll_s`` seconds. A check reads ``timestamp.json`` (capped at
``Fleet.max_document``) and stops there unless it changed; the timestamp names the deployment
and the enrollment by serial, SHA-256 and size, and those are read with the signed size as a
hard cap. Nothing is used before its Ed25519 signature is verified against the trusted keys;
model packages and function code are pinned by the signed SHA-256s (code by its size too).
The deployment itself is :func:`pyengine.deploy.deploy`, the same as ``pyengine deploy``.

Freshness and rollback (after TUF): an expired timestamp or document is not acted on and the
core reports ``freshness: stale`` (a frozen bucket); a timestamp or enrollment older than one
already taken, a deployment serial below the highest accepted, and a version below the highest
installed without the signed rollback marker are refused. Those high-water marks live in the
root's ``state.db`` (through :func:`pyengine.deploy.raise_high_water`), so losing
``ROOT/fleet/state.json`` resets nothing; a core with no marks at all starts from the highest
verified serial in the bucket's signed history.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import os
import shutil
import threading
import time
from typing import Any, Callable, Optional

from pyengine.common.mqtt import Counters, MqttSettings
from pyengine.deploy import (
    DeployBusyError,
    DeployError,
    GroupError,
    UnpackError,
    deploy,
    high_water,
    private_file,
    raise_high_water,
    validate_group,
)
from pyengine.fleet import document, enrollment
from pyengine.fleet.notify import FleetLink
from pyengine.fleet.pinned import check_package_sizes, fetch_code
from pyengine.fleet.publish import CORE_NAME_VAR
from pyengine.fleet.signing import SignatureError, TrustedKey, open_envelope
from pyengine.fleet.store import ENROLLMENT, TIMESTAMP, Fleet, OversizeError, check_core_name
from pyengine.sources import SourceError

log = logging.getLogger("pyengine.fleet")

STATE_FILE = "state.json"
#: How often health and freshness are sampled (a status is written only when something changed).
HEALTH_S = 1.0
#: How many refusals a status keeps.
REFUSALS_KEPT = 10
#: How many of the newest history objects a core with no high-water marks tries to verify.
HISTORY_TRIES = 8


class FleetAgent:
    """Keeps one core on its fleet's latest signed document.

    Parameters
    ----------
    root
        The core's root (deployments go there, as with ``pyengine deploy --root``).
    fleet
        The fleet location (bucket, prefix, S3 endpoint, document cap).
    core_name
        This core's name: its status object, and its place in canary rollouts.
    trusted
        Public keys whose signatures are accepted on documents (at least one).
    mqtt
        The broker that announces documents (the core's; None: poll only).
    poll_s
        Seconds between checks when no announcement arrives.
    debounce_s
        The least time between two checks that announcements start.
    timestamp_keys
        Public keys accepted on the timestamp only (besides ``trusted``).
    health
        Returns this core's health (readiness and functions) for the status.
    running
        Called with a deployment id after it is installed; returns once the core runs it (so
        the status says "applied" only when the new functions are in place).
    """

    def __init__(self, root: str, fleet: Fleet, core_name: str, trusted: list[TrustedKey],
                 mqtt: Optional[MqttSettings] = None, poll_s: float = 30.0,
                 health: Optional[Callable[[], dict[str, Any]]] = None,
                 running: Optional[Callable[[int], Any]] = None,
                 metrics: Optional[Counters] = None, debounce_s: float = 1.0,
                 timestamp_keys: Optional[list[TrustedKey]] = None) -> None:
        if not trusted:
            raise ValueError("a fleet core needs at least one --trust public key")
        if not poll_s > 0:
            raise ValueError(f"--fleet-poll {poll_s!r} must be more than 0 seconds")
        if not debounce_s >= 0:
            raise ValueError(f"--fleet-debounce {debounce_s!r} must be 0 seconds or more")
        self.root = os.path.abspath(root)
        self.fleet = fleet
        self.name = check_core_name(core_name)
        self.trusted = trusted
        #: Keys accepted on timestamps only (an online key for cron; TUF's timestamp role).
        self.timestamp_keys = [*trusted, *(timestamp_keys or [])]
        self.mqtt = mqtt
        self.poll_s = poll_s
        self.debounce_s = debounce_s
        self.health = health or (lambda: {})
        self.running = running or (lambda dep: True)
        self.dir = os.path.join(self.root, "fleet")
        os.makedirs(self.dir, exist_ok=True)
        self.key = enrollment.core_key(self.dir)
        self.st = self._load()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._broker: Optional[FleetLink] = None
        self._metrics = metrics
        self._last_report: Optional[dict[str, Any]] = None
        self._last_report_t = 0.0
        self._ts_seen: Optional[str] = None  # digest of the last timestamp fully handled
        self._enrolled = enrollment.Enrollment()
        self._stale_warned: Optional[str] = None
        #: Announcements heard (each only brings the next check forward).
        self.announcements = 0
        # Destinations may name the core: /srv/${PYENGINE_CORE_NAME}/models/digits.
        os.environ[CORE_NAME_VAR] = self.name

    # -- persistent state --------------------------------------------------------------------

    def _load(self) -> dict[str, Any]:
        path = os.path.join(self.dir, STATE_FILE)
        try:
            with open(path) as fh:
                st = json.load(fh)
            if isinstance(st, dict):
                return st
        except FileNotFoundError:
            pass
        except (OSError, json.JSONDecodeError) as exc:
            log.warning("fleet state %s unreadable (%s); starting afresh (the high-water marks "
                        "in state.db still hold)", path, exc)
        return {"serial": 0, "version": None, "group": None, "state": "idle", "message": "",
                "failed_version": None, "target": None, "deployment": None, "resources": [],
                "refused": [], "doc_sha": None, "ts_expires": None, "doc_expires": None}

    def _save(self) -> None:
        path = os.path.join(self.dir, STATE_FILE)
        tmp = f"{path}.tmp"
        with open(tmp, "w") as fh:
            json.dump(self.st, fh, indent=1)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)

    def _mark_name(self, what: str) -> str:
        return f"fleet:{self.fleet.uri}:{what}"

    def mark(self, what: str) -> int:
        """The high-water mark ``what`` ("serial", "version", "timestamp", "enrollment") kept in
        the root's state.db."""
        return high_water(self.root, self._mark_name(what))

    def _raise(self, what: str, value: int) -> None:
        raise_high_water(self.root, self._mark_name(what), value)

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        """Connect to the broker (in the background) and start checking."""
        if self.mqtt:
            # The settings' own id (the core's random one, "-fleet"): a guessable id would let
            # a device take the session over.
            self._broker = FleetLink(self.mqtt, self.mqtt.client_id or f"pyengine-fleet-{self.name}",
                                     {f"{self.fleet.topic}/deployment": self._announced},
                                     self._metrics)
            self._broker.start()
        self._thread = threading.Thread(target=self._run, name="pyengine-fleet", daemon=True)
        self._thread.start()
        log.info("fleet %s: core %s (status key %s), trusting %s, checking every %g s%s",
                 self.fleet.uri, self.name, self.key.public.id,
                 ", ".join(k.id for k in self.trusted), self.poll_s,
                 f" and on announcements from {self.mqtt.address()}" if self.mqtt else "")

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        if self._broker is not None:
            self._broker.stop()

    def wake(self) -> None:
        """Check for a new document soon (debounced like an announcement)."""
        self._wake.set()

    def _announced(self, topic: str, payload: bytes) -> None:
        self.announcements += 1
        self._wake.set()

    def _run(self) -> None:
        next_check = 0.0
        last_check = -float("inf")
        pending = False  # an announcement arrived since the last check
        while not self._stop.is_set():
            now = time.monotonic()
            if pending:
                # Announcements only bring the next check forward, to debounce_s after the last.
                due = min(next_check, last_check + self.debounce_s)
                self._stop.wait(min(max(0.0, due - now), HEALTH_S))
            else:
                wait = min(max(0.0, next_check - now), HEALTH_S)
                if wait > 0 and self._wake.wait(wait):
                    pending = True
            if self._wake.is_set():
                self._wake.clear()
                pending = True
            if self._stop.is_set():
                return
            now = time.monotonic()
            if now >= next_check or (pending and now >= last_check + self.debounce_s):
                pending = False
                last_check = now
                next_check = now + self.poll_s
                try:
                    self.check()
                except SourceError as exc:
                    log.warning("fleet %s unreachable: %s (retrying in %g s)", self.fleet.uri,
                                exc, self.poll_s)
                except OSError as exc:
                    log.warning("fleet check failed: %s (retrying in %g s)", exc, self.poll_s)
                except Exception:  # noqa: BLE001 - the agent must outlive any one document
                    log.exception("fleet check failed")
            try:
                self.report()
            except (SourceError, OSError) as exc:
                log.warning("cannot write this core's status to %s: %s", self.fleet.uri, exc)
            except Exception:  # noqa: BLE001
                log.exception("fleet status report failed")

    # -- documents ---------------------------------------------------------------------------

    def _refuse(self, what: str, digest: str, reason: str, serial: Optional[int] = None) -> None:
        refused = self.st.get("refused") or []
        if refused and refused[-1].get("reason") == reason:
            # The same refusal again (an oversize object at every poll): counted, logged once.
            refused[-1].update(at=time.time(), times=int(refused[-1].get("times") or 1) + 1)
            self._save()
            return
        log.error("fleet %s: refused %s: %s", self.fleet.uri, what, reason)
        self.st["refused"] = refused[-(REFUSALS_KEPT - 1):] + [
            {"at": time.time(), "what": what, "digest": digest, "serial": serial,
             "reason": reason, "times": 1}]
        self._save()

    def _set(self, state: str, message: str, **fields: Any) -> None:
        self.st.update(state=state, message=message, **fields)
        self._save()
        log.info("fleet: %s: %s", state, message)

    def check(self) -> str:
        """Read the timestamp and act on what it names; returns this core's state afterwards."""
        try:
            data = self.fleet.get(TIMESTAMP)
        except OversizeError as exc:
            self._refuse("the timestamp", "", str(exc))
            return str(self.st["state"])
        if data is None:
            return str(self.st["state"])
        digest = hashlib.sha256(data).hexdigest()
        if digest == self._ts_seen:
            return str(self.st["state"])
        self._timestamp(data, digest)
        self._ts_seen = digest  # handled (a transient error above raised, to retry)
        return str(self.st["state"])

    def _timestamp(self, data: bytes, digest: str) -> None:
        try:
            ts, _ = open_envelope(data, self.timestamp_keys)
            document.check_timestamp(ts, self.fleet.uri)
        except (SignatureError, ValueError) as exc:
            self._refuse("the timestamp", digest, str(exc))
            return
        serial = int(ts["serial"])
        mark = self.mark("timestamp")
        if serial < mark:
            self._refuse("the timestamp", digest, f"replayed timestamp: serial {serial} is older "
                         f"than serial {mark}, which this core already took", serial)
            return
        if document.expired(ts):
            # A core that never took a fresh one is stale as well (not "unknown").
            self.st["ts_expires"] = max(float(self.st.get("ts_expires") or 0),
                                        float(ts["expires"]))
            self._refuse("the timestamp", digest, f"expired timestamp: serial {serial} expired "
                         f"at {_when(ts['expires'])}; the fleet is not being refreshed (`pyengine "
                         "fleet refresh`) or the bucket is frozen", serial)
            return
        self._raise("timestamp", serial)
        self.st["ts_expires"] = float(ts["expires"])
        self._save()
        if ts.get("enrollment") is not None:
            self._enrollment(ts["enrollment"])
        self._deployment(ts["deployment"])

    def _pinned(self, pin: dict[str, Any], *parts: str) -> tuple[Optional[bytes], str]:
        """The object a timestamp pins, read with its signed size as the cap; (None, reason)
        when it is not the one the timestamp signed."""
        where = self.fleet.object_uri(*parts)
        try:
            data = self.fleet.get(*parts, size=int(pin["size"]))
        except OversizeError as exc:
            return None, str(exc)
        if data is None:
            return None, f"{where}, named by the timestamp, is missing"
        got = hashlib.sha256(data).hexdigest()
        if got != pin["sha256"]:
            return None, (f"{where} does not match the timestamp (sha256 {got}, signed "
                          f"{pin['sha256']}): replaced after signing")
        return data, ""

    def _enrollment(self, pin: dict[str, Any]) -> None:
        if self._enrolled.data is not None and \
                hashlib.sha256(self._enrolled.data).hexdigest() == pin["sha256"]:
            return
        data, why = self._pinned(pin, ENROLLMENT)
        if data is None:
            self._refuse("the enrollment", pin["sha256"], why, int(pin["serial"]))
            return
        try:
            new = enrollment.parse(data, self.trusted, self.fleet.uri)
        except (SignatureError, ValueError) as exc:
            self._refuse("the enrollment", pin["sha256"], str(exc), int(pin["serial"]))
            return
        mark = self.mark("enrollment")
        if new.serial < mark or new.serial != int(pin["serial"]):
            self._refuse("the enrollment", pin["sha256"], f"replayed enrollment: serial "
                         f"{new.serial} (the timestamp names {pin['serial']}; this core took "
                         f"{mark})", new.serial)
            return
        self._raise("enrollment", new.serial)
        self._enrolled = new
        mine = new.cores.get(self.name)
        if mine is None:
            log.warning("core %s is not enrolled in %s: its status does not count; enroll it "
                        "with `pyengine fleet enroll --core %s --public %s.pub`", self.name,
                        self.fleet.uri, self.name, self.key.path)
        elif mine.id != self.key.public.id:
            log.warning("the enrollment holds key %s for core %s, but this core's key is %s: "
                        "its status does not count (enroll %s.pub again)", mine.id, self.name,
                        self.key.public.id, self.key.path)

    def _history_floor(self) -> int:
        """The highest verified serial in the bucket's history (for a core with no marks)."""
        tried = 0
        for name in sorted(self.fleet.list("deployments"), reverse=True):
            if tried >= HISTORY_TRIES:
                break
            tried += 1
            try:
                data = self.fleet.get("deployments", name)
                if data is None:
                    continue
                doc, _ = open_envelope(data, self.trusted)
            except (SignatureError, OversizeError):
                continue
            serial = doc.get("serial")
            if doc.get("fleet") == self.fleet.uri and isinstance(serial, int) \
                    and name == f"{serial:010d}.json":
                return serial
        return 0

    def _deployment(self, pin: dict[str, Any]) -> None:
        serial = int(pin["serial"])
        last = max(int(self.st.get("serial") or 0), self.mark("serial"))
        where = f"deployment serial {serial}"
        if last == 0:  # a new or reset core: the signed history is the floor
            last = self._history_floor()
            if serial < last:
                self._refuse(where, pin["sha256"], f"the timestamp names serial {serial}, but "
                             f"the fleet's signed history holds serial {last}", serial)
                return
        if serial < last:
            self._refuse(where, pin["sha256"], f"replayed document: serial {serial} is older "
                         f"than serial {last}, which this core already accepted", serial)
            return
        if serial == self.st.get("serial"):
            if pin["sha256"] == self.st.get("doc_sha"):
                return  # nothing new
            if self.st.get("doc_sha"):
                self._refuse(where, pin["sha256"], f"serial {serial} was accepted with other "
                             "content (a serial reused over a cut history?)", serial)
                return
        data, why = self._pinned(pin, "deployments", f"{serial:010d}.json")
        if data is None:
            self._refuse(where, pin["sha256"], why, serial)
            return
        try:
            doc, signer = open_envelope(data, self.trusted)
            document.check(doc, self.fleet.uri)
            if int(doc["serial"]) != serial:
                raise ValueError(f"the timestamp names serial {serial}, the document holds "
                                 f"serial {doc['serial']}")
        except (SignatureError, ValueError) as exc:
            self._refuse(where, pin["sha256"], str(exc), serial)
            return
        if document.expired(doc):
            self.st["doc_expires"] = float(doc["expires"])  # what the fleet offers: stale
            self._refuse(where, pin["sha256"], f"{document.summary(doc)} expired at "
                         f"{_when(doc['expires'])}; the fleet is not being refreshed", serial)
            return
        version = int(doc["version"])
        high = max(self.mark("version"), int(self.st.get("version") or 0))
        if version < high and not doc.get("rollback"):
            self._refuse(where, pin["sha256"], f"{document.summary(doc)} is older than version "
                         f"{high}, the highest this core installed, and carries no rollback "
                         "marker", serial)
            return
        self._accept(doc, signer, pin["sha256"])

    def _accept(self, doc: dict[str, Any], signer: str, sha: str) -> None:
        serial, version = int(doc["serial"]), int(doc["version"])
        self._raise("serial", serial)
        accepted = {"serial": serial, "doc_sha": sha, "doc_expires": float(doc["expires"])}
        have = self.st.get("version")
        target = {"serial": serial, "version": version, "group": doc.get("group"),
                  "rollback": doc.get("rollback"), "signed_by": signer}
        if have is not None and version == int(have) and self.st.get("group") == doc["group"]:
            self._raise("version", version)
            self._set("applied", f"{document.summary(doc)} is installed", target=target,
                      **accepted)
            return
        if not document.targets(doc, self.name):
            self._set("waiting", f"{document.summary(doc)} does not include this core yet "
                      f"(canary point {document.point(self.name):.3f} >= cutoff "
                      f"{float(doc['rollout']['cutoff']):.3f}); waiting for promotion",
                      target=target, **accepted)
            return
        if self.st.get("failed_version") == version and self.st.get("group") in (
                doc["group"], None) and self.st.get("state") == "failed":
            self.st.update(target=target, **accepted)
            self._save()
            return
        others = enrollment.statuses(self.fleet, self._enrolled, exclude=self.name)
        bad = document.halted(doc, others.verified)
        if bad:
            self._set("halted", f"rollout of {document.summary(doc)} halted: {len(bad)} "
                      f"enrolled core(s) reported failure ({', '.join(bad)}), more than the "
                      f"{doc['rollout']['max_failures']} allowed; keeping version {have} until "
                      "`pyengine fleet resume` or a new document", target=target,
                      halted_by=bad, **accepted)
            return
        self._apply(doc, target, accepted)

    def _apply(self, doc: dict[str, Any], target: dict[str, Any],
               accepted: dict[str, Any]) -> None:
        version = int(doc["version"])
        self._set("applying", f"applying {document.summary(doc)}", target=target)
        raw = copy.deepcopy(doc["group_file"])
        try:
            code = {n: fetch_code(self.fleet, self.dir, n, c) for n, c in doc["code"].items()}
            for f in raw.get("functions") or []:
                f["code"] = code[f["name"]]
            s3 = raw.get("s3") or {}
            if not s3.get("endpoint_url") and self.fleet.s3.endpoint_url:
                raw["s3"] = {"endpoint_url": self.fleet.s3.endpoint_url,
                             **({"region": self.fleet.s3.region} if self.fleet.s3.region else {})}
            path = os.path.join(self.dir, "group.json")
            # It holds the functions' environments (often secrets): the core's user only.
            fd = private_file(path, self.root)
            os.ftruncate(fd, 0)
            with os.fdopen(fd, "w") as fh:
                json.dump(raw, fh, indent=1)
            os.environ[CORE_NAME_VAR] = self.name  # ${PYENGINE_CORE_NAME} is this core
            group = validate_group(raw, path)
            check_package_sizes(doc, group)
            dep = deploy(group, self.root, wait_s=120)
        except DeployBusyError:
            raise  # another deploy holds the root: try again at the next check
        except (DeployError, GroupError, UnpackError, SourceError, KeyError) as exc:
            if isinstance(exc, SourceError) and exc.transient:
                raise  # the bucket is unreachable: try again at the next check
            self._set("failed", f"{document.summary(doc)} could not be applied: {exc}",
                      failed_version=version, group=doc["group"], resources=[], **accepted)
            return
        resources = [{"kind": i.kind, "key": i.key, "outcome": i.outcome, "version": i.version,
                      "message": i.message} for i in dep.items]
        if dep.status == "Success":
            if not self.running(dep.id):
                log.warning("deployment %d installed, but the core has not picked it up yet",
                            dep.id)
            self._raise("version", version)
            self._set("applied", f"{document.summary(doc)} installed (deployment {dep.id})",
                      version=version, group=doc["group"], failed_version=None,
                      deployment=dep.id, resources=resources, halted_by=None, **accepted)
            keep = set(code.values())
            codes = os.path.join(self.dir, "code")
            for n in os.listdir(codes) if os.path.isdir(codes) else []:
                p = os.path.join(self.dir, "code", n)
                if p not in keep:
                    shutil.rmtree(p, ignore_errors=True)
        else:
            self._set("failed", f"{document.summary(doc)} failed ({dep.message}); version "
                      f"{self.st.get('version')} stays installed",
                      failed_version=version, group=self.st.get("group") or doc["group"],
                      deployment=dep.id, resources=resources, **accepted)

    # -- status ------------------------------------------------------------------------------

    def freshness(self, now: Optional[float] = None) -> tuple[str, str]:
        """("fresh" | "stale" | "unknown", why): stale once the last timestamp taken or the
        accepted document has expired (nothing newer arrived: a frozen or unrefreshed bucket)."""
        now = time.time() if now is None else now
        ts, doc = self.st.get("ts_expires"), self.st.get("doc_expires")
        if ts is None:
            return "unknown", "no signed timestamp taken yet"
        for what, t in (("the fleet's timestamp", ts), ("the accepted document", doc)):
            if t is not None and now >= float(t):
                return "stale", (f"{what} expired at {_when(t)} and nothing newer arrived: the "
                                 "bucket is frozen or not refreshed (`pyengine fleet refresh`)")
        return "fresh", f"timestamp valid until {_when(ts)}"

    def status(self) -> dict[str, Any]:
        """This core's status as signed and written to the bucket."""
        st = self.st
        fresh, why = self.freshness()
        if fresh == "stale" and self._stale_warned != why:
            log.warning("fleet %s is stale: %s", self.fleet.uri, why)
        self._stale_warned = why if fresh == "stale" else None
        mine = self._enrolled.cores.get(self.name)
        return {
            "format": document.STATUS_FORMAT, "fleet": self.fleet.uri,
            "core": self.name, "group": st.get("group"), "version": st.get("version"),
            "serial": st.get("serial"), "state": st.get("state"), "message": st.get("message"),
            "failed_version": st.get("failed_version"), "target": st.get("target"),
            "halted_by": st.get("halted_by"),
            "deployment": st.get("deployment"), "resources": st.get("resources") or [],
            "refused": st.get("refused") or [], "health": self.health(),
            "freshness": fresh, "freshness_message": why,
            "key_id": self.key.public.id, "public": self.key.public.raw.hex(),
            "enrolled": mine is not None and mine.id == self.key.public.id,
            "trusted_keys": [k.id for k in self.trusted],
        }

    def report(self, force: bool = False) -> bool:
        """Sign the status and write it to the bucket and the broker when it changed (or once
        a minute)."""
        body = self.status()
        now = time.time()
        if not force and body == self._last_report and now - self._last_report_t < 60:
            return False
        env = self.key.seal({**body, "updated": now})
        self.fleet.put(json.dumps(env).encode(), "status", f"{self.name}.json")
        if self._broker is not None:
            self._broker.publish(f"{self.fleet.topic}/status/{self.name}", env, retain=True)
        self._last_report, self._last_report_t = body, now
        return True


def _when(t: Any) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(float(t)))
