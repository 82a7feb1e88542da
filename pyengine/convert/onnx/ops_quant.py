"""Quantized ONNX models in QDQ form -> the native int8 ops (docs/quantize.md "Quantized ONNX
models", docs/format.md "Quantized ops").

``DequantizeLinear -> Conv | MatMul | Gemm [-> Relu | Clip] -> QuantizeLinear`` with constant
int8/uint8 weights becomes one QLinearConv2D / QLinearDense that computes in int8 and requantizes
onto the QuantizeLinear's grid; a QuantizeLinear/DequantizeLinear pair around any other op runs
that op in float on the grid values (the representation: _quant.py). QuantizeLinear and
DequantizeLinear with run-time scales (per tensor, per axis, blocked) are computed as ONNX's
reference does.
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
    bias_of,
    const_input,
    conv_geometry,
    dq_weight,
    finish_fused,
    fused_attrs,
    int8_input,
    quantized,
    read_params,
    real_of,
    refusing,
    requant_target,
    shape_of_value,
)


def _conv(imp: Importer, node: Any, name: str, ins: list[str], attrs: dict[str, Any]) -> Any:
    """Conv; DequantizeLinear'd input and weights -> QLinearConv2D."""
    xq, wf = imp.qparams.get(ins[0]), imp.const_of(ins[1])
    if xq is None or not xq.per_tensor or wf is None or wf.ndim != 4:
        return ops_nn._conv(imp, node, name, ins, attrs)
    w = dq_weight(imp, node.input[1], 0, name + "/w")
    if w is None:
        return ops_nn._conv(imp, node, name, ins, attrs)
    n_out = wf.shape[0]
    ok, bias = bias_of(imp, node.input[2] if len(node.input) > 2 else "", xq, w[1], n_out, name + "/b")
    if not ok:
        return ops_nn._conv(imp, node, name, ins, attrs)
    target = requant_target(imp, node)
    out = imp.g.op("QLinearConv2D", [int8_input(imp, ins[0], xq, name + "/x"), w[0]] + bias,
                   name, **conv_geometry(attrs), **fused_attrs(xq, target))
    return finish_fused(imp, out, target)


def _dense(imp: Importer, node: Any, name: str, ins: list[str], xq: QParams, trans_b: bool,
           bias_name: str) -> str | None:
    """QLinearDense for a DequantizeLinear'd input times DequantizeLinear'd 2-D weights."""
    w = dq_weight(imp, node.input[1], 0 if trans_b else 1, name + "/w")
    b = imp.const_of(ins[1])
    if w is None or b is None or b.ndim != 2:
        return None
    n_out = b.shape[0] if trans_b else b.shape[1]
    ok, bias = bias_of(imp, bias_name, xq, w[1], n_out, name + "/b")
    if not ok:
        return None
    target = requant_target(imp, node)
    out = imp.g.op("QLinearDense", [int8_input(imp, ins[0], xq, name + "/x"), w[0]] + bias,
                   name, **({"transpose_b": True} if trans_b else {}), **fused_attrs(xq, target))
    return finish_fused(imp, out, target)


def _matmul(imp: Importer, node: Any, name: str, ins: list[str], attrs: dict[str, Any]) -> Any:
    xq = imp.qparams.get(ins[0])
    if xq is not None and xq.per_tensor and (imp.rank(node.input[0]) or 0) >= 2:
        out = _dense(imp, node, name, ins, xq, False, "")
        if out is not None:
            return out
    return ops_nn._matmul(imp, node, name, ins, attrs)


def _gemm(imp: Importer, node: Any, name: str, ins: list[str], attrs: dict[str, Any]) -> Any:
    xq = imp.qparams.get(ins[0])
    plain = (not attrs.get("transA", 0) and float(attrs.get("alpha", 1.0)) == 1.0
             and float(attrs.get("beta", 1.0)) == 1.0)
    if xq is not None and xq.per_tensor and plain:
        out = _dense(imp, node, name, ins, xq, bool(attrs.get("transB", 0)),
                     node.input[2] if len(node.input) > 2 else "")
        if out is not None:
            return out
    return ops_nn._gemm(imp, node, name, ins, attrs)


def _const_params(imp: Importer, node: Any, x: np.ndarray, attrs: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """A constant Q/DQ's scale and zero point broadcast to ``x``'s shape (per tensor, per axis
    or blocked), for numpy."""
    s = np.asarray(const_input(imp, node.input[1]), np.float32)
    z = const_input(imp, node.input[2]) if len(node.input) > 2 and node.input[2] else None
    z = np.zeros_like(s, dtype=np.float32) if z is None else np.asarray(z).astype(np.float32)
    if s.size == 1:
        return s.reshape(()), z.reshape(())
    axis = int(attrs.get("axis", 1)) % max(x.ndim, 1)
    block = int(attrs.get("block_size", 0))
    if block:
        s, z = (np.take(np.repeat(a, block, axis=axis), range(x.shape[axis]), axis=axis) for a in (s, z))
        return s, z
    shape = [1] * x.ndim
    shape[axis] = -1
    return s.reshape(shape), z.reshape(shape)


def _runtime_param(imp: Importer, node: Any, i: int, attrs: dict[str, Any], hint: str) -> str:
    """Scale or zero point input ``i`` computed at run time, as float32 broadcasting against the
    node's input 0 (per tensor, per ``axis``, or blocked along it by ``block_size``)."""
    x_shape, p_shape = shape_of_value(imp, node.input[0]), shape_of_value(imp, node.input[i])
    if x_shape is None or p_shape is None or -1 in p_shape:
        raise Refuse(f"{node.op_type} with a run-time scale or zero point of unknown shape")
    v = imp.cast(imp.values[node.input[i]], "float32", hint + "/f32")
    rank, size = len(x_shape), int(np.prod(p_shape)) if p_shape else 1
    axis = int(attrs.get("axis", 1))
    axis = axis + rank if axis < 0 else axis
    block = int(attrs.get("block_size", 0))
    if size == 1 and len(p_shape) <= 1:
        return v
    if not block:
        if len(p_shape) != 1 or not 0 <= axis < rank or x_shape[axis] not in (-1, size):
            raise Refuse(f"{node.op_type} with a scale of shape {p_shape} for input {x_shape} (axis {axis})")
        return imp.g.op("Reshape", [v], hint, shape=[size] + [1] * (rank - 1 - axis))
    n = x_shape[axis]
    if len(p_shape) != rank or n < 0 or p_shape[axis] != -(-n // block):
        raise Refuse(f"{node.op_type} with block_size {block}: scale {p_shape} does not block input {x_shape}")
    # Each entry repeated block_size times along axis, then cut to the input's length.
    inner = imp.g.op("Reshape", [v], hint + "/split", shape=p_shape[:axis + 1] + [1] + p_shape[axis + 1:])
    rep = imp.g.op("Concat", [inner] * block, hint + "/repeat", axis=axis + 1)
    flat = imp.g.op("Reshape", [rep], hint + "/merge",
                    shape=p_shape[:axis] + [p_shape[axis] * block] + p_shape[axis + 1:])
    return imp.g.op("Slice", [flat], hint, axis=axis, start=0, end=n)


def _quantize_runtime(imp: Importer, node: Any, name: str, ins: list[str], attrs: dict[str, Any]) -> str:
    """QuantizeLinear with run-time parameters, as ONNX's reference: saturate(rint(x / scale)
    + zero_point)."""
    zp_name = node.input[2] if len(node.input) > 2 else ""
    dtype = imp.onnx_dtypes.get(zp_name) or imp.onnx_dtypes.get(node.output[0]) or "uint8"
    if dtype not in CODES:
        raise Refuse(f"QuantizeLinear to {dtype}")
    y = imp.g.op("Div", [ins[0], _runtime_param(imp, node, 1, attrs, name + "/scale")], name + "/div")
    y = imp.g.op("Math", [y], name + "/round", fn="round")
    if zp_name:
        y = imp.g.op("Add", [y, _runtime_param(imp, node, 2, attrs, name + "/zp")], name + "/zp")
    lo, hi = (-128, 127) if dtype == "int8" else (0, 255)
    y = imp.g.op("Clip", [y], name + "/clip", min=float(lo), max=float(hi))
    return imp.cast(y, dtype, name)


def _dequantize_runtime(imp: Importer, node: Any, name: str, ins: list[str], attrs: dict[str, Any]) -> str:
    """DequantizeLinear with run-time parameters: (x - zero_point) * scale in float32."""
    v = ins[0]
    if v in imp.qparams:  # codes held as real values
        v = imp.g.op("QuantizeLinear", [v], name + "/codes", **imp.qparams[v].native_attrs())
    x = imp.cast(v, "float32", name + "/f32")
    if len(node.input) > 2 and node.input[2]:
        x = imp.g.op("Sub", [x, _runtime_param(imp, node, 2, attrs, name + "/zp")], name + "/centered")
    return imp.g.op("Mul", [x, _runtime_param(imp, node, 1, attrs, name + "/scale")], name)


def _quantize_linear(imp: Importer, node: Any, name: str, ins: list[str], attrs: dict[str, Any]) -> Any:
    c = imp.const_of(ins[0])
    if c is not None and all(const_input(imp, i) is not None for i in node.input[1:] if i):
        # A constant below opset 19, which onnx's evaluator does not fold.
        q = read_params(imp, node, name, 1, 2 if len(node.input) > 2 else None,
                        imp.onnx_dtypes.get(node.output[0]))
        assert q is not None
        s, z = _const_params(imp, node, c, attrs)
        lo, hi = (-128, 127) if q.dtype == "int8" else (0, 255)
        codes = np.clip(np.rint(c.astype(np.float32) / s) + z, lo, hi).astype(q.dtype)
        return imp.g.const(codes, name)
    if imp.dtype_of(ins[0]) != "float32":
        raise Refuse(f"QuantizeLinear of {imp.dtype_of(ins[0])}")
    if attrs.get("block_size", 0):
        return _quantize_runtime(imp, node, name, ins, attrs)
    q = read_params(imp, node, name, 1, 2 if len(node.input) > 2 else None,
                    imp.onnx_dtypes.get(node.output[0]), int(attrs.get("axis", 1)), imp.rank(node.input[0]))
    if q is None:
        return _quantize_runtime(imp, node, name, ins, attrs)
    return quantized(imp, ins[0], q, name)


def _dequantize_linear(imp: Importer, node: Any, name: str, ins: list[str], attrs: dict[str, Any]) -> Any:
    c = imp.const_of(ins[0])
    if c is not None and all(const_input(imp, i) is not None for i in node.input[1:] if i):
        # Constant codes (weights, int32 biases) below opset 19, which onnx's evaluator does not
        # fold: as ONNX's reference computes them.
        read_params(imp, node, name, 1, None, "int8")  # checks the scales
        s, z = _const_params(imp, node, c, attrs)
        return imp.g.const(((c.astype(np.float32) - z) * s).astype(np.float32), name)
    v = ins[0]
    codes_dtype = imp.qparams[v].dtype if v in imp.qparams else imp.dtype_of(v)
    if codes_dtype not in CODES:
        raise Refuse(f"DequantizeLinear of run-time {codes_dtype}")
    if attrs.get("block_size", 0):
        return _dequantize_runtime(imp, node, name, ins, attrs)
    q = read_params(imp, node, name, 1, 2 if len(node.input) > 2 else None, codes_dtype,
                    int(attrs.get("axis", 1)), imp.rank(node.input[0]))
    if q is None:
        return _dequantize_runtime(imp, node, name, ins, attrs)
    return real_of(imp, ins[0], q, name)


HANDLERS: dict[str, Handler] = {
    k: refusing(h) for k, h in {
        "Conv": _conv,
        "MatMul": _matmul,
        "Gemm": _gemm,
        "QuantizeLinear": _quantize_linear,
        "DequantizeLinear": _dequantize_linear,
    }.items()
}
