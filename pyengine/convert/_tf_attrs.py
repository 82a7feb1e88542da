"""TensorFlow node attributes as the importer (:mod:`pyengine.convert.tensorflow`) and its op
handlers (:mod:`pyengine.convert._tf_ops`) read them: values, data layout, spatial pairs."""

from __future__ import annotations

from typing import Any


def _attr(node: Any, key: str, default: Any = None) -> Any:
    if key not in node.attr:
        return default
    a = node.attr[key]
    kind = a.WhichOneof("value")
    if kind == "list":
        return list(a.list.i) or [s.decode() for s in a.list.s] or list(a.list.f)
    if kind == "s":
        return a.s.decode()
    return getattr(a, kind) if kind else default


def _layout(n: Any) -> str:
    return "NCHW" if _attr(n, "data_format", "NHWC") == "NCHW" else "NHWC"


def _spatial(n: Any, key: str, default: list[int]) -> list[int]:
    v = _attr(n, key) or [1, 1, 1, 1]
    if len(v) != 4:
        return default
    return [v[2], v[3]] if _layout(n) == "NCHW" else [v[1], v[2]]
