"""ONNX ops on typed values (indices, masks): ArgMax/ArgMin, Gather, GatherElements, Trilu."""

from __future__ import annotations

from typing import Any

from pyengine.convert.onnx._importer import Handler, Importer


def _arg_reduce(imp: Importer, node: Any, name: str, ins: list[str], attrs: dict[str, Any]) -> str:
    return imp.g.op(
        "ArgReduce", ins[:1], name, kind="max" if node.op_type == "ArgMax" else "min",
        axis=int(attrs.get("axis", 0)), keepdims=bool(attrs.get("keepdims", 1)),
        select_last_index=bool(attrs.get("select_last_index", 0)),
    )


def _gather(imp: Importer, node: Any, name: str, ins: list[str], attrs: dict[str, Any]) -> str:
    return imp.g.op(node.op_type, ins[:2], name, axis=int(attrs.get("axis", 0)))


def _trilu(imp: Importer, node: Any, name: str, ins: list[str], attrs: dict[str, Any]) -> str:
    return imp.g.op("Trilu", [i for i in ins[:2] if i], name, upper=bool(attrs.get("upper", 1)))


HANDLERS: dict[str, Handler] = {
    "ArgMax": _arg_reduce,
    "ArgMin": _arg_reduce,
    "Gather": _gather,
    "GatherElements": _gather,
    "Trilu": _trilu,
}
