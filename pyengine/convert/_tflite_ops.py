"""TFLite builtin operators -> native ops (the table :mod:`pyengine.convert.tflite` walks).

A handler takes the importer and the operator and returns the value of its output (a list for
several), or None when the native engine has no form for it; a ValueError's message is the
reason, which the importer reports with the operator. TFLite keeps NHWC, so do the native ops.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from pyengine.convert import _slicing
from pyengine.convert._slicing import symbolic_prod
from pyengine.convert._tf_ops import conv_transpose_nhwc, resize_attrs, transpose_conv_pads
from pyengine.convert._tflite_read import Operator

if TYPE_CHECKING:  # the importer calls these handlers with itself
    from pyengine.convert.tflite import Importer

Handler = Callable[["Importer", Operator], "str | list[str] | None"]

_PADDING = {0: "SAME", 1: "VALID"}



def _act(imp: Importer, op: Operator, y: str) -> str:
    """The operator's fused activation after ``y`` (the graph fuses it into a Conv2D/Dense)."""
    act = op.options.get("fused_activation_function", 0)
    name = imp.name(op)
    if act == 0:
        return y
    if act == 1:
        return imp.g.op("Relu", [y], name + "/relu")
    if act == 2:
        return imp.g.op("Clip", [y], name + "/clip", min=-1.0, max=1.0)
    if act == 3:
        return imp.g.op("Relu6", [y], name + "/relu6")
    if act == 4:
        return imp.g.op("Tanh", [y], name + "/tanh")
    raise ValueError(f"fused activation {act} (SIGN_BIT) has no native form")


def _padding(op: Operator) -> str:
    pad = _PADDING.get(op.options.get("padding", 0))
    if pad is None:
        raise ValueError(f"padding {op.options.get('padding')}")
    return pad


def _bias(imp: Importer, op: Operator, i: int) -> list[str]:
    return [imp.x(op, i)] if imp.has(op, i) else []


def _conv(imp: Importer, op: Operator) -> str | None:
    w = imp.const(op, 1)
    if w is None:
        return None
    o = op.options
    c = imp.shape(op, 0)[3]
    if op.op == "DEPTHWISE_CONV_2D":
        _, kh, kw, cm = w.shape
        if c < 0:
            raise ValueError("input channels known only at run time")
        wt, groups = w.reshape(kh, kw, cm).transpose(2, 0, 1)[:, None], c
    else:
        wt = w.transpose(0, 3, 1, 2)  # [O, kh, kw, I] -> OIHW
        groups = c // w.shape[3] if c > 0 and w.shape[3] and c % w.shape[3] == 0 else 1
    y = imp.g.op("Conv2D", [imp.x(op, 0), imp.g.const(np.ascontiguousarray(wt), imp.name(op) + "/w"),
                            *_bias(imp, op, 2)], imp.name(op), layout="NHWC",
                 strides=[o.get("stride_h", 1), o.get("stride_w", 1)],
                 dilations=[o.get("dilation_h_factor", 1), o.get("dilation_w_factor", 1)],
                 padding=_padding(op), groups=groups)
    return _act(imp, op, y)


def _fully_connected(imp: Importer, op: Operator) -> str | None:
    if op.options.get("weights_format", 0) != 0:
        raise ValueError(f"weights_format {op.options['weights_format']} (shuffled int8)")
    x, shape = imp.x(op, 0), imp.shape(op, 0)
    k = imp.shape(op, 1)[1]
    if len(shape) != 2 and not op.options.get("keep_num_dims", False):
        x = imp.g.op("Reshape", [x], imp.name(op) + "/2d", shape=[-1, k])
    y = imp.g.op("Dense", [x, imp.x(op, 1), *_bias(imp, op, 2)], imp.name(op), transpose_b=True)
    return _act(imp, op, y)


def _binary(native: str) -> Handler:
    def handle(imp: Importer, op: Operator) -> str:
        return _act(imp, op, imp.g.op(native, [imp.x(op, 0), imp.x(op, 1)], imp.name(op)))

    return handle


def _binary_math(fn: str) -> Handler:
    def handle(imp: Importer, op: Operator) -> str:
        return imp.g.op("BinaryMath", [imp.x(op, 0), imp.x(op, 1)], imp.name(op), fn=fn)

    return handle


def _unary(native: str, **attrs: Any) -> Handler:
    def handle(imp: Importer, op: Operator) -> str:
        extra = dict(attrs)
        if op.op == "LEAKY_RELU":
            extra["alpha"] = float(op.options.get("alpha", 0.2))
        if op.op == "GELU":
            extra["fn"] = "gelu_tanh" if op.options.get("approximate") else "gelu"
        return imp.g.op(native, [imp.x(op, 0)], imp.name(op), **extra)

    return handle


def _rsqrt(imp: Importer, op: Operator) -> str:
    s = imp.g.op("Math", [imp.x(op, 0)], imp.name(op) + "/sqrt", fn="sqrt")
    return imp.g.op("Math", [s], imp.name(op), fn="reciprocal")


def _square(imp: Importer, op: Operator) -> str:
    return imp.g.op("Mul", [imp.x(op, 0), imp.x(op, 0)], imp.name(op))


def _squared_difference(imp: Importer, op: Operator) -> str:
    d = imp.g.op("Sub", [imp.x(op, 0), imp.x(op, 1)], imp.name(op) + "/diff")
    return imp.g.op("Mul", [d, d], imp.name(op))


def _pool(imp: Importer, op: Operator) -> str:
    o = op.options
    y = imp.g.op("MaxPool" if op.op == "MAX_POOL_2D" else "AvgPool", [imp.x(op, 0)], imp.name(op),
                 layout="NHWC", kernel=[o.get("filter_height", 1), o.get("filter_width", 1)],
                 strides=[o.get("stride_h", 1), o.get("stride_w", 1)], padding=_padding(op))
    return _act(imp, op, y)


_FOLD_REDUCE: dict[str, Callable[..., Any]] = {
    "MEAN": np.mean, "SUM": np.sum, "REDUCE_MAX": np.max, "REDUCE_MIN": np.min, "REDUCE_PROD": np.prod}
_REDUCE = {"SUM": "sum", "REDUCE_MAX": "max", "REDUCE_MIN": "min", "REDUCE_PROD": "prod"}


def _reduce(imp: Importer, op: Operator) -> str | None:
    axes = imp.const(op, 1)
    if axes is None:
        return None
    axes_list = [int(a) for a in np.ravel(axes)]
    keep = bool(op.options.get("keep_dims", False))
    if op.op == "REDUCE_PROD" and imp.x(op, 0) in imp.symbolic:
        return imp.g.const(symbolic_prod(imp.g.value(imp.x(op, 0)), keep), imp.name(op))
    x = imp.const(op, 0)
    if x is not None:  # shape arithmetic (Tensordot's Prod of static sizes) folds
        folded = _FOLD_REDUCE[op.op](x, axis=tuple(axes_list), keepdims=keep)
        return imp.g.const(np.asarray(folded).astype(x.dtype), imp.name(op))
    if op.op == "MEAN":
        return imp.g.op("Mean", [imp.x(op, 0)], imp.name(op), axes=axes_list, keepdims=keep)
    return imp.g.op("Reduce", [imp.x(op, 0)], imp.name(op), kind=_REDUCE[op.op], axes=axes_list,
                    keepdims=keep)


def _reshape(imp: Importer, op: Operator) -> str | None:
    target = imp.const(op, 1) if imp.has(op, 1) else None
    if target is None:
        if not imp.has(op, 1) and op.options.get("new_shape"):
            target = np.array(op.options["new_shape"])
        elif imp.has(op, 1):
            return None  # a shape computed at run time
        else:
            target = np.array(imp.out_shape(op))
    shape = [int(d) for d in np.ravel(target)]
    x = imp.x(op, 0)
    if imp.g.is_const(x):
        return imp.g.const(imp.g.value(x).reshape(shape), imp.name(op))
    if imp.has(op, 1) and imp.x(op, 1) in imp.symbolic:
        if 0 in shape:  # TFLite's 0 is an empty dimension; the native 0 copies the input's
            return None
        source = imp.shape(op, 0)
        producer = imp.producers.get(op.inputs[0])
        if [-1 if d == _slicing.BATCH_MULTIPLE else d for d in shape].count(-1) > 1 and (
            producer is not None and producer.op in ("RESHAPE", "FULLY_CONNECTED")
        ):
            # The batch would be copied from the first size of a reshaped tensor, which may be
            # the batch times another size (Tensordot's [B * T, N]): never guessed.
            raise ValueError(f"reshape of a {producer.op} result to {shape}, sizes known only at "
                             "run time")
        shape = _slicing.runtime_reshape_target(shape, source)
    if 0 in shape[1:] or shape.count(-1) > 1:
        return None
    return imp.g.op("Reshape", [x], imp.name(op), shape=shape)


def _softmax(imp: Importer, op: Operator) -> str:
    x, beta = imp.x(op, 0), float(op.options.get("beta", 1.0))
    if beta != 1.0:
        x = imp.g.op("Mul", [x, imp.g.const(np.float32(beta), imp.name(op) + "/beta")],
                     imp.name(op) + "/scaled")
    return imp.g.op("Softmax", [x], imp.name(op), axis=-1)


def _log_softmax(imp: Importer, op: Operator) -> str:
    return imp.g.op("LogSoftmax", [imp.x(op, 0)], imp.name(op), axis=-1)


def _concat(imp: Importer, op: Operator) -> str:
    xs = [imp.x(op, i) for i in range(len(op.inputs))]
    y = imp.g.op("Concat", xs, imp.name(op), axis=int(op.options.get("axis", 0)))
    return _act(imp, op, y)


def _pad(imp: Importer, op: Operator) -> str | None:
    pads = imp.const(op, 1)
    if pads is None:
        return None
    attrs: dict[str, Any] = {"pads": [int(p) for p in pads[:, 0]] + [int(p) for p in pads[:, 1]]}
    if op.op == "MIRROR_PAD":
        if op.options.get("mode", 0) != 0:
            raise ValueError("SYMMETRIC mirror padding (only REFLECT has a native form)")
        attrs["mode"] = "reflect"
    elif op.op == "PADV2" and imp.has(op, 2):
        v = imp.const(op, 2)
        if v is None:
            return None
        attrs["value"] = float(np.ravel(v)[0])
    return imp.g.op("Pad", [imp.x(op, 0)], imp.name(op), **attrs)


def _resize(imp: Importer, op: Operator) -> str | None:
    size, shape = imp.const(op, 1), imp.shape(op, 0)
    if size is None or len(shape) != 4 or min(shape[1:3]) < 0:
        return None
    attrs = resize_attrs(op.op == "RESIZE_BILINEAR", bool(op.options.get("align_corners")),
                         bool(op.options.get("half_pixel_centers")), shape[1:3],
                         [int(v) for v in np.ravel(size)])
    if isinstance(attrs, str):
        raise ValueError(attrs)
    return imp.g.op("Resize", [imp.x(op, 0)], imp.name(op), **attrs)


def _transpose(imp: Importer, op: Operator) -> str | None:
    perm = imp.const(op, 1)
    if perm is None:
        return None
    return imp.g.op("Transpose", [imp.x(op, 0)], imp.name(op), perm=[int(p) for p in perm])


def _swap_last(imp: Importer, x: str, rank: int, name: str) -> str:
    perm = list(range(rank - 2)) + [rank - 1, rank - 2]
    return imp.g.op("Transpose", [x], name, perm=perm)


def _batch_matmul(imp: Importer, op: Operator) -> str:
    a, b = imp.x(op, 0), imp.x(op, 1)
    ra, rb = len(imp.shape(op, 0)), len(imp.shape(op, 1))
    adj_x, adj_y = bool(op.options.get("adj_x")), bool(op.options.get("adj_y"))
    if adj_x:
        a = _swap_last(imp, a, ra, imp.name(op) + "/adj_x")
    if imp.g.is_const(b) and rb == 2:  # weights: the GEMM path with packed B
        return imp.g.op("Dense", [a, b], imp.name(op), transpose_b=adj_y)
    if adj_y:
        b = _swap_last(imp, b, rb, imp.name(op) + "/adj_y")
    return imp.g.op("BatchMatMul", [a, b], imp.name(op))


def _strided_slice(imp: Importer, op: Operator) -> str | None:
    begin, end, strides = imp.const(op, 1), imp.const(op, 2), imp.const(op, 3)
    if begin is None or end is None or strides is None:
        return None
    o = op.options
    begin, end = np.ravel(begin).astype(np.int64), np.ravel(end).astype(np.int64)
    if o.get("offset"):
        end = begin + end
    index = _slicing.strided_index(
        begin.tolist(), end.tolist(), np.ravel(strides).tolist(), len(imp.shape(op, 0)), o.get("begin_mask", 0),
        o.get("end_mask", 0), o.get("ellipsis_mask", 0), o.get("new_axis_mask", 0),
        o.get("shrink_axis_mask", 0))
    if isinstance(index, str):
        raise ValueError(index)
    return _slicing.slice_value(imp.g, imp.x(op, 0), imp.shape(op, 0), index, imp.name(op))


def _slice(imp: Importer, op: Operator) -> str | None:
    begin, size = imp.const(op, 1), imp.const(op, 2)
    if begin is None or size is None:
        return None
    index = [slice(int(b), None if int(s) < 0 else int(b) + int(s))
             for b, s in zip(np.ravel(begin), np.ravel(size))]
    return _slicing.slice_value(imp.g, imp.x(op, 0), imp.shape(op, 0), index, imp.name(op))


def _gather(imp: Importer, op: Operator) -> str:
    if op.options.get("batch_dims", 0):
        raise ValueError(f"batch_dims {op.options['batch_dims']}")
    return imp.g.op("Gather", [imp.x(op, 0), imp.x(op, 1)], imp.name(op),
                    axis=int(op.options.get("axis", 0)))


def _squeeze(imp: Importer, op: Operator) -> str:
    return imp.g.op("Squeeze", [imp.x(op, 0)], imp.name(op),
                    axes=list(op.options.get("squeeze_dims") or []))


def _expand_dims(imp: Importer, op: Operator) -> str | None:
    axis = imp.const(op, 1)
    if axis is None:
        return None
    shape = imp.shape(op, 0)
    a = int(np.ravel(axis)[0])
    a = a + len(shape) + 1 if a < 0 else a
    return _slicing.reshape_to(imp.g, imp.x(op, 0), shape, [*shape[:a], 1, *shape[a:]],
                               imp.name(op))


def _split(imp: Importer, op: Operator) -> list[str] | None:
    if op.op == "SPLIT":
        axis_c, xi = imp.const(op, 0), 1
        sizes = None
    else:
        axis_c, xi = imp.const(op, 2), 0
        sizes = imp.const(op, 1)
        if sizes is None:
            return None
    if axis_c is None:
        return None
    shape = imp.shape(op, xi)
    axis = int(np.ravel(axis_c)[0]) % len(shape)
    n = len(op.outputs)
    if sizes is None:
        if shape[axis] < 0:
            raise ValueError("split of an axis known only at run time")
        split = [shape[axis] // n] * n
    else:
        split = [int(s) for s in np.ravel(sizes)]
        if -1 in split:
            if shape[axis] < 0:
                raise ValueError("split of an axis known only at run time")
            split[split.index(-1)] = shape[axis] - (sum(split) + 1)
    outs, start = [], 0
    for k, size in enumerate(split):
        outs.append(imp.g.op("Slice", [imp.x(op, xi)], imp.name(op, k), axis=axis, start=start,
                             end=start + size))
        start += size
    return outs


def _pack(imp: Importer, op: Operator) -> str:
    xs = [imp.x(op, i) for i in range(len(op.inputs))]
    return _slicing.pack(imp.g, xs, [imp.shape(op, i) for i in range(len(op.inputs))],
                         int(op.options.get("axis", 0)), imp.name(op))


def _unpack(imp: Importer, op: Operator) -> list[str]:
    return _slicing.unpack(imp.g, imp.x(op, 0), imp.shape(op, 0), int(op.options.get("axis", 0)),
                           len(op.outputs), imp.name(op))


def _shape(imp: Importer, op: Operator) -> str:
    shape = imp.shape(op, 0)
    dtype = np.int64 if imp.sub.tensors[op.outputs[0]].dtype == "int64" else np.int32
    out = imp.g.const(np.array(shape, dtype), imp.name(op))
    if -1 in shape:
        imp.symbolic.add(out)
    return out


def _cast(imp: Importer, op: Operator) -> str:
    to = imp.sub.tensors[op.outputs[0]].dtype
    x = imp.x(op, 0)
    if imp.g.is_const(x):
        return imp.g.const(imp.g.value(x).astype(to), imp.name(op))
    return imp.g.op("Cast", [x], imp.name(op), to=to)


def _dequantize(imp: Importer, op: Operator) -> str | None:
    """float16 weights (post-training float16 quantization) become float32 constants."""
    w = imp.const(op, 0)
    if w is None or w.dtype != np.float16:
        return None
    return imp.g.const(w.astype(np.float32), imp.name(op))


def _transpose_conv(imp: Importer, op: Operator) -> str | None:
    out, w = imp.const(op, 0), imp.const(op, 1)
    shape = imp.shape(op, 2)
    if out is None or w is None or len(shape) != 4 or min(shape[1:3]) < 0:
        return None
    o = op.options
    strides = [o.get("stride_h", 1), o.get("stride_w", 1)]
    out_hw = [int(v) for v in np.ravel(out)[1:3]]
    geometry = transpose_conv_pads(shape[1:3], out_hw, list(w.shape[1:3]), strides, [1, 1],
                                   _padding(op))
    if geometry is None:
        raise ValueError(f"output size {out_hw} from {shape[1:3]} with padding {_padding(op)}")
    pads, out_pad = geometry
    bias = imp.x(op, 3) if imp.has(op, 3) else None
    y = conv_transpose_nhwc(imp.g, imp.x(op, 2), w.transpose(3, 0, 1, 2), bias, imp.name(op),
                            strides=strides, dilations=[1, 1], pads=pads,
                            output_padding=out_pad, groups=1)
    return _act(imp, op, y)


def _lrn(imp: Importer, op: Operator) -> str:
    size = 2 * int(op.options.get("radius", 5)) + 1
    return imp.g.op("LRN", [imp.x(op, 0)], imp.name(op), size=size,
                    alpha=float(op.options.get("alpha", 1.0)) * size,
                    beta=float(op.options.get("beta", 0.5)), bias=float(op.options.get("bias", 1.0)),
                    axis=-1)


def _arg(imp: Importer, op: Operator) -> str | None:
    axis = imp.const(op, 1)
    if axis is None:
        return None
    y = imp.g.op("ArgReduce", [imp.x(op, 0)], imp.name(op) + "/i64",
                 kind="max" if op.op == "ARG_MAX" else "min", axis=int(np.ravel(axis)[0]),
                 keepdims=False)
    to = imp.sub.tensors[op.outputs[0]].dtype
    return y if to == "int64" else imp.g.op("Cast", [y], imp.name(op), to=to)


def _depth_space(imp: Importer, op: Operator) -> str:
    """DEPTH_TO_SPACE / SPACE_TO_DEPTH in NHWC (TensorFlow's DCR order) as Reshape-Transpose-
    Reshape; sizes other than the batch must be known."""
    b = int(op.options.get("block_size", 2))
    n, h, w, c = imp.shape(op, 0)
    if min(h, w, c) < 0:
        raise ValueError("spatial sizes known only at run time")
    x, name = imp.x(op, 0), imp.name(op)
    if op.op == "DEPTH_TO_SPACE":
        y = imp.g.op("Reshape", [x], name + "/split", shape=[-1, h, w, b, b, c // (b * b)])
        y = imp.g.op("Transpose", [y], name + "/move", perm=[0, 1, 3, 2, 4, 5])
        return imp.g.op("Reshape", [y], name, shape=[-1, h * b, w * b, c // (b * b)])
    y = imp.g.op("Reshape", [x], name + "/split", shape=[-1, h // b, b, w // b, b, c])
    y = imp.g.op("Transpose", [y], name + "/move", perm=[0, 1, 3, 2, 4, 5])
    return imp.g.op("Reshape", [y], name, shape=[-1, h // b, w // b, b * b * c])


def _select(imp: Importer, op: Operator) -> str:
    return imp.g.op("Where", [imp.x(op, 0), imp.x(op, 1), imp.x(op, 2)], imp.name(op))


def _compare(fn: str) -> Handler:
    def handle(imp: Importer, op: Operator) -> str:
        return imp.g.op("Compare", [imp.x(op, 0), imp.x(op, 1)], imp.name(op), fn=fn)

    return handle


def _tile(imp: Importer, op: Operator) -> str | None:
    repeats = imp.const(op, 1)
    if repeats is None:
        return None
    y = imp.x(op, 0)
    for axis, r in enumerate(int(v) for v in np.ravel(repeats)):
        if r > 1:
            y = imp.g.op("Concat", [y] * r, f"{imp.name(op)}/{axis}", axis=axis)
    return y if y != imp.x(op, 0) else imp.g.op("Identity", [y], imp.name(op))


#: Operators that may read a run-time shape (SHAPE's -1 batch): those that fold it (their
#: result must then be a constant) and those that read it as a size (READS_SHAPE).
SHAPE_OPS = {"SHAPE", "STRIDED_SLICE", "PACK", "CAST", "CONCATENATION", "SLICE", "GATHER",
             "SQUEEZE", "EXPAND_DIMS", "UNPACK", "REDUCE_PROD"}
READS_SHAPE = {"RESHAPE", "RESIZE_BILINEAR", "RESIZE_NEAREST_NEIGHBOR", "TRANSPOSE_CONV"}

HANDLERS: dict[str, Handler] = {
    "CONV_2D": _conv,
    "DEPTHWISE_CONV_2D": _conv,
    "FULLY_CONNECTED": _fully_connected,
    "TRANSPOSE_CONV": _transpose_conv,
    "ADD": _binary("Add"),
    "SUB": _binary("Sub"),
    "MUL": _binary("Mul"),
    "DIV": _binary("Div"),
    "MAXIMUM": _binary_math("max"),
    "MINIMUM": _binary_math("min"),
    "POW": _binary_math("pow"),
    "PRELU": _binary_math("prelu"),
    "SQUARED_DIFFERENCE": _squared_difference,
    "AVERAGE_POOL_2D": _pool,
    "MAX_POOL_2D": _pool,
    "MEAN": _reduce,
    "SUM": _reduce,
    "REDUCE_MAX": _reduce,
    "REDUCE_MIN": _reduce,
    "REDUCE_PROD": _reduce,
    "RESHAPE": _reshape,
    "SOFTMAX": _softmax,
    "LOG_SOFTMAX": _log_softmax,
    "CONCATENATION": _concat,
    "PAD": _pad,
    "PADV2": _pad,
    "MIRROR_PAD": _pad,
    "RESIZE_BILINEAR": _resize,
    "RESIZE_NEAREST_NEIGHBOR": _resize,
    "LOGISTIC": _unary("Sigmoid"),
    "TANH": _unary("Tanh"),
    "RELU": _unary("Relu"),
    "RELU6": _unary("Relu6"),
    "RELU_N1_TO_1": _unary("Clip", min=-1.0, max=1.0),
    "RELU_0_TO_1": _unary("Clip", min=0.0, max=1.0),
    "LEAKY_RELU": _unary("LeakyRelu"),
    "HARD_SWISH": _unary("HardSwish"),
    "ELU": _unary("Math", fn="elu", alpha=1.0),
    "GELU": _unary("Math"),
    "EXP": _unary("Math", fn="exp"),
    "LOG": _unary("Math", fn="log"),
    "SQRT": _unary("Math", fn="sqrt"),
    "ABS": _unary("Math", fn="abs"),
    "NEG": _unary("Math", fn="neg"),
    "FLOOR": _unary("Math", fn="floor"),
    "CEIL": _unary("Math", fn="ceil"),
    "ROUND": _unary("Math", fn="round"),
    "SIN": _unary("Math", fn="sin"),
    "COS": _unary("Math", fn="cos"),
    "RSQRT": _rsqrt,
    "SQUARE": _square,
    "TRANSPOSE": _transpose,
    "BATCH_MATMUL": _batch_matmul,
    "STRIDED_SLICE": _strided_slice,
    "SLICE": _slice,
    "GATHER": _gather,
    "SQUEEZE": _squeeze,
    "EXPAND_DIMS": _expand_dims,
    "SPLIT": _split,
    "SPLIT_V": _split,
    "PACK": _pack,
    "UNPACK": _unpack,
    "SHAPE": _shape,
    "CAST": _cast,
    "DEQUANTIZE": _dequantize,
    "LOCAL_RESPONSE_NORMALIZATION": _lrn,
    "ARG_MAX": _arg,
    "ARG_MIN": _arg,
    "DEPTH_TO_SPACE": _depth_space,
    "SPACE_TO_DEPTH": _depth_space,
    "SELECT": _select,
    "SELECT_V2": _select,
    "LESS": _compare("less"),
    "GREATER": _compare("greater"),
    "EQUAL": _compare("equal"),
    "LESS_EQUAL": _compare("less_equal"),
    "GREATER_EQUAL": _compare("greater_equal"),
    "TILE": _tile,
}
