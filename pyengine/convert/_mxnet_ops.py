"""MXNet ops of issue 25's model families (segmentation decoders, small transformers, audio):
Deconvolution, UpSampling, LayerNorm, batch_dot, reductions, slices and splits, Pad,
log_softmax and elementwise math, onto the existing native ops. Registered by mxnet.py.

MXNet's symbol file records no shapes; where a handler needs a value's rank (batch_dot's
transposes, a reduction with ``exclude``) it reads it from :func:`infer_rank`, which mxnet.py
runs over every node as it imports it.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import numpy as np

#: Slice bounds past an axis mean "to its end"; kept within what the .pyem attributes hold.
_BOUND = 2**31

Handler = Callable[[Any, dict[str, Any], dict[str, Any]], "str | list[str] | None"]


def _ints(v: Any) -> list[int]:
    if v is None:
        return []
    if isinstance(v, (int, float)):
        return [int(v)]
    return [int(d) for d in v]


def _axes(v: Any) -> list[int] | None:
    """A reduction's ``axis`` attribute: None (every axis), or the listed axes."""
    if v is None or v == ():
        return None
    return _ints(v)


def _pair(v: Any, default: int) -> list[int]:
    got = _ints(v)
    if not got:
        return [default, default]
    return got * 2 if len(got) == 1 else got


# ---------------------------------------------------------------- ranks
_SAME_RANK = {
    "Convolution", "Deconvolution", "BatchNorm", "LayerNorm", "Activation", "LeakyReLU", "Pooling",
    "UpSampling", "Pad", "softmax", "log_softmax", "SoftmaxActivation", "SoftmaxOutput", "Dropout",
    "BlockGrad", "identity", "_copy", "Cast", "cast", "clip", "LRN", "hard_sigmoid", "relu",
    "sigmoid", "tanh", "slice_axis", "slice", "batch_dot", "Concat", "concat", "add_n",
    "ElementWiseSum",
}


def infer_rank(node: dict[str, Any], a: dict[str, Any], ranks: Sequence[int | None]) -> int | None:
    """The rank of ``node``'s outputs from its inputs' ``ranks`` (None where unknown)."""
    op = node["op"]
    r0 = ranks[0] if ranks else None
    known = [r for r in ranks if r is not None]
    if op in _SAME_RANK or op in UNARY or op.endswith("_scalar"):
        return r0
    if op.startswith(("broadcast_", "elemwise_", "_")) and len(ranks) == 2:
        return max(known) if len(known) == 2 else None
    if op in ("Flatten", "flatten"):
        return 2
    if op == "FullyConnected":
        return 2 if a.get("flatten", True) else r0
    if op == "Embedding" or op == "expand_dims":
        return None if r0 is None else r0 + 1
    if op in ("Reshape", "reshape"):
        return len(a["shape"]) if a.get("shape") is not None else None
    if op == "transpose":
        return len(a["axes"]) if a.get("axes") else r0
    if op in ("_ones", "_zeros", "_full"):
        return len(_ints(a.get("shape")))
    if op in ("SliceChannel", "split"):
        return None if r0 is None else r0 - bool(a.get("squeeze_axis", False))
    if op in REDUCE_KINDS:
        axes = _axes(a.get("axis"))
        if a.get("keepdims", False):
            return r0
        if axes is None or r0 is None:
            return 1 if axes is None and not a.get("exclude") else None
        kept = len(axes) if a.get("exclude", False) else r0 - len(axes)
        return max(kept, 1)  # MXNet gives shape (1,) for a reduction to one number
    if op == "squeeze":
        return None if r0 is None or a.get("axis") is None else r0 - len(_ints(a["axis"]))
    return None


# ---------------------------------------------------------------- spatial
def deconvolution(imp: Any, n: dict[str, Any], a: dict[str, Any]) -> str | None:
    """Deconvolution (Gluon's Conv2DTranspose), 2-D with constant weights [in, out / groups,
    kh, kw]: output (in - 1) * stride - 2 * pad + dilate * (k - 1) + 1 + adj."""
    ins = imp.ins(n)
    name = n["name"]
    if not imp.g.is_const(ins[1]) or imp.g.value(ins[1]).ndim != 4:
        return None  # 2-D, constant weights only
    target = _ints(a.get("target_shape"))
    if any(target):
        return imp.g.unsupported_op(name, f"Deconvolution with target_shape {tuple(target)}")
    layout = a.get("layout") or "NCHW"
    if layout != "NCHW":
        return imp.g.unsupported_op(name, f"Deconvolution with layout '{layout}'")
    pad = _pair(a.get("pad"), 0)
    no_bias = a.get("no_bias", True) or len(ins) < 3
    return imp.g.op("ConvTranspose2D", ins[:2] if no_bias else ins[:3], name,
                    strides=_pair(a.get("stride"), 1), dilations=_pair(a.get("dilate"), 1),
                    pads=[pad[0], pad[1], pad[0], pad[1]], output_padding=_pair(a.get("adj"), 0),
                    groups=int(a.get("num_group", 1)))


def upsampling(imp: Any, n: dict[str, Any], a: dict[str, Any]) -> str | None:
    """UpSampling of one input: nearest (each pixel repeated ``scale`` times: Resize by scales,
    asymmetric coordinates, floor) or bilinear (in MXNet a grouped Deconvolution with its weight
    input: kernel 2 * scale - scale % 2, stride scale, pad ceil((scale - 1) / 2))."""
    name, kind = n["name"], a.get("sample_type", "nearest")
    scale = int(a.get("scale", 1))
    if int(a.get("num_args", 1)) != 1 and kind == "nearest":
        return imp.g.unsupported_op(name, f"UpSampling with num_args {a.get('num_args')}")
    ins = imp.ins(n)
    if kind == "nearest":
        s = imp.g.const(np.array([1, 1, scale, scale], np.float32), name + "/scales")
        return imp.g.op("Resize", [ins[0], s], name, param="scales", mode="nearest",
                        coordinate_transformation_mode="asymmetric", nearest_mode="floor")
    if kind != "bilinear":
        return imp.g.unsupported_op(name, f"UpSampling with sample_type '{kind}'")
    if len(ins) < 2 or not imp.g.is_const(ins[1]):
        return None
    pad = math.ceil((scale - 1) / 2)
    return imp.g.op("ConvTranspose2D", ins[:2], name, strides=[scale, scale], dilations=[1, 1],
                    pads=[pad] * 4, output_padding=[0, 0], groups=int(a.get("num_filter", 1)))


def pad(imp: Any, n: dict[str, Any], a: dict[str, Any]) -> str | None:
    """Pad: pad_width (before, after) per axis; constant (constant_value), edge and reflect."""
    mode = a.get("mode", "constant")
    if mode not in ("constant", "edge", "reflect"):
        return imp.g.unsupported_op(n["name"], f"Pad with mode '{mode}'")
    width = _ints(a.get("pad_width"))
    pads = width[0::2] + width[1::2]  # native: every axis' start, then every axis' end
    return imp.g.op("Pad", imp.ins(n)[:1], n["name"], pads=pads, mode=mode,
                    value=float(a.get("constant_value", 0.0)))


# ---------------------------------------------------------------- transformer pieces
def layer_norm(imp: Any, n: dict[str, Any], a: dict[str, Any]) -> str | None:
    """LayerNorm over the last axis (Gluon's default) with gamma and beta."""
    axis, rank = int(a.get("axis", -1)), imp.rank(n["inputs"][0])
    if a.get("output_mean_var", False):
        return imp.g.unsupported_op(n["name"], "LayerNorm with output_mean_var True")
    if axis != -1 and (rank is None or axis != rank - 1):
        return imp.g.unsupported_op(n["name"], f"LayerNorm with axis {axis} (only the last)")
    return imp.g.op("LayerNorm", imp.ins(n)[:3], n["name"], axis=-1,
                    epsilon=float(a.get("eps", 1e-5)))


def _swap_last(imp: Any, x: str, rank: int | None, name: str) -> str | None:
    if rank is None:
        return None
    return imp.g.op("Transpose", [x], name, perm=[*range(rank - 2), rank - 1, rank - 2])


def batch_dot(imp: Any, n: dict[str, Any], a: dict[str, Any]) -> str | None:
    """batch_dot (N-D, leading axes the batch) with transpose_a / transpose_b."""
    x, y = imp.ins(n)[:2]
    name = n["name"]
    if a.get("forward_stype") not in (None, "default"):
        return imp.g.unsupported_op(name, f"batch_dot with forward_stype '{a['forward_stype']}'")
    if a.get("transpose_a", False):
        x = _swap_last(imp, x, imp.rank(n["inputs"][0]), name + "/ta")
    if a.get("transpose_b", False):
        y = _swap_last(imp, y, imp.rank(n["inputs"][1]), name + "/tb")
    if x is None or y is None:
        return imp.g.unsupported_op(name, "batch_dot with a transpose of an input of unknown rank")
    return imp.g.op("BatchMatMul", [x, y], name)


def log_softmax(imp: Any, n: dict[str, Any], a: dict[str, Any]) -> str | None:
    if a.get("temperature") not in (None, 1, 1.0):
        return imp.g.unsupported_op(n["name"], f"log_softmax with temperature {a['temperature']}")
    if a.get("use_length"):
        return imp.g.unsupported_op(n["name"], "log_softmax with use_length True")
    return imp.g.op("LogSoftmax", imp.ins(n)[:1], n["name"], axis=int(a.get("axis", -1)))


# ---------------------------------------------------------------- reductions, slices, splits
REDUCE_KINDS = {"sum": "sum", "sum_axis": "sum", "mean": "mean", "max": "max", "max_axis": "max",
                "min": "min", "min_axis": "min", "prod": "prod"}


def reduce(imp: Any, n: dict[str, Any], a: dict[str, Any]) -> str | None:
    """sum/mean/max/min/prod over ``axis`` (every axis when None), keepdims, exclude (the axes
    not listed: needs the input's rank). MXNet gives shape (1,) for a reduction to one number."""
    name = n["name"]
    axes = _axes(a.get("axis"))
    keep = bool(a.get("keepdims", False))
    rank = imp.rank(n["inputs"][0])
    if a.get("exclude", False) and axes is not None:
        if rank is None:
            return imp.g.unsupported_op(name, f"{n['op']} with exclude True on an input of "
                                              "unknown rank")
        listed = {d % rank for d in axes}
        axes = [d for d in range(rank) if d not in listed]
    kind = REDUCE_KINDS[n["op"]]
    if axes is not None and not axes:  # nothing to reduce
        return imp.g.op("Identity", imp.ins(n)[:1], name)
    every = axes is None or (rank is not None and len({d % rank for d in axes}) == rank)
    y = imp.g.op("Reduce", imp.ins(n)[:1], name + "/all" if every and not keep else name,
                 kind=kind, axes=axes or [], keepdims=keep)
    if every and not keep:
        return imp.g.op("Reshape", [y], name, shape=[1])
    return y


def slice_axis(imp: Any, n: dict[str, Any], a: dict[str, Any]) -> str:
    end = a.get("end")
    return imp.g.op("Slice", imp.ins(n)[:1], n["name"], axis=int(a["axis"]),
                    start=int(a.get("begin", 0)), end=_BOUND if end is None else int(end))


def slice_op(imp: Any, n: dict[str, Any], a: dict[str, Any]) -> str | None:
    """slice (begin, end, step per leading axis; None: the whole axis), step 1 only."""
    begin, end = list(a.get("begin") or ()), list(a.get("end") or ())
    steps = list(a.get("step") or ())
    bad = [s for s in steps if s not in (None, 1)]
    if bad:
        return imp.g.unsupported_op(n["name"], f"slice with step {bad[0]}")
    y = imp.ins(n)[0]
    for axis, (b, e) in enumerate(zip(begin, end)):
        if b in (None, 0) and e is None:
            continue
        y = imp.g.op("Slice", [y], f"{n['name']}/{axis}", axis=axis,
                     start=0 if b is None else int(b), end=_BOUND if e is None else int(e))
    return y if y != imp.ins(n)[0] else imp.g.op("Identity", [y], n["name"])


def split(imp: Any, n: dict[str, Any], a: dict[str, Any]) -> list[str]:
    """SliceChannel / split: num_outputs equal parts along ``axis`` (squeeze_axis drops it)."""
    count, axis = int(a["num_outputs"]), int(a.get("axis", 1))
    outs = []
    for i in range(count):
        part = imp.g.op("Split", imp.ins(n)[:1], f"{n['name']}/{i}", axis=axis, parts=count,
                        index=i)
        if a.get("squeeze_axis", False):
            part = imp.g.op("Squeeze", [part], f"{n['name']}/{i}/squeeze", axes=[axis])
        outs.append(part)
    return outs


def expand_dims(imp: Any, n: dict[str, Any], a: dict[str, Any]) -> str:
    return imp.g.op("Unsqueeze", imp.ins(n)[:1], n["name"], axes=[int(a["axis"])])


def squeeze(imp: Any, n: dict[str, Any], a: dict[str, Any]) -> str:
    axes = _ints(a.get("axis"))
    return imp.g.op("Squeeze", imp.ins(n)[:1], n["name"], **({"axes": axes} if axes else {}))


# ---------------------------------------------------------------- elementwise math
#: MXNet's unary math -> the native Math's fn (square and rsqrt are built from others).
UNARY = {"exp": "exp", "log": "log", "sqrt": "sqrt", "abs": "abs", "erf": "erf", "negative": "neg",
         "reciprocal": "reciprocal", "floor": "floor", "ceil": "ceil", "sin": "sin", "cos": "cos",
         "sign": "sign", "softsign": "softsign", "square": "square", "rsqrt": "rsqrt"}


def unary(imp: Any, n: dict[str, Any], a: dict[str, Any]) -> str:
    x, name, fn = imp.ins(n)[0], n["name"], UNARY[n["op"]]
    if fn == "square":
        return imp.g.op("Mul", [x, x], name)
    if fn == "rsqrt":
        s = imp.g.op("Math", [x], name + "/sqrt", fn="sqrt")
        return imp.g.op("Math", [s], name, fn="reciprocal")
    return imp.g.op("Math", [x], name, fn=fn)


#: Comparisons and binary math (MXNet's comparisons give 1.0 / 0.0 in the input's type, as
#: the native BinaryMath's on float32).
_BINARY = {"equal": "equal", "greater": "greater", "greater_equal": "greater_equal",
           "lesser": "less", "lesser_equal": "less_equal", "not_equal": "not_equal",
           "maximum": "max", "minimum": "min", "power": "pow"}


def _compare(imp: Any, a: str, b: str, fn: str, name: str) -> str:
    if fn != "not_equal":
        return imp.g.op("BinaryMath", [a, b], name, fn=fn)
    eq = imp.g.op("BinaryMath", [a, b], name + "/equal", fn="equal")
    return imp.g.op("Sub", [imp.g.const(np.float32(1.0), name + "/one"), eq], name)


def _binary(fn: str) -> Handler:
    def handle(imp: Any, n: dict[str, Any], a: dict[str, Any]) -> str:
        x, y = imp.ins(n)[:2]
        return _compare(imp, x, y, fn, n["name"])

    return handle


def _binary_scalar(fn: str) -> Handler:
    def handle(imp: Any, n: dict[str, Any], a: dict[str, Any]) -> str:
        s = imp.g.const(np.float32(a.get("scalar", 0.0)), n["name"] + "/scalar")
        return _compare(imp, imp.ins(n)[0], s, fn, n["name"])

    return handle


def leaky_math(imp: Any, n: dict[str, Any], a: dict[str, Any]) -> str | None:
    """LeakyReLU's act_type gelu, elu (alpha: slope) and selu as the native Math."""
    kind = a.get("act_type", "leaky")
    x = imp.ins(n)[:1]
    if kind == "gelu":
        return imp.g.op("Math", x, n["name"], fn="gelu")
    if kind == "elu":
        return imp.g.op("Math", x, n["name"], fn="elu", alpha=float(a.get("slope", 0.25)))
    if kind == "selu":
        return imp.g.op("Math", x, n["name"], fn="selu", alpha=1.6732632423543772,
                        beta=1.0507009873554805)
    return None


HANDLERS: dict[str, Handler] = {
    "Deconvolution": deconvolution,
    "UpSampling": upsampling,
    "Pad": pad,
    "pad": pad,
    "LayerNorm": layer_norm,
    "batch_dot": batch_dot,
    "log_softmax": log_softmax,
    "slice_axis": slice_axis,
    "slice": slice_op,
    "SliceChannel": split,
    "split": split,
    "expand_dims": expand_dims,
    "squeeze": squeeze,
    **{op: reduce for op in REDUCE_KINDS},
    **{op: unary for op in UNARY},
}
for _op, _fn in _BINARY.items():
    HANDLERS[f"broadcast_{_op}"] = _binary(_fn)
    HANDLERS[f"_{_op}"] = _binary(_fn)
    HANDLERS[f"_{_op}_scalar"] = _binary_scalar(_fn)
