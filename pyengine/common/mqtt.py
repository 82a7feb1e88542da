"""MQTT plumbing: how a broker is reached (:class:`MqttSettings`) and one connection to it
(:class:`BrokerLink`), shared by the core's messaging and the fleet.

A :class:`BrokerLink` connects in the background, reconnects by itself with backoff and, on
every (re)connect, subscribes again to every topic filter it was given (at QoS 1), so a
restarted broker needs nothing from anyone. The session is persistent (clean session off):
QoS 1 messages published while the client was away from a broker that kept running are
delivered when it comes back. A plaintext or anonymous connection is warned about at start, and
every failed attempt (TLS handshake, authentication, network) is logged and counted in
``pyengine_mqtt_connect_failures_total{broker, reason}``.
"""

from __future__ import annotations

import logging
import re
import socket
import ssl
import sys
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Protocol

# The core's messaging logger: what operators filter on for connection trouble.
log = logging.getLogger("pyengine.core.messaging")


class Counters(Protocol):
    """What a :class:`BrokerLink` counts into (the core's :class:`pyengine.core.metrics.Metrics`)."""

    def inc(self, name: str, n: float = 1, **labels: str) -> None:
        """Add ``n`` to the counter ``name`` with ``labels``."""


class NoCounters:
    """Counters that count nothing (a link whose counts no one reads)."""

    def inc(self, name: str, n: float = 1, **labels: str) -> None:
        """Count nothing."""


@dataclass(frozen=True)
class TlsSettings:
    """TLS to a broker: ``ca`` verifies the broker (system CAs when None); ``cert``/``key``
    authenticate the core (AWS IoT style); ``insecure`` skips the host name check."""

    ca: Optional[str] = None
    cert: Optional[str] = None
    key: Optional[str] = None
    insecure: bool = False


@dataclass(frozen=True)
class MqttSettings:
    """How the core reaches one broker."""

    host: str
    port: int = 1883
    tls: Optional[TlsSettings] = None
    username: Optional[str] = None
    password: Optional[str] = field(default=None, repr=False)
    #: Empty: the core's random id from its root (:func:`client_id`).
    client_id: str = ""
    keepalive_s: int = 30
    #: Put before every fleet topic (fleet traffic only: lets fleet and device topics share a
    #: broker under ACLs that keep devices off the fleet's prefix).
    topic_prefix: str = ""

    def address(self) -> str:
        """host:port (for messages)."""
        return f"{self.host}:{self.port}"

    def weaknesses(self) -> list[str]:
        """What an attacker on the network or the broker could exploit: "plaintext" (no TLS),
        "anonymous" (neither a password nor a client certificate)."""
        out = []
        if self.tls is None:
            out.append("plaintext")
        if self.username is None and (self.tls is None or self.tls.cert is None):
            out.append("anonymous")
        return out


def parse_address(text: str, where: str = "--mqtt") -> tuple[str, int]:
    """``host:port`` (or ``host``, port 1883; ``[v6]:port``) -> (host, port); ValueError else."""
    m = re.match(r"^\[([0-9a-fA-F:.]+)\](?::(\d+))?$|^([^:\[\]\s/]+)(?::(\d+))?$", text or "")
    if not m:
        raise ValueError(f"{where}: {text!r} is not HOST:PORT (e.g. 127.0.0.1:1883)")
    host = m.group(1) or m.group(3)
    port = int(m.group(2) or m.group(4) or 1883)
    if not 0 < port < 65536:
        raise ValueError(f"{where}: {text!r}: port {port} is not from 1 to 65535")
    return host, port


#: Most messages the core holds for a broker it cannot reach (QoS 1, per broker).
OUTGOING_MAX = 100_000

#: MQTT CONNACK reasons that mean "who you are was refused" (v3.1.1 codes 4 and 5, v5's).
_AUTH_REASONS = ("bad user name or password", "not authorized", "bad authentication method",
                 "banned", "client identifier not valid")


def _paho() -> Any:
    try:
        import paho.mqtt.client as mqtt
    except ImportError:
        raise ImportError("the core's MQTT connection needs paho-mqtt: pip install "
                          "'pyengine[mqtt]'") from None
    return mqtt


class BrokerLink:
    """One MQTT connection (``name``: the core's ``devices`` or ``cloud``, or ``fleet``)."""

    def __init__(self, name: str, settings: MqttSettings, metrics: Counters,
                 on_message: Callable[[str, str, bytes], None]) -> None:
        mqtt = _paho()
        self.name = name
        self.settings = settings
        self.metrics = metrics
        self._on_message = on_message
        self._lock = threading.Lock()
        self._filters: set[str] = set()
        self.connected = threading.Event()
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=settings.client_id,
                        clean_session=False, protocol=mqtt.MQTTv311)
        if settings.username is not None:
            c.username_pw_set(settings.username, settings.password)
        if settings.tls is not None:
            c.tls_set(ca_certs=settings.tls.ca, certfile=settings.tls.cert,
                      keyfile=settings.tls.key)
            c.tls_insecure_set(settings.tls.insecure)
        c.max_inflight_messages_set(100)
        # QoS 1 messages published while the broker is unreachable wait, up to this many.
        c.max_queued_messages_set(OUTGOING_MAX)
        c.reconnect_delay_set(min_delay=1, max_delay=5)
        c.on_connect = self._connected
        c.on_connect_fail = self._connect_failed
        c.on_disconnect = self._disconnected
        c.on_message = self._message
        c.on_subscribe = self._subscribed
        self._pending_mid = -1
        #: The current attempt: "connecting" until the broker's CONNACK, then "accepted" or
        #: "refused" (already logged).
        self._attempt = "connecting"
        self.client = c

    def start(self) -> None:
        """Connect in the background (the core starts even while the broker is down)."""
        weak = self.settings.weaknesses()
        if weak:
            log.warning("%s: the connection to the MQTT broker at %s is %s: %s", self.name,
                        self.settings.address(), " and ".join(weak), "; ".join(
                            {"plaintext": "anyone on the network path can read and alter "
                                          "messages (set tls)",
                             "anonymous": "the broker cannot tell the core from a device "
                                          "(set username and password_file, or a client "
                                          "certificate in tls.cert/tls.key)"}[w] for w in weak))
        log.info("%s: connecting to the MQTT broker at %s", self.name, self.settings.address())
        self.client.connect_async(self.settings.host, self.settings.port,
                                  keepalive=self.settings.keepalive_s)
        self.client.loop_start()

    def stop(self) -> None:
        """Disconnect and stop the network thread."""
        self._attempt = "stopping"
        self.client.disconnect()
        self.client.loop_stop()
        self.connected.clear()

    def set_filters(self, filters: set[str]) -> None:
        """Subscribe to ``filters`` (QoS 1) and unsubscribe from the others."""
        with self._lock:
            added, removed = filters - self._filters, self._filters - filters
            self._filters = set(filters)
        if self.connected.is_set():
            if added:
                self.client.subscribe([(f, 1) for f in sorted(added)])
            if removed:
                self.client.unsubscribe(sorted(removed))

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> str:
        """Publish; QoS 1 messages wait in the client while the broker is unreachable (up to
        :data:`OUTGOING_MAX`). Returns "" when sent or queued, else why it was dropped."""
        info = self.client.publish(topic, payload, qos=qos, retain=retain)
        if info.rc == 0:
            return ""
        return "broker_queue_full" if qos else "disconnected"

    def _failed(self, reason: str, detail: str) -> None:
        self.metrics.inc("pyengine_mqtt_connect_failures_total", broker=self.name, reason=reason)
        log.warning("%s: cannot connect to the MQTT broker at %s: %s failure: %s; retrying",
                    self.name, self.settings.address(), reason, detail)

    # -- paho callbacks (its network thread) -----------------------------------------------

    def _connect_failed(self, client: Any, userdata: Any) -> None:
        # paho calls this inside its ``except OSError`` around the connection attempt.
        exc = sys.exc_info()[1]
        if isinstance(exc, ssl.SSLError):  # includes SSLCertVerificationError
            self._failed("tls", f"TLS handshake failed: {exc}")
        elif exc is not None and self.settings.tls is not None and isinstance(
                exc, (ConnectionResetError, BrokenPipeError)):
            self._failed("tls", f"the broker closed the connection during the TLS handshake "
                         f"(a client certificate it does not accept?): {exc}")
        else:
            self._failed("network", str(exc) if exc is not None else "connection failed")

    def _connected(self, client: Any, userdata: Any, flags: Any, reason: Any,
                   properties: Any) -> None:
        if getattr(reason, "is_failure", False):
            self._attempt = "refused"
            auth = str(reason).lower() in _AUTH_REASONS
            self._failed("auth" if auth else "refused",
                         f"the broker refused the connection: {reason}")
            return
        self._attempt = "accepted"
        sock = client.socket()
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            # An answer right after a PUBACK would otherwise wait for the broker's delayed ACK
            # (Nagle): 40 ms per message.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self._lock:
            filters = sorted(self._filters)
        self.metrics.inc("pyengine_mqtt_connects_total", broker=self.name)
        if filters:  # connected (in /metrics) once the broker has acknowledged them
            _, self._pending_mid = client.subscribe([(f, 1) for f in filters])
        else:
            self.connected.set()
        log.info("%s: connected to %s; subscribed to %s", self.name, self.settings.address(),
                 filters or "nothing")

    def _subscribed(self, client: Any, userdata: Any, mid: int, reason_codes: Any,
                    properties: Any) -> None:
        refused = [str(r) for r in reason_codes or () if getattr(r, "is_failure", False)]
        if refused:  # a broker ACL that does not let the core read a filter
            log.warning("%s: the broker at %s refused %d of the subscriptions (%s)", self.name,
                        self.settings.address(), len(refused), ", ".join(refused))
        if mid == self._pending_mid:
            self.connected.set()

    def _disconnected(self, client: Any, userdata: Any, flags: Any, reason: Any,
                      properties: Any) -> None:
        attempt = self._attempt
        if attempt != "stopping":
            self._attempt = "connecting"
        if attempt == "connecting":
            # Closed before the CONNACK. With TLS 1.3 a broker checks the client certificate
            # after the client's side of the handshake is done: a certificate it does not
            # accept shows up here, not as a handshake error.
            tls = self.settings.tls is not None
            self._failed("tls" if tls else "network",
                         f"the broker closed the connection before accepting it ({reason})"
                         + ("; with TLS that is usually a client certificate it does not "
                            "accept, or none where it requires one" if tls else ""))
        elif self.connected.is_set():
            log.warning("%s: lost the connection to %s (%s); reconnecting", self.name,
                        self.settings.address(), reason)
        self.connected.clear()

    def _message(self, client: Any, userdata: Any, msg: Any) -> None:
        try:
            self._on_message(self.name, msg.topic, bytes(msg.payload))
        except Exception:  # noqa: BLE001 - never let one message stop the network thread
            self.metrics.inc("pyengine_messages_dropped_total", function="", reason="error")
            log.exception("%s: cannot route a message on %s", self.name, msg.topic)
