"""MQTT for the fleet: publishers announce new documents, cores announce their status.

Messages are only hints: a core that hears of a new document still reads it from the bucket and
checks its signature, and a core that hears nothing still polls. Topics (under
:attr:`pyengine.fleet.store.Fleet.topic`)::

    <root>/deployment        {"serial": N, "version": V}   (retained)
    <root>/status/<core>     the core's status JSON        (retained)

The connection is the core's own MQTT client (:class:`pyengine.common.mqtt.BrokerLink`, with
the broker settings of ``core start --config``: ``fleet_mqtt``, else ``mqtt``), as a separate
session (client id ``<the core's random id>-fleet``) so that fleet traffic never mixes with the
group's subscriptions. The settings' ``topic_prefix`` goes before every fleet topic, so that a
broker's ACL can keep devices off the fleet's topics (docs/messaging.md).
"""

from __future__ import annotations

import dataclasses
import json
import logging
from typing import Any, Callable, Optional, Union

from pyengine.common.mqtt import BrokerLink, Counters, MqttSettings, NoCounters, parse_address

log = logging.getLogger("pyengine.fleet")


def settings(address: str, client_id: str) -> MqttSettings:
    """Broker settings from ``host:port`` (the ``--mqtt`` of the fleet commands)."""
    host, port = parse_address(address, "--mqtt")
    return MqttSettings(host, port, client_id=client_id)


#: A broker for the fleet commands: ``host:port`` or full settings (TLS, credentials, prefix).
Broker = Union[str, MqttSettings]


class FleetLink:
    """One MQTT session for fleet traffic.

    Parameters
    ----------
    broker
        The broker (the core's settings: TLS and credentials included).
    client_id
        This session's client id (unique per core: ``pyengine-fleet-<core name>``).
    subscriptions
        Topic filter -> callback(topic, payload), subscribed again on every reconnect.
    """

    def __init__(self, broker: MqttSettings, client_id: str,
                 subscriptions: Optional[dict[str, Callable[[str, bytes], None]]] = None,
                 metrics: Optional[Counters] = None) -> None:
        self.prefix = broker.topic_prefix
        self.subscriptions = {self.prefix + f: cb for f, cb in (subscriptions or {}).items()}
        self.link = BrokerLink("fleet", dataclasses.replace(broker, client_id=client_id),
                               metrics or NoCounters(), self._message)
        self.link.set_filters(set(self.subscriptions))

    def _message(self, name: str, topic: str, payload: bytes) -> None:
        import paho.mqtt.client as mqtt

        for flt, cb in self.subscriptions.items():
            if mqtt.topic_matches_sub(flt, topic):
                cb(topic, payload)

    def start(self, wait_s: float = 0.0) -> bool:
        """Connect in the background; True when connected within ``wait_s`` seconds."""
        self.link.start()
        return self.link.connected.wait(wait_s) if wait_s > 0 else self.link.connected.is_set()

    def publish(self, topic: str, payload: Any, retain: bool = False,
                wait_s: float = 0.0) -> bool:
        """Publish JSON at QoS 1; True when the broker acknowledged it within ``wait_s``."""
        info = self.link.client.publish(self.prefix + topic, json.dumps(payload).encode(),
                                        qos=1, retain=retain)
        if wait_s <= 0:
            return True
        try:
            info.wait_for_publish(wait_s)
        except (RuntimeError, ValueError):
            return False
        return bool(info.is_published())

    def stop(self) -> None:
        self.link.connected.clear()  # an intended disconnect: not "lost the connection"
        self.link.stop()


def announce(broker: Broker, topic: str, payload: Any, timeout_s: float = 5.0) -> bool:
    """Publish one retained message and disconnect; False (with a warning) when the broker
    cannot be reached in time (cores still find the document by polling).

    ``broker``: ``host:port``, or settings with TLS, credentials and a topic prefix (those of
    a core's configuration: ``fleet publish --mqtt-config``).
    """
    import secrets

    cid = f"pyengine-fleet-publisher-{secrets.token_hex(8)}"
    conf = settings(broker, cid) if isinstance(broker, str) else broker
    link = FleetLink(conf, cid)
    try:
        if not link.start(wait_s=timeout_s):
            log.warning("MQTT broker %s unreachable; cores will find the document by polling",
                        conf.address())
            return False
        return link.publish(topic, payload, retain=True, wait_s=timeout_s)
    finally:
        link.stop()
