"""Subscriptions in the group file, MQTT topic rules and the core's configuration file."""

from __future__ import annotations

import json
import os
import re
from typing import Any

import pytest

from pyengine.common.topics import (
    filter_problem,
    filters_overlap,
    topic_matches,
    topic_problem,
)
from pyengine.core.config import (
    ConfigError,
    client_id,
    load_config,
    parse_address,
    validate_config,
)
from pyengine.deploy import GroupError, Subscription, validate_group


def _group(tmp_path: Any, subscriptions: Any, names: tuple[str, ...] = ("classify", "agg")
           ) -> dict[str, Any]:
    code = tmp_path / "code"
    code.mkdir(exist_ok=True)
    (code / "h.py").write_text("def f(event, context):\n    return event\n")
    return {"name": "g", "functions": [{"name": n, "handler": "h.f", "code": str(code)}
                                       for n in names],
            "subscriptions": subscriptions}


def _problems(tmp_path: Any, subscriptions: Any, **kw: Any) -> list[str]:
    with pytest.raises(GroupError) as info:
        validate_group(_group(tmp_path, subscriptions, **kw), str(tmp_path / "group.json"))
    return info.value.problems


def test_valid_subscriptions_round_trip(tmp_path: Any) -> None:
    subs = [
        {"source": "devices", "topic": "sensors/+/reading", "target": "classify"},
        {"source": "classify", "topic": "predictions/#", "target": "devices"},
        {"source": "classify", "topic": "features/#", "target": "agg"},
        {"source": "cloud", "topic": "commands/#", "target": "agg"},
        {"source": "agg", "topic": "telemetry/#", "target": "cloud", "retain": True},
    ]
    g = validate_group(_group(tmp_path, subs), str(tmp_path / "group.json"))
    assert g.subscriptions[0] == Subscription("devices", "sensors/+/reading", "classify")
    assert g.subscriptions[2].source_is_function and g.subscriptions[2].target_is_function
    assert not g.subscriptions[0].source_is_function
    assert g.subscriptions[4].retain and not g.subscriptions[1].retain
    # Kept in the state database as JSON and read back by the core.
    from pyengine.deploy import Group

    assert Group.from_dict(json.loads(json.dumps(g.to_dict()))) == g


def test_subscription_problems_are_precise(tmp_path: Any) -> None:
    problems = _problems(tmp_path, [
        {"source": "devices", "topic": "sensors/#/x", "target": "classify"},
        {"source": "nobody", "topic": "a", "target": "classify"},
        {"source": "devices", "topic": "a", "target": "cloud"},
        {"source": "classify", "topic": "a+", "target": "devices"},
        {"source": "classify", "topic": "", "target": "devices"},
        {"source": "classify", "topic": "x", "target": "devices", "qos": 2},
        {"source": "classify", "target": "devices"},
        {"source": "devices", "topic": "s/1", "target": "classify"},
        {"source": "devices", "topic": "s/1", "target": "classify"},
        "devices -> classify",
    ])
    text = "\n".join(problems)
    assert "subscriptions[0].topic: 'sensors/#/x': '#' must be a whole level and the last" in text
    assert ("subscriptions[1].source: 'nobody' is not 'devices', 'cloud' or the name of a "
            "function of the group (functions: agg, classify)") in text
    assert "subscriptions[2]: 'devices' to 'cloud': a subscription needs a function" in text
    assert "subscriptions[3].topic: 'a+': '+' must be a whole level" in text
    assert "subscriptions[4].topic: '' must be a non-empty MQTT topic filter" in text
    assert ("subscriptions[5].qos: unknown field 'qos'; expected one of source, topic, target, "
            "retain") in text
    assert "subscriptions[6].topic: required field is missing" in text
    assert "subscriptions[8]: the same subscription as subscriptions[7]" in text
    assert "subscriptions[9]: expected a mapping with source, topic, target, got" in text
    assert _problems(tmp_path, {"source": "devices"}) == [
        "subscriptions: expected a list, got {'source': 'devices'}"]


def test_a_function_named_like_an_endpoint_is_ambiguous(tmp_path: Any) -> None:
    problems = _problems(tmp_path, [{"source": "cloud", "topic": "a", "target": "classify"}],
                         names=("classify", "cloud"))
    assert problems == ["subscriptions[0].source: 'cloud' is ambiguous: it means the cloud "
                        "endpoint, and a function of the group has that name; rename the "
                        "function"]


@pytest.mark.parametrize(("flt", "topic", "match"), [
    ("sensors/+/reading", "sensors/cam1/reading", True),
    ("sensors/+/reading", "sensors/cam1/other", False),
    ("sensors/+/reading", "sensors/reading", False),
    ("sensors/#", "sensors", True),
    ("sensors/#", "sensors/a/b/c", True),
    ("#", "anything/at/all", True),
    ("#", "$SYS/broker/uptime", False),
    ("+/x", "$SYS/x", False),
    ("$SYS/#", "$SYS/broker/uptime", True),
    ("a/+", "a/", True),
    ("a/b", "a/b/c", False),
    ("+", "a", True),
])
def test_topic_matching(flt: str, topic: str, match: bool) -> None:
    assert filter_problem(flt) is None
    assert topic_matches(flt, topic) is match


def test_topic_rules() -> None:
    assert topic_problem("predictions/cam1") is None
    assert "wildcards" in str(topic_problem("predictions/#"))
    assert "non-empty" in str(topic_problem(""))
    assert "NUL" in str(filter_problem("a\0b"))
    assert "longer than 65535 bytes" in str(filter_problem("a" * 70000))


def test_core_config(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = validate_config({"mqtt": {"host": "broker.local", "port": 8883, "tls": True,
                                    "username": "core"}, "queue_size": 50,
                           "capture": {"s3": "s3://my-bucket/samples", "batch_size": 10}})
    assert cfg.mqtt is not None and cfg.mqtt.address() == "broker.local:8883"
    assert cfg.mqtt.tls is not None and cfg.queue_size == 50
    assert cfg.capture.bucket_prefix() == ("my-bucket", "samples/")
    monkeypatch.setenv("PYENGINE_MQTT_PASSWORD", "s3cret")
    path = tmp_path / "core.json"
    path.write_text(json.dumps({"mqtt": {"host": "x", "port": 1}, "queue_size": 7}))
    cfg = load_config(str(path), mqtt="127.0.0.1:1884")
    assert cfg.mqtt is not None and (cfg.mqtt.host, cfg.mqtt.port) == ("127.0.0.1", 1884)
    assert cfg.mqtt.password == "s3cret" and "s3cret" not in repr(cfg)
    assert cfg.queue_size == 7
    # The core picks its client id (client_id below) unless the configuration names one.
    assert cfg.mqtt.client_id == ""
    assert parse_address("[::1]:1883") == ("::1", 1883)
    assert parse_address("broker") == ("broker", 1883)
    with pytest.raises(ValueError, match="'host:port:x' is not HOST:PORT"):
        parse_address("host:port:x")


def test_core_config_problems(tmp_path: Any) -> None:
    with pytest.raises(ConfigError) as info:
        validate_config({"mqtt": {"host": "", "port": 70000,
                                  "tls": {"cert": "/nonexistent.pem"}},
                         "queue_size": 0, "capture": {"s3": "s3://Bad_Bucket/x",
                                                      "spool_mb": -1},
                         "brokers": []}, "core.yaml")
    text = str(info.value)
    assert text.startswith("invalid core configuration core.yaml:")
    for expected in ("mqtt.host: '' must be a host name or address",
                     "mqtt.port: 70000 must be an integer from 1 to 65535",
                     "mqtt.tls.cert: '/nonexistent.pem' is not a file",
                     "mqtt.tls: cert and key go together",
                     "queue_size: 0 must be an integer from 1 to 1e+07",
                     "capture.s3: 's3://Bad_Bucket/x' must be s3://BUCKET/PREFIX/",
                     "capture.spool_mb: -1 must be a number",
                     "brokers: unknown field 'brokers'"):
        assert expected in text, text
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    with pytest.raises(ConfigError, match="not valid JSON or YAML"):
        load_config(str(bad))
    with pytest.raises(ConfigError, match="cannot read it"):
        load_config(os.path.join(str(tmp_path), "missing.yaml"))


def test_client_id_is_random_persisted_and_private(tmp_path: Any) -> None:
    """A client that connects with a core's client id takes its session over: the id must not
    be derivable from the host name or the root (it was ``pyengine-<host>-<sha1(root)[:8]>``)."""
    import hashlib
    import socket
    import stat

    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    first = client_id(a, "mqtt")
    assert re.fullmatch(r"pyengine-[0-9a-f]{32}", first)
    assert socket.gethostname() not in first
    assert hashlib.sha1(os.path.abspath(a).encode()).hexdigest()[:8] not in first
    # Stable across restarts (the broker keeps the session), different per core and broker.
    assert client_id(a + "/", "mqtt") == first
    assert client_id(a, "cloud") == first + "-cloud"
    assert client_id(a, "fleet_mqtt") == first + "-fleet"
    assert client_id(b, "mqtt") != first
    path = os.path.join(a, "mqtt-client-id")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    with open(path) as fh:
        assert fh.read().strip() == first
    # A file the core did not write (say, a guessable id put there) is replaced.
    with open(path, "w") as fh:
        fh.write(f"pyengine-{socket.gethostname()}\n")
    again = client_id(a, "mqtt")
    assert again != first and re.fullmatch(r"pyengine-[0-9a-f]{32}", again)
    # The fleet session never uses the devices' session's id.
    cfg = validate_config({"mqtt": {"host": "h", "client_id": "core-7"}})
    fleet = cfg.fleet_broker()
    assert fleet is not None and fleet.client_id == "core-7-fleet" and fleet.host == "h"


def test_message_limits_and_capture_quotas(tmp_path: Any) -> None:
    cfg = validate_config({"queue_mb": 2, "message_max_mb": 0.5,
                           "message_limits": {"big": {"queue_mb": 64, "message_max_mb": 32}},
                           "capture": {"spool_mb": 100, "function_mb": 10,
                                       "function_files": 50}})
    assert cfg.limits("any").queue_bytes == 2 << 20
    assert cfg.limits("any").message_max_bytes == 512 << 10
    big = cfg.limits("big")
    assert (big.queue_size, big.queue_mb, big.message_max_mb) == (1000, 64, 32)
    assert (cfg.capture.function_mb, cfg.capture.function_files) == (10, 50)
    # Edge-device defaults: bounded in bytes as well as count.
    default = validate_config({})
    assert default.limits("f").queue_bytes == 16 << 20
    assert default.limits("f").message_max_bytes == 4 << 20
    with pytest.raises(ConfigError) as info:
        validate_config({"message_max_mb": 100, "queue_mb": 0,
                         "message_limits": {"f": {"message_max_mb": 8, "queue_mb": 4, "x": 1},
                                            "g": 3},
                         "mqtt": {"host": "h", "topic_prefix": "ops/"},
                         "fleet_mqtt": {"host": "h", "topic_prefix": "ops/#"},
                         "capture": {"spool_mb": 1, "function_mb": 2, "function_files": 0}})
    text = str(info.value)
    for expected in ("message_max_mb: 100 must be a number from 0.0001 to 44",
                     "queue_mb: 0 must be a number from 0.001",
                     "message_limits.f.message_max_mb: 8 is more than queue_mb (4)",
                     "message_limits.f.x: unknown field 'x'",
                     "message_limits.g: expected a mapping",
                     "mqtt.topic_prefix: only fleet_mqtt takes a topic prefix",
                     "fleet_mqtt.topic_prefix: 'ops/#' must be topic levels ending with '/'",
                     "capture.function_mb: 2 is more than spool_mb (1)",
                     "capture.function_files: 0 must be an integer from 1"):
        assert expected in text, text


@pytest.mark.parametrize(("a", "b", "overlap"), [
    ("a/#", "a", True),
    ("a/+", "a/b", True),
    ("a/+/c", "+/b/+", True),
    ("a/b", "a/c", False),
    ("a/b", "a/b/c", False),
    ("#", "x/y", True),
    ("+/#", "$SYS/x", False),
    ("$SYS/#", "$SYS/+", True),
    ("a/+", "a/b/c", False),
])
def test_filters_overlap(a: str, b: str, overlap: bool) -> None:
    assert filters_overlap(a, b) is overlap
    assert filters_overlap(b, a) is overlap


def test_routing_cycles_are_refused_naming_the_subscriptions(tmp_path: Any) -> None:
    # A function publishing to its own input: one message was 20,682 calls in 10 s.
    assert _problems(tmp_path, [
        {"source": "devices", "topic": "in/#", "target": "classify"},
        {"source": "classify", "topic": "loop/#", "target": "classify"},
    ]) == ["subscriptions[1]: a routing cycle: what classify publishes can come back to call it "
           "again, without end (subscriptions[1]: classify -> loop/# -> classify); make the "
           "topics of one of these routes disjoint"]
    # Through a chain of functions.
    problems = _problems(tmp_path, [
        {"source": "devices", "topic": "in/#", "target": "classify"},
        {"source": "classify", "topic": "features/#", "target": "agg"},
        {"source": "agg", "topic": "ok/#", "target": "devices"},
        {"source": "agg", "topic": "again/#", "target": "classify"},
    ])
    assert len(problems) == 1 and problems[0].startswith(
        "subscriptions[1], subscriptions[3]: a routing cycle: what agg and classify publish")
    # Through the broker: the output topic matches the input filter, and the broker hands the
    # core its own message back.
    problems = _problems(tmp_path, [
        {"source": "devices", "topic": "sensors/+/reading", "target": "classify"},
        {"source": "classify", "topic": "sensors/#", "target": "devices"},
    ])
    assert len(problems) == 1 and problems[0].startswith(
        "subscriptions[0], subscriptions[1]: a routing cycle: what classify publishes")
    assert "subscriptions[1]: classify -> sensors/# -> devices" in problems[0]
    # Disjoint topics, or another broker, are no cycle.
    validate_group(_group(tmp_path, [
        {"source": "devices", "topic": "sensors/+/reading", "target": "classify"},
        {"source": "classify", "topic": "predictions/#", "target": "devices"},
        {"source": "classify", "topic": "sensors/#", "target": "cloud"},
        {"source": "classify", "topic": "features/#", "target": "agg"},
        {"source": "agg", "topic": "sensors/x/reading", "target": "cloud"},
    ]), str(tmp_path / "group.json"))


def test_retain_grant_is_validated(tmp_path: Any) -> None:
    problems = _problems(tmp_path, [
        {"source": "classify", "topic": "status/#", "target": "devices", "retain": "yes"},
        {"source": "devices", "topic": "in/#", "target": "classify", "retain": True},
        {"source": "classify", "topic": "f/#", "target": "agg", "retain": True},
    ])
    assert problems == [
        "subscriptions[0].retain: 'yes' must be true or false",
        "subscriptions[1].retain: only a subscription from a function to 'devices' or 'cloud' "
        "can grant retained messages (this one is 'devices' to 'classify')",
        "subscriptions[2].retain: only a subscription from a function to 'devices' or 'cloud' "
        "can grant retained messages (this one is 'classify' to 'agg')"]


def test_the_core_keeps_a_deployed_cycle_idle() -> None:
    """A group deployed before validation refused cycles: the router logs it and leaves the
    looping routes idle, and routes the rest."""
    import threading

    from pyengine.core.config import CoreConfig
    from pyengine.core.group import DeployedGroup
    from pyengine.core.messaging import Router
    from pyengine.core.metrics import Metrics

    calls: list[tuple[str, str, str]] = []
    done = threading.Event()

    def invoke(name: str, payload: Any, topic: str, source: str) -> str:
        calls.append((name, topic, source))
        done.set()
        return ""

    metrics = Metrics()
    router = Router(CoreConfig(), metrics, invoke, lambda name: 1)
    try:
        router.update(DeployedGroup("g", "/nonexistent", (), "1", (
            Subscription("a", "loop/#", "a"),
            Subscription("a", "out/#", "b"),
        )))
        assert router.from_function("a", "loop/1", b"{}") == 0
        assert router.from_function("a", "out/1", b"{}") == 1
        assert done.wait(10)
        assert calls == [("b", "out/1", "a")]
        assert metrics.value("pyengine_messages_unrouted_total", function="a") == 1
    finally:
        router.stop()
