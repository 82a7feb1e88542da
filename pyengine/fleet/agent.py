"""The core's side of a fleet: find, verify and apply signed documents; report status.

A :class:`FleetAgent` runs inside ``pyengine core start --fleet``. It checks the fleet's latest
document at start, whenever the broker announces one, and every ``poll_s`` seconds. Nothing in a
document is used before its Ed25519 signature is verified against the trusted keys; model
packages are pinned by the signed SHA-256s (the deploy layer checks them while downloading) and
so is function code (checked here before it is unpacked). The deployment itself is
:func:`pyengine.deploy.deploy`, the same as ``pyengine deploy``.

The agent keeps what it accepted in ``ROOT/fleet/state.json`` (last serial, installed version) so
a restarted core neither re-applies nor accepts a replayed older document.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import logging
import os
import shutil
import threading
import time
from typing import Any, Callable, Optional

from pyengine.core.config import MqttSettings
from pyengine.core.metrics import Metrics
from pyengine.deploy import GroupError, deploy, validate_group
from pyengine.deploy.errors import DeployBusyError, DeployError, UnpackError
from pyengine.deploy.fetch import fetch
from pyengine.deploy.private import private_file
from pyengine.deploy.unpack import unpack
from pyengine.fleet import document
from pyengine.fleet.notify import FleetLink
from pyengine.fleet.publish import CORE_NAME_VAR
from pyengine.fleet.signing import SignatureError, TrustedKey, open_envelope
from pyengine.fleet.store import LATEST, Fleet, check_core_name
from pyengine.sources.base import SourceError
from pyengine.sources.s3 import S3Source

log = logging.getLogger("pyengine.fleet")

STATE_FILE = "state.json"
#: How often health is sampled (a status is written only when something changed).
HEALTH_S = 1.0
#: How many refusals a status keeps.
REFUSALS_KEPT = 10


class FleetAgent:
    """Keeps one core on its fleet's latest signed document.

    Parameters
    ----------
    root
        The core's root (deployments go there, as with ``pyengine deploy --root``).
    fleet
        The fleet location (bucket, prefix, S3 endpoint).
    core_name
        This core's name: its status object, and its place in canary rollouts.
    trusted
        Public keys whose signatures are accepted (at least one).
    mqtt
        The broker that announces documents (the core's; None: poll only).
    poll_s
        Seconds between checks when no announcement arrives.
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
                 metrics: Optional[Metrics] = None) -> None:
        if not trusted:
            raise ValueError("a fleet core needs at least one --trust public key")
        if not poll_s > 0:
            raise ValueError(f"--fleet-poll {poll_s!r} must be more than 0 seconds")
        self.root = os.path.abspath(root)
        self.fleet = fleet
        self.name = check_core_name(core_name)
        self.trusted = trusted
        self.mqtt = mqtt
        self.poll_s = poll_s
        self.health = health or (lambda: {})
        self.running = running or (lambda dep: True)
        self.dir = os.path.join(self.root, "fleet")
        os.makedirs(self.dir, exist_ok=True)
        self.st = self._load()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._broker: Optional[FleetLink] = None
        self._metrics = metrics
        self._last_report: Optional[dict[str, Any]] = None
        self._last_report_t = 0.0
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
            log.warning("fleet state %s unreadable (%s); starting afresh", path, exc)
        return {"serial": 0, "version": None, "group": None, "state": "idle", "message": "",
                "failed_version": None, "target": None, "deployment": None, "resources": [],
                "refused": [], "seen": None}

    def _save(self) -> None:
        path = os.path.join(self.dir, STATE_FILE)
        tmp = f"{path}.tmp"
        with open(tmp, "w") as fh:
            json.dump(self.st, fh, indent=1)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)

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
        log.info("fleet %s: core %s, trusting %s, checking every %g s%s", self.fleet.uri,
                 self.name, ", ".join(k.id for k in self.trusted), self.poll_s,
                 f" and on announcements from {self.mqtt.address()}" if self.mqtt else "")

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        if self._broker is not None:
            self._broker.stop()

    def wake(self) -> None:
        """Check for a new document now."""
        self._wake.set()

    def _announced(self, topic: str, payload: bytes) -> None:
        log.debug("announcement on %s: %r", topic, payload[:200])
        self._wake.set()

    def _run(self) -> None:
        next_check = 0.0
        while not self._stop.is_set():
            wait = min(max(0.0, next_check - time.monotonic()), HEALTH_S)
            woken = self._wake.wait(wait) if wait > 0 else True
            self._wake.clear()
            if self._stop.is_set():
                return
            if woken or time.monotonic() >= next_check:
                next_check = time.monotonic() + self.poll_s
                try:
                    self.check()
                except (SourceError, OSError) as exc:
                    log.warning("fleet %s unreachable: %s (retrying in %g s)", self.fleet.uri,
                                exc, self.poll_s)
                except Exception:  # noqa: BLE001 - the agent must outlive any one document
                    log.exception("fleet check failed")
            try:
                self.report()
            except (SourceError, OSError) as exc:
                log.warning("cannot write this core's status to %s: %s", self.fleet.uri, exc)
            except Exception:  # noqa: BLE001
                log.exception("fleet status report failed")

    # -- documents ---------------------------------------------------------------------------

    def _refuse(self, digest: str, reason: str, serial: Optional[int] = None) -> None:
        log.error("fleet %s: refused a document: %s", self.fleet.uri, reason)
        self.st["refused"] = (self.st.get("refused") or [])[-(REFUSALS_KEPT - 1):] + [
            {"at": time.time(), "digest": digest, "serial": serial, "reason": reason}]
        self.st["seen"] = digest
        self._save()

    def _set(self, state: str, message: str, **fields: Any) -> None:
        self.st.update(state=state, message=message, **fields)
        self._save()
        log.info("fleet: %s: %s", state, message)

    def check(self) -> str:
        """Read the latest document and act on it; returns this core's state afterwards."""
        data = self.fleet.get(LATEST)
        if data is None:
            return str(self.st["state"])
        digest = hashlib.sha256(data).hexdigest()
        if digest == self.st.get("seen"):
            return str(self.st["state"])
        try:
            doc, signer = open_envelope(data, self.trusted)
            document.check(doc, self.fleet.uri)
        except (SignatureError, ValueError) as exc:
            self._refuse(digest, str(exc))
            return str(self.st["state"])
        serial, version = int(doc["serial"]), int(doc["version"])
        last = int(self.st.get("serial") or 0)
        if serial < last:
            self._refuse(digest, f"replayed document: serial {serial} ({document.summary(doc)}) "
                         f"is older than serial {last}, which this core already accepted",
                         serial)
            return str(self.st["state"])
        if serial == last:
            self.st["seen"] = digest
            self._save()
            return str(self.st["state"])
        have = self.st.get("version")
        if have is not None and version < int(have) and not doc.get("rollback"):
            self._refuse(digest, f"{document.summary(doc)} is older than the installed version "
                         f"{have} and carries no rollback marker", serial)
            return str(self.st["state"])
        target = {"serial": serial, "version": version, "group": doc.get("group"),
                  "rollback": doc.get("rollback"), "signed_by": signer}
        if have is not None and version == int(have) and self.st.get("group") == doc["group"]:
            self._set("applied", f"{document.summary(doc)} is installed", serial=serial,
                      target=target, seen=digest)
            return "applied"
        if not document.targets(doc, self.name):
            self._set("waiting", f"{document.summary(doc)} does not include this core yet "
                      f"(canary point {document.point(self.name):.3f} >= cutoff "
                      f"{float(doc['rollout']['cutoff']):.3f}); waiting for promotion",
                      serial=serial, target=target, seen=digest)
            return "waiting"
        if self.st.get("failed_version") == version and self.st.get("group") in (
                doc["group"], None) and self.st.get("state") == "failed":
            self.st.update(serial=serial, target=target, seen=digest)
            self._save()
            return "failed"
        others = {n: s for n, s in self.fleet.statuses().items() if n != self.name}
        if document.halted(doc, others):
            bad = document.failures(others, version, str(doc["group"]))
            self._set("halted", f"rollout of {document.summary(doc)} halted: {len(bad)} core(s) "
                      f"failed ({', '.join(bad)}), more than the "
                      f"{doc['rollout']['max_failures']} allowed; keeping version {have}",
                      serial=serial, target=target, seen=digest)
            return "halted"
        self._apply(doc, target, digest)
        return str(self.st["state"])

    def _code(self, name: str, spec: dict[str, Any]) -> str:
        """Function code from the bucket, checked against the signed SHA-256, unpacked."""
        sha = str(spec["sha256"])
        dest = os.path.join(self.dir, "code", sha)
        if os.path.isdir(dest):
            return dest
        src = S3Source(str(spec["uri"]), self.fleet.s3)
        info = src.resolve()
        downloads = os.path.join(self.dir, "downloads")
        os.makedirs(downloads, exist_ok=True)
        part = os.path.join(downloads, f"{sha}.part")
        fetch(src, info, part, sha256=sha, attempts=3)
        staging = f"{dest}.staging"
        shutil.rmtree(staging, ignore_errors=True)
        os.makedirs(staging)
        try:
            unpack(part, staging, name=f"{name}.tar.gz")
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(part)
        os.rename(staging, dest)
        return dest

    def _apply(self, doc: dict[str, Any], target: dict[str, Any], digest: str) -> None:
        serial, version = int(doc["serial"]), int(doc["version"])
        self._set("applying", f"applying {document.summary(doc)}", target=target)
        raw = copy.deepcopy(doc["group_file"])
        try:
            code = {n: self._code(n, c) for n, c in doc["code"].items()}
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
            group = validate_group(raw, path)
            dep = deploy(group, self.root, wait_s=120)
        except DeployBusyError:
            raise  # another deploy holds the root: try again at the next check
        except (DeployError, GroupError, UnpackError, SourceError, KeyError) as exc:
            if isinstance(exc, SourceError) and exc.transient:
                raise  # the bucket is unreachable: try again at the next check
            self._set("failed", f"{document.summary(doc)} could not be applied: {exc}",
                      serial=serial, failed_version=version, group=doc["group"], seen=digest,
                      resources=[])
            return
        resources = [{"kind": i.kind, "key": i.key, "outcome": i.outcome, "version": i.version,
                      "message": i.message} for i in dep.items]
        if dep.status == "Success":
            if not self.running(dep.id):
                log.warning("deployment %d installed, but the core has not picked it up yet",
                            dep.id)
            self._set("applied", f"{document.summary(doc)} installed (deployment {dep.id})",
                      serial=serial, version=version, group=doc["group"], failed_version=None,
                      deployment=dep.id, resources=resources, seen=digest)
            keep = set(code.values())
            codes = os.path.join(self.dir, "code")
            for n in os.listdir(codes) if os.path.isdir(codes) else []:
                p = os.path.join(self.dir, "code", n)
                if p not in keep:
                    shutil.rmtree(p, ignore_errors=True)
        else:
            self._set("failed", f"{document.summary(doc)} failed ({dep.message}); version "
                      f"{self.st.get('version')} stays installed", serial=serial,
                      failed_version=version, group=self.st.get("group") or doc["group"],
                      deployment=dep.id, resources=resources, seen=digest)

    # -- status ------------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """This core's status as written to the bucket."""
        st = self.st
        return {
            "core": self.name, "group": st.get("group"), "version": st.get("version"),
            "serial": st.get("serial"), "state": st.get("state"), "message": st.get("message"),
            "failed_version": st.get("failed_version"), "target": st.get("target"),
            "deployment": st.get("deployment"), "resources": st.get("resources") or [],
            "refused": st.get("refused") or [], "health": self.health(),
            "trusted_keys": [k.id for k in self.trusted], "pid": os.getpid(),
        }

    def report(self, force: bool = False) -> bool:
        """Write the status to the bucket and the broker when it changed (or once a minute)."""
        body = self.status()
        now = time.time()
        if not force and body == self._last_report and now - self._last_report_t < 60:
            return False
        self.fleet.put_json({**body, "updated": now}, "status", f"{self.name}.json")
        if self._broker is not None:
            self._broker.publish(f"{self.fleet.topic}/status/{self.name}",
                                 {**body, "updated": now}, retain=True)
        self._last_report, self._last_report_t = body, now
        return True
