"""Messaging: the core's MQTT connections and the router that applies the group's subscriptions.

- A :class:`BrokerLink` is one connection (paho-mqtt) to a broker: ``devices`` (the core's
  ``mqtt`` setting) or ``cloud``. It connects in the background, reconnects by itself with
  backoff and, on every (re)connect, subscribes again to every topic filter the subscriptions
  need (at QoS 1), so a restarted broker needs nothing from anyone. The session is persistent
  (clean session off, a stable client id): QoS 1 messages published while the core was away
  from a broker that kept running are delivered when it comes back.
- Each function that is the target of a subscription has a :class:`FunctionQueue`: a bounded
  FIFO (``queue_size`` in the core's config) drained by as many threads as the function has
  workers. A message is acknowledged to the broker once it is in the queue; when the queue is
  full it is dropped and counted in ``pyengine_messages_dropped_total{reason="queue_full"}``.
  Each queued message invokes the function once (no redelivery within a core run).
- :class:`Router` matches topics against subscriptions: broker -> function, function ->
  broker, and function -> function inside the core (never through a broker).

A message's payload becomes the event: the decoded JSON when the payload is JSON, else the raw
bytes. ``context.publish(topic, payload)`` sends bytes as they are, ``str`` as UTF-8 and
anything else as JSON.
"""

from __future__ import annotations

import collections
import json
import logging
import socket
import threading
from typing import TYPE_CHECKING, Any, Callable, Optional

from pyengine.core.config import CoreConfig, MqttSettings
from pyengine.core.metrics import Metrics
from pyengine.deploy.subscriptions import CLOUD, DEVICES, Subscription, topic_matches, topic_problem

if TYPE_CHECKING:
    from pyengine.core.group import DeployedGroup

log = logging.getLogger("pyengine.core.messaging")

#: Most messages the core holds for a broker it cannot reach (QoS 1, per broker).
OUTGOING_MAX = 100_000

#: What invokes a function: (function name, event, topic) -> None.
Invoke = Callable[[str, Any, str], Any]


def decode_event(payload: bytes) -> Any:
    """A message's payload as a handler's event: JSON when it parses, else the bytes."""
    try:
        return json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        return bytes(payload)


def _paho() -> Any:
    try:
        import paho.mqtt.client as mqtt
    except ImportError:
        raise ImportError("the core's MQTT connection needs paho-mqtt: pip install "
                          "'pyengine[mqtt]'") from None
    return mqtt


class BrokerLink:
    """One MQTT connection of the core (``name``: ``devices`` or ``cloud``)."""

    def __init__(self, name: str, settings: MqttSettings, metrics: Metrics,
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
        c.on_disconnect = self._disconnected
        c.on_message = self._message
        c.on_subscribe = self._subscribed
        self._pending_mid = -1
        self.client = c

    def start(self) -> None:
        """Connect in the background (the core starts even while the broker is down)."""
        log.info("%s: connecting to the MQTT broker at %s as %s", self.name,
                 self.settings.address(), self.settings.client_id)
        self.client.connect_async(self.settings.host, self.settings.port,
                                  keepalive=self.settings.keepalive_s)
        self.client.loop_start()

    def stop(self) -> None:
        """Disconnect and stop the network thread."""
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

    # -- paho callbacks (its network thread) -----------------------------------------------

    def _connected(self, client: Any, userdata: Any, flags: Any, reason: Any,
                   properties: Any) -> None:
        if getattr(reason, "is_failure", False):
            log.warning("%s: the broker at %s refused the connection: %s", self.name,
                        self.settings.address(), reason)
            return
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
        if mid == self._pending_mid:
            self.connected.set()

    def _disconnected(self, client: Any, userdata: Any, flags: Any, reason: Any,
                      properties: Any) -> None:
        if self.connected.is_set():
            log.warning("%s: lost the connection to %s (%s); reconnecting", self.name,
                        self.settings.address(), reason)
        self.connected.clear()

    def _message(self, client: Any, userdata: Any, msg: Any) -> None:
        try:
            self._on_message(self.name, msg.topic, bytes(msg.payload))
        except Exception:  # noqa: BLE001 - never let one message stop the network thread
            log.exception("%s: cannot route a message on %s", self.name, msg.topic)


class FunctionQueue:
    """The bounded queue of messages waiting for one function, drained by ``threads`` threads."""

    def __init__(self, name: str, size: int, threads: int, invoke: Invoke,
                 metrics: Metrics) -> None:
        self.name = name
        self.size = size
        self.metrics = metrics
        self._invoke = invoke
        self._items: collections.deque[tuple[Any, str]] = collections.deque()
        self._cond = threading.Condition()
        self._closed = False
        self._threads = [threading.Thread(target=self._drain, name=f"pyengine-queue-{name}-{i}",
                                          daemon=True) for i in range(max(1, threads))]
        for t in self._threads:
            t.start()

    def put(self, event: Any, topic: str, source: str) -> bool:
        """Queue one message; False (and counted as dropped) when the queue is full."""
        with self._cond:
            if self._closed or len(self._items) >= self.size:
                reason = "queue_full" if not self._closed else "stopped"
                self.metrics.inc("pyengine_messages_dropped_total", function=self.name,
                                 reason=reason)
                if reason == "queue_full":
                    log.warning("%s: message queue full (%d); dropped a message on %s",
                                self.name, self.size, topic)
                return False
            self._items.append((event, topic))
            self._cond.notify()
        self.metrics.inc("pyengine_messages_received_total", function=self.name, source=source)
        return True

    def depth(self) -> int:
        """Messages waiting."""
        with self._cond:
            return len(self._items)

    def close(self) -> None:
        """Stop the threads; messages still queued are dropped (counted, reason "stopped")."""
        with self._cond:
            self._closed = True
            left = len(self._items)
            self._items.clear()
            self._cond.notify_all()
        if left:
            self.metrics.inc("pyengine_messages_dropped_total", left, function=self.name,
                             reason="stopped")

    def _drain(self) -> None:
        while True:
            with self._cond:
                while not self._items and not self._closed:
                    self._cond.wait()
                if self._closed:
                    return
                event, topic = self._items.popleft()
            try:
                self._invoke(self.name, event, topic)
            except Exception:  # noqa: BLE001 - the invoke path reports failures itself
                log.exception("%s: invocation for a message on %s failed", self.name, topic)


class Router:
    """Applies the deployed group's subscriptions between brokers and functions."""

    def __init__(self, config: CoreConfig, metrics: Metrics, invoke: Invoke,
                 threads_for: Callable[[str], int]) -> None:
        self.config = config
        self.metrics = metrics
        self._invoke = invoke
        self._threads_for = threads_for
        self._lock = threading.Lock()
        self._subs: tuple[Subscription, ...] = ()
        self._queues: dict[str, FunctionQueue] = {}
        self.links: dict[str, BrokerLink] = {}
        for name, settings in ((DEVICES, config.mqtt), (CLOUD, config.cloud)):
            if settings is not None:
                self.links[name] = BrokerLink(name, settings, metrics, self.from_broker)

    def start(self) -> None:
        """Connect to the configured brokers."""
        for link in self.links.values():
            link.start()

    def stop(self) -> None:
        """Disconnect, and stop every queue."""
        for link in self.links.values():
            link.stop()
        with self._lock:
            queues = list(self._queues.values())
            self._queues.clear()
        for q in queues:
            q.close()

    def update(self, group: Optional[DeployedGroup]) -> None:
        """Take the subscriptions of ``group`` (a new deployment)."""
        subs = group.subscriptions if group is not None else ()
        functions = {f.name for f in group.functions} if group is not None else set()
        with self._lock:
            self._subs = tuple(subs)
            gone = [n for n in self._queues if n not in functions]
            closed = [self._queues.pop(n) for n in gone]
        for q in closed:
            q.close()
        for name, link in self.links.items():
            link.set_filters({s.topic for s in subs if s.source == name})
        for name in (DEVICES, CLOUD):
            if name not in self.links and any(name in (s.source, s.target) for s in subs):
                key = "mqtt" if name == DEVICES else "cloud"
                log.warning("the group has subscriptions with %r but the core has no %r broker "
                            "in its configuration (core start --mqtt HOST:PORT or --config); "
                            "those routes are idle", name, key)

    def _queue(self, name: str) -> FunctionQueue:
        with self._lock:
            q = self._queues.get(name)
            if q is None:
                q = FunctionQueue(name, self.config.queue_size, self._threads_for(name),
                                  self._invoke, self.metrics)
                self._queues[name] = q
            return q

    def _targets(self, source: str, topic: str) -> list[str]:
        with self._lock:
            subs = self._subs
        out: list[str] = []
        for s in subs:
            if s.source == source and s.target not in out and topic_matches(s.topic, topic):
                out.append(s.target)
        return out

    def from_broker(self, broker: str, topic: str, payload: bytes) -> None:
        """A message from ``broker`` (devices or cloud): queue it for each target function."""
        targets = [t for t in self._targets(broker, topic) if t not in (DEVICES, CLOUD)]
        if not targets:
            log.debug("%s: no subscription routes %s to a function", broker, topic)
            return
        event = decode_event(payload)
        for t in targets:
            self._queue(t).put(event, topic, broker)

    def from_function(self, function: str, topic: Any, payload: bytes, qos: int = 1,
                      retain: bool = False) -> int:
        """``context.publish`` of ``function``: route it; returns how many targets it reached.

        Raises
        ------
        ValueError
            ``topic`` is not a topic one can publish to, or ``qos`` is not 0 or 1.
        """
        problem = topic_problem(topic)
        if problem:
            raise ValueError(f"context.publish: {problem}")
        if qos not in (0, 1):
            raise ValueError(f"context.publish: qos {qos!r} must be 0 or 1")
        targets = self._targets(function, topic)
        if not targets:
            self.metrics.inc("pyengine_messages_unrouted_total", function=function)
            log.debug("%s published on %s, which no subscription routes", function, topic)
            return 0
        reached = 0
        for t in targets:
            if t in (DEVICES, CLOUD):
                link = self.links.get(t)
                if link is None:
                    self.metrics.inc("pyengine_messages_dropped_total", function=function,
                                     reason=f"no_{t}_broker")
                    continue
                dropped = link.publish(topic, payload, qos=qos, retain=retain)
                if dropped:
                    self.metrics.inc("pyengine_messages_dropped_total", function=function,
                                     reason=dropped)
                    continue
                reached += 1
            elif self._queue(t).put(decode_event(payload), topic, function):
                reached += 1
            self.metrics.inc("pyengine_messages_published_total", function=function, target=t)
        return reached

    def gauges(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        """Queue depths and connection states, for /metrics."""
        with self._lock:
            queues = dict(self._queues)
        out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {
            ("pyengine_message_queue_depth", (("function", n),)): q.depth()
            for n, q in queues.items()}
        for name, link in self.links.items():
            out[("pyengine_mqtt_connected", (("broker", name),))] = float(
                link.connected.is_set())
        return out
