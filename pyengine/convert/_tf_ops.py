"""TensorFlow ops of issue 25's model families (segmentation decoders, detector necks, keyword
spotting, small transformers): image resizes, the transposed convolution (Conv2DBackpropInput),
StridedSlice/Pack/Unpack/Split on run-time tensors, Gather, reductions, batch matmuls and
elementwise math. Registered by tensorflow.py.

Every spatial op keeps TensorFlow's layout: NHWC resizes work on axes 1 and 2; the transposed
convolution, which the engine runs in NCHW, is wrapped in two Transposes for NHWC data.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

from pyengine.convert import _einsum, _slicing
from pyengine.convert._tf_attrs import _attr, _layout, _spatial


def resize_attrs(bilinear: bool, align: bool, half: bool, in_hw: Sequence[int],
                 out_hw: Sequence[int]) -> dict[str, Any] | str:
    """The native Resize attributes (NHWC: axes 1 and 2) of TensorFlow's (and TFLite's)
    ResizeBilinear / ResizeNearestNeighbor with their coordinate rules (half_pixel_centers,
    align_corners or neither); or why there are none."""
    if align and half:
        return "align_corners and half_pixel_centers"
    coord = "align_corners" if align else ("half_pixel" if half else "asymmetric")
    if bilinear:
        mode, nearest = "linear", "floor"
    else:
        # TensorFlow's nearest: floor((x + 0.5) · in / out) with half-pixel centres, which is
        # round-half-up of the half_pixel coordinate; round(x · (in - 1) / (out - 1)) aligned.
        mode, nearest = "nearest", "round_prefer_ceil" if (align or half) else "floor"
    (h, w), (oh, ow) = in_hw, out_hw
    return {"sizes": [0, oh, ow, 0], "scales": [1.0, oh / h, ow / w, 1.0], "mode": mode,
            "coordinate_transformation_mode": coord, "nearest_mode": nearest}


def resize(imp: Any, n: Any) -> str | None:
    """ResizeBilinear / ResizeNearestNeighbor (NHWC) with a constant size (which may come from
    another tensor's shape, as decoders write ``tf.image.resize(x, tf.shape(skip)[1:3])``)."""
    size = imp.const(n, 1)
    shape = imp.static_shape(n.input[0])
    if size is None or shape is None or len(shape) != 4 or any(d < 0 for d in shape[1:3]):
        return None
    out_hw = [int(v) for v in np.ravel(size)]
    if len(out_hw) != 2 or any(d <= 0 for d in out_hw):
        return None
    attrs = resize_attrs(n.op == "ResizeBilinear", bool(_attr(n, "align_corners", False)),
                         bool(_attr(n, "half_pixel_centers", False)), shape[1:3], out_hw)
    if isinstance(attrs, str):
        return imp.g.unsupported_op(n.name, f"{n.op} with {attrs}")
    return imp.g.op("Resize", [imp.ref(n.input[0])], n.name, **attrs)


def transpose_conv_pads(in_hw: Sequence[int], out_hw: Sequence[int], kernel: Sequence[int],
                        strides: Sequence[int], dilations: Sequence[int], padding: str,
                        explicit: Sequence[int] | None = None) -> tuple[list[int], list[int]] | None:
    """(pads [top, left, bottom, right], output_padding) of a transposed convolution from
    ``in_hw`` to the requested ``out_hw`` with TensorFlow's SAME, VALID or EXPLICIT padding
    (``explicit``: [top, bottom, left, right]); None when no native geometry gives that size."""
    pads, out_pad = [0, 0, 0, 0], [0, 0]
    for i in range(2):
        natural = (in_hw[i] - 1) * strides[i] + (kernel[i] - 1) * dilations[i] + 1
        if padding == "EXPLICIT" and explicit is not None:
            lo, hi = explicit[2 * i], explicit[2 * i + 1]
        else:
            total = natural - out_hw[i]
            lo = max(total, 0) // 2 if padding == "SAME" else 0
            hi = total - lo
        if hi < 0:  # the requested size is past the natural one: the extra rows are output padding
            out_pad[i], hi = -hi, 0
        pads[i], pads[2 + i] = lo, hi
        if natural - lo - hi + out_pad[i] != out_hw[i] or out_pad[i] >= max(strides[i], dilations[i]):
            return None
    return pads, out_pad


def conv_transpose_nhwc(g: Any, x: str, wt: np.ndarray, bias: str | None, name: str,
                        **attrs: Any) -> str:
    """ConvTranspose2D (which runs NCHW, weights [in, out, kh, kw]) on NHWC ``x``, between two
    Transposes."""
    xt = g.op("Transpose", [x], name + "/nchw", perm=[0, 3, 1, 2])
    ins = [xt, g.const(np.ascontiguousarray(wt), name + "/w")] + ([bias] if bias else [])
    y = g.op("ConvTranspose2D", ins, name + "/convt", **attrs)
    return g.op("Transpose", [y], name, perm=[0, 2, 3, 1])


def conv2d_backprop_input(imp: Any, n: Any) -> str | None:
    """Conv2DBackpropInput (what Conv2DTranspose freezes to): input_sizes (constant; its batch
    may be the run-time one, only its spatial sizes are read), filter [kh, kw, out_channels,
    in_channels], data; SAME, VALID and EXPLICIT padding."""
    sizes, w = imp.const(n, 0), imp.const(n, 1)
    shape = imp.static_shape(n.input[2])
    if sizes is None or w is None or shape is None or len(shape) != 4 or imp.ref(n.input[2]) in imp.symbolic:
        return None
    nchw = _layout(n) == "NCHW"
    out_hw = [int(v) for v in (np.ravel(sizes)[2:4] if nchw else np.ravel(sizes)[1:3])]
    in_hw = shape[2:4] if nchw else shape[1:3]
    if any(d < 0 for d in in_hw):
        return None
    strides = _spatial(n, "strides", [1, 1])
    dilations = _spatial(n, "dilations", [1, 1])
    pad = _attr(n, "padding", "VALID")
    e = _attr(n, "explicit_paddings") or [0] * 8
    geometry = transpose_conv_pads(in_hw, out_hw, list(w.shape[:2]), strides, dilations, pad,
                                   e[4:8] if nchw else e[2:6])
    if geometry is None:
        return imp.g.unsupported_op(
            n.name, f"Conv2DBackpropInput to size {out_hw} from {in_hw} with padding {pad}")
    pads, out_pad = geometry
    wt = w.transpose(3, 2, 0, 1)  # [in, out, kh, kw]: ONNX's layout
    attrs = {"strides": strides, "dilations": dilations, "pads": pads, "output_padding": out_pad,
             "groups": 1}
    x = imp.ref(n.input[2])
    if not nchw:
        return conv_transpose_nhwc(imp.g, x, wt, None, n.name, **attrs)
    return imp.g.op("ConvTranspose2D", [x, imp.g.const(np.ascontiguousarray(wt), n.name + "/w")],
                    n.name, **attrs)


def _shape_of(imp: Any, n: Any, i: int) -> list[int]:
    """Input ``i``'s shape (-1 where only the run time knows it)."""
    v = imp.ref(n.input[i])
    if imp.g.is_const(v):
        return list(imp.g.value(v).shape)
    shape = imp.static_shape(n.input[i])
    if shape is None:
        raise ValueError(f"input {n.input[i]} has no known rank")
    return shape


def strided_slice(imp: Any, n: Any) -> str | None:
    """StridedSlice with constant bounds, on constants (shape plumbing) and run-time tensors."""
    begin, end, strides = imp.const(n, 1), imp.const(n, 2), imp.const(n, 3)
    if begin is None or end is None or strides is None:
        return None
    index = _slicing.strided_index(
        np.ravel(begin).tolist(), np.ravel(end).tolist(), np.ravel(strides).tolist(),
        len(_shape_of(imp, n, 0)), *(int(_attr(n, k, 0)) for k in (
            "begin_mask", "end_mask", "ellipsis_mask", "new_axis_mask", "shrink_axis_mask")))
    if isinstance(index, str):
        raise ValueError(index)
    return _slicing.slice_value(imp.g, imp.ref(n.input[0]), _shape_of(imp, n, 0), index, n.name)


def pack(imp: Any, n: Any) -> str | None:
    """Pack (tf.stack): constants fold (a run-time shape's pieces stay shape plumbing);
    run-time tensors are stacked with Reshape and Concat."""
    ins = [i for i in n.input if not i.startswith("^")]
    values = [imp.ref(i) for i in ins]
    if not all(imp.g.is_const(v) for v in values) and any(v in imp.symbolic for v in values):
        return None  # a run-time size mixed with run-time data
    shapes = [_shape_of(imp, n, i) for i in range(len(ins))]
    return _slicing.pack(imp.g, values, shapes, int(_attr(n, "axis", 0)), n.name)


def unpack(imp: Any, n: Any) -> list[str]:
    """Unpack (tf.unstack): output k is the k-th slice along ``axis``."""
    return _slicing.unpack(imp.g, imp.ref(n.input[0]), _shape_of(imp, n, 0),
                           int(_attr(n, "axis", 0)), int(_attr(n, "num", 1)), n.name)


def split(imp: Any, n: Any) -> list[str] | None:
    """Split (axis, value; num_split equal parts) and SplitV (value, size_splits, axis)."""
    if n.op == "Split":
        axis_c, xi, sizes = imp.const(n, 0), 1, None
    else:
        axis_c, xi, sizes = imp.const(n, 2), 0, imp.const(n, 1)
        if sizes is None:
            return None
    if axis_c is None:
        return None
    shape = _shape_of(imp, n, xi)
    axis = int(np.ravel(axis_c)[0]) % len(shape)
    count = int(_attr(n, "num_split", 1))
    parts = [int(v) for v in np.ravel(sizes)] if sizes is not None else [-1] * count
    if -1 in parts and shape[axis] < 0:
        raise ValueError(f"split of axis {axis}, whose size is known only at run time")
    if sizes is None:
        parts = [shape[axis] // count] * count
    elif -1 in parts:
        parts[parts.index(-1)] = shape[axis] - (sum(parts) + 1)
    outs, start = [], 0
    for k, size in enumerate(parts):
        outs.append(imp.g.op("Slice", [imp.ref(n.input[xi])], n.name if k == 0 else f"{n.name}:{k}",
                             axis=axis, start=start, end=start + size))
        start += size
    return outs


def expand_dims(imp: Any, n: Any) -> str | None:
    axis = imp.const(n, 1)
    if axis is None:
        return None
    shape = _shape_of(imp, n, 0)
    a = int(np.ravel(axis)[0])
    a = a + len(shape) + 1 if a < 0 else a
    return _slicing.reshape_to(imp.g, imp.ref(n.input[0]), shape, [*shape[:a], 1, *shape[a:]], n.name)


def gather(imp: Any, n: Any) -> str | None:
    """GatherV2 (what tf.gather and Embedding freeze to) with a constant axis, batch_dims 0."""
    axis = imp.const(n, 2)
    if axis is None or int(_attr(n, "batch_dims", 0)):
        return None
    return imp.g.op("Gather", [imp.ref(n.input[0]), imp.ref(n.input[1])], n.name,
                    axis=int(np.ravel(axis)[0]))


_FOLD_REDUCE: dict[str, Callable[..., Any]] = {"Sum": np.sum, "Max": np.max, "Min": np.min,
                                               "Prod": np.prod}
_REDUCE_KIND = {"Sum": "sum", "Max": "max", "Min": "min", "Prod": "prod"}


def reduce(imp: Any, n: Any) -> str | None:
    """Sum/Max/Min/Prod with constant axes; Prod of a run-time shape is shape plumbing."""
    axes = imp.const(n, 1)
    if axes is None:
        return None
    keep = bool(_attr(n, "keep_dims", False))
    x = imp.ref(n.input[0])
    axes_list = [int(a) for a in np.ravel(axes)]
    if n.op == "Prod" and x in imp.symbolic:
        return imp.g.const(_slicing.symbolic_prod(imp.g.value(x), keep), n.name)
    if imp.g.is_const(x):
        folded = _FOLD_REDUCE[n.op](imp.g.value(x), axis=tuple(axes_list), keepdims=keep)
        return imp.g.const(np.asarray(folded).astype(imp.g.value(x).dtype), n.name)
    return imp.g.op("Reduce", [x], n.name, kind=_REDUCE_KIND[n.op], axes=axes_list, keepdims=keep)


def batch_matmul(imp: Any, n: Any) -> str:
    """BatchMatMul(V2/V3): adj_x / adj_y as Transposes of the last two axes; constant 2-D
    weights take the Dense path."""
    a, b = imp.ref(n.input[0]), imp.ref(n.input[1])
    ra, rb = len(_shape_of(imp, n, 0)), len(_shape_of(imp, n, 1))
    if _attr(n, "adj_x", False):
        a = imp.g.op("Transpose", [a], n.name + "/adj_x", perm=[*range(ra - 2), ra - 1, ra - 2])
    if imp.g.is_const(b) and rb == 2:
        return imp.g.op("Dense", [a, b], n.name, transpose_b=bool(_attr(n, "adj_y", False)))
    if _attr(n, "adj_y", False):
        b = imp.g.op("Transpose", [b], n.name + "/adj_y", perm=[*range(rb - 2), rb - 1, rb - 2])
    return imp.g.op("BatchMatMul", [a, b], n.name)


_FOLD_MATH: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "rsqrt": lambda x: 1 / np.sqrt(x), "sqrt": np.sqrt, "square": np.square, "exp": np.exp,
    "log": np.log, "abs": np.abs, "neg": np.negative, "floor": np.floor, "ceil": np.ceil,
    "reciprocal": lambda x: 1 / x,
}


def _math(fn: str, **attrs: Any) -> Callable[[Any, Any], str]:
    def handle(imp: Any, n: Any) -> str:
        x = imp.ref(n.input[0])
        if imp.g.is_const(x) and fn in _FOLD_MATH:  # Keras' unfused batch norm: Rsqrt(var + eps)
            v = imp.g.value(x)
            return imp.g.const(np.asarray(_FOLD_MATH[fn](v)).astype(v.dtype), n.name)
        if fn == "rsqrt":
            s = imp.g.op("Math", [x], n.name + "/sqrt", fn="sqrt")
            return imp.g.op("Math", [s], n.name, fn="reciprocal")
        if fn == "square":
            return imp.g.op("Mul", [x, x], n.name)
        if fn == "erfc":  # 1 - erf(x): GELU written with erfc
            e = imp.g.op("Math", [x], n.name + "/erf", fn="erf")
            one = imp.g.const(np.ones((), imp.g.value(x).dtype if imp.g.is_const(x) else np.float32),
                              n.name + "/one")
            return imp.g.op("Sub", [one, e], n.name)
        return imp.g.op("Math", [x], n.name, fn=fn, **attrs)

    return handle


def _binary_math(fn: str) -> Callable[[Any, Any], str]:
    def handle(imp: Any, n: Any) -> str:
        a, b = imp.ref(n.input[0]), imp.ref(n.input[1])
        if fn == "squared_difference":
            d = imp.g.op("Sub", [a, b], n.name + "/diff")
            return imp.g.op("Mul", [d, d], n.name)
        op = "Compare" if fn in ("less", "greater", "equal", "less_equal", "greater_equal") else "BinaryMath"
        return imp.g.op(op, [a, b], n.name, fn=fn)

    return handle


def select(imp: Any, n: Any) -> str:
    return imp.g.op("Where", [imp.ref(i) for i in n.input[:3]], n.name)


def tile(imp: Any, n: Any) -> str | None:
    repeats = imp.const(n, 1)
    if repeats is None:
        return None
    x = y = imp.ref(n.input[0])
    for axis, r in enumerate(int(v) for v in np.ravel(repeats)):
        if r > 1:
            y = imp.g.op("Concat", [y] * r, f"{n.name}/{axis}", axis=axis)
    return y if y != x else imp.g.op("Identity", [y], n.name)


def arg_reduce(imp: Any, n: Any) -> str | None:
    axis = imp.const(n, 1)
    if axis is None:
        return None
    y = imp.g.op("ArgReduce", [imp.ref(n.input[0])], n.name + "/i64",
                 kind="max" if n.op == "ArgMax" else "min", axis=int(np.ravel(axis)[0]),
                 keepdims=False)
    to = imp.tf.as_dtype(_attr(n, "output_type", imp.tf.int64.as_datatype_enum)).name
    return y if to == "int64" else imp.g.op("Cast", [y], n.name, to=to)


def einsum(imp: Any, n: Any) -> str:
    """Einsum (Keras' attention and EinsumDense freeze to it) through the shared lowering; one
    size may be the run-time batch."""
    ins = [i for i in n.input if not i.startswith("^")]
    equation = str(_attr(n, "equation", ""))
    try:
        return _einsum.einsum(imp.g, [imp.ref(i) for i in ins],
                              [_shape_of(imp, n, k) for k in range(len(ins))], equation, n.name)
    except ValueError as why:
        raise ValueError(f"equation {equation!r} with {why}") from None


HANDLERS: dict[str, Callable[[Any, Any], str | list[str] | None]] = {
    "StridedSlice": strided_slice,
    "Pack": pack,
    "Unpack": unpack,
    "Split": split,
    "SplitV": split,
    "ExpandDims": expand_dims,
    "GatherV2": gather,
    "Sum": reduce,
    "Max": reduce,
    "Min": reduce,
    "Prod": reduce,
    "BatchMatMul": batch_matmul,
    "BatchMatMulV2": batch_matmul,
    "BatchMatMulV3": batch_matmul,
    "Rsqrt": _math("rsqrt"),
    "Sqrt": _math("sqrt"),
    "Square": _math("square"),
    "Exp": _math("exp"),
    "Log": _math("log"),
    "Abs": _math("abs"),
    "Neg": _math("neg"),
    "Floor": _math("floor"),
    "Ceil": _math("ceil"),
    "Erf": _math("erf"),
    "Erfc": _math("erfc"),
    "Softplus": _math("softplus"),
    "Elu": _math("elu", alpha=1.0),
    "Selu": _math("selu", alpha=1.6732632423543772, beta=1.0507009873554805),
    "Reciprocal": _math("reciprocal"),
    "Maximum": _binary_math("max"),
    "Minimum": _binary_math("min"),
    "Pow": _binary_math("pow"),
    "SquaredDifference": _binary_math("squared_difference"),
    "Less": _binary_math("less"),
    "Greater": _binary_math("greater"),
    "Equal": _binary_math("equal"),
    "LessEqual": _binary_math("less_equal"),
    "GreaterEqual": _binary_math("greater_equal"),
    "Select": select,
    "SelectV2": select,
    "Tile": tile,
    "Einsum": einsum,
    "ArgMax": arg_reduce,
    "ArgMin": arg_reduce,
    "ResizeBilinear": resize,
    "ResizeNearestNeighbor": resize,
    "Conv2DBackpropInput": conv2d_backprop_input,
}
