"""Fleet documents without core processes: keys and signatures, canary selection, and the
rules a core applies (serial and version monotonic unless a signed rollback), checked with an
in-process agent against the loopback S3 server."""

from __future__ import annotations

import base64
import json
import os
import stat

import pytest

from pyengine import fleet as fl
from pyengine.cli import main
from pyengine.common.aws import AwsSettings
from pyengine.fleet import document
from pyengine.fleet.history import write_timestamp
from pyengine.fleet.signing import canonical


@pytest.fixture
def keys(tmp_path):  # noqa: ANN001, ANN201
    path = str(tmp_path / "k.pem")
    kid = fl.keygen(path)
    return path, kid


def test_keygen_sign_verify(keys, tmp_path) -> None:  # noqa: ANN001
    path, kid = keys
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    trusted = fl.TrustedKey.load(f"{path}.pub")
    assert trusted.id == kid == fl.SigningKey(path).public.id
    env = fl.SigningKey(path).seal({"hello": [1, 2]})
    doc, signer = fl.open_envelope(json.dumps(env).encode(), [trusted])
    assert doc == {"hello": [1, 2]} and signer == kid
    with pytest.raises(FileExistsError, match="refusing to overwrite"):
        fl.keygen(path)
    # A raw 32-byte key in hex is accepted too.
    (tmp_path / "raw.hex").write_text(trusted.raw.hex())
    assert fl.TrustedKey.load(str(tmp_path / "raw.hex")).id == kid
    (tmp_path / "junk").write_text("not a key")
    with pytest.raises(ValueError, match="junk is not an Ed25519 public key"):
        fl.TrustedKey.load(str(tmp_path / "junk"))
    with pytest.raises(ValueError, match="not an unencrypted PEM private key"):
        fl.SigningKey(str(tmp_path / "junk"))


def test_envelopes_refused(keys, tmp_path) -> None:  # noqa: ANN001
    path, _ = keys
    trusted = [fl.TrustedKey.load(f"{path}.pub")]
    fl.keygen(str(tmp_path / "other.pem"))
    good = fl.SigningKey(path).seal({"v": 1})
    cases = {
        "signed by an untrusted key": fl.SigningKey(str(tmp_path / "other.pem")).seal({"v": 1}),
        "unsigned document": {"v": 1},
        "bad signature": dict(good, payload=base64.b64encode(canonical({"v": 2})).decode()),
        "no payload or no signature": dict(good, signature=""),
        "not base64": dict(good, signature="!!!"),
    }
    for reason, env in cases.items():
        with pytest.raises(fl.SignatureError, match=reason):
            fl.open_envelope(json.dumps(env).encode(), trusted)
    with pytest.raises(fl.SignatureError, match="not JSON"):
        fl.open_envelope(b"\x00garbage", trusted)
    with pytest.raises(fl.SignatureError, match="no trusted key"):
        fl.open_envelope(json.dumps(good).encode(), [])


def test_canary_cutoff_takes_exactly_the_share() -> None:
    for n in (1, 2, 5, 13):
        names = [f"device-{i}" for i in range(n)]
        for percent in (1, 10, 25, 40, 50, 99, 100):
            cut = document.cutoff(percent, names)
            inside = [x for x in names if document.point(x) < cut]
            want = n if percent == 100 else max(1, -(-n * percent // 100))
            assert len(inside) == min(n, want), (n, percent)
            # The cores inside are the lowest points: a wider share keeps them inside.
            ranked = sorted(names, key=document.point)
            assert sorted(inside, key=document.point) == ranked[: len(inside)]
    assert document.cutoff(40, []) == 0.4


def delete(fleet: fl.Fleet, *parts: str) -> None:
    """What a bucket writer can do: delete an object."""
    import boto3

    boto3.client("s3", endpoint_url=fleet.s3.endpoint_url, region_name="us-east-1") \
        .delete_object(Bucket=fleet.bucket, Key=fleet.key(*parts))


def _agent(tmp_path, fleet: fl.Fleet, key_path: str) -> fl.FleetAgent:  # noqa: ANN001
    return fl.FleetAgent(str(tmp_path / "root"), fleet, "solo",
                         [fl.TrustedKey.load(f"{key_path}.pub")], poll_s=60)


def test_serial_and_version_rules(tmp_path, keys, moto_endpoint, bucket,  # noqa: ANN001
                                  monkeypatch) -> None:
    monkeypatch.setenv(fl.CORE_NAME_VAR, "solo")  # restored afterwards (the agent sets it)
    path, _ = keys
    key = fl.SigningKey(path)
    fleet = fl.Fleet.parse(f"s3://{bucket}/f", AwsSettings(moto_endpoint))
    group = tmp_path / "group.json"
    group.write_text(json.dumps({"name": "empty"}))
    agent = _agent(tmp_path, fleet, path)
    assert agent.check() == "idle"  # nothing published yet
    fl.publish(str(group), fleet, key)
    assert agent.check() == "applied" and agent.st["version"] == 1
    fl.publish(str(group), fleet, key)
    assert agent.check() == "applied" and agent.st["version"] == 2
    ts2 = fleet.get("timestamp.json")

    # A correctly signed but older version without the rollback marker is refused, even under a
    # higher serial and a fresh timestamp ...
    first = json.loads(base64.b64decode(json.loads(fleet.get("deployments",
                                                             f"{1:010d}.json"))["payload"]))
    sneaky = fl.SigningKey(path).seal(dict(first, serial=3))
    data = json.dumps(sneaky).encode()
    fleet.put(data, "deployments", f"{3:010d}.json")
    hist = fl.verified_history(fleet, key)
    write_timestamp(fleet, key, hist.docs[0], hist.enrolled, hist.timestamp)
    assert agent.check() == "applied" and agent.st["version"] == 2
    assert "no rollback marker" in agent.st["refused"][-1]["reason"]
    delete(fleet, "deployments", f"{3:010d}.json")  # (and the timestamp back on serial 2)
    write_timestamp(fleet, key, hist.docs[1], hist.enrolled, hist.timestamp)
    # ... a signed rollback is applied: a new, higher serial carrying the older content ...
    rb = fl.rollback(fleet, key)
    assert rb["version"] == 1 and rb["rollback"] == {"from": 2} and rb["serial"] == 3
    assert agent.check() == "applied" and agent.st["version"] == 1
    # ... and replaying the timestamp of version 2 afterwards is refused.
    fleet.put(ts2 or b"", "timestamp.json")
    agent.check()
    assert agent.st["version"] == 1 and "replayed timestamp" in agent.st["refused"][-1]["reason"]
    # A timestamp signed for another fleet is refused too.
    ts = json.loads(base64.b64decode(json.loads(ts2 or b"")["payload"]))
    fleet.put(json.dumps(key.seal(dict(ts, serial=10**15, fleet="s3://elsewhere/x"))).encode(),
              "timestamp.json")
    agent.check()
    assert "published to fleet 's3://elsewhere/x'" in agent.st["refused"][-1]["reason"]
    fl.refresh(fleet, key)
    # The state survives a restart: a new agent on the same root keeps serial and version.
    again = _agent(tmp_path, fleet, path)
    assert (again.st["serial"], again.st["version"]) == (3, 1)
    assert (again.mark("serial"), again.mark("version")) == (3, 2)
    # Each core has its own status key, made at the first start, readable by its user only.
    assert stat.S_IMODE(os.stat(again.key.path).st_mode) == 0o600
    assert again.key.public.id == agent.key.public.id
    # The status in the bucket carries it all, signed with the core's own key.
    assert again.report(force=True)
    out = fl.status(fleet, [key.public])
    assert "solo" in out["unverified"] and "not enrolled" in out["unverified"]["solo"]
    fl.enroll(fleet, key, add={"solo": again.key.public})
    st = fl.status(fleet, [key.public])["cores"]["solo"]
    assert st["version"] == 1 and st["state"] == "applied" and len(st["refused"]) == 3
    # Publishing continues above the highest version ever published.
    assert fl.publish(str(group), fleet, key)["version"] == 3


def test_cli_errors(capsys, tmp_path, keys) -> None:  # noqa: ANN001
    path, _ = keys
    assert main(["core", "start", "--root", str(tmp_path), "--fleet", "s3://bucket-x/p"]) == 2
    assert "--fleet needs --trust PUBLIC_KEY" in capsys.readouterr().err
    assert main(["fleet", "status", "--fleet", "http://x/y", "--key", path]) == 2
    assert "must be s3://BUCKET/PREFIX" in capsys.readouterr().err
    assert main(["core", "start", "--root", str(tmp_path), "--fleet", "s3://bucket-x/p",
                 "--trust", path + ".pub", "--core-name", "a/b"]) == 2
    assert "core name 'a/b'" in capsys.readouterr().err
    assert main(["fleet", "keygen", path]) == 2
    assert "exists; refusing to overwrite" in capsys.readouterr().err
    assert main(["fleet", "enroll", "--fleet", "s3://bucket-x/p", "--key", path,
                 "--core", "cam-1"]) == 2
    assert "--core 'cam-1' must be NAME=PUBLIC_KEY_FILE" in capsys.readouterr().err
    assert main(["fleet", "enroll", "--fleet", "s3://bucket-x/p", "--key", path]) == 2
    assert "needs --core NAME=PUBLIC_KEY or --remove NAME" in capsys.readouterr().err


def test_a_fleet_published_before_timestamps_upgrades_with_refresh(  # noqa: ANN001
        tmp_path, keys, moto_endpoint, bucket, monkeypatch) -> None:
    """Documents of format pyengine-fleet/1 (no expiry, no timestamp): cores wait, and one
    `fleet refresh` re-signs the latest as a current document with a timestamp."""
    monkeypatch.setenv(fl.CORE_NAME_VAR, "solo")
    path, _ = keys
    key = fl.SigningKey(path)
    fleet = fl.Fleet.parse(f"s3://{bucket}/old", AwsSettings(moto_endpoint))
    group = tmp_path / "group.json"
    group.write_text(json.dumps({"name": "empty"}))
    doc = fl.publish(str(group), fleet, key)
    old = {k: v for k, v in doc.items() if k not in ("expires", "packages")}
    old["format"] = "pyengine-fleet/1"
    old["rollout"] = {k: v for k, v in doc["rollout"].items()
                      if k not in ("acknowledged", "since")}
    fleet.put_json(key.seal(old), "deployments", f"{1:010d}.json")
    delete(fleet, "timestamp.json")
    agent = _agent(tmp_path, fleet, path)
    assert agent.check() == "idle" and agent.status()["freshness"] == "unknown"
    ts = fl.refresh(fleet, key)
    assert ts["deployment"]["serial"] == 2
    assert agent.check() == "applied" and agent.st["version"] == 1
    assert agent.status()["freshness"] == "fresh"
