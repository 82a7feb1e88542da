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
function publishes can come back to it. This module has no dependency beyond the standard
library: the deploy layer validates subscriptions and the core matches topics with the same
rules.
"""

from __future__ import annotations

from dataclasses import dataclass

#: Endpoints that are not functions.
DEVICES = "devices"
CLOUD = "cloud"
BROKERS = (DEVICES, CLOUD)
#: Longest topic or filter MQTT allows (its length field is 16 bits of UTF-8 bytes).
TOPIC_MAX_BYTES = 65535


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


def filter_problem(topic_filter: object) -> str | None:
    """Why ``topic_filter`` is not a valid MQTT topic filter, or None when it is."""
    if not isinstance(topic_filter, str) or not topic_filter:
        return f"{topic_filter!r} must be a non-empty MQTT topic filter such as sensors/+/reading"
    if len(topic_filter.encode()) > TOPIC_MAX_BYTES:
        return f"{topic_filter[:40]!r}... is longer than {TOPIC_MAX_BYTES} bytes"
    if "\0" in topic_filter:
        return f"{topic_filter!r} contains a NUL character"
    levels = topic_filter.split("/")
    for i, level in enumerate(levels):
        if "#" in level and (level != "#" or i != len(levels) - 1):
            return (f"{topic_filter!r}: '#' must be a whole level and the last one "
                    "(sensors/#, not sensors/# /x or sensors#)")
        if "+" in level and level != "+":
            return f"{topic_filter!r}: '+' must be a whole level (sensors/+/reading, not sensors+)"
    return None


def topic_problem(topic: object) -> str | None:
    """Why ``topic`` cannot be published to (wildcards, empty, too long), or None."""
    if not isinstance(topic, str) or not topic:
        return f"{topic!r} must be a non-empty MQTT topic"
    if "+" in topic or "#" in topic:
        return f"{topic!r}: a topic to publish to cannot contain the wildcards '+' or '#'"
    if "\0" in topic:
        return f"{topic!r} contains a NUL character"
    if len(topic.encode()) > TOPIC_MAX_BYTES:
        return f"{topic[:40]!r}... is longer than {TOPIC_MAX_BYTES} bytes"
    return None


def topic_matches(topic_filter: str, topic: str) -> bool:
    """Whether ``topic`` matches ``topic_filter`` by the MQTT rules.

    Topics starting with ``$`` (broker topics such as ``$SYS/...``) match only filters that
    start with the same level, never a leading wildcard.
    """
    f_levels = topic_filter.split("/")
    t_levels = topic.split("/")
    if topic.startswith("$") and f_levels[0] in ("+", "#"):
        return False
    for i, f in enumerate(f_levels):
        if f == "#":
            return True
        if i >= len(t_levels):
            return False
        if f != "+" and f != t_levels[i]:
            return False
    return len(t_levels) == len(f_levels)


def filters_overlap(a: str, b: str) -> bool:
    """Whether some topic matches both MQTT topic filters ``a`` and ``b`` (valid filters)."""
    al, bl = a.split("/"), b.split("/")
    # A topic starting with '$' matches no filter that starts with a wildcard.
    for x, y in ((al[0], bl[0]), (bl[0], al[0])):
        if x.startswith("$") and y in ("+", "#"):
            return False
    for x, y in zip(al, bl):
        if x == "#" or y == "#":
            return True
        if x != "+" and y != "+" and x != y:
            return False
    if len(al) == len(bl):
        return True
    longer = al if len(al) > len(bl) else bl
    return longer[min(len(al), len(bl))] == "#"  # 'a/#' matches 'a' itself


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
