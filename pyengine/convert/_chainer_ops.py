"""Chainer functions of issue 25's model families (segmentation decoders, small transformers):
deconvolution_2d, resize_images, unpooling_2d, layer_normalization, matmul/batch_matmul,
reductions, split_axis, get_item, pad, log_softmax and elementwise math, onto the existing
native ops. Registered by chainer.py.

Chainer converts by tracing one forward pass, so every input's shape is known here (the traced
batch, a size the native graph leaves free, is read as -1 where a handler could misuse it).
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from pyengine.convert import _slicing

Handler = Callable[[Any, Any, list[str], str], "str | list[str] | None"]


def _shape(imp: Any, f: Any, i: int = 0) -> list[int]:
    """Input ``i``'s traced shape, the batch (axis 0 of the traced batch size) as -1."""
    shape = [int(d) for d in f.inputs[i].shape]
    if shape and shape[0] == imp.trace_batch and not imp.g.is_const(imp.values[id(f.inputs[i])]):
        shape[0] = -1
    return shape


# ---------------------------------------------------------------- spatial
def deconvolution_2d(imp: Any, f: Any, ins: list[str], label: str) -> str | None:
    """Deconvolution2D: weights [in, out / groups, kh, kw]; the output size Chainer was given
    (outsize) beyond the natural (in - 1) * stride + (k - 1) * dilate + 1 - 2 * pad is the
    native output_padding (rows added at the end, as Chainer's col2im leaves them)."""
    if not imp.g.is_const(ins[1]):
        return None
    kh, kw = imp.g.value(ins[1]).shape[2:]
    h, w = [int(d) for d in f.inputs[0].shape[2:]]
    dy, dx = getattr(f, "dy", 1), getattr(f, "dx", 1)
    natural = [(h - 1) * f.sy + (kh - 1) * dy + 1 - 2 * f.ph,
               (w - 1) * f.sx + (kw - 1) * dx + 1 - 2 * f.pw]
    extra = [int(f.outh) - natural[0], int(f.outw) - natural[1]]
    if any(not 0 <= e < max(s, d) for e, s, d in zip(extra, (f.sy, f.sx), (dy, dx))):
        return imp.g.unsupported_op(label, f"Deconvolution2DFunction with outsize "
                                           f"({f.outh}, {f.outw}) from {natural}")
    return imp.g.op("ConvTranspose2D", ins[:3], label, strides=[f.sy, f.sx],
                    dilations=[dy, dx], pads=[f.ph, f.pw, f.ph, f.pw], output_padding=extra,
                    groups=int(getattr(f, "groups", 1)))


def _resize(imp: Any, x: str, out_hw: list[int], scales: list[float], label: str,
            **attrs: Any) -> str:
    return imp.g.op("Resize", [x], label, sizes=[0, 0, *out_hw], scales=[1.0, 1.0, *scales],
                    **attrs)


def resize_images(imp: Any, f: Any, ins: list[str], label: str) -> str | None:
    """resize_images: nearest (floor(i · in / out)), bilinear with align_corners (Chainer's
    default) or with half-pixel centres (clamped at 0, as the native half_pixel is)."""
    h, w = [int(d) for d in f.inputs[0].shape[2:]]
    out = [int(f.out_H), int(f.out_W)]
    scales = [out[0] / h, out[1] / w]
    if f.mode == "nearest":
        return _resize(imp, ins[0], out, scales, label, mode="nearest",
                       coordinate_transformation_mode="asymmetric", nearest_mode="floor")
    if f.mode != "bilinear":
        return imp.g.unsupported_op(label, f"ResizeImages with mode '{f.mode}'")
    coord = "align_corners" if f.align_corners else "half_pixel"
    return _resize(imp, ins[0], out, scales, label, mode="linear",
                   coordinate_transformation_mode=coord)


def unpooling_2d(imp: Any, f: Any, ins: list[str], label: str) -> str | None:
    """unpooling_2d with the window equal to the stride and no padding: each pixel repeated
    (nearest); cover_all's one row less at the end is the output size."""
    h, w = [int(d) for d in f.inputs[0].shape[2:]]
    if (f.kh, f.kw) != (f.sy, f.sx) or f.ph or f.pw or f.outh > h * f.kh or f.outw > w * f.kw:
        return imp.g.unsupported_op(
            label, f"Unpooling2D with ksize ({f.kh}, {f.kw}), stride ({f.sy}, {f.sx}), pad "
                   f"({f.ph}, {f.pw}), outsize ({f.outh}, {f.outw}) (only ksize = stride, no pad)")
    return _resize(imp, ins[0], [int(f.outh), int(f.outw)], [float(f.kh), float(f.kw)], label,
                   mode="nearest", coordinate_transformation_mode="asymmetric",
                   nearest_mode="floor")


def pad(imp: Any, f: Any, ins: list[str], label: str) -> str | None:
    """pad: constant (one constant_values), edge, reflect, wrap (numpy's modes)."""
    mode = f.mode
    if mode not in ("constant", "edge", "reflect", "wrap"):
        return imp.g.unsupported_op(label, f"Pad with mode '{mode}'")
    value = np.asarray(f.keywords.get("constant_values", 0))
    if value.size != 1:
        return imp.g.unsupported_op(label, f"Pad with constant_values {value.tolist()}")
    rank = len(f.inputs[0].shape)
    bw = np.broadcast_to(np.asarray(f.pad_bw, dtype=np.int64), (rank, 2))  # numpy's pad_width
    return imp.g.op("Pad", ins[:1], label, pads=[int(p) for p in [*bw[:, 0], *bw[:, 1]]],
                    mode=mode, value=float(value.reshape(())))


# ---------------------------------------------------------------- transformer pieces
def layer_normalization(imp: Any, f: Any, ins: list[str], label: str) -> str:
    return imp.g.op("LayerNorm", ins[:3], label, axis=-1, epsilon=float(f.eps))


def _swap_last(imp: Any, x: str, rank: int, label: str) -> str:
    return imp.g.op("Transpose", [x], label, perm=[*range(rank - 2), rank - 1, rank - 2])


def matmul(imp: Any, f: Any, ins: list[str], label: str) -> str | None:
    """matmul (batch axes broadcast) and batch_matmul (3-D), transa / transb; a constant 2-D
    right operand goes to Dense."""
    ra, rb = len(f.inputs[0].shape), len(f.inputs[1].shape)
    if getattr(f, "transc", False) or ra < 2 or rb < 2:
        what = "transc True" if getattr(f, "transc", False) else f"operands of rank {ra}, {rb}"
        return imp.g.unsupported_op(label, f"{type(f).__name__} with {what}")
    a, b = ins[:2]
    if f.transa:
        a = _swap_last(imp, a, ra, label + "/ta")
    if imp.g.is_const(b) and rb == 2:
        return imp.g.op("Dense", [a, b], label, transpose_b=bool(f.transb))
    if f.transb:
        b = _swap_last(imp, b, rb, label + "/tb")
    return imp.g.op("BatchMatMul", [a, b], label)


def log_softmax(imp: Any, f: Any, ins: list[str], label: str) -> str:
    return imp.g.op("LogSoftmax", ins[:1], label, axis=int(f.axis))


# ---------------------------------------------------------------- reductions, slices, splits
_REDUCE_KINDS = {"Sum": "sum", "Mean": "mean", "Max": "max", "Min": "min"}


def reduce(imp: Any, f: Any, ins: list[str], label: str) -> str:
    """sum/mean/max/min over ``axis`` (every axis when None: a 0-d result, as Chainer's)."""
    axes = [] if f.axis is None else [int(a) for a in np.ravel(f.axis)]
    return imp.g.op("Reduce", ins[:1], label, kind=_REDUCE_KINDS[type(f).__name__], axes=axes,
                    keepdims=bool(f.keepdims))


def split_axis(imp: Any, f: Any, ins: list[str], label: str) -> list[str] | None:
    """split_axis into equal sections or at indices: one native Slice per piece."""
    axis = int(f.axis) % len(f.inputs[0].shape)
    size = int(f.inputs[0].shape[axis])
    if f.indices is not None:
        bounds = [0, *[int(i) for i in f.indices], size]
    else:
        step = size // int(f.sections)
        bounds = [step * i for i in range(int(f.sections) + 1)]
    batch_free = axis == 0 and _shape(imp, f)[0] < 0
    if batch_free:
        return None  # pieces of the batch, which the native graph leaves free
    return [imp.g.op("Slice", ins[:1], f"{label}/{i}", axis=axis, start=s, end=e)
            for i, (s, e) in enumerate(zip(bounds, bounds[1:]))]


def get_item(imp: Any, f: Any, ins: list[str], label: str) -> str | None:
    """x[...] with basic indices (ints, slices with any step, None, one Ellipsis); an array
    index (advanced indexing) is refused."""
    spec = list(f.slices) if isinstance(f.slices, tuple) else [f.slices]
    for s in spec:
        if not (s is None or s is Ellipsis or isinstance(s, (slice, int, np.integer))):
            return imp.g.unsupported_op(label, f"GetItem with an index of type {type(s).__name__}")
    spec = [int(s) if isinstance(s, np.integer) else s for s in spec]
    shape = _shape(imp, f)
    consumed = sum(1 for s in spec if s is not None and s is not Ellipsis)
    fill = [slice(None)] * (len(shape) - consumed)
    if Ellipsis in spec:
        k = spec.index(Ellipsis)
        spec = spec[:k] + fill + spec[k + 1:]
    else:
        spec += fill
    x, axis = ins[0], 0
    for k, s in enumerate(spec):  # steps: a Gather of the picked positions
        if isinstance(s, slice) and s.step not in (None, 1):
            if shape[axis] < 0:
                return imp.g.unsupported_op(label, f"GetItem with step {s.step} over the batch")
            picked = np.arange(shape[axis])[s]
            if picked.size == 0:
                return imp.g.unsupported_op(label, f"GetItem with an empty slice {s}")
            # Chainer's graph stores constants as float32: the indices are cast back at run time.
            where = imp.g.op("Cast", [imp.g.const(picked.astype(np.float32), f"{label}/{axis}/i")],
                             f"{label}/{axis}/indices", to="int64")
            x = imp.g.op("Gather", [x, where], f"{label}/{axis}/gather", axis=axis)
            spec[k], shape[axis] = slice(None), int(picked.size)
        axis += s is not None
    try:
        return _slicing.slice_value(imp.g, x, shape, spec, label)
    except ValueError as why:
        return imp.g.unsupported_op(label, f"GetItem with {why}")


def expand_dims(imp: Any, f: Any, ins: list[str], label: str) -> str:
    return imp.g.op("Unsqueeze", ins[:1], label, axes=[int(f.axis)])


def squeeze(imp: Any, f: Any, ins: list[str], label: str) -> str:
    axes = [] if f.axis is None else [int(a) for a in np.ravel(f.axis)]
    return imp.g.op("Squeeze", ins[:1], label, **({"axes": axes} if axes else {}))


# ---------------------------------------------------------------- elementwise math
def _math(fn: str) -> Handler:
    return lambda imp, f, ins, label: imp.g.op("Math", ins[:1], label, fn=fn)


def square(imp: Any, f: Any, ins: list[str], label: str) -> str:
    return imp.g.op("Mul", [ins[0], ins[0]], label)


def pow_const(imp: Any, f: Any, ins: list[str], label: str) -> str:
    """x ** c: a square as x * x, another power as the native pow."""
    value = np.asarray(f.value, dtype=np.float32)
    if value.size == 1 and float(value) == 2.0:
        return square(imp, f, ins, label)
    return imp.g.op("BinaryMath", [ins[0], imp.g.const(value, label + "/exponent")], label,
                    fn="pow")


HANDLERS: dict[str, Handler] = {
    "Deconvolution2DFunction": deconvolution_2d,
    "ResizeImages": resize_images,
    "Unpooling2D": unpooling_2d,
    "Pad": pad,
    "LayerNormalization": layer_normalization,
    "MatMul": matmul,
    "BatchMatMul": matmul,
    "LogSoftmax": log_softmax,
    "SplitAxis": split_axis,
    "GetItem": get_item,
    "ExpandDims": expand_dims,
    "Squeeze": squeeze,
    "Exp": _math("exp"),
    "Log": _math("log"),
    "Sqrt": _math("sqrt"),
    "Absolute": _math("abs"),
    "Erf": _math("erf"),
    "Square": square,
    "PowVarConst": pow_const,
    **{name: reduce for name in _REDUCE_KINDS},
}
