"""ONNX Einsum -> native ops through the shared lowering in :mod:`pyengine.convert._einsum`
(Transpose, Reduce, Reshape and BatchMatMul, or Dense for constant weights). Every size must be
known at conversion; what the lowering does not express is refused naming the node and the
equation.
"""

from __future__ import annotations

from typing import Any

from pyengine.convert._einsum import einsum
from pyengine.convert.onnx._importer import Handler, Importer, attr_str


def _einsum(imp: Importer, node: Any, name: str, ins: list[str], attrs: dict[str, Any]) -> str | None:
    equation = attr_str(attrs.get("equation", ""))
    shapes = [imp.shapes.get(i) for i in node.input]
    if any(s is None or min(s, default=0) < 0 for s in shapes):
        return None
    try:
        return einsum(imp.g, ins, [s for s in shapes if s is not None], equation, name)
    except ValueError as why:
        return imp.g.unsupported_op(name, f"Einsum '{equation}' with {why}")


HANDLERS: dict[str, Handler] = {"Einsum": _einsum}
