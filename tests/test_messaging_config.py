"""Subscriptions in the group file, MQTT topic rules and the core's configuration file."""

from __future__ import annotations

import json
import os
from typing import Any

import pytest

from pyengine.core.config import ConfigError, load_config, parse_address, validate_config
from pyengine.deploy import GroupError, Subscription, validate_group
from pyengine.deploy.subscriptions import filter_problem, topic_matches, topic_problem


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
        {"source": "agg", "topic": "#", "target": "cloud"},
    ]
    g = validate_group(_group(tmp_path, subs), str(tmp_path / "group.json"))
    assert g.subscriptions[0] == Subscription("devices", "sensors/+/reading", "classify")
    assert g.subscriptions[2].source_is_function and g.subscriptions[2].target_is_function
    assert not g.subscriptions[0].source_is_function
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
    assert "subscriptions[5].qos: unknown field 'qos'; expected one of source, topic, target" \
        in text
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
