"""MQTT for the fleet: publishers announce new documents, cores announce their status.

Messages are only hints: a core that hears of a new document still reads it from the bucket and
checks its signature, and a core that hears nothing still polls. Topics (under
:attr:`pyengine.fleet.store.Fleet.topic`)::

    <root>/deployment        {"serial": N, "version": V}   (retained)
    <root>/status/<core>     the core's status JSON        (retained)

paho-mqtt is imported lazily (``pip install 'pyengine[fleet]'``).
"""

from __future__ import annotations

import json
import logging
import re
import threading
import uuid
from typing import Any, Callable, Optional

log = logging.getLogger("pyengine.fleet")


def parse_broker(text: str) -> tuple[str, int]:
    """``host:port``, ``mqtt://host:port`` or ``host`` (port 1883) -> (host, port)."""
    m = re.match(r"^(?:mqtt://)?(\[[^\]]+\]|[^:/]+)(?::(\d+))?/?$", text or "")
    if not m:
        raise ValueError(f"--mqtt {text!r} must be HOST[:PORT] or mqtt://HOST[:PORT]")
    port = int(m.group(2) or 1883)
    if not 0 < port < 65536:
        raise ValueError(f"--mqtt {text!r}: port {port} is not in 1-65535")
    return m.group(1).strip("[]"), port


def _paho() -> Any:
    try:
        import paho.mqtt.client as mqtt
    except ImportError as exc:
        raise ImportError(
            f"fleet notifications need paho-mqtt, which is not importable ({exc}); "
            "install it with: pip install 'pyengine[fleet]'"
        ) from None
    return mqtt


class Broker:
    """One MQTT connection (paho's network thread reconnects by itself).

    Parameters
    ----------
    address
        ``host:port`` of the broker.
    subscriptions
        Topic filter -> callback(topic, payload bytes), (re)subscribed on every connect.
    """

    def __init__(self, address: str,
                 subscriptions: Optional[dict[str, Callable[[str, bytes], None]]] = None,
                 client_id: str = "") -> None:
        mqtt = _paho()
        self.host, self.port = parse_broker(address)
        self.subscriptions = dict(subscriptions or {})
        self.connected = threading.Event()
        self._client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=client_id or f"pyengine-fleet-{uuid.uuid4().hex[:12]}",
        )
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_message = self._on_message
        self._client.reconnect_delay_set(min_delay=1, max_delay=10)

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: Any,
                    properties: Any = None) -> None:
        if getattr(reason, "is_failure", False):
            log.warning("MQTT broker %s:%d refused the connection: %s", self.host, self.port,
                        reason)
            return
        for topic in self.subscriptions:
            client.subscribe(topic, qos=1)
        self.connected.set()

    def _on_disconnect(self, client: Any, userdata: Any, flags: Any, reason: Any,
                       properties: Any = None) -> None:
        self.connected.clear()

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        mqtt = _paho()
        for flt, cb in self.subscriptions.items():
            if mqtt.topic_matches_sub(flt, msg.topic):
                try:
                    cb(msg.topic, bytes(msg.payload))
                except Exception:  # noqa: BLE001 - a bad message must not stop the client
                    log.exception("handling MQTT message on %s", msg.topic)

    def start(self, wait_s: float = 0.0) -> bool:
        """Connect in the background; True when connected within ``wait_s`` seconds."""
        try:
            self._client.connect_async(self.host, self.port, keepalive=30)
        except (OSError, ValueError) as exc:
            log.warning("MQTT broker %s:%d: %s", self.host, self.port, exc)
        self._client.loop_start()
        return self.connected.wait(wait_s) if wait_s > 0 else self.connected.is_set()

    def publish(self, topic: str, payload: Any, retain: bool = False,
                wait_s: float = 0.0) -> bool:
        """Publish JSON (or bytes) at QoS 1; True when acknowledged within ``wait_s``."""
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        info = self._client.publish(topic, data, qos=1, retain=retain)
        if wait_s <= 0:
            return True
        try:
            info.wait_for_publish(wait_s)
        except (RuntimeError, ValueError):
            return False
        return bool(info.is_published())

    def stop(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


def announce(address: str, topic: str, payload: Any, timeout_s: float = 5.0) -> bool:
    """Publish one retained message and disconnect; False (with a warning) when the broker
    cannot be reached in time (cores still find the document by polling)."""
    b = Broker(address)
    try:
        if not b.start(wait_s=timeout_s):
            log.warning("MQTT broker %s unreachable; cores will find the document by polling",
                        address)
            return False
        return b.publish(topic, payload, retain=True, wait_s=timeout_s)
    finally:
        b.stop()
