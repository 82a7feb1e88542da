"""ONNX elementwise arithmetic, activations, comparisons and casts -> native ops."""

from __future__ import annotations

from typing import Any

import numpy as np

from pyengine.convert.onnx._importer import Handler, Importer, attr_str, onnx_dtype


def _binary(op: str) -> Handler:
    def handle(
        imp: Importer, node: Any, name: str, ins: list[str], attrs: dict[str, Any]
    ) -> str | None:
        a, b = ins[:2]
        if attrs.get("broadcast") and "axis" in attrs:  # opset < 7: align b at axis
            bc, ra = imp.const_of(b), imp.rank(node.input[0])
            if bc is None or ra is None:
                return None
            axis = attrs["axis"] % ra
            b = imp.g.const(bc.reshape(bc.shape + (1,) * (ra - axis - bc.ndim)), name + "/b")
        return imp.g.op(op, [a, b], name)

    return handle


def _sum(imp: Importer, node: Any, name: str, ins: list[str], attrs: dict[str, Any]) -> str:
    acc = ins[0]
    for i, x in enumerate(ins[1:]):
        acc = imp.g.op("Add", [acc, x], f"{name}/{i}")
    return acc


def _mean(imp: Importer, node: Any, name: str, ins: list[str], attrs: dict[str, Any]) -> str:
    """Mean of n inputs (broadcasting): their sum times 1/n."""
    total = _sum(imp, node, name + "/sum", [i for i in ins if i], attrs)
    scale = imp.g.const(np.float32(1.0 / len([i for i in ins if i])), name + "/scale")
    return imp.g.op("Mul", [total, scale], name)


def _unary(op: str) -> Handler:
    def handle(imp: Importer, node: Any, name: str, ins: list[str], attrs: dict[str, Any]) -> str:
        extra = {"alpha": float(attrs.get("alpha", 0.01))} if op == "LeakyRelu" else {}
        return imp.g.op(op, ins[:1], name, **extra)

    return handle


def _prelu(
    imp: Importer, node: Any, name: str, ins: list[str], attrs: dict[str, Any]
) -> str | None:
    slope = imp.const_of(ins[1])
    if slope is None:  # a run-time slope: numpy broadcasting from opset 7 on
        return imp.g.op("BinaryMath", ins[:2], name, fn="prelu") if imp.opset >= 7 else None
    rank = imp.rank(node.input[0])
    if rank is None:
        return None
    if imp.opset < 7 and slope.ndim == 1 and rank > 2:  # opset 6: per-channel slope [C]
        slope = slope.reshape((-1,) + (1,) * (rank - 2))
    return imp.g.op("BinaryMath", [ins[0], imp.g.const(slope, name + "/slope")], name, fn="prelu")


def _swish_of(imp: Importer, x: str, alpha: float, name: str) -> str:
    """x · sigmoid(alpha · x): the native Silu when alpha is 1."""
    if alpha == 1.0:
        return imp.g.op("Silu", [x], name)
    scaled = imp.g.op("Mul", [x, imp.g.const(np.float32(alpha), name + "/alpha")], name + "/scaled")
    return imp.g.op("Mul", [x, imp.g.op("Sigmoid", [scaled], name + "/gate")], name)


def _swish(imp: Importer, node: Any, name: str, ins: list[str], attrs: dict[str, Any]) -> str:
    return _swish_of(imp, ins[0], float(attrs.get("alpha", 1.0)), name)


def _swiglu(imp: Importer, node: Any, name: str, ins: list[str], attrs: dict[str, Any]) -> str:
    """Swish_alpha(A) · B."""
    gate = _swish_of(imp, ins[0], float(attrs.get("alpha", 1.0)), name + "/swish")
    return imp.g.op("Mul", [gate, ins[1]], name)


def _shrink(imp: Importer, node: Any, name: str, ins: list[str], attrs: dict[str, Any]) -> str:
    """x + bias below -lambd, x - bias above lambd, 0 between."""
    lambd, bias = float(attrs.get("lambd", 0.5)), float(attrs.get("bias", 0.0))
    x = ins[0]

    def const(v: float, hint: str) -> str:
        return imp.g.const(np.float32(v), f"{name}/{hint}")

    above = imp.g.op("Compare", [x, const(lambd, "lambd")], name + "/above", fn="greater")
    below = imp.g.op("Compare", [x, const(-lambd, "neg_lambd")], name + "/below", fn="less")
    low = imp.g.op("Add", [x, const(bias, "bias")], name + "/low")
    high = imp.g.op("Sub", [x, const(bias, "bias")], name + "/high")
    inner = imp.g.op("Where", [below, low, const(0.0, "zero")], name + "/inner")
    return imp.g.op("Where", [above, high, inner], name)


def _clip(
    imp: Importer, node: Any, name: str, ins: list[str], attrs: dict[str, Any]
) -> str | None:
    lo, hi = attrs.get("min", -np.inf), attrs.get("max", np.inf)
    if imp.opset >= 11:
        bounds = [imp.const_of(v) if v else None for v in (ins + ["", ""])[1:3]]
        if any(v and b is None for v, b in zip((ins + ["", ""])[1:3], bounds)):
            return None
        lo = float(bounds[0]) if bounds[0] is not None else -np.inf
        hi = float(bounds[1]) if bounds[1] is not None else np.inf
    if lo == 0 and hi == 6:
        return imp.g.op("Relu6", ins[:1], name)
    if lo == 0 and hi == np.inf:
        return imp.g.op("Relu", ins[:1], name)
    return imp.g.op("Clip", ins[:1], name, min=float(lo), max=float(hi))


def _hard_sigmoid(
    imp: Importer, node: Any, name: str, ins: list[str], attrs: dict[str, Any]
) -> str:
    return imp.g.op(
        "HardSigmoid",
        ins[:1],
        name,
        alpha=float(attrs.get("alpha", 0.2)),
        beta=float(attrs.get("beta", 0.5)),
    )


def _math(fn: str, **defaults: float) -> Handler:
    """An elementwise function of the native ``Math`` op; ``defaults`` maps the ONNX attributes
    it reads (alpha, gamma...) to their ONNX defaults, passed on as ``alpha`` and ``beta``."""

    def handle(imp: Importer, node: Any, name: str, ins: list[str], attrs: dict[str, Any]) -> str:
        params = {
            ("alpha" if i == 0 else "beta"): float(attrs.get(key, default))
            for i, (key, default) in enumerate(defaults.items())
        }
        return imp.g.op("Math", ins[:1], name, fn=fn, **params)

    return handle


def _gelu(imp: Importer, node: Any, name: str, ins: list[str], attrs: dict[str, Any]) -> str | None:
    approximate = attr_str(attrs.get("approximate", "none"))
    if approximate not in ("none", "tanh"):
        return None
    return imp.g.op("Math", ins[:1], name, fn="gelu" if approximate == "none" else "gelu_tanh")


def _binary_math(fn: str) -> Handler:
    """Min, Max (variadic: folded left), Pow and Mod on the native ``BinaryMath`` (any one
    number type; Pow's exponent is cast to the base's type, as ONNX computes it)."""

    def handle(
        imp: Importer, node: Any, name: str, ins: list[str], attrs: dict[str, Any]
    ) -> str | None:
        present = [i for i in ins if i]
        op = fn
        if fn == "fmod" and not attrs.get("fmod", 0):
            op = "mod"  # integer Mod: the divisor's sign
        if fn == "pow" and imp.dtype_of(present[1]) != imp.dtype_of(present[0]):
            present[1] = imp.cast(present[1], imp.dtype_of(present[0]), name + "/exponent")
        acc = present[0]
        for i, x in enumerate(present[1:]):
            last = i == len(present) - 2
            acc = imp.g.op("BinaryMath", [acc, x], name if last else f"{name}/{i}", fn=op)
        return acc

    return handle


def _cast(imp: Importer, node: Any, name: str, ins: list[str], attrs: dict[str, Any]) -> str | None:
    to = onnx_dtype(imp.onnx, int(attrs.get("to", 0)))
    if to is None:
        name_of = imp.onnx.TensorProto.DataType.Name(int(attrs.get("to", 0)))
        return imp.g.unsupported_op(name, f"Cast to {name_of}")
    out = imp.cast(ins[0], to, name)
    return imp.g.op("Identity", [out], name) if out == ins[0] else out


def _bitcast(imp: Importer, node: Any, name: str, ins: list[str], attrs: dict[str, Any]) -> str | None:
    """The same bytes read as dtype ``to`` (of the same width, as ONNX requires)."""
    to = onnx_dtype(imp.onnx, int(attrs.get("to", 0)))
    if to is None:
        return imp.g.unsupported_op(
            name, f"BitCast to {imp.onnx.TensorProto.DataType.Name(int(attrs.get('to', 0)))}")
    if np.dtype(imp.dtype_of(ins[0])).itemsize != np.dtype(to).itemsize:
        return imp.g.unsupported_op(name, f"BitCast from {imp.dtype_of(ins[0])} to {to}")
    c = imp.const_of(ins[0])
    if c is not None:
        return imp.g.const(np.ascontiguousarray(c).view(to), name)
    return imp.g.op("BitCast", ins[:1], name, to=to)


# ONNX comparisons -> the native Compare's fn (answers bool).
_COMPARE = {
    "Equal": "equal", "Less": "less", "Greater": "greater", "LessOrEqual": "less_equal",
    "GreaterOrEqual": "greater_equal",
}


def _compare(imp: Importer, node: Any, name: str, ins: list[str], attrs: dict[str, Any]) -> str:
    return imp.g.op("Compare", ins[:2], name, fn=_COMPARE[node.op_type])


def _logic(imp: Importer, node: Any, name: str, ins: list[str], attrs: dict[str, Any]) -> str:
    return imp.g.op("Logic", [i for i in ins if i], name, fn=node.op_type.lower())


def _where(imp: Importer, node: Any, name: str, ins: list[str], attrs: dict[str, Any]) -> str | None:
    return imp.g.op("Where", ins[:3], name)


def _cast_like(imp: Importer, node: Any, name: str, ins: list[str], attrs: dict[str, Any]) -> str | None:
    out = imp.cast(ins[0], imp.dtype_of(ins[1]), name)
    return imp.g.op("Identity", [out], name) if out == ins[0] else out


def _classify(imp: Importer, node: Any, name: str, ins: list[str], attrs: dict[str, Any]) -> str:
    extra = ({"detect_positive": bool(attrs.get("detect_positive", 1)),
              "detect_negative": bool(attrs.get("detect_negative", 1))}
             if node.op_type == "IsInf" else {})
    return imp.g.op("Classify", ins[:1], name, fn=node.op_type.lower(), **extra)


HANDLERS: dict[str, Handler] = {
    "Add": _binary("Add"),
    "Sub": _binary("Sub"),
    "Mul": _binary("Mul"),
    "Div": _binary("Div"),
    "Sum": _sum,
    "Mean": _mean,
    "Neg": _math("neg"),
    "Relu": _unary("Relu"),
    "Sigmoid": _unary("Sigmoid"),
    "Tanh": _unary("Tanh"),
    "LeakyRelu": _unary("LeakyRelu"),
    "PRelu": _prelu,
    "BitCast": _bitcast,
    "Swish": _swish,
    "SwiGLU": _swiglu,
    "Shrink": _shrink,
    "Clip": _clip,
    "HardSigmoid": _hard_sigmoid,
    "HardSwish": _unary("HardSwish"),
    "Abs": _math("abs"),
    "Exp": _math("exp"),
    "Log": _math("log"),
    "Sqrt": _math("sqrt"),
    "Erf": _math("erf"),
    "Reciprocal": _math("reciprocal"),
    "Floor": _math("floor"),
    "Ceil": _math("ceil"),
    "Round": _math("round"),
    "Sin": _math("sin"),
    "Cos": _math("cos"),
    "Tan": _math("tan"),
    "Asin": _math("asin"),
    "Acos": _math("acos"),
    "Atan": _math("atan"),
    "Sinh": _math("sinh"),
    "Cosh": _math("cosh"),
    "Asinh": _math("asinh"),
    "Acosh": _math("acosh"),
    "Atanh": _math("atanh"),
    "Sign": _math("sign"),
    "Softplus": _math("softplus"),
    "Softsign": _math("softsign"),
    "Mish": _math("mish"),
    "Elu": _math("elu", alpha=1.0),
    "Celu": _math("celu", alpha=1.0),
    "ThresholdedRelu": _math("thresholded_relu", alpha=1.0),
    "Selu": _math("selu", alpha=1.67326319217681884765625, gamma=1.05070102214813232421875),
    "Gelu": _gelu,
    "Min": _binary_math("min"),
    "Max": _binary_math("max"),
    "Pow": _binary_math("pow"),
    "Mod": _binary_math("fmod"),
    "Cast": _cast,
    "CastLike": _cast_like,
    "Where": _where,
    "Not": _logic,
    "And": _logic,
    "Or": _logic,
    "Xor": _logic,
    "IsNaN": _classify,
    "IsInf": _classify,
    **{op: _compare for op in _COMPARE},
}
