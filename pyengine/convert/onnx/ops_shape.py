"""ONNX shape and data-movement ops (Reshape, Slice, Concat, Pad...) -> native ops."""

from __future__ import annotations

from typing import Any

import numpy as np

from pyengine.convert._graph import batch_copied, input_shapes_hint
from pyengine.convert.onnx._importer import (
    ENGINE_DTYPES,
    Handler,
    Importer,
    attr_str,
    axes_of,
    param_input,
    shape_of,
)
from pyengine.errors import InputShapeUnknownError

# Slice bounds past an axis mean "to its end"; kept within what the .pyem attributes hold.
_BOUND = 2**31


def _slice(
    imp: Importer, node: Any, name: str, ins: list[str], attrs: dict[str, Any]
) -> str | None:
    if imp.opset < 10:
        starts, ends = attrs.get("starts"), attrs.get("ends")
        axes, steps = attrs.get("axes"), None
    else:
        params = (ins + [""] * 4)[1:5]
        got = [imp.const_of(v) if v else None for v in params]
        if any(v and c is None for v, c in zip(params, got)) or (
            got[3] is not None and any(int(s) != 1 for s in np.ravel(got[3]))
        ):
            return _slice_inputs(imp, node, name, ins)  # run-time bounds, or steps
        starts, ends, axes, steps = got
    if starts is None or ends is None:
        return None
    starts, ends = [int(s) for s in np.ravel(starts)], [int(e) for e in np.ravel(ends)]
    axes = [int(a) for a in np.ravel(axes)] if axes is not None else list(range(len(starts)))
    y = ins[0]
    for i, (axis, s, e) in enumerate(zip(axes, starts, ends)):
        y = imp.g.op(
            "Slice",
            [y],
            name if i == len(axes) - 1 else f"{name}/{i}",
            axis=axis,
            start=max(-_BOUND, min(s, _BOUND)),
            end=max(-_BOUND, min(e, _BOUND)),
        )
    return y


def _slice_inputs(imp: Importer, node: Any, name: str, ins: list[str]) -> str | None:
    """The native Slice's input form (starts, ends[, axes[, steps]], read by value when planning):
    run-time bounds and any steps."""
    params = (ins + [""] * 4)[1:5]
    if params[2] == "" and params[3]:  # steps without axes: the axes are 0 .. n-1
        n = imp.shapes.get(node.input[1])
        if n is None or len(n) != 1 or n[0] < 0:
            return None
        params[2] = imp.g.const(np.arange(n[0], dtype=np.int64), name + "/axes")
    return imp.g.op("Slice", [ins[0], *[p for p in params if p]], name)


def _split(
    imp: Importer, node: Any, name: str, ins: list[str], attrs: dict[str, Any]
) -> list[str] | None:
    axis = int(attrs.get("axis", 0))
    split_input = param_input(imp, ins, 1)
    if split_input is not None:  # sizes read by value when planning: one native Split per piece
        return [imp.g.op("Split", [ins[0], split_input], f"{name}/{i}", axis=axis, index=i)
                for i in range(len(node.output))]
    if len(ins) > 1 and ins[1]:
        sizes = imp.const_of(ins[1])
        if sizes is None:
            return None
        split = [int(s) for s in np.ravel(sizes)]
    elif "split" in attrs:
        split = [int(s) for s in attrs["split"]]
    else:  # equal parts (the last one smaller with num_outputs, opset 18)
        shape = imp.shapes.get(node.input[0])
        n = int(attrs.get("num_outputs", len(node.output)))
        if shape is None or shape[axis] < 0:  # equal parts of a size known when planning
            return [imp.g.op("Split", ins[:1], f"{name}/{i}", axis=axis, parts=n, index=i)
                    for i in range(len(node.output))]
        part = -(-shape[axis] // n)
        split = [min(part, shape[axis] - i * part) for i in range(n)]
    outs, start = [], 0
    for i, size in enumerate(split):
        outs.append(
            imp.g.op("Slice", ins[:1], f"{name}/{i}", axis=axis, start=start, end=start + size)
        )
        start += size
    return outs


def _flatten(imp: Importer, node: Any, name: str, ins: list[str], attrs: dict[str, Any]) -> str:
    return imp.g.op("Flatten", ins[:1], name, axis=int(attrs.get("axis", 1)))


def _shape(
    imp: Importer, node: Any, name: str, ins: list[str], attrs: dict[str, Any]
) -> str | None:
    shape = imp.shapes.get(node.input[0])
    if shape is None or (-1 in shape and imp.static_inputs):
        # Sizes onnx's inference left open: the native Shape op computes them (when planning,
        # where they are parameters of other ops).
        bounds = {k: int(attrs[k]) for k in ("start", "end") if k in attrs}
        return imp.g.op("Shape", ins[:1], name, **bounds)
    shape = shape[attrs.get("start", 0) : attrs.get("end", len(shape))]
    out = imp.g.const(np.array(shape, np.int64), name)
    if -1 in shape:
        imp.symbolic.add(out)
    return out


def _size(imp: Importer, node: Any, name: str, ins: list[str], attrs: dict[str, Any]) -> str | None:
    """The element count, a constant when every dimension is known."""
    shape = imp.shapes.get(node.input[0])
    if shape is None or any(d < 0 for d in shape):
        return None
    return imp.g.const(np.array(np.prod(shape, dtype=np.int64), np.int64), name)


def _reshape(
    imp: Importer, node: Any, name: str, ins: list[str], attrs: dict[str, Any]
) -> str | None:
    shape = attrs.get("shape") if imp.opset < 5 else imp.const_of(ins[1])
    shape_input = param_input(imp, ins, 1) if imp.opset >= 5 else None
    if shape_input is not None:  # read by value when planning
        return imp.g.op("Reshape", [ins[0], shape_input], name,
                        allowzero=bool(attrs.get("allowzero", 0)))
    if shape is None:
        return None
    shape = [int(d) for d in np.ravel(shape)]
    if imp.opset >= 5 and ins[1] in imp.symbolic:
        shape = batch_copied(shape, imp.shapes.get(node.input[0]), imp.batch_only)
        if shape.count(-1) > 1 and not imp.batch_only:
            weights = {i.name for i in imp.model.graph.initializer}
            free = [(vi.name, shape_of(vi.type) or []) for vi in imp.model.graph.input
                    if vi.name not in weights]
            raise InputShapeUnknownError(
                f"'{imp.path}': node '{name}' reshapes to {shape}, sizes computed at run time from "
                f"input(s) {', '.join(f'{n} {s}' for n, s in free)}, which leave dimensions beyond "
                f"the batch free; pass {input_shapes_hint(free)} with the sizes the model was "
                "trained for"
            )
    if shape.count(-1) > 1:
        return None
    if attrs.get("allowzero", 0) and 0 in shape:
        return imp.g.op("Reshape", ins[:1], name, shape=shape, allowzero=True)
    return imp.g.op("Reshape", ins[:1], name, shape=shape)


def _concat(imp: Importer, node: Any, name: str, ins: list[str], attrs: dict[str, Any]) -> str:
    return imp.g.op("Concat", [i for i in ins if i], name, axis=int(attrs.get("axis", 1)))


def _transpose(
    imp: Importer, node: Any, name: str, ins: list[str], attrs: dict[str, Any]
) -> str | None:
    perm = attrs.get("perm")
    if perm is None:
        rank = imp.rank(node.input[0])
        if rank is None:
            return None
        perm = list(range(rank))[::-1]
    return imp.g.op("Transpose", ins[:1], name, perm=[int(p) for p in perm])


def _squeeze(
    imp: Importer, node: Any, name: str, ins: list[str], attrs: dict[str, Any]
) -> str | None:
    axes_input = param_input(imp, ins, 1)
    if axes_input is not None:  # read by value when planning
        return imp.g.op("Squeeze", [ins[0], axes_input], name)
    axes = axes_of(imp, ins, attrs)
    return None if axes is None else imp.g.op("Squeeze", ins[:1], name, axes=axes)


def _unsqueeze(
    imp: Importer, node: Any, name: str, ins: list[str], attrs: dict[str, Any]
) -> str | None:
    axes_input = param_input(imp, ins, 1)
    if axes_input is not None:  # read by value when planning
        return imp.g.op("Unsqueeze", [ins[0], axes_input], name)
    axes, src = axes_of(imp, ins, attrs), imp.shapes.get(node.input[0])
    if not axes:
        return None
    if src is not None:
        rank = len(src) + len(axes)
        new = sorted(a % rank for a in axes)
        # Before the first new axis, 0 copies the input's dimension; after it, dims come from
        # inference. A Reshape the converter's passes know; with sizes inference left open, the
        # native Unsqueeze below sizes them when planning.
        shape = [
            1 if i in new else (0 if i < new[0] else src[i - sum(a < i for a in new)])
            for i in range(rank)
        ]
        if sum(d < 0 for d in shape) <= 1:
            return imp.g.op("Reshape", ins[:1], name, shape=shape)
    return imp.g.op("Unsqueeze", ins[:1], name, axes=axes)


def _pad(imp: Importer, node: Any, name: str, ins: list[str], attrs: dict[str, Any]) -> str | None:
    mode = attr_str(attrs.get("mode", "constant"))
    if mode not in ("constant", "reflect", "edge", "wrap"):
        return None
    if imp.opset < 11:
        pads, value = attrs.get("pads", attrs.get("paddings")), float(attrs.get("value", 0.0))
    else:
        pads = imp.const_of(ins[1])
        value = 0.0
        if param_input(imp, ins, 1) or param_input(imp, ins, 2) or (len(ins) > 3 and ins[3]):
            # Pads or axes read by value when planning, the value read per run.
            params = (ins + ["", ""])[1:4]
            if not params[1] and params[2]:
                params[1] = imp.g.const(np.zeros((), np.float32), name + "/value")
            return imp.g.op("Pad", [ins[0], *[p for p in params if p]], name, mode=mode)
        constant = imp.const_of(ins[2]) if len(ins) > 2 and ins[2] else None
        if constant is not None and constant.size:
            value = float(np.ravel(constant)[0])
    if pads is None:
        return None
    return imp.g.op(
        "Pad", ins[:1], name, pads=[int(p) for p in np.ravel(pads)], mode=mode, value=value
    )


def _identity(imp: Importer, node: Any, name: str, ins: list[str], attrs: dict[str, Any]) -> str:
    return ins[0]


def _constant(
    imp: Importer, node: Any, name: str, ins: list[str], attrs: dict[str, Any]
) -> str | None:
    if "value" in attrs:
        return imp.g.const(imp.onnx.numpy_helper.to_array(attrs["value"]), name)
    for key, dtype in (("value_float", np.float32), ("value_floats", np.float32),
                       ("value_int", np.int64), ("value_ints", np.int64)):
        if key in attrs:
            return imp.g.const(np.array(attrs[key], dtype), name)
    return None  # a string or sparse constant


def _expand(imp: Importer, node: Any, name: str, ins: list[str], attrs: dict[str, Any]) -> str | None:
    shape_input = param_input(imp, ins, 1)
    if shape_input is not None:  # read by value when planning
        return imp.g.op("Expand", ins[:2], name)
    shape = imp.const_of(ins[1])
    if shape is None or ins[1] in imp.symbolic:
        return None
    # x broadcast against zeros of the target shape (x's type): numpy's rules, as Expand's. A
    # bool x selects itself where a broadcast True holds.
    dims = [int(d) for d in np.ravel(shape)]
    dtype = imp.dtype_of(ins[0])
    if dtype == "bool":
        ones = imp.g.const(np.ones(dims, bool), name + "/ones")
        return imp.g.op("Logic", [ins[0], ones], name, fn="and")
    zeros = np.zeros(dims, dtype)
    return imp.g.op("Add", [ins[0], imp.g.const(zeros, name + "/zeros")], name)


def _depth_space(
    imp: Importer, node: Any, name: str, ins: list[str], attrs: dict[str, Any]
) -> str | None:
    """DepthToSpace (DCR and CRD) and SpaceToDepth as Reshape-Transpose-Reshape (NCHW)."""
    shape, b = imp.shapes.get(node.input[0]), int(attrs["blocksize"])
    if shape is None or len(shape) != 4 or any(d < 0 for d in shape[1:]):
        return None
    _, c, h, w = shape
    mode = attr_str(attrs.get("mode", "DCR"))
    if mode not in ("DCR", "CRD"):
        return imp.g.unsupported_op(name, f"{node.op_type} with mode '{mode}'")
    if node.op_type == "SpaceToDepth":
        perm = [0, 3, 5, 1, 2, 4] if mode == "DCR" else [0, 1, 3, 5, 2, 4]
        split, merged = [0, c, h // b, b, w // b, b], [0, c * b * b, h // b, w // b]
    elif mode == "DCR":
        split, perm, merged = [0, b, b, c // (b * b), h, w], [0, 3, 4, 1, 5, 2], [0, c // (b * b), h * b, w * b]
    else:
        split, perm, merged = [0, c // (b * b), b, b, h, w], [0, 1, 4, 2, 5, 3], [0, c // (b * b), h * b, w * b]
    y = imp.g.op("Reshape", ins[:1], name + "/split", shape=split)
    y = imp.g.op("Transpose", [y], name + "/perm", perm=perm)
    return imp.g.op("Reshape", [y], name, shape=merged)


def _tile(imp: Importer, node: Any, name: str, ins: list[str], attrs: dict[str, Any]) -> str | None:
    repeats = imp.const_of(ins[1])
    if repeats is None or any(int(r) < 1 or int(r) > 64 for r in np.ravel(repeats)):
        return imp.g.op("Tile", ins[:2], name)  # repeats read by value when planning
    y = ins[0]
    for axis, r in enumerate(int(r) for r in np.ravel(repeats)):
        if r > 1:
            y = imp.g.op("Concat", [y] * r, f"{name}/{axis}", axis=axis)
    return y if y != ins[0] else imp.g.op("Identity", [y], name)


def _constant_of_shape(
    imp: Importer, node: Any, name: str, ins: list[str], attrs: dict[str, Any]
) -> str | None:
    """A run-time shape (read by value when planning) filled with the one number of ``value``."""
    fill = imp.onnx.numpy_helper.to_array(attrs["value"]) if "value" in attrs else np.zeros(1, np.float32)
    if fill.size != 1 or fill.dtype.name not in ENGINE_DTYPES:
        return None
    return imp.g.op("ConstantOfShape", ins[:1], name, value=float(fill.ravel()[0]),
                    dtype=fill.dtype.name)


def _range(imp: Importer, node: Any, name: str, ins: list[str], attrs: dict[str, Any]) -> str:
    """start, limit and delta read by value when planning (they decide the length)."""
    return imp.g.op("Range", ins[:3], name)


HANDLERS: dict[str, Handler] = {
    "Constant": _constant,
    "Shape": _shape,
    "Size": _size,
    "Identity": _identity,
    "Dropout": _identity,
    "Slice": _slice,
    "Split": _split,
    "Flatten": _flatten,
    "Reshape": _reshape,
    "Concat": _concat,
    "Transpose": _transpose,
    "Squeeze": _squeeze,
    "Unsqueeze": _unsqueeze,
    "Pad": _pad,
    "Expand": _expand,
    "DepthToSpace": _depth_space,
    "SpaceToDepth": _depth_space,
    "Tile": _tile,
    "ConstantOfShape": _constant_of_shape,
    "Range": _range,
}
