"""Reading a group file (YAML or JSON) with limits: a hostile file fails fast with a clear
error, never a traceback, a stall or gigabytes of memory.

- **Size**: at most :data:`MAX_BYTES` (``$PYENGINE_GROUP_MAX_BYTES`` overrides it), checked
  before a byte is parsed. A group is a few kilobytes; the cap leaves room for long lists.
- **YAML aliases** (``*name``, and ``<<`` merges, which need one) are refused: they are how a
  few hundred bytes expand into gigabytes ("billion laughs"). Write the value out instead.
- **YAML values**: at most :data:`MAX_YAML_NODES`, counted before any is built (PyYAML builds
  each in Python), so a file under the size cap is read in seconds at worst.
- **Nesting** deeper than :data:`MAX_DEPTH` is refused before anything is built (the schema's
  deepest field is 6 levels down), so no parser or validator recurses without bound.
- **Duplicate keys** in a mapping are an error naming the key and its line (YAML and JSON both
  let the last one win silently).
- Undecodable UTF-8, integers too long to convert and other parser limits are errors too.
"""

from __future__ import annotations

import json
import os
import re
from typing import Any, Optional

from pyengine.deploy.errors import GroupError

#: Default cap on a group file's size in bytes (``$PYENGINE_GROUP_MAX_BYTES`` overrides it).
MAX_BYTES = 4 << 20
#: Deepest nesting of mappings and lists accepted.
MAX_DEPTH = 32
#: Most YAML nodes (scalars, mappings, lists) in one file: building each costs PyYAML ~20 us
#: of pure Python, so this bounds the time a file under the size cap can take (a group of a
#: thousand functions has ~20,000; 100,000 take about 2.5 s).
MAX_YAML_NODES = 100_000


def max_bytes() -> int:
    """The size cap in effect: ``$PYENGINE_GROUP_MAX_BYTES`` when set to a positive integer,
    else :data:`MAX_BYTES`."""
    raw = os.environ.get("PYENGINE_GROUP_MAX_BYTES", "")
    try:
        value = int(raw)
    except ValueError:
        return MAX_BYTES
    return value if value > 0 else MAX_BYTES


def read_text(path: str, limit: Optional[int] = None) -> str:
    """The file's text, refused (GroupError) above ``limit`` bytes (default :func:`max_bytes`)
    or when it is not UTF-8."""
    limit = max_bytes() if limit is None else limit
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size > limit:
                raise GroupError(path, [_too_big(size, limit)])
            raw = f.read(limit + 1)  # a file that grows while read is cut here
    except OSError as exc:
        raise GroupError(path, [f"cannot read the group file: {exc.strerror or exc}"]) from None
    if len(raw) > limit:
        raise GroupError(path, [_too_big(len(raw), limit)])
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise GroupError(path, [f"line {line}: not UTF-8 text ({exc.reason} at byte "
                                f"{exc.start})"]) from None


def _too_big(size: int, limit: int) -> str:
    return (f"the group file is {size} bytes, more than the {limit} allowed (set "
            "PYENGINE_GROUP_MAX_BYTES to raise the cap)")


def parse_group_text(text: str, path: str) -> Any:
    """Parse a group file's text: JSON when ``path`` ends in .json or the text starts with
    ``{``, YAML otherwise. Raises :class:`GroupError` for anything it refuses."""
    if path.endswith(".json") or text.lstrip().startswith("{"):
        data = _parse_json(text, path)
    else:
        data = _parse_yaml(text, path)
    bad = _surrogates(data, "")
    if bad is not None:
        raise GroupError(path, [f"{bad or '(top level)'}: a string with a lone surrogate "
                                "(\\ud800-\\udfff) is not valid Unicode text"])
    return data


def _surrogates(v: Any, where: str) -> Optional[str]:
    """The field path of the first string (key or value) that is not encodable as UTF-8 (a
    JSON ``\\ud800`` escape makes one), or None. Nesting is already capped."""
    if isinstance(v, str):
        try:
            v.encode("utf-8")
        except UnicodeEncodeError:
            return where
        return None
    if isinstance(v, dict):
        for k, x in v.items():
            sub = f"{where}.{k}" if where else str(k)
            found = _surrogates(k, sub) if isinstance(k, str) else None
            found = found if found is not None else _surrogates(x, sub)
            if found is not None:
                return found.encode("utf-8", "backslashreplace").decode()
        return None
    if isinstance(v, list):
        for i, x in enumerate(v):
            found = _surrogates(x, f"{where}[{i}]")
            if found is not None:
                return found
    return None


# ------------------------------------------------------------------------------------- JSON

_JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.S)
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")


def _json_depth_problem(text: str) -> Optional[str]:
    """Where the JSON text nests deeper than MAX_DEPTH (strings skipped), or None."""
    brackets = _NOT_BRACKET.sub("", _JSON_STRING.sub('""', text))
    depth = 0
    for i, ch in enumerate(brackets):
        depth += 1 if ch in "[{" else -1
        if depth > MAX_DEPTH:
            # Where in the text: the (i+1)-th bracket outside strings.
            return f"nested deeper than {MAX_DEPTH} levels (bracket {i + 1} of the file)"
    return None


def _parse_json(text: str, path: str) -> Any:
    problem = _json_depth_problem(text)
    if problem:
        raise GroupError(path, [f"not accepted as JSON: {problem}"])
    duplicates: list[str] = []

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, v in items:
            if k in out:
                duplicates.append(k)
            out[k] = v
        return out

    try:
        data = json.loads(text, object_pairs_hook=pairs)
    except RecursionError:
        raise GroupError(path, [f"not accepted as JSON: nested deeper than {MAX_DEPTH} "
                                "levels"]) from None
    except ValueError as exc:  # JSONDecodeError, and integers past the conversion limit
        raise GroupError(path, [f"not valid JSON: {exc}"]) from None
    if duplicates:
        raise GroupError(path, [_json_duplicate(text, k) for k in dict.fromkeys(duplicates)])
    return data


def _json_duplicate(text: str, key: str) -> str:
    """The message for a duplicate JSON key, with the line of its second occurrence."""
    pattern = re.compile(re.escape(json.dumps(key)) + r"\s*:")
    lines = [text.count("\n", 0, m.start()) + 1 for m in pattern.finditer(text)]
    where = f"line {lines[1]}: " if len(lines) > 1 else ""
    first = f" (first at line {lines[0]})" if len(lines) > 1 else ""
    return (f"{where}duplicate key {key!r}{first}; a mapping may name each key once (the "
            "last one would silently win)")


# ------------------------------------------------------------------------------------- YAML


def _yaml(path: str) -> Any:
    try:
        import yaml
    except ImportError:
        raise GroupError(
            path,
            ["YAML group files need PyYAML: pip install 'pyengine[yaml]' (or write the group as "
             "JSON)"],
        ) from None
    return yaml


def _yaml_events_problem(yaml: Any, text: str, loader: Any) -> Optional[str]:
    """Walk the YAML event stream (no objects built, no recursion): the first alias or
    nesting past MAX_DEPTH, or None."""
    depth = nodes = 0
    for ev in yaml.parse(text, Loader=loader):
        if isinstance(ev, yaml.NodeEvent):
            nodes += 1
            if nodes > MAX_YAML_NODES:
                return (f"line {ev.start_mark.line + 1}: more than {MAX_YAML_NODES} values; a "
                        "group this large belongs in several groups (or in JSON)")
        if isinstance(ev, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
            depth += 1
            if depth > MAX_DEPTH:
                return (f"line {ev.start_mark.line + 1}, column {ev.start_mark.column + 1}: "
                        f"nested deeper than {MAX_DEPTH} levels")
        elif isinstance(ev, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
            depth -= 1
        elif isinstance(ev, yaml.AliasEvent):
            return (f"line {ev.start_mark.line + 1}, column {ev.start_mark.column + 1}: the YAML "
                    f"alias *{ev.anchor} is not allowed in a group file (aliases and '<<' merges "
                    "can expand a small file into gigabytes); write the value out")
    return None


_LOADERS: dict[str, Any] = {}


def _strict_loader(yaml: Any) -> Any:
    """A safe loader (libyaml's when built) whose mappings refuse duplicate keys."""
    if "strict" in _LOADERS:
        return _LOADERS["strict"]
    base = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

    class StrictLoader(base):  # type: ignore[misc, valid-type]
        duplicates: list[str]

        def construct_mapping(self, node: Any, deep: bool = False) -> Any:
            seen: dict[Any, int] = {}
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=True)
                line = key_node.start_mark.line + 1
                try:
                    first = seen.get(key)
                    if first is None:
                        seen[key] = line
                        continue
                except TypeError:
                    continue  # unhashable: the base class reports it
                self.duplicates.append(
                    f"line {line}: duplicate key {key!r} (first at line {first}); a mapping "
                    "may name each key once (the last one would silently win)")
            return super().construct_mapping(node, deep=deep)

    _LOADERS["strict"] = StrictLoader
    return StrictLoader


def _parse_yaml(text: str, path: str) -> Any:
    yaml = _yaml(path)
    loader = _strict_loader(yaml)
    try:
        problem = _yaml_events_problem(yaml, text, loader)
    except yaml.YAMLError as exc:
        raise GroupError(path, [f"not valid YAML: {exc}"]) from None
    if problem:
        raise GroupError(path, [f"not accepted as YAML: {problem}"])
    try:
        ldr = loader(text)
        ldr.duplicates = []
        try:
            data = ldr.get_single_data()
        finally:
            ldr.dispose()
    except yaml.YAMLError as exc:
        raise GroupError(path, [f"not valid YAML: {exc}"]) from None
    except (ValueError, TypeError, RecursionError) as exc:  # e.g. a 5000-digit integer
        raise GroupError(path, [f"not valid YAML: {type(exc).__name__}: {exc}"]) from None
    if ldr.duplicates:
        raise GroupError(path, ldr.duplicates)
    return data
