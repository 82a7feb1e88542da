"""Messaging: the core's MQTT connections and the router that applies the group's subscriptions.

- A :class:`~pyengine.common.mqtt.BrokerLink` (:mod:`pyengine.common.mqtt`) is one
  connection to a broker: ``devices`` (the core's ``mqtt`` setting) or ``cloud``. It reconnects
  by itself and subscribes again on every (re)connect to every topic filter the subscriptions
  need; its session is persistent, with the core's random client id (see
  :func:`pyengine.core.config.client_id`).
- Each function that is the target of a subscription has a :class:`FunctionQueue`: a FIFO of
  raw payloads bounded in count and in bytes (:class:`pyengine.core.config.MessageLimits`),
  drained by as many threads as the function has workers. A message is acknowledged to the
  broker once it is in the queue. Every payload routed to a function is either invoked or
  counted in ``pyengine_messages_dropped_total{function, reason}``: ``too_large``,
  ``queue_full``, ``queue_full_bytes``, ``stopped`` and, for a message whose call never ran
  to an answer, ``worker_died``, ``timeout``, ``busy``, ``function_failed``...
- :class:`Router` matches topics against subscriptions: broker -> function, function ->
  broker, and function -> function inside the core (never through a broker).

A message's payload becomes the event in the function's worker (the core queues and sends the
bytes): the decoded JSON when the payload is JSON, else the raw bytes
(:func:`pyengine.core.protocol.decode_event`). ``context.publish(topic, payload)`` sends bytes
as they are, ``str`` as UTF-8 and anything else as JSON.
"""

from __future__ import annotations

import collections
import itertools
import logging
import threading
from typing import TYPE_CHECKING, Any, Callable, Optional

from pyengine.common.mqtt import BrokerLink
from pyengine.common.topics import filter_problem, topic_matches, topic_problem
from pyengine.core.config import CoreConfig, MessageLimits
from pyengine.core.metrics import Metrics
from pyengine.core.protocol import MessagePayload, decode_event
from pyengine.deploy.installed import CLOUD, DEVICES, Subscription, routing_cycles

if TYPE_CHECKING:
    from pyengine.core.group import DeployedGroup

__all__ = ["BrokerLink", "FunctionQueue", "Router", "decode_event"]

log = logging.getLogger("pyengine.core.messaging")

#: What invokes a function: (function name, payload, topic, source) -> why the message was not
#: delivered ("" when the function got it: answered or raised).
Invoke = Callable[[str, MessagePayload, str, str], str]



class FunctionQueue:
    """The queue of messages (raw payloads) waiting for one function, bounded in count and in
    bytes, drained by ``threads`` threads."""

    def __init__(self, name: str, limits: MessageLimits, threads: int, invoke: Invoke,
                 metrics: Metrics) -> None:
        self.name = name
        self.limits = limits
        self.metrics = metrics
        self._invoke = invoke
        self._items: collections.deque[tuple[bytes, str, str]] = collections.deque()
        self._bytes = 0
        self._cond = threading.Condition()
        self._closed = False
        self._threads = [threading.Thread(target=self._drain, name=f"pyengine-queue-{name}-{i}",
                                          daemon=True) for i in range(max(1, threads))]
        for t in self._threads:
            t.start()

    def _dropped(self, reason: str, topic: str, n: int = 1) -> None:
        self.metrics.inc("pyengine_messages_dropped_total", n, function=self.name, reason=reason)
        if reason != "stopped":
            log.warning("%s: dropped a message on %s: %s", self.name, topic, {
                "too_large": f"larger than message_max_mb ({self.limits.message_max_mb:g} MiB)",
                "queue_full": f"message queue full ({self.limits.queue_size})",
                "queue_full_bytes": f"message queue full ({self.limits.queue_mb:g} MiB)",
            }.get(reason, reason))

    def put(self, payload: bytes, topic: str, source: str) -> bool:
        """Queue one message; False (and counted as dropped, with the reason) when it is larger
        than ``message_max_mb`` or the queue is full (in count or bytes)."""
        # The topic counts too: a device may pick a 64 KiB topic under a '#' filter.
        size = len(payload) + len(topic)
        with self._cond:
            if self._closed:
                reason = "stopped"
            elif len(payload) > self.limits.message_max_bytes:
                reason = "too_large"
            elif len(self._items) >= self.limits.queue_size:
                reason = "queue_full"
            elif self._bytes + size > self.limits.queue_bytes:
                reason = "queue_full_bytes"
            else:
                reason = ""
                self._items.append((payload, topic, source))
                self._bytes += size
                self._cond.notify()
        if reason:
            self._dropped(reason, topic)
            return False
        self.metrics.inc("pyengine_messages_received_total", function=self.name, source=source)
        return True

    def depth(self) -> tuple[int, int]:
        """(messages, bytes of payloads and topics) waiting."""
        with self._cond:
            return len(self._items), self._bytes

    def close(self) -> None:
        """Stop the threads; messages still queued are dropped (counted, reason "stopped")."""
        with self._cond:
            self._closed = True
            left = len(self._items)
            self._items.clear()
            self._bytes = 0
            self._cond.notify_all()
        if left:
            self._dropped("stopped", "", left)

    def _drain(self) -> None:
        while True:
            with self._cond:
                while not self._items and not self._closed:
                    self._cond.wait()
                if self._closed:
                    return
                payload, topic, source = self._items.popleft()
                self._bytes -= len(payload) + len(topic)
            try:
                why = self._invoke(self.name, MessagePayload(payload), topic, source)
            except Exception as exc:  # noqa: BLE001 - counted, and the queue goes on
                log.exception("%s: invocation for a message on %s failed", self.name, topic)
                why = f"error_{type(exc).__name__}"
            if why:
                self._dropped(why, topic)


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
        #: Live views of topics (the console): id -> (broker, filter, deliver(topic, payload)).
        self._watches: dict[int, tuple[str, str, Callable[[str, bytes], None]]] = {}
        self._watch_ids = itertools.count(1)
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
        subs = tuple(group.subscriptions) if group is not None else ()
        functions = {f.name for f in group.functions} if group is not None else set()
        cycles = routing_cycles(list(subs))
        if cycles:
            # Validation refuses these; a group deployed before it did must not loop either.
            looping = {i for _, on_it in cycles for i in on_it}
            log.error("the deployed group has routing cycles (%s); those subscriptions are "
                      "idle until a deployment without the cycle", "; ".join(
                          f"{subs[i].source} -> {subs[i].topic} -> {subs[i].target}"
                          for i in sorted(looping)))
            subs = tuple(s for i, s in enumerate(subs) if i not in looping)
        with self._lock:
            self._subs = tuple(subs)
            gone = [n for n in self._queues if n not in functions]
            closed = [self._queues.pop(n) for n in gone]
        for q in closed:
            q.close()
        self._apply_filters()
        for name in (DEVICES, CLOUD):
            if name not in self.links and any(name in (s.source, s.target) for s in subs):
                key = "mqtt" if name == DEVICES else "cloud"
                log.warning("the group has subscriptions with %r but the core has no %r broker "
                            "in its configuration (core start --mqtt HOST:PORT or --config); "
                            "those routes are idle", name, key)

    def _apply_filters(self) -> None:
        """Subscribe each link to its subscriptions' filters and its watches'."""
        with self._lock:
            subs, watches = self._subs, list(self._watches.values())
        for name, link in self.links.items():
            link.set_filters({s.topic for s in subs if s.source == name}
                             | {f for b, f, _ in watches if b == name})

    def watch(self, broker: str, topic_filter: str,
              deliver: Callable[[str, bytes], None]) -> Callable[[], None]:
        """Also hand each message from ``broker`` on ``topic_filter`` to ``deliver(topic,
        payload)`` (on the link's network thread: it must not block), over the core's own
        connection; returns the call that stops it. KeyError when the core has no such
        broker; ValueError for a bad filter."""
        if broker not in self.links:
            raise KeyError(f"the core has no {broker!r} broker (core start --mqtt HOST:PORT)")
        problem = filter_problem(topic_filter)
        if problem:
            raise ValueError(f"topic filter {topic_filter!r}: {problem}")
        with self._lock:
            key = next(self._watch_ids)
            self._watches[key] = (broker, topic_filter, deliver)
        self._apply_filters()

        def stop() -> None:
            with self._lock:
                gone = self._watches.pop(key, None)
            if gone is not None:
                self._apply_filters()
        return stop

    def _queue(self, name: str) -> FunctionQueue:
        with self._lock:
            q = self._queues.get(name)
            if q is None:
                q = FunctionQueue(name, self.config.limits(name), self._threads_for(name),
                                  self._invoke, self.metrics)
                self._queues[name] = q
            return q

    def _routes(self, source: str, topic: str) -> dict[str, list[Subscription]]:
        """Target -> the subscriptions from ``source`` that route ``topic`` to it."""
        with self._lock:
            subs = self._subs
        out: dict[str, list[Subscription]] = {}
        for s in subs:
            if s.source == source and topic_matches(s.topic, topic):
                out.setdefault(s.target, []).append(s)
        return out

    def _targets(self, source: str, topic: str) -> list[str]:
        return list(self._routes(source, topic))

    def from_broker(self, broker: str, topic: str, payload: bytes) -> None:
        """A message from ``broker`` (devices or cloud): queue it for each target function."""
        with self._lock:
            watches = [d for b, f, d in self._watches.values()
                       if b == broker and topic_matches(f, topic)]
        for deliver in watches:
            deliver(topic, payload)
        targets = [t for t in self._targets(broker, topic) if t not in (DEVICES, CLOUD)]
        if not targets and watches:
            return
        if not targets:
            # A message on a filter just unsubscribed (a new deployment), or the broker's own.
            self.metrics.inc("pyengine_messages_dropped_total", function="", reason="unrouted")
            log.debug("%s: no subscription routes %s to a function", broker, topic)
            return
        for t in targets:
            self._queue(t).put(payload, topic, broker)

    def from_function(self, function: str, topic: Any, payload: bytes, qos: int = 1,
                      retain: bool = False) -> int:
        """``context.publish`` of ``function``: route it; returns how many targets it reached.

        Raises
        ------
        ValueError
            ``topic`` is not a topic one can publish to, ``qos`` is not 0 or 1, or ``retain``
            is asked for where no subscription grants it.
        """
        problem = topic_problem(topic)
        if problem:
            raise ValueError(f"context.publish: {problem}")
        if qos not in (0, 1):
            raise ValueError(f"context.publish: qos {qos!r} must be 0 or 1")
        routes = self._routes(function, topic)
        targets = list(routes)
        if retain:
            # A retained message outlives the call and greets every later subscriber: only the
            # group file can allow it, per route to a broker.
            denied = [t for t, subs in routes.items()
                      if t in (DEVICES, CLOUD) and not any(s.retain for s in subs)]
            if denied:
                raise ValueError(
                    f"context.publish: retain=True on {topic!r}: no subscription from "
                    f"{function!r} to {' or '.join(map(repr, denied))} matching it grants "
                    "retained messages; add `retain: true` to that subscription in the group "
                    "file, or publish with retain=False")
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
            elif self._queue(t).put(payload, topic, function):
                reached += 1
            self.metrics.inc("pyengine_messages_published_total", function=function, target=t)
        return reached

    def gauges(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        """Queue depths and connection states, for /metrics."""
        with self._lock:
            queues = dict(self._queues)
        out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
        for n, q in queues.items():
            count, size = q.depth()
            out[("pyengine_message_queue_depth", (("function", n),))] = count
            out[("pyengine_message_queue_bytes", (("function", n),))] = size
        for name, link in self.links.items():
            out[("pyengine_mqtt_connected", (("broker", name),))] = float(
                link.connected.is_set())
        return out
