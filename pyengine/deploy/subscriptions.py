"""Subscriptions of a group: who may send messages on which MQTT topics to whom.

A subscription routes messages whose topic matches ``topic`` (an MQTT topic filter: ``+``
matches one level, ``#`` the rest) from ``source`` to ``target``:

- ``source``: ``devices`` (MQTT clients of the core's broker), ``cloud`` (the cloud broker in
  the core's config) or the name of a function of the group (what it publishes with
  ``context.publish``);
- ``target``: the name of a function (invoked with the message as its event), ``devices``
  (published on the core's broker) or ``cloud``.

Function to function subscriptions are routed inside the core, never through a broker.
``retain: true`` on a subscription from a function to ``devices`` or ``cloud`` lets the
function publish retained messages on its topics (``context.publish(..., retain=True)``);
without it such a publish is refused. :func:`routing_cycles` finds routes on which what a
function publishes can come back to it. The MQTT topic rules themselves
(valid filters and topics, matching, overlap) are :mod:`pyengine.common.topics`, which the core
uses to route with the same rules the deploy layer validates with.
"""

from __future__ import annotations

from dataclasses import dataclass

from pyengine.common.topics import filters_overlap

#: Endpoints that are not functions.
DEVICES = "devices"
CLOUD = "cloud"
BROKERS = (DEVICES, CLOUD)


@dataclass(frozen=True)
class Subscription:
    """Messages on topics matching ``topic`` go from ``source`` to ``target``."""

    source: str
    topic: str
    target: str
    #: Whether the function (``source``) may publish retained messages on this route.
    retain: bool = False

    @property
    def source_is_function(self) -> bool:
        """Whether ``source`` names a function (not ``devices`` or ``cloud``)."""
        return self.source not in BROKERS

    @property
    def target_is_function(self) -> bool:
        """Whether ``target`` names a function (not ``devices`` or ``cloud``)."""
        return self.target not in BROKERS


def routing_cycles(subs: list[Subscription]) -> list[tuple[list[str], list[int]]]:
    """The routing cycles among ``subs``: each as (functions, indices into ``subs`` of the
    subscriptions on it), one per set of functions that can reach each other.

    A function reaches another through a function -> function subscription (whatever it
    publishes matching the filter calls the target), or through a broker: a subscription from
    it to ``devices``/``cloud`` and one from that broker to the other function whose filters
    share a topic (the broker delivers the core's own message back to the core).
    """
    edges: dict[str, dict[str, set[int]]] = {}
    for i, s in enumerate(subs):
        if not s.source_is_function:
            continue
        if s.target_is_function:
            edges.setdefault(s.source, {}).setdefault(s.target, set()).add(i)
            continue
        for j, back in enumerate(subs):
            if back.source == s.target and back.target_is_function and filters_overlap(
                    s.topic, back.topic):
                edges.setdefault(s.source, {}).setdefault(back.target, set()).update((i, j))

    def reach(start: str) -> set[str]:
        seen: set[str] = set()
        todo = [start]
        while todo:
            for nxt in edges.get(todo.pop(), {}):
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        return seen

    reachable = {f: reach(f) for f in edges}
    cycles: list[tuple[list[str], list[int]]] = []
    done: set[str] = set()
    for f in sorted(edges):
        if f in done or f not in reachable[f]:
            continue
        component = sorted(g for g in reachable[f] if f in reachable.get(g, set()))
        done.update(component)
        on_it = sorted({i for a in component for b, idx in edges.get(a, {}).items()
                        if b in component for i in idx})
        cycles.append((component, on_it))
    return cycles
