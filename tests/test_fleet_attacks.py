"""The fleet against a hostile bucket writer (after TUF's attack list): replayed documents to a
core that lost its state, a frozen bucket, forged/deleted/flooded status files, a tampered or
cut history, endless data, and an announcement flood.

Each test runs real agents in-process against the loopback moto S3 server (through a counting
proxy where the number of requests or bytes is the point) and, for announcements, a real
Mosquitto broker. The attacker does only what bucket write access allows: put, copy, delete.
"""

from __future__ import annotations

import base64
import json
import os
import time
from typing import Any

import boto3
import pytest
from core_helpers import package, text_file, write_code
from s3_counter import S3Counter

from pyengine import fleet as fl
from pyengine.cli import main
from pyengine.common.aws import AwsSettings
from pyengine.core.config import MqttSettings
from pyengine.fleet import document
from pyengine.fleet.history import Signed, write_timestamp


class World:
    """One fleet prefix, its signing key, and group files made on demand."""

    def __init__(self, base: str, endpoint: str, bucket: str) -> None:
        self.base = base
        self.endpoint = endpoint
        self.uri = f"s3://{bucket}/fleet"
        self.fleet = fl.Fleet.parse(self.uri, AwsSettings(endpoint))
        self.key_path = os.path.join(base, "fleet.pem")
        fl.keygen(self.key_path)
        self.key = fl.SigningKey(self.key_path)
        self.trusted = [self.key.public]
        self.s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")

    def group(self, tag: str, dest: str = "dest", code: bool = False) -> str:
        """A group with one model package (version.txt = tag) at dest/<core name>/m, and with
        ``code`` a function whose code carries the tag."""
        d = os.path.join(self.base, "groups", tag)
        os.makedirs(d, exist_ok=True)
        src = os.path.join(d, "m.tar.gz")
        package(src, text_file("version.txt", tag))
        g: dict[str, Any] = {"name": "g", "resources": [{"id": "m", "name": "m", "model": {
            "source": src,
            "destination": os.path.join(self.base, dest, "${PYENGINE_CORE_NAME}", "m")}}]}
        if code:
            write_code(d, "f", f"TAG = {tag!r}\n\ndef function_handler(event, context):\n"
                       "    return TAG\n")
            g["functions"] = [{"name": "f", "handler": "handler.function_handler",
                               "code": "./functions/f"}]
        path = os.path.join(d, "group.json")
        with open(path, "w") as fh:
            json.dump(g, fh)
        return path

    def publish(self, tag: str, **kw: Any) -> dict[str, Any]:
        return fl.publish(self.group(tag, kw.pop("dest", "dest"), kw.pop("code", False)),
                          self.fleet, self.key, **kw)

    def agent(self, name: str, root: str | None = None, fleet: fl.Fleet | None = None,
              **kw: Any) -> fl.FleetAgent:
        return fl.FleetAgent(root or os.path.join(self.base, "cores", name), fleet or self.fleet,
                             name, self.trusted, poll_s=60, **kw)

    def installed(self, name: str, dest: str = "dest") -> str | None:
        try:
            with open(os.path.join(self.base, dest, name, "m", "version.txt")) as fh:
                return fh.read()
        except FileNotFoundError:
            return None

    def put(self, data: bytes, *parts: str) -> None:
        self.s3.put_object(Bucket=self.fleet.bucket, Key=self.fleet.key(*parts), Body=data)

    def delete(self, *parts: str) -> None:
        self.s3.delete_object(Bucket=self.fleet.bucket, Key=self.fleet.key(*parts))

    def get(self, *parts: str) -> bytes:
        return bytes(self.s3.get_object(Bucket=self.fleet.bucket,
                                        Key=self.fleet.key(*parts))["Body"].read())

    def signed(self, serial: int) -> Signed:
        """Genuine document ``serial`` from the history."""
        name = f"{serial:010d}.json"
        data = self.get("deployments", name)
        return Signed(json.loads(base64.b64decode(json.loads(data)["payload"])), name, data)


@pytest.fixture
def world(tmp_path, moto_endpoint, bucket, monkeypatch):  # noqa: ANN001, ANN201
    monkeypatch.setenv(fl.CORE_NAME_VAR, "publisher")  # the agents set it; restored afterwards
    os.chmod(tmp_path, 0o755)
    return World(str(tmp_path), moto_endpoint, bucket)


def last_refusal(agent: fl.FleetAgent) -> str:
    return str(agent.st["refused"][-1]["reason"]) if agent.st.get("refused") else ""


def test_replay_to_a_core_that_lost_its_state(world: World) -> None:
    world.publish("v1")
    ts1 = world.get("timestamp.json")
    core = world.agent("cam-1")
    assert core.check() == "applied" and world.installed("cam-1") == "v1"
    world.publish("v2")
    assert core.check() == "applied" and world.installed("cam-1") == "v2"
    state_json = os.path.join(core.dir, "state.json")

    # The attack that worked before: an old signed document copied over deployment.json, to a
    # core whose fleet/state.json is gone. The core follows the timestamp, not deployment.json.
    world.put(world.get("deployments", f"{1:010d}.json"), "deployment.json")
    os.unlink(state_json)
    core = world.agent("cam-1")
    assert core.check() == "applied" and core.st["version"] == 2
    assert world.installed("cam-1") == "v2"
    # The attacker also kept the old timestamp: refused by the mark in state.db.
    world.put(ts1, "timestamp.json")
    os.unlink(state_json)
    core = world.agent("cam-1")
    core.check()
    assert "replayed timestamp" in last_refusal(core), core.st
    assert world.installed("cam-1") == "v2"
    # Even a fresh, validly signed timestamp that names the old document is refused: the
    # serial's high-water mark is in state.db too.
    hist = fl.verified_history(world.fleet, world.key)
    write_timestamp(world.fleet, world.key, world.signed(1), hist.enrolled, hist.timestamp)
    os.unlink(state_json)
    core = world.agent("cam-1")
    core.check()
    assert "replayed document: serial 1 is older than serial 2" in last_refusal(core)
    assert world.installed("cam-1") == "v2" and core.mark("version") == 2
    # A brand-new core (no state.db at all) takes the signed history as its floor.
    fresh = world.agent("cam-2")
    fresh.check()
    assert "signed history holds serial 2" in last_refusal(fresh), fresh.st
    assert world.installed("cam-2") is None
    # The operator's next refresh puts everyone back on the latest document.
    fl.refresh(world.fleet, world.key)
    assert core.check() == "applied" and fresh.check() == "applied"
    assert world.installed("cam-2") == "v2"


def test_a_frozen_bucket_is_reported_stale(world: World) -> None:
    world.publish("v1", timestamp_expires_s=2.0)
    core = world.agent("cam-1")
    assert core.check() == "applied"
    assert core.status()["freshness"] == "fresh"
    time.sleep(2.1)
    # The attacker freezes the bucket: the same (genuine) timestamp forever.
    core.check()
    st = core.status()
    assert st["freshness"] == "stale" and "timestamp expired" in st["freshness_message"]
    # A core that starts against the frozen bucket applies nothing and says why.
    late = world.agent("cam-2")
    late.check()
    assert "expired timestamp" in last_refusal(late) and late.status()["freshness"] == "stale"
    assert world.installed("cam-2") is None
    # `fleet refresh` (cron) ends the freeze.
    main(["fleet", "refresh", "--fleet", world.uri, "--s3-endpoint", world.endpoint,
          "--key", world.key_path])
    assert core.check() == "applied" and core.status()["freshness"] == "fresh"
    assert late.check() == "applied" and world.installed("cam-2") == "v1"
    # A document past its own expiry is not applied either, and refresh renews it.
    world.publish("v2", expires_s=1.5)
    time.sleep(1.6)
    assert late.check() == "applied" and world.installed("cam-2") == "v1"
    assert "expired at" in last_refusal(late) and late.status()["freshness"] == "stale"
    renewed = fl.refresh(world.fleet, world.key)
    assert renewed["deployment"]["serial"] == 3
    assert late.check() == "applied" and world.installed("cam-2") == "v2"
    assert late.status()["freshness"] == "fresh"


def test_a_timestamp_only_key_refreshes_but_signs_nothing_else(world: World) -> None:
    """TUF's timestamp role: cron holds a key that keeps the fleet fresh, not the fleet key."""
    ts_path = os.path.join(world.base, "timestamp.pem")
    fl.keygen(ts_path)
    ts_key = fl.SigningKey(ts_path)
    world.publish("v1", timestamp_expires_s=1.0)
    core = world.agent("cam-1", timestamp_keys=[ts_key.public])
    assert core.check() == "applied"
    time.sleep(1.1)
    core.check()
    assert core.status()["freshness"] == "stale"
    rc = main(["fleet", "refresh", "--fleet", world.uri, "--s3-endpoint", world.endpoint,
               "--key", ts_path, "--trust", f"{world.key_path}.pub"])
    assert rc == 0
    assert core.check() == "applied" and core.status()["freshness"] == "fresh"
    # A core that does not trust the timestamp key refuses its timestamps ...
    other = world.agent("cam-2")
    other.check()
    assert "untrusted key" in last_refusal(other)
    # ... and the timestamp key cannot sign a deployment that a core would take.
    hist = fl.verified_history(world.fleet, ts_key, world.trusted)
    evil = dict(hist.docs[0].doc, serial=2, version=5, high=5)
    data = json.dumps(ts_key.seal(evil)).encode()
    world.put(data, "deployments", f"{2:010d}.json")
    write_timestamp(world.fleet, ts_key, Signed(evil, f"{2:010d}.json", data), hist.enrolled,
                    hist.timestamp)
    core.check()
    assert "untrusted key" in last_refusal(core) and core.st["version"] == 1
    # The fleet key's own publishing still works, its history check refusing the forged object.
    with pytest.raises(fl.FleetError, match=f"{2:010d}.json: signed by an untrusted key"):
        world.publish("v2")


def test_publish_refuses_a_history_it_cannot_verify(world: World, capsys) -> None:  # noqa: ANN001
    world.publish("v1")
    world.publish("v2")
    other = os.path.join(world.base, "other.pem")
    fl.keygen(other)
    doc2 = world.signed(2)
    third = world.fleet.object_uri("deployments", f"{3:010d}.json")
    attacks = {
        "signed by an untrusted key": (
            f"{3:010d}.json", json.dumps(fl.SigningKey(other).seal(
                dict(doc2.doc, serial=3, version=9))).encode(), third),
        "copied under another name": (f"{3:010d}.json", world.get("deployments",
                                                                     f"{1:010d}.json"), third),
        "unsigned document": (f"{2:010d}.json", b"{}",
                                  world.fleet.object_uri("deployments", f"{2:010d}.json")),
        "bytes or more, over the": (f"{9:010d}.json", b"x" * (2 << 20),
                                    world.fleet.object_uri("deployments", f"{9:010d}.json")),
    }
    for what, (name, data, where) in attacks.items():
        world.put(data, "deployments", name)
        with pytest.raises(fl.FleetError, match=what) as err:
            world.publish("v3")
        assert where in str(err.value), err.value
        if name == doc2.key:
            world.put(doc2.data, "deployments", name)
        else:
            world.delete("deployments", name)
    # Cut history: a deleted document in the middle, or at the top (the timestamp still names
    # it, or a core's signed status does), would make the next publish reuse a serial.
    first = world.signed(1)
    world.delete("deployments", first.key)
    with pytest.raises(fl.FleetError, match=r"gap: .*0000000001\.json missing"):
        world.publish("v3")
    world.put(first.data, "deployments", first.key)
    world.delete("deployments", doc2.key)
    with pytest.raises(fl.FleetError, match="timestamp.json names serial 2, but the history"):
        world.publish("v3")
    core = world.agent("cam-1")
    world.put(doc2.data, "deployments", doc2.key)
    assert core.check() == "applied" and core.report(force=True)
    fl.enroll(world.fleet, world.key, add={"cam-1": core.key.public})
    world.delete("deployments", doc2.key)
    world.delete("timestamp.json")
    with pytest.raises(fl.FleetError, match="enrolled core cam-1's signed status names serial 2"):
        world.publish("v3")
    # The command line names the object too.
    world.put(b"garbage", "deployments", doc2.key)
    rc = main(["fleet", "publish", world.group("v3"), "--fleet", world.uri, "--s3-endpoint",
               world.endpoint, "--key", world.key_path])
    err = capsys.readouterr().err
    assert rc == 1 and world.fleet.object_uri("deployments", doc2.key) in err, err
    # Restored, the history continues where it was: serial 3, and the core takes it.
    world.put(doc2.data, "deployments", doc2.key)
    assert world.publish("v3")["serial"] == 3
    assert core.check() == "applied" and world.installed("cam-1") == "v3"


@pytest.fixture
def counter(moto_endpoint):  # noqa: ANN001, ANN201
    c = S3Counter(moto_endpoint)
    yield c
    c.close()


def test_endless_data_is_cut_at_the_cap(world: World, counter: S3Counter) -> None:
    cap = 64 << 10
    fleet = fl.Fleet.parse(world.uri, AwsSettings(counter.endpoint), max_document=cap)
    core = world.agent("cam-1", fleet=fleet)
    world.publish("v1", code=True)
    assert core.check() == "applied", core.st["message"]
    junk = b"[" * (4 << 20)
    # A huge deployment.json: cores never read it (they follow the timestamp).
    world.put(junk, "deployment.json")
    # A huge timestamp.json: at most the configured cap is requested and read.
    genuine = world.get("timestamp.json")
    world.put(junk, "timestamp.json")
    counter.reset()
    core.check()
    assert "over the 65536-byte cap" in last_refusal(core)
    assert counter.sent("timestamp.json") <= cap + 1
    kept = len(core.st["refused"])
    core.check()  # at every poll again: counted on the same refusal, not a new one each time
    assert len(core.st["refused"]) == kept and core.st["refused"][-1]["times"] == 2
    assert counter.sent("timestamp.json") <= 2 * (cap + 1)
    assert counter.count("GET", "deployment.json") == 0
    world.put(genuine, "timestamp.json")
    # A huge document in place of the one the timestamp names: at most the signed size is read.
    world.publish("v2", code=True)
    pin = json.loads(base64.b64decode(json.loads(world.get("timestamp.json"))["payload"]))
    doc2 = world.get("deployments", f"{2:010d}.json")
    world.put(junk, "deployments", f"{2:010d}.json")
    counter.reset()
    core.check()
    assert "refused after reading at most the signed size" in last_refusal(core)
    assert counter.sent(f"{2:010d}.json") <= pin["deployment"]["size"] + 1
    assert world.installed("cam-1") == "v1"
    world.put(doc2, "deployments", f"{2:010d}.json")  # (the publisher would refuse the junk)
    # A huge object in place of a code archive: refused on its size, none of it downloaded.
    doc = world.publish("v3", code=True)
    code = doc["code"]["f"]
    name = code["uri"].rsplit("/", 1)[1]
    world.put(os.urandom(3 << 20), "code", name)
    counter.reset()
    assert core.check() == "failed"
    assert f"has {3 << 20} bytes, but the document signs {code['size']}" in core.st["message"]
    assert counter.sent(name) == 0 and counter.count("HEAD", name) == 1
    assert world.installed("cam-1") == "v1"
    # The same for a model package (checked against its signed size before the deploy).
    doc = world.publish("v4", code=True)
    pkg = doc["group_file"]["resources"][0]["model"]["source"].rsplit("/", 1)[1]
    assert doc["packages"]["m"]["size"] < 10_000
    world.put(os.urandom(3 << 20), "packages", pkg)
    counter.reset()
    assert core.check() == "failed"
    assert f"has {3 << 20} bytes, but the document signs" in core.st["message"]
    assert counter.sent(pkg) == 0
    assert world.installed("cam-1") == "v1"


def test_an_announcement_flood_is_debounced(world: World, counter: S3Counter,
                                            mosquitto) -> None:  # noqa: ANN001
    import paho.mqtt.client as mqtt

    fleet = fl.Fleet.parse(world.uri, AwsSettings(counter.endpoint))
    world.publish("v1")
    core = world.agent("cam-1", fleet=fleet, debounce_s=0.5,
                       mqtt=MqttSettings("127.0.0.1", mosquitto.port, client_id="cam-1-fleet"))
    core.start()
    try:
        deadline = time.monotonic() + 30
        while core.st.get("state") != "applied" and time.monotonic() < deadline:
            time.sleep(0.05)
        assert core.st["state"] == "applied"
        while not (core._broker and core._broker.link.connected.is_set()):
            time.sleep(0.05)
        time.sleep(0.5)
        flooder = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="flooder")
        flooder.connect("127.0.0.1", mosquitto.port)
        flooder.loop_start()
        counter.reset()
        t0 = time.monotonic()
        heard0 = core.announcements
        sent = 0
        while time.monotonic() - t0 < 3.0:
            flooder.publish(f"{fleet.topic}/deployment", b'{"serial": 999}', qos=0)
            sent += 1
            if sent % 200 == 0:
                time.sleep(0.01)
        time.sleep(1.0)
        window = time.monotonic() - t0
        flooder.loop_stop()
        flooder.disconnect()
        heard = core.announcements - heard0
        gets = counter.count("GET")
        print(f"flood: {sent} announcements sent, {heard} heard, {gets} S3 GETs in "
              f"{window:.1f} s (debounce 0.5 s)")
        assert heard >= 1000, heard
        # One GET (the timestamp) per check, at most one check per 0.5 s.
        assert gets <= window / 0.5 + 2, gets
        assert counter.count("GET", "timestamp.json") == gets
    finally:
        core.stop()


def _check(*agents: fl.FleetAgent) -> None:
    for a in agents:
        a.check()
        a.report(force=True)


def test_only_enrolled_signed_statuses_count(world: World, capsys) -> None:  # noqa: ANN001
    names = ["line-a", "line-b", "line-c"]
    cores = {n: world.agent(n) for n in names}
    fl.enroll(world.fleet, world.key, add={n: a.key.public for n, a in cores.items()})
    first, second, third = ranked = sorted(names, key=document.point)
    rogue_path = os.path.join(world.base, "rogue.pem")
    fl.keygen(rogue_path)
    rogue = fl.SigningKey(rogue_path)

    def forged(name: str, **claims: Any) -> dict[str, Any]:
        return {"format": document.STATUS_FORMAT, "fleet": world.uri, "core": name,
                "group": "g", "updated": time.time(), **claims}

    # 100 forged "failed" statuses, one of them an enrolled core's name signed by another key.
    for i in range(100):
        world.put(json.dumps(forged(f"fake-{i}", state="failed", failed_version=1)).encode(),
                  "status", f"fake-{i}.json")
    world.put(json.dumps(rogue.seal(forged(second, state="failed", failed_version=1))).encode(),
              "status", f"{second}.json")
    world.publish("v1", max_failures=0)
    out = fl.status(world.fleet, world.trusted)
    assert "not signed by core " + second in out["unverified"][second] and len(out["unverified"]) == 101
    _check(*cores.values())
    assert all(cores[n].st["state"] == "applied" for n in names), {
        n: cores[n].st["message"] for n in names}  # the forgeries halted nothing

    # A canary of 30%: exactly one of the three enrolled cores, the flood notwithstanding.
    blocked = os.path.join(world.base, "dest2", first)
    os.makedirs(os.path.dirname(blocked))
    with open(blocked, "w") as fh:  # the canary's destination cannot be made: it fails
        fh.write("not a directory")
    doc = world.publish("v2", dest="dest2", percent=30, max_failures=0)
    assert doc["rollout"]["cutoff"] == document.cutoff(30, names)
    assert [n for n in ranked if document.targets(doc, n)] == [first]
    _check(*cores.values())
    assert cores[first].st["state"] == "failed"
    assert [cores[n].st["state"] for n in (second, third)] == ["waiting", "waiting"]
    with pytest.raises(fl.FleetError, match=f"halted: 1 enrolled core.*reported failure "
                       f"\\({first}\\)"):
        fl.promote(world.fleet, world.key)
    # A forged "applied" over the failed canary's status does not let promote through.
    world.put(json.dumps(forged(first, state="applied", version=2)).encode(),
              "status", f"{first}.json")
    with pytest.raises(fl.FleetError, match=f"canary .* is not confirmed: .*{first}"):
        fl.promote(world.fleet, world.key)
    out = fl.status(world.fleet, world.trusted)
    assert {first, "fake-7"} <= set(out["unverified"]) and second not in out["unverified"]
    assert set(out["cores"]) == {second, third}  # the statuses that verify right now
    cores[first].report(force=True)  # the core writes its status again (at least once a minute)
    # Forced through, the rest halt, naming the core that failed.
    fl.promote(world.fleet, world.key, force=True)
    _check(cores[second], cores[third])
    for n in (second, third):
        assert cores[n].st["state"] == "halted" and cores[n].st["halted_by"] == [first]
        assert world.installed(n, "dest2") is None
    out = fl.status(world.fleet, world.trusted)
    assert out["document"]["halted_by"] == [first]
    main(["fleet", "status", "--fleet", world.uri, "--s3-endpoint", world.endpoint,
          "--trust", f"{world.key_path}.pub"])
    text = capsys.readouterr().out
    assert f"HALTED by {first}" in text and "fake-42" in text and "unverified" in text
    # `fleet resume` accepts the failure: the others apply, the failed core keeps its version.
    fl.resume(world.fleet, world.key)
    _check(*cores.values())
    assert [cores[n].st["state"] for n in (second, third)] == ["applied", "applied"]
    assert world.installed(second, "dest2") == world.installed(third, "dest2") == "v2"
    assert cores[first].st["state"] == "failed" and world.installed(first) == "v1"
    assert not fl.status(world.fleet, world.trusted)["document"]["halted"]
    # A replayed genuine failure from an earlier rollout of the same version number does not
    # halt a later one (a rollback to version 2): statuses count from rollout.since on.
    old_failure = world.get("status", f"{first}.json")
    world.publish("v3", max_failures=0)
    _check(*cores.values())
    assert all(cores[n].st["version"] == 3 for n in names)
    back = fl.rollback(world.fleet, world.key, to=2)
    assert back["rollout"]["since"] == back["serial"]
    world.put(old_failure, "status", f"{first}.json")
    _check(cores[second], cores[third])
    assert [cores[n].st["state"] for n in (second, third)] == ["applied", "applied"]
    assert [cores[n].st["version"] for n in (second, third)] == [2, 2]
    # Taking a core off the list: its signed status no longer counts.
    fl.enroll(world.fleet, world.key, remove=[first])
    out = fl.status(world.fleet, world.trusted)
    assert "not enrolled" in out["unverified"][first] and first not in out["enrolled"]
    with pytest.raises(ValueError, match="--remove 'nobody': not enrolled"):
        fl.enroll(world.fleet, world.key, remove=["nobody"])
