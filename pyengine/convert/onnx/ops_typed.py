"""ONNX ops on typed values (indices, masks, integers): ArgMax/ArgMin, TopK, Gather,
GatherElements, Trilu, the bitwise ops and BitShift."""

from __future__ import annotations

from typing import Any

import numpy as np

from pyengine.convert.onnx._importer import Handler, Importer, attr_str


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


def _top_k(imp: Importer, node: Any, name: str, ins: list[str], attrs: dict[str, Any]) -> list[str]:
    """Values and indices as two native TopK nodes (a node has one output); k is read by value
    when planning, so a run-time k works as a constant one does."""
    k = ins[1] if imp.opset >= 10 else imp.g.const(np.array([attrs["k"]], np.int64), name + "/k")
    common = {"axis": int(attrs.get("axis", -1)), "largest": bool(attrs.get("largest", 1)),
              "sorted": bool(attrs.get("sorted", 1))}
    return [imp.g.op("TopK", [ins[0], k], f"{name}/{out}", output=out, **common)
            for out in ("values", "indices")]


# ONNX bitwise ops -> the native BinaryMath's fn (integers only).
_BITWISE = {"BitwiseAnd": "bit_and", "BitwiseOr": "bit_or", "BitwiseXor": "bit_xor"}


def _bitwise(imp: Importer, node: Any, name: str, ins: list[str], attrs: dict[str, Any]) -> str:
    if node.op_type == "BitwiseNot":
        return imp.g.op("Math", ins[:1], name, fn="bit_not")
    if node.op_type == "BitShift":
        fn = "shift_left" if attr_str(attrs.get("direction", "")) == "LEFT" else "shift_right"
    else:
        fn = _BITWISE[node.op_type]
    return imp.g.op("BinaryMath", ins[:2], name, fn=fn)


HANDLERS: dict[str, Handler] = {
    **{op: _bitwise for op in (*_BITWISE, "BitwiseNot", "BitShift")},
    "ArgMax": _arg_reduce,
    "ArgMin": _arg_reduce,
    "Gather": _gather,
    "GatherElements": _gather,
    "Trilu": _trilu,
    "TopK": _top_k,
}
