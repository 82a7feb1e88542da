"""ONNX ops on typed values (indices, masks, integers): ArgMax/ArgMin, Gather, GatherElements,
Trilu, the bitwise ops and BitShift."""

from __future__ import annotations

from typing import Any

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
}
