"""Quantized ONNX models in QOperator form -> the native int8 ops (docs/quantize.md "Quantized
ONNX models"): QLinearConv, QLinearMatMul, MatMulInteger, ConvInteger and com.microsoft's QGemm,
QLinearAdd, QLinearMul, QLinearGlobalAveragePool, QLinearAveragePool, QLinearConcat,
QLinearSigmoid, QLinearLeakyRelu, as onnxruntime's quantize_static writes them.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from pyengine.convert.onnx import ops_nn
from pyengine.convert.onnx._importer import Handler, Importer
from pyengine.convert.onnx._quant import (
    CODES,
    QParams,
    Refuse,
    const_input,
    conv_geometry,
    int8_input,
    mark,
    matmul_node,
    params_or_refuse,
    quantized,
    real_of,
    refusing,
    shape_of_value,
    weight_tensor,
)


def _qlinear_conv(imp: Importer, node: Any, name: str, ins: list[str], attrs: dict[str, Any]) -> Any:
    xq = params_or_refuse(imp, node, name, 1, 2, imp.onnx_dtypes.get(node.input[0]))
    codes = const_input(imp, node.input[3])
    if codes is None or codes.ndim != 4:
        raise Refuse("QLinearConv with run-time or non-2-D-convolution weights")
    wq = params_or_refuse(imp, node, name, 4, 5, str(codes.dtype), 0, 4)
    yq = params_or_refuse(imp, node, name, 6, 7, imp.onnx_dtypes.get(node.output[0]))
    if not (xq.per_tensor and yq.per_tensor):
        raise Refuse("QLinearConv with a per-axis input or output quantization")
    w = weight_tensor(imp, codes, wq, 0, name + "/w")
    bias = ins[8] if len(ins) > 8 and ins[8] else None
    if bias is not None and not imp.g.is_const(bias):
        raise Refuse("QLinearConv with a run-time bias")
    if w is None:  # codes the int8 kernels cannot take: float on the real values
        x = real_of(imp, ins[0], xq, name + "/x")
        wf = imp.g.const(wq.real(codes), name + "/wf")
        bf = None
        if bias is not None:
            b = imp.const_of(bias)
            assert b is not None
            bf = imp.g.const((b.astype(np.float64) * xq.scale[0] * np.asarray(wq.scale)).astype(np.float32),
                             name + "/bf")
        y = imp.g.op("Conv2D", [x, wf] + ([bf] if bf else []), name + "/float", **conv_geometry(attrs))
        return quantized(imp, y, yq, name)
    out = imp.g.op("QLinearConv2D", [int8_input(imp, ins[0], xq, name + "/x"), w] + ([bias] if bias else []),
                   name, **conv_geometry(attrs), **xq.act_attrs("x"), **yq.act_attrs("y"))
    return mark(imp, out, yq)


def _qlinear_dense(imp: Importer, node: Any, name: str, ins: list[str], a: int, b: int, bias: str | None,
                   yq: QParams | None, trans_b: bool) -> Any:
    """a (codes, params at a+1, a+2) times b (codes, params at b+1, b+2) + bias -> y."""
    aq = params_or_refuse(imp, node, name, a + 1, a + 2, imp.onnx_dtypes.get(node.input[a]))
    codes = const_input(imp, node.input[b])
    rank_b = codes.ndim if codes is not None else imp.rank(node.input[b])
    n_axis = 0 if trans_b else (rank_b or 2) - 1
    bq = params_or_refuse(imp, node, name, b + 1, b + 2,
                            str(codes.dtype) if codes is not None else imp.onnx_dtypes.get(node.input[b]),
                            n_axis, rank_b)
    if not aq.per_tensor or (yq is not None and not yq.per_tensor):
        raise Refuse(f"{node.op_type} with a per-axis input or output quantization")
    w = None
    if codes is not None and codes.ndim == 2 and imp.rank(node.input[a]) != 0:
        w = weight_tensor(imp, codes, bq, n_axis, name + "/w")
    if w is not None:
        out = imp.g.op("QLinearDense", [int8_input(imp, ins[a], aq, name + "/a"), w] + ([bias] if bias else []),
                       name, **({"transpose_b": True} if trans_b else {}), **aq.act_attrs("x"),
                       **(yq.act_attrs("y") if yq is not None else {}))
        return out if yq is None else mark(imp, out, yq)
    if codes is not None and codes.ndim == 2:
        # Constant weights the int8 kernels cannot take (uint8 codes whose zero point leaves
        # them outside int8): float on the real values, rounded onto y's grid.
        wf = bq.real(codes)
        wf = np.ascontiguousarray(wf.T if trans_b else wf)
        extra = []
        if bias is not None:
            bc = imp.const_of(bias)
            assert bc is not None
            bf = bc.astype(np.float64) * aq.scale[0] * np.asarray(bq.scale, np.float64)
            extra = [imp.g.const(bf.astype(np.float32), name + "/bf")]
        y = imp.g.op("Dense", [real_of(imp, ins[a], aq, name + "/a"), imp.g.const(wf, name + "/wf")] + extra,
                     name + "/float")
        return y if yq is None else quantized(imp, y, yq, name)
    if bias is not None or trans_b:
        raise Refuse(f"{node.op_type} with run-time weights and a bias or transB")
    # Run-time (or non-2-D) B: a float product of the real values, rounded onto y's grid.
    ra = real_of(imp, ins[a], aq, name + "/a")
    rb = real_of(imp, ins[b], bq, name + "/b")
    prod = ops_nn._matmul(imp, matmul_node(imp, node, a, b), name + "/float", [ra, rb], {})
    if prod is None:
        raise Refuse(f"{node.op_type} of these ranks")
    return prod if yq is None else quantized(imp, prod, yq, name)


def _qlinear_matmul(imp: Importer, node: Any, name: str, ins: list[str], attrs: dict[str, Any]) -> Any:
    if any(const_input(imp, node.input[i]) is None for i in (1, 2, 4, 5, 6, 7)):
        return _qlinear_matmul_runtime(imp, node, name, ins)
    yq = params_or_refuse(imp, node, name, 6, 7, imp.onnx_dtypes.get(node.output[0]))
    return _qlinear_dense(imp, node, name, ins, 0, 3, None, yq, False)


def _qlinear_matmul_runtime(imp: Importer, node: Any, name: str, ins: list[str]) -> str:
    """QLinearMatMul with run-time scales or zero points (one number each), as ONNX's reference:
    the integer product of the centered codes (in float32, exact below 2^24), times
    a_scale * b_scale / y_scale, plus y_zero_point, rounded half to even and saturated."""
    for i in (1, 2, 4, 5, 6, 7):
        shape = shape_of_value(imp, node.input[i])
        if shape is None or int(np.prod(shape)) != 1:
            raise Refuse("QLinearMatMul with run-time per-row or per-column scales or zero points")
    dtype = imp.onnx_dtypes.get(node.output[0])
    if dtype not in CODES:
        raise Refuse(f"QLinearMatMul to {dtype}")
    a_shape, b_shape = shape_of_value(imp, node.input[0]), shape_of_value(imp, node.input[3])
    k = a_shape[-1] if a_shape else -1
    if k <= 0 or b_shape is None or len(b_shape) < 2 or k * 255 * 255 >= 2 ** 24:
        raise Refuse("QLinearMatMul with run-time scales whose int32 sums may exceed 2^24")

    def f32(i: int, hint: str) -> str:
        v = ins[i]
        if v in imp.qparams:
            v = imp.g.op("QuantizeLinear", [v], hint + "/codes", **imp.qparams[v].native_attrs())
        return imp.g.op("Reshape", [imp.cast(v, "float32", hint)], hint + "/1", shape=[1]) if i != 0 and i != 3 \
            else imp.cast(v, "float32", hint)

    a = imp.g.op("Sub", [f32(0, name + "/a"), f32(2, name + "/azp")], name + "/ac")
    b = imp.g.op("Sub", [f32(3, name + "/b"), f32(5, name + "/bzp")], name + "/bc")
    c = ops_nn._matmul(imp, matmul_node(imp, node, 0, 3), name + "/int", [a, b], {})
    if c is None:
        raise Refuse("QLinearMatMul of these ranks")
    k_scale = imp.g.op("Div", [imp.g.op("Mul", [f32(1, name + "/as"), f32(4, name + "/bs")], name + "/ab"),
                               f32(6, name + "/ys")], name + "/k")
    y = imp.g.op("Add", [imp.g.op("Mul", [c, k_scale], name + "/scaled"), f32(7, name + "/yzp")], name + "/shift")
    y = imp.g.op("Math", [y], name + "/round", fn="round")
    lo, hi = (-128, 127) if dtype == "int8" else (0, 255)
    return imp.cast(imp.g.op("Clip", [y], name + "/clip", min=float(lo), max=float(hi)), dtype, name)


def _qgemm(imp: Importer, node: Any, name: str, ins: list[str], attrs: dict[str, Any]) -> Any:
    if attrs.get("transA", 0) or float(attrs.get("alpha", 1.0)) != 1.0:
        raise Refuse("QGemm with transA or alpha != 1")
    bias = ins[6] if len(ins) > 6 and ins[6] else None
    if bias is not None and (not imp.g.is_const(bias) or imp.dtype_of(bias) != "int32"):
        raise Refuse("QGemm with a run-time or non-int32 bias")
    if bias is not None:
        b = imp.const_of(bias)
        assert b is not None
        bias = imp.g.const(b.reshape(-1), name + "/b")
    yq = None
    if len(node.input) > 7 and node.input[7]:
        yq = params_or_refuse(imp, node, name, 7, 8, imp.onnx_dtypes.get(node.output[0]))
    return _qlinear_dense(imp, node, name, ins, 0, 3, bias, yq, bool(attrs.get("transB", 0)))


def _binary(op: str) -> Handler:
    def convert(imp: Importer, node: Any, name: str, ins: list[str], attrs: dict[str, Any]) -> Any:
        aq = params_or_refuse(imp, node, name, 1, 2, imp.onnx_dtypes.get(node.input[0]))
        bq = params_or_refuse(imp, node, name, 4, 5, imp.onnx_dtypes.get(node.input[3]))
        yq = params_or_refuse(imp, node, name, 6, 7, imp.onnx_dtypes.get(node.output[0]))
        y = imp.g.op(op, [real_of(imp, ins[0], aq, name + "/a"), real_of(imp, ins[3], bq, name + "/b")],
                     name + "/float")
        return quantized(imp, y, yq, name)

    return convert


def _unary(op: str, fn: Any) -> Handler:
    """Ops of one quantized input (X, X_scale, X_zero_point, Y_scale, Y_zero_point); ``fn`` makes
    the float op on the real values (None: refused)."""

    def convert(imp: Importer, node: Any, name: str, ins: list[str], attrs: dict[str, Any]) -> Any:
        if attrs.get("channels_last", 0):
            raise Refuse(f"{node.op_type} with channels_last")
        xq = params_or_refuse(imp, node, name, 1, 2, imp.onnx_dtypes.get(node.input[0]))
        yq = params_or_refuse(imp, node, name, 3, 4, imp.onnx_dtypes.get(node.output[0]))
        y = fn(imp, node, name + "/float", real_of(imp, ins[0], xq, name + "/x"), attrs)
        if y is None:
            raise Refuse(f"{node.op_type} with these attributes")
        return quantized(imp, y, yq, name)

    return convert


def _qlinear_concat(imp: Importer, node: Any, name: str, ins: list[str], attrs: dict[str, Any]) -> Any:
    yq = params_or_refuse(imp, node, name, 0, 1, imp.onnx_dtypes.get(node.output[0]))
    parts = []
    for k in range(2, len(node.input), 3):
        q = params_or_refuse(imp, node, name, k + 1, k + 2, imp.onnx_dtypes.get(node.input[k]))
        parts.append(real_of(imp, ins[k], q, f"{name}/in{k // 3}"))
    y = imp.g.op("Concat", parts, name + "/float", axis=int(attrs.get("axis", 1)))
    return quantized(imp, y, yq, name)


def _integer(imp: Importer, node: Any, name: str, ins: list[str], attrs: dict[str, Any]) -> Any:
    """MatMulInteger / ConvInteger: int32 sums of (a - a_zero_point)(b - b_zero_point), computed
    in float32 on the integer values, which is exact while every partial sum stays below 2^24
    (checked from the shapes and the constant weights; otherwise refused)."""
    conv = node.op_type == "ConvInteger"

    def centered(i: int, zi: int, hint: str) -> tuple[str, float]:
        """Input i minus its zero point, as float32 integers, and its largest magnitude."""
        v = ins[i]
        z = ins[zi] if zi < len(ins) and ins[zi] else None
        dt = imp.dtype_of(v) if v not in imp.qparams else imp.onnx_dtypes.get(node.input[i])
        if dt not in CODES:
            raise Refuse(f"{node.op_type} of {dt}")
        c = imp.const_of(v)
        zc = imp.const_of(z) if z else None
        if c is not None and (z is None or zc is not None):
            zz = np.zeros(1) if zc is None else np.asarray(zc, np.float64)
            if conv and zz.size > 1:
                zz = zz.reshape((-1,) + (1,) * (c.ndim - 1))
            arr = (c.astype(np.float64) - zz).astype(np.float32)
            return imp.g.const(arr, hint), float(np.max(np.abs(arr), initial=0.0))
        if v in imp.qparams:
            q = imp.qparams[v]
            f = imp.g.op("QuantizeLinear", [v], hint + "/codes", **q.native_attrs())
        else:
            f = imp.cast(v, "float32", hint + "/float")
        if z is not None:
            if zc is not None and zc.size != 1:
                raise Refuse(f"{node.op_type} with a per-row zero point of a run-time input")
            if zc is None and (imp.shapes.get(node.input[zi]) or [2]) not in ([], [1]):
                raise Refuse(f"{node.op_type} with a run-time zero point that is not one number")
            f = imp.g.op("Sub", [f, imp.cast(z, "float32", hint + "/zp")], hint + "/centered")
        return f, 255.0

    a, amax = centered(0, 2, name + "/a")
    b, bmax = centered(1, 3, name + "/b")
    wshape = shape_of_value(imp, node.input[1]) or []
    k = int(np.prod(wshape[1:])) if conv else (wshape[-2] if len(wshape) >= 2 else -1)
    if k <= 0 or amax * bmax * k >= 2.0 ** 24:
        raise Refuse(f"{node.op_type} whose int32 sums may exceed 2^24 (computed exactly only below it)")
    if conv:
        y = ops_nn._conv(imp, node, name + "/float", [a, b], attrs)
    else:
        y = ops_nn._matmul(imp, node, name + "/float", [a, b], attrs)
    if y is None:
        raise Refuse(f"{node.op_type} of these shapes or run-time weights")
    return imp.cast(y, "int32", name)


def _gap(imp: Importer, node: Any, name: str, x: str, attrs: dict[str, Any]) -> str | None:
    return imp.g.op("GlobalAvgPool", [x], name) if imp.rank(node.input[0]) in (None, 4) else None


def _avg_pool(imp: Importer, node: Any, name: str, x: str, attrs: dict[str, Any]) -> str | None:
    return ops_nn._pool(imp, node, name, [x], attrs)


HANDLERS: dict[str, Handler] = {
    k: refusing(h) for k, h in {
        "QLinearConv": _qlinear_conv,
        "QLinearMatMul": _qlinear_matmul,
        "MatMulInteger": _integer,
        "ConvInteger": _integer,
        "com.microsoft.QGemm": _qgemm,
        "com.microsoft.QLinearAdd": _binary("Add"),
        "com.microsoft.QLinearMul": _binary("Mul"),
        "com.microsoft.QLinearGlobalAveragePool": _unary("GlobalAvgPool", _gap),
        "com.microsoft.QLinearAveragePool": _unary("AvgPool", _avg_pool),
        "com.microsoft.QLinearSigmoid": _unary(
            "Sigmoid", lambda imp, node, name, x, attrs: imp.g.op("Sigmoid", [x], name)),
        "com.microsoft.QLinearLeakyRelu": _unary(
            "LeakyRelu", lambda imp, node, name, x, attrs: imp.g.op(
                "LeakyRelu", [x], name, alpha=float(attrs.get("alpha", 0.01)))),
        "com.microsoft.QLinearConcat": _qlinear_concat,
    }.items()
}
