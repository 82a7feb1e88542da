"""Messaging against a hostile device: broker sessions (client ids, TLS, passwords, ACLs) and
bounds (bytes, sizes, payloads that used to kill a worker or vanish).

Each test runs a real Mosquitto (its own configuration: TLS with a CA made in the test, a
password file, an ACL file) and a core subprocess; devices are paho clients.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import threading
import time
from typing import Any

import pytest
from core_helpers import CoreProcess, function
from deploy_fixtures import free_port
from mqtt_fixtures import Device, MadeCA, Mosquitto, password_file
from test_messaging import _deploy, _metric, _wait_subscribed, open_tmp, predict_base

__all__ = ["open_tmp", "predict_base"]  # fixtures shared with test_messaging

ECHO = """
def function_handler(event, context):
    device = context.topic.split("/")[1]
    context.publish(f"predictions/{device}", {"seq": event["seq"]})
"""

PROBE = """
import os
import time

def function_handler(event, context):
    if isinstance(event, dict) and event.get("die"):
        os._exit(3)
    if isinstance(event, dict) and event.get("sleep"):
        time.sleep(event["sleep"])
    context.publish("acks/probe", {
        "type": type(event).__name__, "pid": os.getpid(),
        "len": len(event) if isinstance(event, (bytes, str)) else None,
        "first": event[:1].decode() if isinstance(event, bytes) else None})
"""


def _config(base: str, **cfg: Any) -> str:
    path = os.path.join(base, "core.json")
    with open(path, "w") as fh:
        json.dump(cfg, fh)
    return path


def _connect(port: int, client_id: str = "", ca: str | None = None,
             cert: tuple[str, str] | None = None, auth: tuple[str, str] | None = None,
             wait_s: float = 10.0) -> tuple[str, Any]:
    """Connect a paho client; ("ok", client) or (why it failed, None)."""
    import paho.mqtt.client as mqtt

    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2,
                    client_id=client_id or f"probe-{time.monotonic_ns()}")
    if ca:
        c.tls_set(ca_certs=ca, certfile=cert[0] if cert else None,
                  keyfile=cert[1] if cert else None)
    if auth:
        c.username_pw_set(*auth)
    done = threading.Event()
    result: list[str] = []

    def connected(client: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        result.append("ok" if not reason.is_failure else str(reason))
        done.set()

    c.on_connect = connected
    c.on_disconnect = lambda *a: (result.append("closed by the broker"), done.set())
    try:
        c.connect("127.0.0.1", port, keepalive=30)
    except OSError as exc:  # the TLS handshake: ssl.SSLError, or the connection reset
        return f"{type(exc).__name__}: {exc}", None
    c.loop_start()
    if not done.wait(wait_s):
        c.loop_stop()
        return "no answer (the broker closed the connection)", None
    if result[0] != "ok":
        c.loop_stop()
        return result[0], None
    return "ok", c


def _wait_metric(core: CoreProcess, name: str, at_least: float, timeout: float = 20,
                 **labels: str) -> float:
    deadline = time.monotonic() + timeout
    while True:
        value = _metric(core.get("/metrics")[1], name, **labels)
        if value >= at_least or time.monotonic() > deadline:
            return value
        time.sleep(0.05)


# -- broker sessions -----------------------------------------------------------------------


def test_a_device_with_the_old_guessable_client_id_cannot_take_the_session_over(
        mosquitto: Mosquitto, predict_base: str) -> None:
    """The id was pyengine-<hostname>-<sha1(root)[:8]>: a device that connected with it took
    the core's persistent session over (99 of 200 readings went to it). Now the id is random,
    kept in the root; and an anonymous plaintext connection is warned about."""
    base = predict_base
    root = _deploy(base, [function(base, "echo", ECHO, pinned=True)], [
        {"source": "devices", "topic": "sensors/+/reading", "target": "echo"},
        {"source": "echo", "topic": "predictions/#", "target": "devices"},
    ])
    core = CoreProcess(root, args=("--mqtt", f"127.0.0.1:{mosquitto.port}")).wait_ready()
    device = Device(mosquitto.port, ["predictions/#"])
    attackers = []
    try:
        _wait_subscribed(core)
        seen = re.findall(r"New client connected from \S+ as (\S+) \(", mosquitto.log())
        assert len(seen) == 2, mosquitto.log()  # the core and the device, in either order
        own = next(cid for cid in seen if not cid.startswith("device-"))
        guessed = (f"pyengine-{socket.gethostname()}-"
                   f"{hashlib.sha1(os.path.abspath(root).encode()).hexdigest()[:8]}")
        for cid in (guessed, f"pyengine-{os.uname().nodename}"):
            status, client = _connect(mosquitto.port, client_id=cid)
            assert status == "ok"
            client.subscribe("sensors/#", qos=1)
            attackers.append(client)
        for i in range(20):
            device.publish("sensors/cam1/reading", json.dumps({"seq": i}))
        got = sorted(json.loads(p)["seq"] for _, p in device.wait_for(20, 30))
        assert got == list(range(20)), core.log()[-3000:]
        _, metrics = core.get("/metrics")
        assert _metric(metrics, "pyengine_mqtt_connects_total", broker="devices") == 1
        assert "lost the connection" not in core.log()
        assert "is plaintext and anonymous" in core.log()
        assert own != guessed and re.fullmatch(r"pyengine-[0-9a-f]{32}", own)
        with open(os.path.join(root, "mqtt-client-id")) as fh:
            assert fh.read().strip() == own
        assert oct(os.stat(os.path.join(root, "mqtt-client-id")).st_mode & 0o777) == "0o600"
    finally:
        for client in attackers:
            client.disconnect()
            client.loop_stop()
        device.close()
        core.stop()


def test_tls_and_auth_failures_are_logged_and_counted(predict_base: str) -> None:
    """A failed TLS handshake logged nothing; now each failed attempt is a log line and a
    count by reason."""
    base = predict_base
    broker = Mosquitto(tls=True, users={"core": "core-secret"})
    stranger = MadeCA(base, "another CA")  # not the broker's
    root = _deploy(base, [function(base, "echo", ECHO, pinned=True)], [
        {"source": "devices", "topic": "sensors/+/reading", "target": "echo"}])
    try:
        cfg = _config(base, mqtt={"host": "127.0.0.1", "port": broker.port,
                                  "tls": {"ca": stranger.pem}, "username": "core"})
        core = CoreProcess(root, args=("--config", cfg),
                           env={"PYENGINE_MQTT_PASSWORD": "core-secret"}).wait_ready()
        try:
            assert _wait_metric(core, "pyengine_mqtt_connect_failures_total", 2,
                                broker="devices", reason="tls") >= 2, core.log()
            assert "tls failure: TLS handshake failed" in core.log()
            assert "CERTIFICATE_VERIFY_FAILED" in core.log()
            assert _metric(core.get("/metrics")[1], "pyengine_mqtt_connected",
                           broker="devices") == 0
        finally:
            core.stop()
        cfg = _config(base, mqtt={"host": "127.0.0.1", "port": broker.port,
                                  "tls": {"ca": broker.ca}, "username": "core"})
        core = CoreProcess(root, args=("--config", cfg),
                           env={"PYENGINE_MQTT_PASSWORD": "wrong"}).wait_ready()
        try:
            assert _wait_metric(core, "pyengine_mqtt_connect_failures_total", 1,
                                broker="devices", reason="auth") >= 1, core.log()
            assert "auth failure: the broker refused the connection" in core.log()
            assert "plaintext" not in core.log() and "anonymous" not in core.log()
        finally:
            core.stop()
    finally:
        broker.close()
    # A broker that requires a client certificate and gets one from another CA: with TLS 1.3
    # it says so only after the client's side of the handshake, by closing the connection.
    ca = MadeCA(base, "broker CA")
    server = ca.issue("127.0.0.1", server=True)
    foreign = stranger.issue("core-9")
    port = free_port()
    broker = Mosquitto(port, listeners=[
        f"listener {port} 127.0.0.1", f"cafile {ca.pem}", f"certfile {server[0]}",
        f"keyfile {server[1]}", "require_certificate true", "use_identity_as_username true",
        "allow_anonymous false"])
    try:
        cfg = _config(base, mqtt={"host": "127.0.0.1", "port": port, "tls": {
            "ca": ca.pem, "cert": foreign[0], "key": foreign[1]}})
        core = CoreProcess(root, args=("--config", cfg)).wait_ready()
        try:
            assert _wait_metric(core, "pyengine_mqtt_connect_failures_total", 2,
                                broker="devices", reason="tls") >= 2, core.log()
            assert "a client certificate it does not accept" in core.log()
        finally:
            core.stop()
    finally:
        broker.close()


ACL = """\
# Devices: user name and password; a device may only write its readings and read its answers.
user cam-1
topic write sensors/cam-1/#
topic read predictions/cam-1/#

# Cores: client certificate, its common name is the user name. Device topics, and in the
# fleet's topics its own status and the announcements.
user core-1
topic read sensors/#
topic write predictions/#
topic write pyengine/fleet/fleet-bucket/status/core-1
topic read pyengine/fleet/fleet-bucket/deployment

# The operator (fleet publisher): announcements, and every core's status.
user ops
topic write pyengine/fleet/fleet-bucket/deployment
topic read pyengine/fleet/fleet-bucket/status/#
"""


def test_acl_password_and_mutual_tls_broker(predict_base: str) -> None:
    """Mosquitto as docs/messaging.md configures it: cores on a mutual-TLS listener, devices
    on a password listener that forces client id = user name, one ACL file. Anonymous
    clients are refused, the core works over mTLS without a warning, a device that uses the
    core's client id does not disturb it, and devices read neither core topics nor the
    cores' retained fleet status."""
    base = predict_base
    ca = MadeCA(base)
    server = ca.issue("127.0.0.1", server=True)
    core_cert = ca.issue("core-1")
    acl = os.path.join(base, "acl")
    with open(acl, "w") as fh:
        fh.write(ACL)
    passwd = password_file(base, {"cam-1": "cam-secret", "ops": "ops-secret"})
    cores_port, devices_port = free_port(), free_port()
    tls = [f"cafile {ca.pem}", f"certfile {server[0]}", f"keyfile {server[1]}"]
    broker = Mosquitto(cores_port, directory=base, listeners=[
        "per_listener_settings true", "max_packet_size 5242880",
        f"listener {cores_port} 127.0.0.1", *tls,
        "require_certificate true", "use_identity_as_username true",
        "allow_anonymous false", f"acl_file {acl}",
        f"listener {devices_port} 127.0.0.1", *tls,
        "allow_anonymous false", f"password_file {passwd}",
        "use_username_as_clientid true", f"acl_file {acl}",
    ])
    root = _deploy(base, [function(base, "echo", ECHO, pinned=True)], [
        {"source": "devices", "topic": "sensors/+/reading", "target": "echo"},
        {"source": "echo", "topic": "predictions/#", "target": "devices"},
    ])
    cfg = _config(base, mqtt={"host": "127.0.0.1", "port": cores_port, "tls": {
        "ca": ca.pem, "cert": core_cert[0], "key": core_cert[1]}})
    core = CoreProcess(root, args=("--config", cfg)).wait_ready()
    clients: list[Any] = []
    try:
        _wait_subscribed(core)  # mutual TLS, no password
        assert "plaintext" not in core.log() and "anonymous" not in core.log()
        # Anonymous clients are refused on both listeners.
        status, _ = _connect(devices_port, ca=ca.pem)
        assert status == "Not authorized", status
        status, _ = _connect(cores_port, ca=ca.pem)  # no client certificate
        assert status != "ok", status
        status, _ = _connect(devices_port, ca=ca.pem, auth=("cam-1", "wrong"))
        assert status == "Not authorized", status

        device = Device(devices_port, ["predictions/#", "pyengine/#"], ca=ca.pem,
                        auth=("cam-1", "cam-secret"))
        clients.append(device)
        device.publish("sensors/cam-1/reading", json.dumps({"seq": 1}))
        assert [json.loads(p) for _, p in device.wait_for(1, 20)] == [{"seq": 1}]

        # A device that learned the core's client id connects with it: the broker names it
        # after its user, and the core keeps its session.
        with open(os.path.join(root, "mqtt-client-id")) as fh:
            core_id = fh.read().strip()
        status, thief = _connect(devices_port, client_id=core_id, ca=ca.pem,
                                 auth=("cam-1", "cam-secret"))
        assert status == "ok"
        clients.append(thief)
        thief.subscribe("sensors/#", qos=1)
        del device.messages[:]
        device.publish("sensors/cam-1/reading", json.dumps({"seq": 2}))
        assert [json.loads(p) for _, p in device.wait_for(1, 20)] == [{"seq": 2}]
        assert _metric(core.get("/metrics")[1], "pyengine_mqtt_connects_total",
                       broker="devices") == 1
        assert "lost the connection" not in core.log()

        # Fleet status: a core publishes its own (retained); the operator reads it, a device
        # does not, and a device cannot announce a document.
        status, fleet_core = _connect(cores_port, ca=ca.pem, cert=core_cert,
                                      client_id="core-1-fleet")
        assert status == "ok"
        clients.append(fleet_core)
        fleet_core.publish("pyengine/fleet/fleet-bucket/status/core-1",
                           json.dumps({"health": "ready", "pid": 1}), qos=1,
                           retain=True).wait_for_publish(10)
        ops = Device(devices_port, ["pyengine/fleet/fleet-bucket/#"], ca=ca.pem,
                     auth=("ops", "ops-secret"))
        clients.append(ops)
        assert [t for t, _ in ops.wait_for(1, 10)] == [
            "pyengine/fleet/fleet-bucket/status/core-1"]
        snoop = Device(devices_port, ["#", "pyengine/fleet/#", "sensors/#"], ca=ca.pem,
                       auth=("cam-1", "cam-secret"))
        clients.append(snoop)
        device.publish("pyengine/fleet/fleet-bucket/deployment", b'{"serial": 99}')
        device.publish("sensors/cam-1/reading", b"x" * (6 << 20))  # over max_packet_size
        device.publish("predictions/cam-2", b'{"forged": true}')
        time.sleep(1.0)
        assert snoop.wait_for(0, 0) == [], snoop.messages
        assert [t for t, _ in ops.wait_for(0, 0)] == ["pyengine/fleet/fleet-bucket/status/core-1"]
        # The broker refused the oversized message: it never reached the core.
        metrics = core.get("/metrics")[1]
        assert _metric(metrics, "pyengine_messages_received_total", function="echo",
                       source="devices") == 2
        assert "pyengine_messages_dropped_total" not in metrics
    finally:
        for c in clients:
            if isinstance(c, Device):
                c.close()
            else:
                c.disconnect()
                c.loop_stop()
        core.stop()
        broker.stop()


# -- bounds --------------------------------------------------------------------------------


def test_queue_is_bounded_in_bytes_and_large_messages_are_refused(
        mosquitto: Mosquitto, predict_base: str) -> None:
    """Sixteen 10 MB messages took the core from 50 MB to 1,391 MB: the queue counted
    messages, not bytes. Here: a 50 KiB queue and a 20 KiB message cap (small sizes, same
    rules)."""
    base = predict_base
    root = _deploy(base, [function(base, "probe", PROBE, pinned=True, timeout_s=10)], [
        {"source": "devices", "topic": "work", "target": "probe"},
        {"source": "probe", "topic": "acks/probe", "target": "devices"},
    ])
    queue_bytes = 50 * 1024
    cfg = _config(base, mqtt={"host": "127.0.0.1", "port": mosquitto.port},
                  queue_mb=queue_bytes / (1 << 20), message_max_mb=20 / 1024)
    core = CoreProcess(root, args=("--config", cfg)).wait_ready()
    device = Device(mosquitto.port, ["acks/#"])
    try:
        _wait_subscribed(core)
        device.publish("work", json.dumps({"sleep": 1.5})).wait_for_publish(10)
        pad = json.dumps({"pad": "x" * 10_000})
        for _ in range(10):
            device.publish("work", pad).wait_for_publish(10)
        device.publish("work", json.dumps({"pad": "x" * 30_000})).wait_for_publish(10)
        peak = 0.0
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            metrics = core.get("/metrics")[1]
            peak = max(peak, _metric(metrics, "pyengine_message_queue_bytes", function="probe"))
            calls = _metric(metrics, "pyengine_invocations_total", function="probe")
            dropped = {r: _metric(metrics, "pyengine_messages_dropped_total", function="probe",
                                  reason=r) for r in ("too_large", "queue_full_bytes")}
            if calls + sum(dropped.values()) >= 12:
                break
            time.sleep(0.05)
        assert dropped["too_large"] == 1, metrics
        assert dropped["queue_full_bytes"] >= 1, metrics
        assert calls + sum(dropped.values()) == 12, metrics  # each one counted once
        assert 0 < peak <= queue_bytes
        assert len(device.wait_for(int(calls), 10)) == calls
        log = core.log()
        assert "larger than message_max_mb" in log and "message queue full (0.0488281 MiB)" in log
    finally:
        device.close()
        core.stop()


def test_every_payload_is_delivered_or_counted(mosquitto: Mosquitto, predict_base: str) -> None:
    """A 100k-deep JSON message was dropped silently; 24 MB of 2-byte UTF-8 killed the worker
    and was counted nowhere; a message that kills its worker was lost uncounted."""
    base = predict_base
    root = _deploy(base, [function(base, "probe", PROBE, pinned=True, timeout_s=20,
                                   memory_mb=1024)], [
        {"source": "devices", "topic": "work", "target": "probe"},
        {"source": "probe", "topic": "acks/probe", "target": "devices"},
    ])
    cfg = _config(base, mqtt={"host": "127.0.0.1", "port": mosquitto.port},
                  message_limits={"probe": {"queue_mb": 64, "message_max_mb": 32}})
    core = CoreProcess(root, args=("--config", cfg)).wait_ready()
    device = Device(mosquitto.port, ["acks/#"])

    def send(payload: bytes) -> dict[str, Any]:
        n = len(device.wait_for(0, 0))
        device.publish("work", payload).wait_for_publish(30)
        got = device.wait_for(n + 1, 60)
        assert len(got) == n + 1, core.log()[-3000:]
        return dict(json.loads(got[-1][1]))

    try:
        _wait_subscribed(core)
        first = send(b"not json \xff")
        assert first["type"] == "bytes" and first["first"] == "n"
        deep = send(b"[" * 100_000 + b"]" * 100_000)
        assert deep == {"type": "bytes", "len": 200_000, "first": "[", "pid": first["pid"]}
        wide = send(b'"' + "\u00e9".encode() * 12_000_000 + b'"')  # 24 MB of 2-byte UTF-8
        assert wide == {"type": "str", "len": 12_000_000, "first": None, "pid": first["pid"]}
        # A message that kills its worker is counted; the function comes back for the next.
        device.publish("work", json.dumps({"die": True})).wait_for_publish(10)
        assert _wait_metric(core, "pyengine_messages_dropped_total", 1, function="probe",
                            reason="worker_died") == 1, core.log()[-3000:]
        after = send(json.dumps({"ok": 1}).encode())
        assert after["type"] == "dict" and after["pid"] != first["pid"]
        _, metrics = core.get("/metrics")
        assert _metric(metrics, "pyengine_messages_received_total", function="probe",
                       source="devices") == 5
        # Four answered (the acks above), one counted as dropped: none lost.
        assert _metric(metrics, "pyengine_messages_dropped_total", function="probe",
                       reason="worker_died") == 1
    finally:
        device.close()
        core.stop()


LENGTH = """
import os

def function_handler(event, context):
    return {"len": len(event), "pid": os.getpid()}
"""


def test_an_event_that_cannot_be_framed_fails_its_call_not_the_worker(predict_base: str) -> None:
    """Frames used to escape non-ASCII text (x3 for 2-byte characters): 24 MB of it went over
    the 64 MiB frame limit and the core killed the worker. Now text crosses as UTF-8, and an
    event that still does not fit fails its call with PayloadTooLarge, the worker unharmed."""
    base = predict_base
    root = _deploy(base, [function(base, "length", LENGTH, pinned=True, timeout_s=30,
                                   memory_mb=1024)], [])
    config = os.path.join(base, "core-big-bodies.json")
    with open(config, "w") as fh:  # bodies up to the frame limit: the frame is what is tested
        json.dump({"api": {"body_max_mb": 64}}, fh)
    core = CoreProcess(root, args=("--config", config)).wait_ready()
    try:
        status, body = core.invoke("length", raw=json.dumps(
            "\u00e9" * 12_000_000, ensure_ascii=False).encode())  # 24 MB of UTF-8
        assert status == 200, body
        assert body["result"]["len"] == 12_000_000
        pid = body["result"]["pid"]
        # 18 MB of body, 68 MB in the frame: 1e15 is written 1000000000000000.0.
        status, body = core.invoke("length", raw=b"[" + b"1e15," * 3_600_000 + b"1]")
        assert status == 413 and body["error"]["type"] == "PayloadTooLarge", body
        for raw in (b"[" * 100_000 + b"]" * 100_000, b"1" * 5000):  # too deep, too many digits
            status, body = core.invoke("length", raw=raw)
            assert status == 400 and body["error"]["type"] == "MalformedPayload", body
        status, body = core.invoke("length", "ok")
        assert status == 200 and body["result"] == {"len": 2, "pid": pid}
    finally:
        core.stop()


# -- retained messages ---------------------------------------------------------------------

RETAIN = """
def function_handler(event, context):
    out = {"granted": context.publish("status/line-1", {"state": "up"}, retain=True)}
    try:
        context.publish("events/line-1", {"e": 1}, retain=True)
    except ValueError as exc:
        out["refused"] = str(exc)
    return out
"""


def test_retained_publishes_need_a_grant(mosquitto: Mosquitto, predict_base: str) -> None:
    base = predict_base
    root = _deploy(base, [function(base, "pub", RETAIN, pinned=True)], [
        {"source": "pub", "topic": "status/#", "target": "devices", "retain": True},
        {"source": "pub", "topic": "events/#", "target": "devices"},
    ])
    core = CoreProcess(root, args=("--mqtt", f"127.0.0.1:{mosquitto.port}")).wait_ready()
    try:
        _wait_subscribed(core)
        status, body = core.invoke("pub", {})
        assert status == 200, body
        assert body["result"]["granted"] == 1
        assert ("retain=True on 'events/line-1': no subscription from 'pub' to 'devices' "
                "matching it grants retained messages") in body["result"]["refused"]
        time.sleep(0.5)
        late = Device(mosquitto.port, ["#"])  # subscribes after: only retained messages
        try:
            got = late.wait_for(1, 5)
            assert [(t, json.loads(p)) for t, p in got] == [("status/line-1", {"state": "up"})]
        finally:
            late.close()
    finally:
        core.stop()


def test_routing_cycle_is_refused_at_deploy(predict_base: str) -> None:
    """A subscription whose output matches its own input filter: one message caused 20,682
    calls in 10 s. The deploy is refused, naming the subscriptions."""
    from pyengine.deploy import GroupError

    base = predict_base
    with pytest.raises(GroupError) as info:
        _deploy(base, [function(base, "echo", ECHO, pinned=True)], [
            {"source": "devices", "topic": "sensors/+/reading", "target": "echo"},
            {"source": "echo", "topic": "sensors/#", "target": "devices"},
        ])
    assert "subscriptions[0], subscriptions[1]: a routing cycle" in str(info.value)


# -- fleet announcements with the core's broker settings ----------------------------------


def test_fleet_publish_announces_with_tls_credentials_and_prefix(predict_base: str) -> None:
    """``fleet publish --mqtt-config core.yaml`` uses the broker settings of a core's
    configuration (fleet_mqtt: TLS, user and password, topic prefix), not only host:port."""
    import argparse

    from pyengine.cli.fleet_cmds import _broker
    from pyengine.fleet.notify import announce

    base = predict_base
    broker = Mosquitto(tls=True, users={"ops": "ops-secret", "watch": "watch-secret"})
    try:
        pass_file = os.path.join(base, "ops.pass")
        with open(pass_file, "w") as fh:
            fh.write("ops-secret\n")
        cfg = _config(base, fleet_mqtt={"host": "127.0.0.1", "port": broker.port,
                                        "tls": {"ca": broker.ca}, "username": "ops",
                                        "password_file": pass_file, "topic_prefix": "ops/"})
        settings = _broker(argparse.Namespace(mqtt=None, mqtt_config=cfg))
        assert settings.username == "ops" and settings.topic_prefix == "ops/"
        assert _broker(argparse.Namespace(mqtt="h:1", mqtt_config=None)) == "h:1"
        watcher = Device(broker.port, ["#"], ca=broker.ca, auth=("watch", "watch-secret"))
        try:
            assert announce(settings, "pyengine/fleet/b/deployment", {"serial": 3})
            got = watcher.wait_for(1, 10)
            assert [(t, json.loads(p)) for t, p in got] == [
                ("ops/pyengine/fleet/b/deployment", {"serial": 3})]
        finally:
            watcher.close()
        # host:port alone reaches a broker that wants TLS and a password: refused, and said.
        assert not announce(f"127.0.0.1:{broker.port}", "x/deployment", {}, timeout_s=1.0)
    finally:
        broker.close()
