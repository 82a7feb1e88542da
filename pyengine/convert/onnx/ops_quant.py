"""Quantized ONNX models -> the native int8 ops (docs/format.md "Quantized ops", docs/int8.md).

Both forms onnxruntime's ``quantize_static`` writes are read:

- QDQ: ``DequantizeLinear -> Conv | MatMul | Gemm [-> Relu | Clip] -> QuantizeLinear`` with
  constant int8/uint8 weights becomes one QLinearConv2D / QLinearDense that computes in int8 and
  requantizes onto the QuantizeLinear's grid; a QuantizeLinear/DequantizeLinear pair around any
  other op runs that op in float on the grid values.
- QOperator: QLinearConv, QLinearMatMul, MatMulInteger, ConvInteger and com.microsoft's QGemm,
  QLinearAdd, QLinearMul, QLinearGlobalAveragePool, QLinearAveragePool, QLinearConcat,
  QLinearSigmoid, QLinearLeakyRelu.

A run-time int8/uint8 ONNX tensor is held as a float32 native value of its real values
``(q - zero_point) * scale`` (Importer.qparams); the native int8 ops quantize such a value back
exactly. Ops with no int8 kernel compute in float on the real values and round their result
onto the output grid (QuantizeLinear then DequantizeLinear), with ONNX's rounding (half to even)
and saturation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from pyengine.convert.onnx import ops_nn
from pyengine.convert.onnx._importer import Handler, Importer
from pyengine.errors import ModelFormatError

_CODES = ("int8", "uint8")


@dataclass(frozen=True)
class QParams:
    """One quantization: real = (q - zero_point) * scale, per tensor or per index of ``axis``."""

    scale: tuple[float, ...]
    zero_point: tuple[int, ...]
    dtype: str  # int8 or uint8
    axis: int = 1

    @property
    def per_tensor(self) -> bool:
        return len(self.scale) == 1

    def native_attrs(self) -> dict[str, Any]:
        """Attributes of the native QuantizeLinear/DequantizeLinear."""
        if self.per_tensor:
            return {"scale": self.scale[0], "zero_point": self.zero_point[0], "dtype": self.dtype}
        return {"scale": list(self.scale), "zero_point": list(self.zero_point), "axis": self.axis,
                "dtype": self.dtype}

    def act_attrs(self, prefix: str) -> dict[str, Any]:
        """The ``<prefix>_scale/_zero_point/_dtype`` attributes of a native quantized op."""
        return {f"{prefix}_scale": self.scale[0], f"{prefix}_zero_point": self.zero_point[0],
                f"{prefix}_dtype": self.dtype}

    def real(self, codes: np.ndarray) -> np.ndarray:
        """Constant codes as float32 real values."""
        shape = [1] * codes.ndim
        if not self.per_tensor:
            shape[self.axis] = -1
        s = np.asarray(self.scale, np.float32).reshape(shape)
        z = np.asarray(self.zero_point, np.float32).reshape(shape)
        return ((codes.astype(np.float32) - z) * s).astype(np.float32)


def _const(imp: Importer, onnx_name: str) -> np.ndarray | None:
    """The constant ONNX value ``onnx_name``; None when it is computed at run time, or not yet
    converted (a QuantizeLinear's scale from a Constant node placed after the op looking ahead)."""
    v = imp.values.get(onnx_name) if onnx_name else None
    return imp.const_of(v) if v else None


def read_params(imp: Importer, node: Any, name: str, scale_in: int, zp_in: int | None,
                codes_dtype: str | None, axis: int = 1, rank: int | None = None) -> QParams | None:
    """The quantization of ``node``'s inputs ``scale_in`` / ``zp_in``; None when either is computed
    at run time.

    Raises
    ------
    ModelFormatError
        A scale that is zero, negative or not finite, or a zero point that does not match it
        (the message names the node and the tensor).
    """
    s_name = node.input[scale_in] if scale_in < len(node.input) else ""
    z_name = node.input[zp_in] if zp_in is not None and zp_in < len(node.input) else ""
    if not s_name:
        raise ModelFormatError(f"'{imp.path}': node '{name}' ({node.op_type}) has no scale input {scale_in}")
    s, z = _const(imp, s_name), _const(imp, z_name)
    if s is None or (z_name and z is None):
        return None
    dtype = str(z.dtype) if z is not None else (codes_dtype or "uint8")
    if dtype not in _CODES:
        raise _Refuse(f"{node.op_type} to {dtype} (the engine's codes are int8 and uint8)")
    flat = np.asarray(s, np.float64).ravel()
    for i, v in enumerate(flat):
        if not (np.isfinite(v) and v > 0 and np.float32(v) > 0):
            where = f"'{s_name}'" + (f"[{i}]" if flat.size > 1 else "")
            raise ModelFormatError(f"'{imp.path}': node '{name}' ({node.op_type}): scale {where} is {v}; "
                                   f"a scale must be a finite number > 0")
    if flat.size == 0:
        raise ModelFormatError(f"'{imp.path}': node '{name}': scale '{s_name}' is empty")
    zp = np.zeros(1, np.int64) if z is None else np.asarray(z).astype(np.int64).ravel()
    if zp.size not in (1, flat.size) or (zp.size > 1 and zp.size != flat.size):
        raise ModelFormatError(f"'{imp.path}': node '{name}': zero point '{z_name}' has {zp.size} entries "
                               f"but scale '{s_name}' has {flat.size}")
    if flat.size > 1 and rank is not None:
        axis = axis + rank if axis < 0 else axis
    if zp.size == 1 and flat.size > 1:
        zp = np.repeat(zp, flat.size)
    return QParams(tuple(float(np.float32(v)) for v in flat), tuple(int(v) for v in zp), dtype, axis)


class _Refuse(Exception):
    """A quantized pattern the engine has no form of (the handler refuses the node with it)."""


def _refusing(handler: Handler) -> Handler:
    """``handler`` with its _Refuse turned into an UnsupportedOpsError entry naming the node."""

    def run(imp: Importer, node: Any, name: str, ins: list[str], attrs: dict[str, Any]) -> Any:
        try:
            out = handler(imp, node, name, ins, attrs)
        except _Refuse as exc:
            return [imp.g.unsupported_op(name, str(exc))] * len(node.output)
        # ONNX's shape inference stops at com.microsoft ops: keep the element types known.
        if isinstance(out, str) and node.output and node.output[0] not in imp.onnx_dtypes:
            if node.op_type == "DequantizeLinear":
                imp.onnx_dtypes[node.output[0]] = "float32"
            elif out in imp.qparams:
                imp.onnx_dtypes[node.output[0]] = imp.qparams[out].dtype
            else:
                imp.onnx_dtypes[node.output[0]] = imp.dtype_of(out)
        return out

    return run


def _mark(imp: Importer, value: str, q: QParams, raw: str | None = None) -> str:
    imp.qparams[value] = q
    imp.vdtypes[value] = "float32"
    if raw is not None:
        imp.raw[value] = raw
    return value


def real_of(imp: Importer, v: str, q: QParams, hint: str) -> str:
    """Native value ``v`` holding codes on grid ``q`` (real values of a quantized tensor, or
    int8/uint8 codes) as its real values."""
    if imp.g.is_const(v):
        c = imp.const_of(v)
        assert c is not None
        if str(c.dtype) not in _CODES:
            raise _Refuse(f"a {c.dtype} constant where int8/uint8 codes are expected")
        return imp.g.const(q.real(c), hint)
    have = imp.qparams.get(v)
    if have == q:
        return v
    if have is not None:  # the same codes read on another grid
        codes = imp.g.op("QuantizeLinear", [v], hint + "/codes", **have.native_attrs())
    elif imp.dtype_of(v) in _CODES:
        codes = imp.cast(v, "float32", hint + "/float")
    else:
        raise _Refuse(f"a {imp.dtype_of(v)} value where int8/uint8 codes are expected")
    return _mark(imp, imp.g.op("DequantizeLinear", [codes], hint, **q.native_attrs()), q)


def quantized(imp: Importer, x: str, q: QParams, hint: str) -> str:
    """Float value ``x`` rounded onto grid ``q`` (ONNX's QuantizeLinear), as real values."""
    if imp.qparams.get(x) == q:
        return x
    codes = imp.g.op("QuantizeLinear", [x], hint + "/q", **q.native_attrs())
    return _mark(imp, imp.g.op("DequantizeLinear", [codes], hint, **q.native_attrs()), q, raw=x)


def _int8_input(imp: Importer, v: str, q: QParams, hint: str) -> str:
    """What a native int8 op with input quantization ``q`` reads for ``v``: the float value the
    codes were rounded from where known (the op rounds it identically), else the real values."""
    if imp.qparams.get(v) == q:
        return imp.raw.get(v, v)
    return real_of(imp, v, q, hint)


def _weight(imp: Importer, codes: np.ndarray | None, q: QParams | None, axis: int,
            hint: str) -> str | None:
    """Constant weight codes as a native quantized tensor (per tensor or per index of ``axis``),
    or None where the int8 kernels cannot take them (codes minus zero point outside int8)."""
    if codes is None or q is None or str(codes.dtype) not in _CODES:
        return None
    if not q.per_tensor and (q.axis != axis or len(q.scale) != codes.shape[axis]):
        return None
    shape = [1] * codes.ndim
    if not q.per_tensor:
        shape[axis] = -1
    centered = codes.astype(np.int64) - np.asarray(q.zero_point).reshape(shape)
    if centered.min(initial=0) < -128 or centered.max(initial=0) > 127:
        return None
    return imp.g.quantized_const(codes, q.scale, q.zero_point, axis, hint)


def _dq_weight(imp: Importer, onnx_name: str, axis: int, hint: str) -> tuple[str, QParams] | None:
    """A weight written as DequantizeLinear(constant codes): the native quantized tensor."""
    dq = imp.producers.get(onnx_name)
    if dq is None or dq.op_type != "DequantizeLinear" or dq.domain not in ("", "ai.onnx"):
        return None
    attrs = {a.name: imp.onnx.helper.get_attribute_value(a) for a in dq.attribute}
    codes = _const(imp, dq.input[0])
    if codes is None or attrs.get("block_size", 0):
        return None
    q = read_params(imp, dq, dq.name or dq.output[0], 1, 2 if len(dq.input) > 2 else None,
                    str(codes.dtype), int(attrs.get("axis", 1)), codes.ndim)
    w = _weight(imp, codes, q, axis, hint)
    return None if w is None or q is None else (w, q)


def _bias(imp: Importer, onnx_name: str, xq: QParams, wq: QParams, n: int,
          hint: str) -> tuple[bool, list[str]]:
    """The bias of a fused op, as (usable, [] or [value]): int32 codes where they are on the
    grid x_scale * w_scale, else float32 (the native op rounds it); not usable when it is
    computed at run time or misshapen."""
    if not onnx_name:
        return True, []
    dq = imp.producers.get(onnx_name)
    if dq is not None and dq.op_type == "DequantizeLinear" and len(dq.input) > 1:
        codes, s = _const(imp, dq.input[0]), _const(imp, dq.input[1])
        z = _const(imp, dq.input[2]) if len(dq.input) > 2 and dq.input[2] else None
        want = np.float64(xq.scale[0]) * np.asarray(wq.scale, np.float64)
        if (codes is not None and codes.dtype == np.int32 and codes.size == n and s is not None
                and (z is None or not np.any(z)) and np.allclose(np.ravel(s), want, rtol=1e-6, atol=0)):
            return True, [imp.g.const(codes.reshape(n), hint)]
    b = _const(imp, onnx_name)
    if b is None or b.size != n or b.dtype.kind != "f":
        return False, []
    return True, [imp.g.const(b.reshape(n).astype(np.float32), hint)]


def _requant_target(imp: Importer, node: Any) -> tuple[QParams, dict[str, Any], list[str]] | None:
    """Where ``node``'s only reader is a QuantizeLinear (through at most one Relu or Clip with
    constant bounds): its grid, the activation to fuse, and the ONNX values the fused op computes."""
    outputs = {o.name for o in imp.model.graph.output}
    cur, names = node.output[0], []
    act: dict[str, Any] = {}
    while True:
        readers = imp.readers.get(cur, [])
        if len(readers) != 1 or cur in outputs:
            return None
        r = readers[0]
        if r.domain not in ("", "ai.onnx"):
            return None
        if r.op_type == "QuantizeLinear":
            break
        if act:
            return None
        if r.op_type == "Relu":
            act = {"activation": "relu"}
        elif r.op_type == "Clip":
            ra = {a.name: imp.onnx.helper.get_attribute_value(a) for a in r.attribute}
            lo = _const(imp, r.input[1]) if len(r.input) > 1 and r.input[1] else ra.get("min")
            hi = _const(imp, r.input[2]) if len(r.input) > 2 and r.input[2] else ra.get("max")
            if (len(r.input) > 1 and r.input[1] and lo is None) or (len(r.input) > 2 and r.input[2] and hi is None):
                return None
            act = {"activation": "clip", "min": float(np.ravel(lo)[0]) if lo is not None else -np.inf,
                   "max": float(np.ravel(hi)[0]) if hi is not None else np.inf}
        else:
            return None
        names.append(r.output[0])
        cur = r.output[0]
    qa = {a.name: imp.onnx.helper.get_attribute_value(a) for a in r.attribute}
    if qa.get("block_size", 0):
        return None
    try:
        q = read_params(imp, r, r.name or r.output[0], 1, 2 if len(r.input) > 2 else None,
                        imp.onnx_dtypes.get(r.output[0]))
    except _Refuse:
        return None
    if q is None or not q.per_tensor:
        return None
    return q, act, names + [r.output[0]]


def _finish_fused(imp: Importer, out: str, target: tuple[QParams, dict[str, Any], list[str]] | None) -> str:
    if target is not None:
        _mark(imp, out, target[0])
        for n in target[2]:
            imp.done[n] = out
    return out


def _fused_attrs(xq: QParams, target: tuple[QParams, dict[str, Any], list[str]] | None) -> dict[str, Any]:
    attrs = xq.act_attrs("x")
    if target is not None:
        attrs.update(target[0].act_attrs("y"))
        attrs.update(target[1])
    return attrs


def _conv_geometry(attrs: dict[str, Any]) -> dict[str, Any]:
    return {"strides": ops_nn._two(attrs.get("strides"), 2, 1),
            "dilations": ops_nn._two(attrs.get("dilations"), 2, 1),
            "groups": int(attrs.get("group", 1)), **ops_nn._pads2d(attrs, 2)}


# ---- QDQ: float ops between DequantizeLinear and QuantizeLinear ----

def _conv(imp: Importer, node: Any, name: str, ins: list[str], attrs: dict[str, Any]) -> Any:
    """Conv; DequantizeLinear'd input and weights -> QLinearConv2D."""
    xq, wf = imp.qparams.get(ins[0]), imp.const_of(ins[1])
    if xq is None or not xq.per_tensor or wf is None or wf.ndim != 4:
        return ops_nn._conv(imp, node, name, ins, attrs)
    w = _dq_weight(imp, node.input[1], 0, name + "/w")
    if w is None:
        return ops_nn._conv(imp, node, name, ins, attrs)
    n_out = wf.shape[0]
    ok, bias = _bias(imp, node.input[2] if len(node.input) > 2 else "", xq, w[1], n_out, name + "/b")
    if not ok:
        return ops_nn._conv(imp, node, name, ins, attrs)
    target = _requant_target(imp, node)
    out = imp.g.op("QLinearConv2D", [_int8_input(imp, ins[0], xq, name + "/x"), w[0]] + bias,
                   name, **_conv_geometry(attrs), **_fused_attrs(xq, target))
    return _finish_fused(imp, out, target)


def _dense(imp: Importer, node: Any, name: str, ins: list[str], xq: QParams, trans_b: bool,
           bias_name: str) -> str | None:
    """QLinearDense for a DequantizeLinear'd input times DequantizeLinear'd 2-D weights."""
    w = _dq_weight(imp, node.input[1], 0 if trans_b else 1, name + "/w")
    b = imp.const_of(ins[1])
    if w is None or b is None or b.ndim != 2:
        return None
    n_out = b.shape[0] if trans_b else b.shape[1]
    ok, bias = _bias(imp, bias_name, xq, w[1], n_out, name + "/b")
    if not ok:
        return None
    target = _requant_target(imp, node)
    out = imp.g.op("QLinearDense", [_int8_input(imp, ins[0], xq, name + "/x"), w[0]] + bias,
                   name, **({"transpose_b": True} if trans_b else {}), **_fused_attrs(xq, target))
    return _finish_fused(imp, out, target)


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
    s = np.asarray(_const(imp, node.input[1]), np.float32)
    z = _const(imp, node.input[2]) if len(node.input) > 2 and node.input[2] else None
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


def _shape(imp: Importer, onnx_name: str) -> list[int] | None:
    c = _const(imp, onnx_name)
    return list(c.shape) if c is not None else imp.shapes.get(onnx_name)


def _runtime_param(imp: Importer, node: Any, i: int, attrs: dict[str, Any], hint: str) -> str:
    """Scale or zero point input ``i`` computed at run time, as float32 broadcasting against the
    node's input 0 (per tensor, per ``axis``, or blocked along it by ``block_size``)."""
    x_shape, p_shape = _shape(imp, node.input[0]), _shape(imp, node.input[i])
    if x_shape is None or p_shape is None or -1 in p_shape:
        raise _Refuse(f"{node.op_type} with a run-time scale or zero point of unknown shape")
    v = imp.cast(imp.values[node.input[i]], "float32", hint + "/f32")
    rank, size = len(x_shape), int(np.prod(p_shape)) if p_shape else 1
    axis = int(attrs.get("axis", 1))
    axis = axis + rank if axis < 0 else axis
    block = int(attrs.get("block_size", 0))
    if size == 1 and len(p_shape) <= 1:
        return v
    if not block:
        if len(p_shape) != 1 or not 0 <= axis < rank or x_shape[axis] not in (-1, size):
            raise _Refuse(f"{node.op_type} with a scale of shape {p_shape} for input {x_shape} (axis {axis})")
        return imp.g.op("Reshape", [v], hint, shape=[size] + [1] * (rank - 1 - axis))
    n = x_shape[axis]
    if len(p_shape) != rank or n < 0 or p_shape[axis] != -(-n // block):
        raise _Refuse(f"{node.op_type} with block_size {block}: scale {p_shape} does not block input {x_shape}")
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
    if dtype not in _CODES:
        raise _Refuse(f"QuantizeLinear to {dtype}")
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
    if c is not None and all(_const(imp, i) is not None for i in node.input[1:] if i):
        # A constant below opset 19, which onnx's evaluator does not fold.
        q = read_params(imp, node, name, 1, 2 if len(node.input) > 2 else None,
                        imp.onnx_dtypes.get(node.output[0]))
        assert q is not None
        s, z = _const_params(imp, node, c, attrs)
        lo, hi = (-128, 127) if q.dtype == "int8" else (0, 255)
        codes = np.clip(np.rint(c.astype(np.float32) / s) + z, lo, hi).astype(q.dtype)
        return imp.g.const(codes, name)
    if imp.dtype_of(ins[0]) != "float32":
        raise _Refuse(f"QuantizeLinear of {imp.dtype_of(ins[0])}")
    if attrs.get("block_size", 0):
        return _quantize_runtime(imp, node, name, ins, attrs)
    q = read_params(imp, node, name, 1, 2 if len(node.input) > 2 else None,
                    imp.onnx_dtypes.get(node.output[0]), int(attrs.get("axis", 1)), imp.rank(node.input[0]))
    if q is None:
        return _quantize_runtime(imp, node, name, ins, attrs)
    return quantized(imp, ins[0], q, name)


def _dequantize_linear(imp: Importer, node: Any, name: str, ins: list[str], attrs: dict[str, Any]) -> Any:
    c = imp.const_of(ins[0])
    if c is not None and all(_const(imp, i) is not None for i in node.input[1:] if i):
        # Constant codes (weights, int32 biases) below opset 19, which onnx's evaluator does not
        # fold: as ONNX's reference computes them.
        read_params(imp, node, name, 1, None, "int8")  # checks the scales
        s, z = _const_params(imp, node, c, attrs)
        return imp.g.const(((c.astype(np.float32) - z) * s).astype(np.float32), name)
    v = ins[0]
    codes_dtype = imp.qparams[v].dtype if v in imp.qparams else imp.dtype_of(v)
    if codes_dtype not in _CODES:
        raise _Refuse(f"DequantizeLinear of run-time {codes_dtype}")
    if attrs.get("block_size", 0):
        return _dequantize_runtime(imp, node, name, ins, attrs)
    q = read_params(imp, node, name, 1, 2 if len(node.input) > 2 else None, codes_dtype,
                    int(attrs.get("axis", 1)), imp.rank(node.input[0]))
    if q is None:
        return _dequantize_runtime(imp, node, name, ins, attrs)
    return real_of(imp, ins[0], q, name)


# ---- QOperator ----

def _qparams_or_refuse(imp: Importer, node: Any, name: str, s: int, z: int, codes: str | None,
                       axis: int = 1, rank: int | None = None) -> QParams:
    q = read_params(imp, node, name, s, z, codes, axis, rank)
    if q is None:
        raise _Refuse(f"{node.op_type} with a run-time scale or zero point")
    return q


def _qlinear_conv(imp: Importer, node: Any, name: str, ins: list[str], attrs: dict[str, Any]) -> Any:
    xq = _qparams_or_refuse(imp, node, name, 1, 2, imp.onnx_dtypes.get(node.input[0]))
    codes = _const(imp, node.input[3])
    if codes is None or codes.ndim != 4:
        raise _Refuse("QLinearConv with run-time or non-2-D-convolution weights")
    wq = _qparams_or_refuse(imp, node, name, 4, 5, str(codes.dtype), 0, 4)
    yq = _qparams_or_refuse(imp, node, name, 6, 7, imp.onnx_dtypes.get(node.output[0]))
    if not (xq.per_tensor and yq.per_tensor):
        raise _Refuse("QLinearConv with a per-axis input or output quantization")
    w = _weight(imp, codes, wq, 0, name + "/w")
    bias = ins[8] if len(ins) > 8 and ins[8] else None
    if bias is not None and not imp.g.is_const(bias):
        raise _Refuse("QLinearConv with a run-time bias")
    if w is None:  # codes the int8 kernels cannot take: float on the real values
        x = real_of(imp, ins[0], xq, name + "/x")
        wf = imp.g.const(wq.real(codes), name + "/wf")
        bf = None
        if bias is not None:
            b = imp.const_of(bias)
            assert b is not None
            bf = imp.g.const((b.astype(np.float64) * xq.scale[0] * np.asarray(wq.scale)).astype(np.float32),
                             name + "/bf")
        y = imp.g.op("Conv2D", [x, wf] + ([bf] if bf else []), name + "/float", **_conv_geometry(attrs))
        return quantized(imp, y, yq, name)
    out = imp.g.op("QLinearConv2D", [_int8_input(imp, ins[0], xq, name + "/x"), w] + ([bias] if bias else []),
                   name, **_conv_geometry(attrs), **xq.act_attrs("x"), **yq.act_attrs("y"))
    return _mark(imp, out, yq)


def _qlinear_dense(imp: Importer, node: Any, name: str, ins: list[str], a: int, b: int, bias: str | None,
                   yq: QParams | None, trans_b: bool) -> Any:
    """a (codes, params at a+1, a+2) times b (codes, params at b+1, b+2) + bias -> y."""
    aq = _qparams_or_refuse(imp, node, name, a + 1, a + 2, imp.onnx_dtypes.get(node.input[a]))
    codes = _const(imp, node.input[b])
    rank_b = codes.ndim if codes is not None else imp.rank(node.input[b])
    n_axis = 0 if trans_b else (rank_b or 2) - 1
    bq = _qparams_or_refuse(imp, node, name, b + 1, b + 2,
                            str(codes.dtype) if codes is not None else imp.onnx_dtypes.get(node.input[b]),
                            n_axis, rank_b)
    if not aq.per_tensor or (yq is not None and not yq.per_tensor):
        raise _Refuse(f"{node.op_type} with a per-axis input or output quantization")
    w = None
    if codes is not None and codes.ndim == 2 and imp.rank(node.input[a]) != 0:
        w = _weight(imp, codes, bq, n_axis, name + "/w")
    if w is not None:
        out = imp.g.op("QLinearDense", [_int8_input(imp, ins[a], aq, name + "/a"), w] + ([bias] if bias else []),
                       name, **({"transpose_b": True} if trans_b else {}), **aq.act_attrs("x"),
                       **(yq.act_attrs("y") if yq is not None else {}))
        return out if yq is None else _mark(imp, out, yq)
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
        raise _Refuse(f"{node.op_type} with run-time weights and a bias or transB")
    # Run-time (or non-2-D) B: a float product of the real values, rounded onto y's grid.
    ra = real_of(imp, ins[a], aq, name + "/a")
    rb = real_of(imp, ins[b], bq, name + "/b")
    prod = ops_nn._matmul(imp, _matmul_node(imp, node, a, b), name + "/float", [ra, rb], {})
    if prod is None:
        raise _Refuse(f"{node.op_type} of these ranks")
    return prod if yq is None else quantized(imp, prod, yq, name)


def _matmul_node(imp: Importer, node: Any, a: int, b: int) -> Any:
    """A MatMul node of ``node``'s inputs a and b (ops_nn's MatMul reads their ranks)."""
    return imp.onnx.helper.make_node("MatMul", [node.input[a], node.input[b]], [node.output[0]])


def _qlinear_matmul(imp: Importer, node: Any, name: str, ins: list[str], attrs: dict[str, Any]) -> Any:
    if any(_const(imp, node.input[i]) is None for i in (1, 2, 4, 5, 6, 7)):
        return _qlinear_matmul_runtime(imp, node, name, ins)
    yq = _qparams_or_refuse(imp, node, name, 6, 7, imp.onnx_dtypes.get(node.output[0]))
    return _qlinear_dense(imp, node, name, ins, 0, 3, None, yq, False)


def _qlinear_matmul_runtime(imp: Importer, node: Any, name: str, ins: list[str]) -> str:
    """QLinearMatMul with run-time scales or zero points (one number each), as ONNX's reference:
    the integer product of the centered codes (in float32, exact below 2^24), times
    a_scale * b_scale / y_scale, plus y_zero_point, rounded half to even and saturated."""
    for i in (1, 2, 4, 5, 6, 7):
        shape = _shape(imp, node.input[i])
        if shape is None or int(np.prod(shape)) != 1:
            raise _Refuse("QLinearMatMul with run-time per-row or per-column scales or zero points")
    dtype = imp.onnx_dtypes.get(node.output[0])
    if dtype not in _CODES:
        raise _Refuse(f"QLinearMatMul to {dtype}")
    a_shape, b_shape = _shape(imp, node.input[0]), _shape(imp, node.input[3])
    k = a_shape[-1] if a_shape else -1
    if k <= 0 or b_shape is None or len(b_shape) < 2 or k * 255 * 255 >= 2 ** 24:
        raise _Refuse("QLinearMatMul with run-time scales whose int32 sums may exceed 2^24")

    def f32(i: int, hint: str) -> str:
        v = ins[i]
        if v in imp.qparams:
            v = imp.g.op("QuantizeLinear", [v], hint + "/codes", **imp.qparams[v].native_attrs())
        return imp.g.op("Reshape", [imp.cast(v, "float32", hint)], hint + "/1", shape=[1]) if i != 0 and i != 3 \
            else imp.cast(v, "float32", hint)

    a = imp.g.op("Sub", [f32(0, name + "/a"), f32(2, name + "/azp")], name + "/ac")
    b = imp.g.op("Sub", [f32(3, name + "/b"), f32(5, name + "/bzp")], name + "/bc")
    c = ops_nn._matmul(imp, _matmul_node(imp, node, 0, 3), name + "/int", [a, b], {})
    if c is None:
        raise _Refuse("QLinearMatMul of these ranks")
    k_scale = imp.g.op("Div", [imp.g.op("Mul", [f32(1, name + "/as"), f32(4, name + "/bs")], name + "/ab"),
                               f32(6, name + "/ys")], name + "/k")
    y = imp.g.op("Add", [imp.g.op("Mul", [c, k_scale], name + "/scaled"), f32(7, name + "/yzp")], name + "/shift")
    y = imp.g.op("Math", [y], name + "/round", fn="round")
    lo, hi = (-128, 127) if dtype == "int8" else (0, 255)
    return imp.cast(imp.g.op("Clip", [y], name + "/clip", min=float(lo), max=float(hi)), dtype, name)


def _qgemm(imp: Importer, node: Any, name: str, ins: list[str], attrs: dict[str, Any]) -> Any:
    if attrs.get("transA", 0) or float(attrs.get("alpha", 1.0)) != 1.0:
        raise _Refuse("QGemm with transA or alpha != 1")
    bias = ins[6] if len(ins) > 6 and ins[6] else None
    if bias is not None and (not imp.g.is_const(bias) or imp.dtype_of(bias) != "int32"):
        raise _Refuse("QGemm with a run-time or non-int32 bias")
    if bias is not None:
        b = imp.const_of(bias)
        assert b is not None
        bias = imp.g.const(b.reshape(-1), name + "/b")
    yq = None
    if len(node.input) > 7 and node.input[7]:
        yq = _qparams_or_refuse(imp, node, name, 7, 8, imp.onnx_dtypes.get(node.output[0]))
    return _qlinear_dense(imp, node, name, ins, 0, 3, bias, yq, bool(attrs.get("transB", 0)))


def _binary(op: str) -> Handler:
    def convert(imp: Importer, node: Any, name: str, ins: list[str], attrs: dict[str, Any]) -> Any:
        aq = _qparams_or_refuse(imp, node, name, 1, 2, imp.onnx_dtypes.get(node.input[0]))
        bq = _qparams_or_refuse(imp, node, name, 4, 5, imp.onnx_dtypes.get(node.input[3]))
        yq = _qparams_or_refuse(imp, node, name, 6, 7, imp.onnx_dtypes.get(node.output[0]))
        y = imp.g.op(op, [real_of(imp, ins[0], aq, name + "/a"), real_of(imp, ins[3], bq, name + "/b")],
                     name + "/float")
        return quantized(imp, y, yq, name)

    return convert


def _unary(op: str, fn: Any) -> Handler:
    """Ops of one quantized input (X, X_scale, X_zero_point, Y_scale, Y_zero_point); ``fn`` makes
    the float op on the real values (None: refused)."""

    def convert(imp: Importer, node: Any, name: str, ins: list[str], attrs: dict[str, Any]) -> Any:
        if attrs.get("channels_last", 0):
            raise _Refuse(f"{node.op_type} with channels_last")
        xq = _qparams_or_refuse(imp, node, name, 1, 2, imp.onnx_dtypes.get(node.input[0]))
        yq = _qparams_or_refuse(imp, node, name, 3, 4, imp.onnx_dtypes.get(node.output[0]))
        y = fn(imp, node, name + "/float", real_of(imp, ins[0], xq, name + "/x"), attrs)
        if y is None:
            raise _Refuse(f"{node.op_type} with these attributes")
        return quantized(imp, y, yq, name)

    return convert


def _qlinear_concat(imp: Importer, node: Any, name: str, ins: list[str], attrs: dict[str, Any]) -> Any:
    yq = _qparams_or_refuse(imp, node, name, 0, 1, imp.onnx_dtypes.get(node.output[0]))
    parts = []
    for k in range(2, len(node.input), 3):
        q = _qparams_or_refuse(imp, node, name, k + 1, k + 2, imp.onnx_dtypes.get(node.input[k]))
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
        if dt not in _CODES:
            raise _Refuse(f"{node.op_type} of {dt}")
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
                raise _Refuse(f"{node.op_type} with a per-row zero point of a run-time input")
            if zc is None and (imp.shapes.get(node.input[zi]) or [2]) not in ([], [1]):
                raise _Refuse(f"{node.op_type} with a run-time zero point that is not one number")
            f = imp.g.op("Sub", [f, imp.cast(z, "float32", hint + "/zp")], hint + "/centered")
        return f, 255.0

    a, amax = centered(0, 2, name + "/a")
    b, bmax = centered(1, 3, name + "/b")
    wshape = _shape(imp, node.input[1]) or []
    k = int(np.prod(wshape[1:])) if conv else (wshape[-2] if len(wshape) >= 2 else -1)
    if k <= 0 or amax * bmax * k >= 2.0 ** 24:
        raise _Refuse(f"{node.op_type} whose int32 sums may exceed 2^24 (computed exactly only below it)")
    if conv:
        y = ops_nn._conv(imp, node, name + "/float", [a, b], attrs)
    else:
        y = ops_nn._matmul(imp, node, name + "/float", [a, b], attrs)
    if y is None:
        raise _Refuse(f"{node.op_type} of these shapes or run-time weights")
    return imp.cast(y, "int32", name)


def _gap(imp: Importer, node: Any, name: str, x: str, attrs: dict[str, Any]) -> str | None:
    return imp.g.op("GlobalAvgPool", [x], name) if imp.rank(node.input[0]) in (None, 4) else None


def _avg_pool(imp: Importer, node: Any, name: str, x: str, attrs: dict[str, Any]) -> str | None:
    return ops_nn._pool(imp, node, name, [x], attrs)


HANDLERS: dict[str, Handler] = {
    k: _refusing(h) for k, h in {
        "Conv": _conv,
        "MatMul": _matmul,
        "Gemm": _gemm,
        "QuantizeLinear": _quantize_linear,
        "DequantizeLinear": _dequantize_linear,
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
