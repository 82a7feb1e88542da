"""MQTT topic rules: valid topic filters and topics, matching a topic against a filter, and
whether two filters share a topic. Group validation and the core's router use the same rules."""

from __future__ import annotations

#: Longest topic or filter MQTT allows (its length field is 16 bits of UTF-8 bytes).
TOPIC_MAX_BYTES = 65535


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
