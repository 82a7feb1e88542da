"""The quantized ONNX import's shared parts (ops_quant.py: QDQ, ops_qoperator.py: QOperator).

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

CODES = ("int8", "uint8")

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


def const_input(imp: Importer, onnx_name: str) -> np.ndarray | None:
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
    s, z = const_input(imp, s_name), const_input(imp, z_name)
    if s is None or (z_name and z is None):
        return None
    dtype = str(z.dtype) if z is not None else (codes_dtype or "uint8")
    if dtype not in CODES:
        raise Refuse(f"{node.op_type} to {dtype} (the engine's codes are int8 and uint8)")
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


class Refuse(Exception):
    """A quantized pattern the engine has no form of (the handler refuses the node with it)."""


def refusing(handler: Handler) -> Handler:
    """``handler`` with its Refuse turned into an UnsupportedOpsError entry naming the node."""

    def run(imp: Importer, node: Any, name: str, ins: list[str], attrs: dict[str, Any]) -> Any:
        try:
            out = handler(imp, node, name, ins, attrs)
        except Refuse as exc:
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


def mark(imp: Importer, value: str, q: QParams, raw: str | None = None) -> str:
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
        if str(c.dtype) not in CODES:
            raise Refuse(f"a {c.dtype} constant where int8/uint8 codes are expected")
        return imp.g.const(q.real(c), hint)
    have = imp.qparams.get(v)
    if have == q:
        return v
    if have is not None:  # the same codes read on another grid
        codes = imp.g.op("QuantizeLinear", [v], hint + "/codes", **have.native_attrs())
    elif imp.dtype_of(v) in CODES:
        codes = imp.cast(v, "float32", hint + "/float")
    else:
        raise Refuse(f"a {imp.dtype_of(v)} value where int8/uint8 codes are expected")
    return mark(imp, imp.g.op("DequantizeLinear", [codes], hint, **q.native_attrs()), q)


def quantized(imp: Importer, x: str, q: QParams, hint: str) -> str:
    """Float value ``x`` rounded onto grid ``q`` (ONNX's QuantizeLinear), as real values."""
    if imp.qparams.get(x) == q:
        return x
    codes = imp.g.op("QuantizeLinear", [x], hint + "/q", **q.native_attrs())
    return mark(imp, imp.g.op("DequantizeLinear", [codes], hint, **q.native_attrs()), q, raw=x)


def int8_input(imp: Importer, v: str, q: QParams, hint: str) -> str:
    """What a native int8 op with input quantization ``q`` reads for ``v``: the float value the
    codes were rounded from where known (the op rounds it identically), else the real values."""
    if imp.qparams.get(v) == q:
        return imp.raw.get(v, v)
    return real_of(imp, v, q, hint)


def weight_tensor(imp: Importer, codes: np.ndarray | None, q: QParams | None, axis: int,
            hint: str) -> str | None:
    """Constant weight codes as a native quantized tensor (per tensor or per index of ``axis``),
    or None where the int8 kernels cannot take them (codes minus zero point outside int8)."""
    if codes is None or q is None or str(codes.dtype) not in CODES:
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


def dq_weight(imp: Importer, onnx_name: str, axis: int, hint: str) -> tuple[str, QParams] | None:
    """A weight written as DequantizeLinear(constant codes): the native quantized tensor."""
    dq = imp.producers.get(onnx_name)
    if dq is None or dq.op_type != "DequantizeLinear" or dq.domain not in ("", "ai.onnx"):
        return None
    attrs = {a.name: imp.onnx.helper.get_attribute_value(a) for a in dq.attribute}
    codes = const_input(imp, dq.input[0])
    if codes is None or attrs.get("block_size", 0):
        return None
    q = read_params(imp, dq, dq.name or dq.output[0], 1, 2 if len(dq.input) > 2 else None,
                    str(codes.dtype), int(attrs.get("axis", 1)), codes.ndim)
    w = weight_tensor(imp, codes, q, axis, hint)
    return None if w is None or q is None else (w, q)


def bias_of(imp: Importer, onnx_name: str, xq: QParams, wq: QParams, n: int,
          hint: str) -> tuple[bool, list[str]]:
    """The bias of a fused op, as (usable, [] or [value]): int32 codes where they are on the
    grid x_scale * w_scale, else float32 (the native op rounds it); not usable when it is
    computed at run time or misshapen."""
    if not onnx_name:
        return True, []
    dq = imp.producers.get(onnx_name)
    if dq is not None and dq.op_type == "DequantizeLinear" and len(dq.input) > 1:
        codes, s = const_input(imp, dq.input[0]), const_input(imp, dq.input[1])
        z = const_input(imp, dq.input[2]) if len(dq.input) > 2 and dq.input[2] else None
        want = np.float64(xq.scale[0]) * np.asarray(wq.scale, np.float64)
        if (codes is not None and codes.dtype == np.int32 and codes.size == n and s is not None
                and (z is None or not np.any(z)) and np.allclose(np.ravel(s), want, rtol=1e-6, atol=0)):
            return True, [imp.g.const(codes.reshape(n), hint)]
    b = const_input(imp, onnx_name)
    if b is None or b.size != n or b.dtype.kind != "f":
        return False, []
    return True, [imp.g.const(b.reshape(n).astype(np.float32), hint)]


def requant_target(imp: Importer, node: Any) -> tuple[QParams, dict[str, Any], list[str]] | None:
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
            lo = const_input(imp, r.input[1]) if len(r.input) > 1 and r.input[1] else ra.get("min")
            hi = const_input(imp, r.input[2]) if len(r.input) > 2 and r.input[2] else ra.get("max")
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
    except Refuse:
        return None
    if q is None or not q.per_tensor:
        return None
    return q, act, names + [r.output[0]]


def finish_fused(imp: Importer, out: str, target: tuple[QParams, dict[str, Any], list[str]] | None) -> str:
    if target is not None:
        mark(imp, out, target[0])
        for n in target[2]:
            imp.done[n] = out
    return out


def fused_attrs(xq: QParams, target: tuple[QParams, dict[str, Any], list[str]] | None) -> dict[str, Any]:
    attrs = xq.act_attrs("x")
    if target is not None:
        attrs.update(target[0].act_attrs("y"))
        attrs.update(target[1])
    return attrs


def conv_geometry(attrs: dict[str, Any]) -> dict[str, Any]:
    return {"strides": ops_nn._two(attrs.get("strides"), 2, 1),
            "dilations": ops_nn._two(attrs.get("dilations"), 2, 1),
            "groups": int(attrs.get("group", 1)), **ops_nn._pads2d(attrs, 2)}


def shape_of_value(imp: Importer, onnx_name: str) -> list[int] | None:
    c = const_input(imp, onnx_name)
    return list(c.shape) if c is not None else imp.shapes.get(onnx_name)


def params_or_refuse(imp: Importer, node: Any, name: str, s: int, z: int, codes: str | None,
                       axis: int = 1, rank: int | None = None) -> QParams:
    q = read_params(imp, node, name, s, z, codes, axis, rank)
    if q is None:
        raise Refuse(f"{node.op_type} with a run-time scale or zero point")
    return q


def matmul_node(imp: Importer, node: Any, a: int, b: int) -> Any:
    """A MatMul node of ``node``'s inputs a and b (ops_nn's MatMul reads their ranks)."""
    return imp.onnx.helper.make_node("MatMul", [node.input[a], node.input[b]], [node.output[0]])
