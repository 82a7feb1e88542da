"""ONNX ops on typed values (indices, masks, integers): ArgMax/ArgMin, TopK, Gather,
GatherElements, Trilu, the bitwise ops and BitShift."""

from __future__ import annotations

from typing import Any

import numpy as np

from pyengine.convert.onnx._importer import Handler, Importer, attr_str, onnx_dtype


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


def _eye_like(imp: Importer, node: Any, name: str, ins: list[str], attrs: dict[str, Any]) -> str | None:
    """A constant: ones on diagonal k of the input's (known) 2-D shape."""
    shape = imp.shapes.get(node.input[0])
    if shape is None or len(shape) != 2 or min(shape) < 0:
        return None
    dtype = onnx_dtype(imp.onnx, int(attrs["dtype"])) if "dtype" in attrs else imp.dtype_of(ins[0])
    if dtype is None:
        return imp.g.unsupported_op(name, f"EyeLike of dtype {attrs['dtype']}")
    return imp.g.const(np.eye(shape[0], shape[1], int(attrs.get("k", 0)), dtype=dtype), name)


def _gather_nd(imp: Importer, node: Any, name: str, ins: list[str], attrs: dict[str, Any]) -> str | None:
    """GatherND as a Gather on the data flattened over its indexed dimensions: the flat index is
    the sum of each index component (negative ones counted from the end) times its stride, plus
    the batch row's offset with batch_dims."""
    data, idx_shape = imp.shapes.get(node.input[0]), imp.shapes.get(node.input[1])
    batch = int(attrs.get("batch_dims", 0))
    if data is None or idx_shape is None or not idx_shape or min(data, default=0) < 0:
        return None
    k = idx_shape[-1]
    if k < 1 or batch + k > len(data) or (batch and min(idx_shape) < 0):
        return None
    indexed = data[batch : batch + k]
    strides = [int(np.prod(indexed[i + 1 :], dtype=np.int64)) for i in range(k)]
    block = int(np.prod(indexed, dtype=np.int64))
    flat = imp.g.op("Reshape", ins[:1], name + "/flat", shape=[-1, *data[batch + k :]])
    idx = imp.cast(ins[1], "int64", name + "/idx")
    # Negative components count from the end of their dimension.
    negative = imp.g.op("Compare", [idx, imp.g.const(np.int64(0), name + "/zero")], name + "/negative", fn="less")
    imp.vdtypes[negative] = "bool"
    wrapped = imp.g.op("Add", [idx, imp.g.const(np.array(indexed, np.int64), name + "/dims")], name + "/wrapped")
    idx = imp.g.op("Where", [negative, wrapped, idx], name + "/normal")
    linear = ""
    for i in range(k):
        part = imp.g.op("Slice", [idx], f"{name}/c{i}", axis=-1, start=i, end=i + 1)
        if strides[i] != 1:
            part = imp.g.op("Mul", [part, imp.g.const(np.int64(strides[i]), f"{name}/s{i}")], f"{name}/m{i}")
        linear = part if not linear else imp.g.op("Add", [linear, part], f"{name}/sum{i}")
    if batch:  # row r of the flattened batch starts at r * block
        rows = int(np.prod(data[:batch], dtype=np.int64))
        offsets = (np.arange(rows, dtype=np.int64) * block).reshape(data[:batch] + [1] * (len(idx_shape) - batch))
        linear = imp.g.op("Add", [linear, imp.g.const(offsets, name + "/offsets")], name + "/batched")
    for v in (idx, linear):
        imp.vdtypes[v] = "int64"
    linear = imp.g.op("Squeeze", [linear], name + "/linear", axes=[-1])
    imp.vdtypes[linear] = "int64"
    return imp.g.op("Gather", [flat, linear], name, axis=0)


def _scatter(imp: Importer, node: Any, name: str, ins: list[str], attrs: dict[str, Any]) -> str:
    """ScatterElements (and Scatter, its opset 9-10 name) and ScatterND, with any reduction."""
    extra: dict[str, Any] = ({"nd": True} if node.op_type == "ScatterND"
                             else {"axis": int(attrs.get("axis", 0))})
    reduction = attr_str(attrs.get("reduction", "none"))
    if reduction != "none":
        extra["reduction"] = reduction
    return imp.g.op("Scatter", ins[:3], name, **extra)


def _cumulative(imp: Importer, node: Any, name: str, ins: list[str], attrs: dict[str, Any]) -> str:
    """CumSum and CumProd (the axis a constant or a run-time input)."""
    return imp.g.op("Cumulative", ins[:2], name, kind="prod" if node.op_type == "CumProd" else "sum",
                    exclusive=bool(attrs.get("exclusive", 0)), reverse=bool(attrs.get("reverse", 0)))


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
    "EyeLike": _eye_like,
    "GatherND": _gather_nd,
    "Scatter": _scatter,
    "ScatterElements": _scatter,
    "ScatterND": _scatter,
    "CumSum": _cumulative,
    "CumProd": _cumulative,
}
