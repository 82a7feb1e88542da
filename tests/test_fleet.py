"""Fleet tests: five real cores (separate roots, separate processes) follow signed documents in a
loopback S3 server (moto's server mode) and hear of them over a real Mosquitto broker.

The module shares one fleet; each test publishes what it needs and waits for the cores to
converge, so the tests read as a rollout's history: first version, canary and promotion,
rollback, forged documents, a failing package, a core offline during a rollout.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import tempfile
import time
import uuid
from typing import Any, Callable

import pytest
from core_helpers import CoreProcess, package, text_file, write_code
from deploy_fixtures import run_cli
from mqtt_fixtures import Device, Mosquitto

from pyengine import fleet as fl
from pyengine.common.aws import AwsSettings
from pyengine.fleet import document, enrollment
from pyengine.fleet.notify import announce
from pyengine.fleet.signing import canonical

CORES = [f"core-{i}" for i in range(5)]
#: Cores 0-3 hear announcements and poll rarely; core 4 has no broker and polls every second.
POLL_ONLY = "core-4"

HANDLER = """
import os

def function_handler(event, context):
    with open(os.path.join(context.resources["m"], "version.txt")) as fh:
        return {"model": fh.read(), "code": TAG}
"""


class FleetEnv:
    """One fleet: a bucket prefix, a signing key, a group directory and five cores."""

    def __init__(self, base: str, endpoint: str, bucket: str, broker: str) -> None:
        self.base = base
        self.endpoint = endpoint
        self.broker = broker
        self.uri = f"s3://{bucket}/fleets/line-1"
        self.fleet = fl.Fleet.parse(self.uri, AwsSettings(endpoint))
        self.key_path = os.path.join(base, "keys", "signing.pem")
        os.makedirs(os.path.dirname(self.key_path))
        fl.keygen(self.key_path)
        self.key = fl.SigningKey(self.key_path)
        self.cores: dict[str, CoreProcess] = {}
        self.group_dir = os.path.join(base, "group")
        os.makedirs(self.group_dir)
        self.enrolled = enrollment.Enrollment()
        self.old_timestamp = b""

    # -- cores -------------------------------------------------------------------------------

    def root(self, name: str) -> str:
        return os.path.join(self.base, "cores", name, "root")

    def start(self, name: str) -> CoreProcess:
        os.makedirs(os.path.dirname(self.root(name)), exist_ok=True)
        args = ["--fleet", self.uri, "--core-name", name, "--trust", f"{self.key_path}.pub",
                "--s3-endpoint", self.endpoint, "--log-level", "DEBUG"]
        if name == POLL_ONLY:
            args += ["--fleet-poll", "1"]
        else:  # the core's own broker settings; a client id per core, as on separate devices
            config = os.path.join(os.path.dirname(self.root(name)), "core.json")
            host, port = self.broker.split(":")
            with open(config, "w") as fh:
                json.dump({"mqtt": {"host": host, "port": int(port),
                                    "client_id": f"pyengine-{name}"}}, fh)
            args += ["--fleet-poll", "120", "--fleet-debounce", "0.2", "--config", config]
        self.cores[name] = CoreProcess(self.root(name), args=tuple(args))
        return self.cores[name]

    def stop(self, name: str) -> None:
        self.cores.pop(name).stop()

    def logs(self) -> str:
        return "\n".join(f"===== {n}\n{c.log()[-3000:]}" for n, c in sorted(self.cores.items()))

    # -- publishing --------------------------------------------------------------------------

    def write_group(self, tag: str, broken: bool = False) -> str:
        """The group: one model package (version.txt = tag, or garbage bytes) and a function
        whose code also carries the tag. Destinations differ per core by name."""
        src = os.path.join(self.group_dir, "sources", f"m-{tag}.tar.gz")
        os.makedirs(os.path.dirname(src), exist_ok=True)
        if broken:
            with open(src, "wb") as fh:
                fh.write(b"\x1f\x8b\x08\x00 this is not a gzip stream " + os.urandom(64))
        else:
            package(src, text_file("version.txt", tag))
        code = write_code(self.group_dir, "report", f"TAG = {tag!r}\n" + HANDLER)
        group = {
            "name": "line-1",
            "resources": [{"id": "m", "name": "m", "model": {
                "source": src,
                "destination": os.path.join(self.base, "dest", "${PYENGINE_CORE_NAME}", "m")}}],
            "functions": [{"name": "report", "handler": "handler.function_handler",
                           "code": code, "resources": [{"id": "m", "permission": "ro"}]}],
        }
        path = os.path.join(self.group_dir, "group.json")
        with open(path, "w") as fh:
            json.dump(group, fh, indent=1)
        return path

    def publish(self, tag: str, **kw: Any) -> dict[str, Any]:
        return fl.publish(self.write_group(tag, kw.pop("broken", False)), self.fleet, self.key,
                          mqtt=self.broker, **kw)

    def cli(self, *args: str) -> str:
        r = run_cli("fleet", *args, "--fleet", self.uri, "--s3-endpoint", self.endpoint,
                    "--mqtt", self.broker)
        assert r.returncode == 0, r.stderr
        return r.stdout

    # -- observing ---------------------------------------------------------------------------

    def enroll(self) -> None:
        """Enroll every core's status key (ROOT/fleet/core.pem.pub), as an operator does."""
        specs = [f"--core={n}={self.root(n)}/fleet/core.pem.pub" for n in CORES]
        self.cli("enroll", "--key", self.key_path, *specs)
        self.enrolled = enrollment.read(self.fleet, [self.key.public])

    def statuses(self) -> dict[str, dict[str, Any]]:
        """The statuses signed by enrolled cores (the only ones that count)."""
        return enrollment.statuses(self.fleet, self.enrolled).verified

    def wait(self, what: str, cond: Callable[[dict[str, dict[str, Any]]], bool],
             timeout: float = 60.0) -> dict[str, dict[str, Any]]:
        deadline = time.monotonic() + timeout
        st: dict[str, dict[str, Any]] = {}
        while time.monotonic() < deadline:
            st = self.statuses()
            if cond(st):
                return st
            time.sleep(0.1)
        summary = {n: (s.get("version"), s.get("state"), s.get("message")) for n, s in st.items()}
        raise AssertionError(f"timed out waiting for {what}: {summary}\n{self.logs()}")

    def wait_versions(self, want: dict[str, int], timeout: float = 60.0) -> dict[str, Any]:
        return self.wait(f"versions {want}", lambda st: all(
            st.get(n, {}).get("version") == v and st[n].get("state") == "applied"
            for n, v in want.items()), timeout)

    def installed_tag(self, name: str) -> str:
        with open(os.path.join(self.base, "dest", name, "m", "version.txt")) as fh:
            return fh.read()

    def invoke(self, name: str) -> dict[str, Any]:
        core = self.cores[name]
        core.wait_ready(60)
        status, body = core.invoke("report", {})
        assert status == 200, body
        return dict(body["result"])


@pytest.fixture(scope="module")
def env(moto_endpoint, bucket):  # noqa: ANN001, ANN201
    base = tempfile.mkdtemp(prefix="pyengine-fleet-test-")
    os.chmod(base, 0o755)  # functions run as nobody when the suite runs as root
    broker = Mosquitto()  # one broker for the module's fleet (the messaging tests' fixture)
    e = FleetEnv(base, moto_endpoint, bucket, f"127.0.0.1:{broker.port}")
    for n in CORES:
        e.start(n)
    try:
        # Every core registers (writes its signed status) at start; the operator enrolls them.
        deadline = time.monotonic() + 90
        while not set(CORES) <= set(e.fleet.status_names()):
            assert time.monotonic() < deadline, f"cores did not register\n{e.logs()}"
            time.sleep(0.1)
        e.enroll()
        e.wait("all statuses verified", lambda st: set(CORES) <= set(st), timeout=90)
        yield e
    finally:
        for n in list(e.cores):
            e.stop(n)
        broker.close()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="module")
def bucket(moto_endpoint):  # noqa: ANN001, ANN201 - module-scoped: the fleet spans the module
    import boto3

    name = f"fleet-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1").create_bucket(
        Bucket=name)
    return name


def test_first_version_reaches_all_five(env: FleetEnv) -> None:
    out = env.cli("publish", env.write_group("v1"), "--key", env.key_path)
    assert "published version 1 of line-1" in out
    st = env.wait_versions({n: 1 for n in CORES})
    for n in CORES:
        assert env.installed_tag(n) == "v1"
        assert [(r["key"], r["outcome"]) for r in st[n]["resources"]] == [
            ("m", "installed"), ("report", "installed")]
    # The functions run the published code against the published model, on every core.
    for n in CORES:
        assert env.invoke(n) == {"model": "v1", "code": "v1"}
    st = env.wait("health reported", lambda s: all(s[n]["health"].get("ready") for n in CORES))
    assert all(st[n]["health"]["functions"][0]["name"] == "report" for n in CORES)
    # Cores with a broker also publish their status there (retained).
    device = Device(int(env.broker.rsplit(":", 1)[1]), [f"{env.fleet.topic}/status/+"])
    try:
        deadline = time.monotonic() + 30
        seen: dict[str, Any] = {}
        while time.monotonic() < deadline and set(seen) != set(CORES) - {POLL_ONLY}:
            for topic, payload in device.wait_for(len(seen) + 1, timeout=1):
                name = topic.rsplit("/", 1)[1]
                # Signed by the core's enrolled key, like the status in the bucket.
                body = enrollment.verify_status(name, payload, env.enrolled, env.uri)
                if body["version"] == 1:
                    seen[topic.rsplit("/", 1)[1]] = body
        assert set(seen) == set(CORES) - {POLL_ONLY}, sorted(seen)
    finally:
        device.close()


def test_canary_then_promotion(env: FleetEnv) -> None:
    env.old_timestamp = env.fleet.get("timestamp.json") or b""  # for the replay test below
    doc = env.publish("v2", percent=40)
    assert doc["version"] == 2 and doc["rollout"]["percent"] == 40
    ranked = sorted(CORES, key=document.point)
    canary, rest = ranked[:2], ranked[2:]
    env.wait_versions({**{n: 2 for n in canary}})
    st = env.wait("the rest waiting", lambda s: all(
        s[n]["state"] == "waiting" and s[n]["target"]["serial"] == doc["serial"] for n in rest))
    assert [n for n in CORES if st[n]["version"] == 2] == sorted(canary)
    assert all(st[n]["version"] == 1 and env.installed_tag(n) == "v1" for n in rest)
    status = env.cli("status", "--trust", f"{env.key_path}.pub")
    assert "2/5 enrolled cores on it, 2 targeted, 0 failed" in status, status
    for n in CORES:
        assert n in status
    env.cli("promote", "--key", env.key_path)
    env.wait_versions({n: 2 for n in CORES})
    assert all(env.installed_tag(n) == "v2" for n in CORES)
    assert env.invoke(rest[0]) == {"model": "v2", "code": "v2"}


def test_rollback_goes_back_everywhere(env: FleetEnv) -> None:
    out = env.cli("rollback", "--key", env.key_path)
    assert "version 1 of line-1" in out and "rollback from 2" in out
    env.wait_versions({n: 1 for n in CORES})
    assert all(env.installed_tag(n) == "v1" for n in CORES)
    assert env.invoke(CORES[0]) == {"model": "v1", "code": "v1"}
    r = run_cli("fleet", "rollback", "--fleet", env.uri, "--s3-endpoint", env.endpoint,
                "--key", env.key_path, "--to", "7")
    assert r.returncode == 1 and "--to 7: not an earlier version" in r.stderr, r.stderr
    # The next publish continues above the highest version ever published.
    assert env.publish("v3")["version"] == 3
    env.wait_versions({n: 3 for n in CORES})


def _bad_timestamps(env: FleetEnv, old: bytes) -> dict[str, bytes]:
    """Timestamps a compromised bucket could hold: signed by another key, unsigned, altered after
    signing, and a replay of an older genuine one (``old``)."""
    genuine = env.fleet.get("timestamp.json")
    assert genuine is not None
    real = json.loads(genuine)
    ts = json.loads(base64.b64decode(real["payload"]))
    evil = dict(ts, serial=ts["serial"] + 10)
    other_key = os.path.join(env.base, "keys", "other.pem")
    if not os.path.exists(other_key):
        fl.keygen(other_key)
    tampered = dict(real, payload=base64.b64encode(canonical(evil)).decode())
    return {
        "untrusted key": json.dumps(fl.SigningKey(other_key).seal(evil)).encode(),
        "unsigned": json.dumps(evil).encode(),
        "bad signature": json.dumps(tampered).encode(),
        "replayed timestamp": old,
    }


def test_forged_documents_are_refused_by_every_core(env: FleetEnv) -> None:
    before = env.statuses()
    genuine = env.fleet.get("timestamp.json")
    assert genuine is not None
    # An old genuine document over deployment.json changes nothing: cores follow the timestamp.
    env.fleet.put(env.fleet.get("deployments", f"{1:010d}.json") or b"", "deployment.json")
    for what, data in _bad_timestamps(env, env.old_timestamp).items():
        env.fleet.put(data, "timestamp.json")
        announce(env.broker, f"{env.fleet.topic}/deployment", {"serial": 999})
        st = env.wait(f"every core to refuse the {what} timestamp", lambda s, what=what: all(
            s[n]["refused"] and what in s[n]["refused"][-1]["reason"] for n in CORES))
        for n in CORES:
            assert st[n]["version"] == before[n]["version"] == 3
            assert st[n]["state"] == "applied"
            assert env.installed_tag(n) == "v3"
    env.fleet.put(genuine, "timestamp.json")
    # Nothing forged entered the history: the next version is 4.
    assert fl.latest(env.fleet, [env.key.public])["version"] == 3


def test_failing_package_halts_the_rollout(env: FleetEnv) -> None:
    doc = env.publish("v4-broken", broken=True, percent=40, max_failures=1)
    ranked = sorted(CORES, key=document.point)
    canary, rest = ranked[:2], ranked[2:]
    st = env.wait("the canary to fail", lambda s: all(
        s[n]["state"] == "failed" and s[n]["failed_version"] == 4 for n in canary))
    for n in canary:
        assert st[n]["version"] == 3 and env.installed_tag(n) == "v3"
        assert any(r["outcome"] == "failed" for r in st[n]["resources"]), st[n]
    # Two failures, more than the one allowed: promotion is refused ...
    r = run_cli("fleet", "promote", "--fleet", env.uri, "--s3-endpoint", env.endpoint,
                "--key", env.key_path)
    assert r.returncode != 0 and "halted" in r.stderr, r.stderr
    # ... and even a forced one is refused by each core, which keeps its version.
    env.cli("promote", "--key", env.key_path, "--force")
    st = env.wait("the rest to halt", lambda s: all(s[n]["state"] == "halted" for n in rest))
    for n in rest:
        assert st[n]["version"] == 3 and env.installed_tag(n) == "v3"
    assert fl.status(env.fleet, [env.key.public])["document"]["halted"]
    assert env.invoke(rest[0]) == {"model": "v3", "code": "v3"}
    assert doc["serial"] < fl.latest(env.fleet, [env.key.public])["serial"]
    # A fixed version goes everywhere, the failed cores included.
    assert env.publish("v5")["version"] == 5
    env.wait_versions({n: 5 for n in CORES})


def test_core_offline_during_rollout_catches_up(env: FleetEnv) -> None:
    env.publish("v6", percent=40)
    ranked = sorted(CORES, key=document.point)
    env.wait_versions({n: 6 for n in ranked[:2]})
    late = ranked[-1]
    env.stop(late)
    env.cli("promote", "--key", env.key_path)
    env.wait_versions({n: 6 for n in CORES if n != late})
    assert env.installed_tag(late) == "v5"
    env.publish("v7")
    env.wait_versions({n: 7 for n in CORES if n != late})
    env.start(late)
    env.wait_versions({late: 7})
    assert env.installed_tag(late) == "v7"
    assert env.invoke(late) == {"model": "v7", "code": "v7"}
