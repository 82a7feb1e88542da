"""ONNX reductions, normalisations and softmax -> native ops."""

from __future__ import annotations

from typing import Any

import numpy as np

from pyengine.convert.onnx._importer import Handler, Importer, axes_of, param_input

# ONNX Reduce* -> the native Reduce's kind.
_REDUCE_KINDS = {
    "ReduceSum": "sum", "ReduceMax": "max", "ReduceMin": "min", "ReduceProd": "prod",
    "ReduceL1": "l1", "ReduceL2": "l2", "ReduceLogSum": "log_sum",
    "ReduceLogSumExp": "log_sum_exp", "ReduceSumSquare": "sum_square",
}


def _reduce_mean(
    imp: Importer, node: Any, name: str, ins: list[str], attrs: dict[str, Any]
) -> str | None:
    axes = axes_of(imp, ins, attrs)
    if axes is None or (not axes and attrs.get("noop_with_empty_axes", 0)):
        return _reduce(imp, node, name, ins, attrs)  # run-time axes, or a no-op
    return imp.g.op("Mean", ins[:1], name, axes=axes, keepdims=bool(attrs.get("keepdims", 1)))


def _reduce(imp: Importer, node: Any, name: str, ins: list[str], attrs: dict[str, Any]) -> str | None:
    axes = axes_of(imp, ins, attrs)
    axes_input = param_input(imp, ins, 1)
    if axes is None and axes_input is None:
        return None
    # ONNX's no-op: with no axes, each element goes through the reduction's element step alone
    # (ReduceL2 gives |x|), as onnx's reference computes it.
    noop = bool(attrs.get("noop_with_empty_axes", 0))
    kind = _REDUCE_KINDS.get(node.op_type, "mean")
    keepdims = bool(attrs.get("keepdims", 1))
    if axes_input is not None:  # read by value when planning (docs/format.md)
        return imp.g.op("Reduce", [ins[0], axes_input], name, kind=kind, keepdims=keepdims,
                        noop_with_empty_axes=noop)
    return imp.g.op("Reduce", ins[:1], name, kind=kind, axes=axes, keepdims=keepdims,
                    noop_with_empty_axes=noop)


def _inverse_rms(imp: Importer, x: str, axes: list[int], eps: float, name: str) -> str:
    """1 / sqrt(mean(x², axes, keepdims) + eps) with native ops."""
    ms = imp.g.op("Reduce", [imp.g.op("Mul", [x, x], name + "/sq")], name + "/ms", kind="mean",
                  axes=axes, keepdims=True)
    shifted = imp.g.op("Add", [ms, imp.g.const(np.float32(eps), name + "/eps")], name + "/shift")
    return imp.g.op("Math", [imp.g.op("Math", [shifted], name + "/sqrt", fn="sqrt")], name + "/inv",
                    fn="reciprocal")


def _layer_norm(
    imp: Importer, node: Any, name: str, ins: list[str], attrs: dict[str, Any]
) -> list[str] | None:
    axis, eps = int(attrs.get("axis", -1)), float(attrs.get("epsilon", 1e-5))
    y = imp.g.op("LayerNorm", [i for i in ins[:3] if i], name, axis=axis, epsilon=eps)
    if not (len(node.output) > 1 and any(o and imp._used(o) for o in node.output[1:])):
        return [y]
    rank = imp.rank(node.input[0])
    if rank is None:
        return None
    # The saved mean and inverse deviation (keepdims over the normalised dims), as ONNX's.
    axes = list(range(axis % rank, rank))
    mean = imp.g.op("Reduce", ins[:1], name + "/mean", kind="mean", axes=axes, keepdims=True)
    centred = imp.g.op("Sub", [ins[0], mean], name + "/centred")
    return [y, mean, _inverse_rms(imp, centred, axes, eps, name)]


def _rms_norm(
    imp: Importer, node: Any, name: str, ins: list[str], attrs: dict[str, Any]
) -> str | None:
    rank = imp.rank(node.input[0])
    if rank is None:
        return None
    axes = list(range(int(attrs.get("axis", -1)) % rank, rank))
    inv = _inverse_rms(imp, ins[0], axes, float(attrs.get("epsilon", 1e-5)), name)
    return imp.g.op("Mul", [imp.g.op("Mul", [ins[0], inv], name + "/normed"), ins[1]], name)


def _lp_norm(imp: Importer, node: Any, name: str, ins: list[str], attrs: dict[str, Any]) -> str | None:
    p = int(attrs.get("p", 2))
    if p not in (1, 2):
        return imp.g.unsupported_op(name, f"LpNormalization with p {p}")
    norm = imp.g.op("Reduce", ins[:1], name + "/norm", kind="l2" if p == 2 else "l1",
                    axes=[int(attrs.get("axis", -1))], keepdims=True)
    scaled = imp.g.op("Div", [ins[0], norm], name + "/scaled")
    # A zero norm (an all-zero slice) gives 0, as ONNX's, not 0 / 0.
    zero = imp.g.const(np.float32(0.0), name + "/zero")
    is_zero = imp.g.op("BinaryMath", [norm, zero], name + "/is_zero", fn="equal")
    return imp.g.op("Where", [is_zero, zero, scaled], name)


def _softmax(
    imp: Importer, node: Any, name: str, ins: list[str], attrs: dict[str, Any]
) -> str | None:
    op = node.op_type if node.op_type == "LogSoftmax" else "Softmax"
    rank = imp.rank(node.input[0])
    axis = int(attrs.get("axis", -1 if imp.opset >= 13 else 1))
    if imp.opset >= 13:
        return imp.g.op(op, ins[:1], name, axis=axis)
    if rank is None:
        return None
    axis %= rank
    if axis == rank - 1:
        return imp.g.op(op, ins[:1], name, axis=-1)
    shape = imp.shapes.get(node.input[0]) or []
    back = [-1 if i == 0 else d for i, d in enumerate(shape)]
    if any(d < 0 for d in back[1:]):
        return None
    flat = imp.g.op("Flatten", ins[:1], name + "/flatten", axis=axis)
    y = imp.g.op(op, [flat], name + "/softmax", axis=-1)
    return imp.g.op("Reshape", [y], name, shape=back)


def _hardmax(imp: Importer, node: Any, name: str, ins: list[str], attrs: dict[str, Any]) -> str | None:
    """1 at the first maximum along the axis, 0 elsewhere: ArgMax compared with the positions
    along the axis. Before opset 13 the input is taken as 2-D [prod(d[:axis]), prod(d[axis:])]."""
    shape = imp.shapes.get(node.input[0])
    if shape is None:
        return None
    rank = len(shape)
    axis = int(attrs.get("axis", -1 if imp.opset >= 13 else 1)) % max(rank, 1)
    x = ins[0]
    if imp.opset < 13 and axis != rank - 1:
        if any(d < 0 for d in shape[1:]):
            return None
        x = imp.g.op("Flatten", [x], name + "/flatten", axis=axis)
        size, rank, axis = int(np.prod(shape[axis:])), 2, 1
    else:
        size = shape[axis]
    if size < 0:
        return None
    first = imp.g.op("ArgReduce", [x], name + "/argmax", kind="max", axis=axis, keepdims=True)
    positions = imp.g.const(np.arange(size, dtype=np.int64).reshape([size] + [1] * (rank - 1 - axis)),
                            name + "/positions")
    hit = imp.g.op("Compare", [first, positions], name + "/hit", fn="equal")
    imp.vdtypes[hit] = "bool"
    y = imp.cast(hit, "float32", name + ("/y" if len(shape) != rank else ""))
    if len(shape) != rank:
        y = imp.g.op("Reshape", [y], name, shape=[0, *shape[1:]])
    return y


def _bn(imp: Importer, node: Any, name: str, ins: list[str], attrs: dict[str, Any]) -> str | None:
    if not attrs.get("spatial", 1) or attrs.get("training_mode", 0):
        return None
    if len(node.output) > 1 and any(o and imp._used(o) for o in node.output[1:]):
        return None
    return imp.g.op("BatchNorm", ins[:5], name, epsilon=float(attrs.get("epsilon", 1e-5)), axis=1)


def _lrn(imp: Importer, node: Any, name: str, ins: list[str], attrs: dict[str, Any]) -> str:
    return imp.g.op(
        "LRN",
        ins[:1],
        name,
        size=int(attrs["size"]),
        alpha=float(attrs.get("alpha", 1e-4)),
        beta=float(attrs.get("beta", 0.75)),
        bias=float(attrs.get("bias", 1.0)),
        axis=1,
    )


def _mean_variance(
    imp: Importer, node: Any, name: str, ins: list[str], attrs: dict[str, Any]
) -> str:
    """(x - E x) / (sqrt(E (x - E x)²) + 1e-9) over ``axes``, as ONNX's function body (which
    adds 1e-9 to the deviation)."""
    axes = [int(a) for a in attrs.get("axes", [0, 2, 3])]
    mean = imp.g.op("Reduce", ins[:1], name + "/mean", kind="mean", axes=axes, keepdims=True)
    centred = imp.g.op("Sub", [ins[0], mean], name + "/centred")
    var = imp.g.op("Reduce", [imp.g.op("Mul", [centred, centred], name + "/sq")], name + "/var",
                   kind="mean", axes=axes, keepdims=True)
    std = imp.g.op("Math", [var], name + "/std", fn="sqrt")
    shifted = imp.g.op("Add", [std, imp.g.const(np.float32(1e-9), name + "/eps")], name + "/shifted")
    return imp.g.op("Div", [centred, shifted], name)


def _group_norm(
    imp: Importer, node: Any, name: str, ins: list[str], attrs: dict[str, Any]
) -> str | None:
    """GroupNormalization (opset 21; onnx's checker refuses the per-group form of 18) and
    InstanceNormalization (groups = channels): the input as [N, groups, -1], the native LayerNorm
    over the last axis, back to its shape, then the per-channel scale and bias."""
    shape = imp.shapes.get(node.input[0])
    if shape is None or len(shape) < 2 or any(d < 0 for d in shape[1:]):
        return None
    channels = shape[1]
    instance = node.op_type == "InstanceNormalization"
    groups = channels if instance else int(attrs["num_groups"])
    if not instance and int(attrs.get("stash_type", 1)) != 1:
        return imp.g.unsupported_op(name, f"GroupNormalization with stash_type {attrs['stash_type']}")
    if groups < 1 or channels % groups:
        return imp.g.unsupported_op(name, f"GroupNormalization with num_groups {groups} for {channels} channels")
    eps = float(attrs.get("epsilon", 1e-5))
    grouped = imp.g.op("Reshape", ins[:1], name + "/grouped", shape=[0, groups, -1])
    one = imp.g.const(np.ones(1, np.float32), name + "/one")
    normed = imp.g.op("LayerNorm", [grouped, one], name + "/normed", axis=-1, epsilon=eps)
    y = imp.g.op("Reshape", [normed], name + "/back", shape=[0, *shape[1:]])
    per_channel = [channels] + [1] * (len(shape) - 2)
    scale = imp.g.op("Reshape", ins[1:2], name + "/scale", shape=per_channel)
    bias = imp.g.op("Reshape", ins[2:3], name + "/bias", shape=per_channel)
    return imp.g.op("Add", [imp.g.op("Mul", [y, scale], name + "/scaled"), bias], name)


HANDLERS: dict[str, Handler] = {
    "LRN": _lrn,
    "Softmax": _softmax,
    "BatchNormalization": _bn,
    "ReduceMean": _reduce_mean,
    **{op: _reduce for op in _REDUCE_KINDS},
    "LayerNormalization": _layer_norm,
    "RMSNormalization": _rms_norm,
    "LogSoftmax": _softmax,
    "Hardmax": _hardmax,
    "LpNormalization": _lp_norm,
    "MeanVarianceNormalization": _mean_variance,
    "GroupNormalization": _group_norm,
    "InstanceNormalization": _group_norm,
}
