"""Messaging with a real broker: devices and functions over Mosquitto, subscriptions, queues.

Each test deploys a real group (the deploy layer, file:// packages), runs ``pyengine core
start --mqtt 127.0.0.1:PORT`` as a subprocess and talks to it as a device would, with paho.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import time
from typing import Any, Iterator

import numpy as np
import pytest
from core_helpers import CoreProcess, function, model_resource, redeploy
from models import mlp
from mqtt_fixtures import Device, Mosquitto

import pyengine

PREDICT = """
import time
import numpy as np
import pyengine

model = pyengine.load("digits")

def function_handler(event, context):
    x = np.asarray(event["x"], dtype=np.float32).reshape(1, 64)
    time.sleep(event.get("sleep", 0))
    probs = model.predict(x)[0]
    device = context.topic.split("/")[1]
    reply = {"seq": event["seq"], "label": int(probs.argmax()), "probs": probs,
             "topic": context.topic}
    context.publish(f"predictions/{device}", reply)
    context.publish(f"features/{device}", {"seq": event["seq"], "label": int(probs.argmax())})
    return reply
"""

AGGREGATE = """
def function_handler(event, context):
    device = context.topic.split("/")[1]
    context.publish(f"summaries/{device}", {"seq": event["seq"], "from": context.topic,
                                            "doubled": event["label"] * 2})
"""

SLOW = """
import time

def function_handler(event, context):
    time.sleep(event["sleep"])
    context.publish("acks/slow", {"seq": event["seq"]})
"""


@pytest.fixture(scope="module")
def open_tmp() -> Iterator[str]:
    """A directory every user can traverse (workers run as nobody when the suite runs as root)."""
    path = tempfile.mkdtemp(prefix="pyengine-mqtt-test-")
    os.chmod(path, 0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _deploy(base: str, functions: list[dict[str, Any]], subscriptions: list[dict[str, str]],
            resources: list[dict[str, Any]] | None = None) -> str:
    root = os.path.join(base, "root")
    with open(os.path.join(base, "group.json"), "w") as fh:
        json.dump({"name": "line-1", "resources": resources or [], "functions": functions,
                   "subscriptions": subscriptions}, fh, indent=2)
    redeploy(base, root)
    return root


def _metric(text: str, name: str, **labels: str) -> float:
    """The value of one sample of ``name`` with exactly ``labels`` in Prometheus text (0 if
    absent)."""
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        m = re.match(r"^([a-z_]+)(?:\{(.*)\})? (\S+)$", line)
        if m and m.group(1) == name and (m.group(2) or "") == want:
            return float(m.group(3))
    return 0.0


def _wait_subscribed(core: CoreProcess, broker: str = "devices") -> None:
    """Until the core is connected to ``broker`` and its subscriptions are acknowledged."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if _metric(core.get("/metrics")[1], "pyengine_mqtt_connected", broker=broker) == 1:
            return
        time.sleep(0.05)
    raise AssertionError(f"the core did not subscribe on {broker} in 20 s:\n{core.log()}")


def _x(seed: int) -> list[float]:
    return np.random.default_rng(seed).standard_normal(64).astype(np.float32).tolist()


def _model_dir(base: str) -> list[dict[str, Any]]:
    return [model_resource(base, "digits", lambda d: mlp(os.path.join(d, "model.pyem"), seed=3))]


@pytest.fixture
def predict_base(open_tmp: str, request: pytest.FixtureRequest) -> str:
    base = os.path.join(open_tmp, request.node.name)
    os.makedirs(base)
    return base


def test_device_gets_predictions_and_1000_qos1_messages_arrive_once(mosquitto: Mosquitto,
                                                                      predict_base: str) -> None:
    base = predict_base
    root = _deploy(base, [
        function(base, "classify", PREDICT, (("digits", "ro"),), pinned=True, timeout_s=10),
        function(base, "aggregate", AGGREGATE, pinned=True),
    ], [
        {"source": "devices", "topic": "sensors/+/reading", "target": "classify"},
        {"source": "classify", "topic": "predictions/#", "target": "devices"},
        {"source": "classify", "topic": "features/#", "target": "aggregate"},
        {"source": "aggregate", "topic": "summaries/+", "target": "devices"},
    ], _model_dir(base))
    core = CoreProcess(root, args=("--mqtt", f"127.0.0.1:{mosquitto.port}")).wait_ready()
    _wait_subscribed(core)
    device = Device(mosquitto.port, ["#"])
    try:
        # One reading: the prediction comes back on the reply topic, equal to the model's.
        x0 = _x(0)
        device.publish("sensors/cam1/reading", json.dumps({"seq": -1, "x": x0}))
        msgs = device.wait_for(3, timeout=30)  # its own reading, the prediction, the summary
        by_topic = {t: json.loads(p) for t, p in msgs if not t.startswith("sensors/")}
        assert set(by_topic) == {"predictions/cam1", "summaries/cam1"}, (msgs, core.log())
        model = pyengine.load(os.path.join(base, "dest", "digits", "model.pyem"))
        expected = model.predict(np.asarray(x0, np.float32).reshape(1, 64))[0]
        reply = by_topic["predictions/cam1"]
        np.testing.assert_allclose(reply["probs"], expected, rtol=1e-5, atol=1e-6)
        assert reply["label"] == int(expected.argmax())
        assert reply["topic"] == "sensors/cam1/reading"
        # Function to function inside the core: aggregate got classify's features/cam1 message,
        # which never went through the broker.
        assert by_topic["summaries/cam1"] == {"seq": -1, "from": "features/cam1",
                                              "doubled": 2 * reply["label"]}
        assert not any(t.startswith("features/") for t, _ in msgs)

        # 1,000 readings at QoS 1 as fast as the device can send them; the function is slow
        # (2 ms each), so they queue in the core.
        del device.messages[:]
        n = 1000
        for i in range(n):
            device.publish("sensors/cam2/reading", json.dumps({"seq": i, "x": x0,
                                                               "sleep": 0.002}))
        deadline = time.monotonic() + 90
        depth = 0.0
        while time.monotonic() < deadline:
            got = [json.loads(p)["seq"] for t, p in device.wait_for(0, 0)
                   if t == "predictions/cam2"]
            if len(got) >= n:
                break
            depth = max(depth, _metric(core.get("/metrics")[1], "pyengine_message_queue_depth",
                                       function="classify"))
            time.sleep(0.1)
        assert sorted(got) == list(range(n)), (len(got), core.log()[-3000:])
        assert depth > 100  # the function was the bottleneck: messages waited in its queue
        assert got == list(range(n))  # one worker: handled in the order sent
        _, metrics = core.get("/metrics")
        # Every message reached the handler exactly once: 1 + 1000 invocations, no drops.
        assert _metric(metrics, "pyengine_invocations_total", function="classify") == n + 1
        assert _metric(metrics, "pyengine_messages_received_total", function="classify",
                       source="devices") == n + 1
        assert "pyengine_messages_dropped_total" not in metrics
        assert _metric(metrics, "pyengine_mqtt_connected", broker="devices") == 1
        summaries = [t for t, _ in device.wait_for(0, 0) if t == "summaries/cam2"]
        deadline = time.monotonic() + 30
        while len(summaries) < n and time.monotonic() < deadline:
            time.sleep(0.1)
            summaries = [t for t, _ in device.wait_for(0, 0) if t == "summaries/cam2"]
        assert len(summaries) == n
    finally:
        device.close()
        core.stop()


def test_full_queue_drops_are_counted(mosquitto: Mosquitto, predict_base: str) -> None:
    base = predict_base
    root = _deploy(base, [function(base, "slow", SLOW, pinned=True, timeout_s=10)], [
        {"source": "devices", "topic": "work", "target": "slow"},
        {"source": "slow", "topic": "acks/slow", "target": "devices"},
    ])
    config = os.path.join(base, "core.json")
    with open(config, "w") as fh:
        json.dump({"mqtt": {"host": "127.0.0.1", "port": mosquitto.port}, "queue_size": 5}, fh)
    core = CoreProcess(root, args=("--config", config)).wait_ready()
    device = Device(mosquitto.port, ["acks/#"])
    try:
        _wait_subscribed(core)
        n = 60
        for i in range(n):
            device.publish("work", json.dumps({"seq": i, "sleep": 0.05})).wait_for_publish(10)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            _, metrics = core.get("/metrics")
            dropped = _metric(metrics, "pyengine_messages_dropped_total", function="slow",
                              reason="queue_full")
            done = _metric(metrics, "pyengine_invocations_total", function="slow")
            if dropped + done >= n and _metric(metrics, "pyengine_message_queue_depth",
                                               function="slow") == 0:
                break
            time.sleep(0.1)
        assert dropped > 0 and dropped + done == n, (dropped, done, metrics)
        acks = [json.loads(p)["seq"] for _, p in device.wait_for(int(done), 10)]
        assert len(acks) == done and acks == sorted(acks)
        assert "message queue full (5)" in core.wait_log("message queue full (5)")
    finally:
        device.close()
        core.stop()


def test_core_reconnects_and_resubscribes_after_a_broker_restart(mosquitto: Mosquitto,
                                                                  predict_base: str) -> None:
    base = predict_base
    root = _deploy(base, [function(base, "slow", SLOW, pinned=True)], [
        {"source": "devices", "topic": "work/#", "target": "slow"},
        {"source": "slow", "topic": "acks/slow", "target": "devices"},
    ])
    core = CoreProcess(root, args=("--mqtt", f"127.0.0.1:{mosquitto.port}")).wait_ready()

    def round_trip(seq: int) -> None:
        device = Device(mosquitto.port, ["acks/#"])
        try:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                device.publish("work/1", json.dumps({"seq": seq, "sleep": 0}))
                if any(json.loads(p)["seq"] == seq for _, p in device.wait_for(1, 1.0)):
                    return
            raise AssertionError(f"no answer to {seq} in 30 s:\n{core.log()[-3000:]}")
        finally:
            device.close()

    try:
        round_trip(1)
        mosquitto.stop()
        time.sleep(1.0)
        _, metrics = core.get("/metrics")
        assert _metric(metrics, "pyengine_mqtt_connected", broker="devices") == 0
        mosquitto.start()  # same port, and no memory of the core's subscriptions
        round_trip(2)
        _, metrics = core.get("/metrics")
        assert _metric(metrics, "pyengine_mqtt_connects_total", broker="devices") == 2
        assert _metric(metrics, "pyengine_mqtt_connected", broker="devices") == 1
        assert "lost the connection" in core.wait_log("lost the connection")
    finally:
        core.stop()


def test_publish_errors_reach_the_function(mosquitto: Mosquitto, predict_base: str) -> None:
    base = predict_base
    source = """
def function_handler(event, context):
    out = {"unrouted": context.publish("nowhere/x", b"\\x00\\x01")}
    for topic in ("bad/+", ""):
        try:
            context.publish(topic, "x")
        except ValueError as exc:
            out[topic or "empty"] = str(exc)
    out["event_type"] = type(event).__name__
    if context.topic == "raw":  # not JSON: the bytes, sent back as they came
        context.publish("echo/raw", event)
    return out
"""
    root = _deploy(base, [function(base, "pub", source, pinned=True)], [
        {"source": "devices", "topic": "raw", "target": "pub"},
        {"source": "pub", "topic": "echo/#", "target": "devices"},
    ])
    core = CoreProcess(root, args=("--mqtt", f"127.0.0.1:{mosquitto.port}")).wait_ready()
    try:
        status, body = core.invoke("pub", {"a": 1})
        assert status == 200, body
        result = body["result"]
        assert result["unrouted"] == 0
        assert "cannot contain the wildcards" in result["bad/+"]
        assert "non-empty MQTT topic" in result["empty"]
        _, metrics = core.get("/metrics")
        assert _metric(metrics, "pyengine_messages_unrouted_total", function="pub") == 1
        assert result["event_type"] == "dict"
        device = Device(mosquitto.port, ["echo/#"])
        try:
            raw = bytes(range(256))
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and not device.wait_for(1, 0.5):
                device.publish("raw", raw)
            assert device.wait_for(1, 1)[0] == ("echo/raw", raw)
        finally:
            device.close()
    finally:
        core.stop()


def test_cloud_broker_routes(mosquitto: Mosquitto, predict_base: str) -> None:
    """``cloud`` is a second broker of its own (here another Mosquitto): commands from it reach
    a function, and what the function sends to the cloud goes there and not to the devices."""
    base = predict_base
    source = """
def function_handler(event, context):
    context.publish("telemetry/line-1", {"ack": event["cmd"], "from": context.topic})
    context.publish("status/line-1", {"ack": event["cmd"]})
"""
    root = _deploy(base, [function(base, "control", source, pinned=True)], [
        {"source": "cloud", "topic": "commands/#", "target": "control"},
        {"source": "control", "topic": "telemetry/#", "target": "cloud"},
        {"source": "control", "topic": "status/#", "target": "devices"},
    ])
    cloud = Mosquitto()
    config = os.path.join(base, "core.json")
    with open(config, "w") as fh:
        json.dump({"mqtt": {"host": "127.0.0.1", "port": mosquitto.port},
                   "cloud": {"host": "127.0.0.1", "port": cloud.port}}, fh)
    core = CoreProcess(root, args=("--config", config)).wait_ready()
    in_cloud = Device(cloud.port, ["telemetry/#", "status/#"])
    on_site = Device(mosquitto.port, ["#"])
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not in_cloud.wait_for(1, 0.5):
            in_cloud.publish("commands/line-1/restart", json.dumps({"cmd": "restart"}))
        assert [(t, json.loads(p)) for t, p in in_cloud.wait_for(1, 5)][:1] == [
            ("telemetry/line-1", {"ack": "restart", "from": "commands/line-1/restart"})]
        got = on_site.wait_for(1, 10)
        assert got and all(t == "status/line-1" for t, _ in got), got
        assert not any(t.startswith("status/") for t, _ in in_cloud.wait_for(0, 0))
        _, metrics = core.get("/metrics")
        assert _metric(metrics, "pyengine_mqtt_connected", broker="cloud") == 1
        assert _metric(metrics, "pyengine_messages_received_total", function="control",
                       source="cloud") >= 1
    finally:
        in_cloud.close()
        on_site.close()
        core.stop()
        cloud.close()


def test_a_new_deployment_changes_the_routes_of_the_running_core(mosquitto: Mosquitto,
                                                                 predict_base: str) -> None:
    base = predict_base
    fns = [function(base, "slow", SLOW, pinned=True)]
    root = _deploy(base, fns, [
        {"source": "devices", "topic": "old/#", "target": "slow"},
        {"source": "slow", "topic": "acks/slow", "target": "devices"},
    ])
    core = CoreProcess(root, args=("--mqtt", f"127.0.0.1:{mosquitto.port}")).wait_ready()
    device = Device(mosquitto.port, ["acks/#"])

    def answered(topic: str, seq: int, wait_s: float) -> bool:
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            device.publish(topic, json.dumps({"seq": seq, "sleep": 0}))
            if any(json.loads(p)["seq"] == seq for _, p in device.wait_for(10**6, 0.3)):
                return True
        return False

    try:
        assert answered("old/1", 1, 20)
        pids = core.get("/functions")[1]["functions"][0]["pids"]
        _deploy(base, fns, [
            {"source": "devices", "topic": "new/+", "target": "slow"},
            {"source": "slow", "topic": "acks/slow", "target": "devices"},
        ])
        assert answered("new/1", 2, 20), core.log()[-2000:]
        assert not answered("old/1", 3, 1.5)  # unsubscribed
        # Only the routes changed: the function kept its worker.
        assert core.get("/functions")[1]["functions"][0]["pids"] == pids
    finally:
        device.close()
        core.stop()


def test_tls_and_credentials_from_the_core_config(predict_base: str) -> None:
    """The broker takes TLS only, with a password: the core connects with the CA, user and
    password file of its configuration; a wrong password is refused and said so."""
    base = predict_base
    broker = Mosquitto(tls=True, users={"core": "core-secret", "cam": "cam-secret"})
    root = _deploy(base, [function(base, "slow", SLOW, pinned=True)], [
        {"source": "devices", "topic": "work/#", "target": "slow"},
        {"source": "slow", "topic": "acks/slow", "target": "devices"},
    ])
    pass_file = os.path.join(base, "mqtt.pass")
    with open(pass_file, "w") as fh:
        fh.write("core-secret\n")
    config = os.path.join(base, "core.json")
    mqtt = {"host": "127.0.0.1", "port": broker.port, "tls": {"ca": broker.ca},
            "username": "core", "password_file": pass_file}
    with open(config, "w") as fh:
        json.dump({"mqtt": mqtt}, fh)
    core = CoreProcess(root, args=("--config", config)).wait_ready()
    try:
        _wait_subscribed(core)
        device = Device(broker.port, ["acks/#"], ca=broker.ca, auth=("cam", "cam-secret"))
        try:
            device.publish("work/1", json.dumps({"seq": 7, "sleep": 0}))
            assert [json.loads(p) for _, p in device.wait_for(1, 20)] == [{"seq": 7}]
        finally:
            device.close()
    finally:
        core.stop()
    with open(config, "w") as fh:
        json.dump({"mqtt": {**mqtt, "password_file": None}}, fh)
    core = CoreProcess(root, args=("--config", config),
                       env={"PYENGINE_MQTT_PASSWORD": "wrong"}).wait_ready()
    try:
        deadline = time.monotonic() + 20
        while "refused the connection" not in core.log() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert "refused the connection" in core.log(), core.log()
        assert _metric(core.get("/metrics")[1], "pyengine_mqtt_connected", broker="devices") == 0
    finally:
        core.stop()
        broker.close()
