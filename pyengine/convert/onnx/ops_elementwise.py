"""ONNX elementwise arithmetic, activations, comparisons and casts -> native ops."""

from __future__ import annotations

from typing import Any

import numpy as np

from pyengine.convert.onnx._importer import Handler, Importer, as_float, attr_str


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


def _unary(op: str) -> Handler:
    def handle(imp: Importer, node: Any, name: str, ins: list[str], attrs: dict[str, Any]) -> str:
        extra = {"alpha": float(attrs.get("alpha", 0.01))} if op == "LeakyRelu" else {}
        return imp.g.op(op, ins[:1], name, **extra)

    return handle


def _prelu(
    imp: Importer, node: Any, name: str, ins: list[str], attrs: dict[str, Any]
) -> str | None:
    slope = imp.const_of(ins[1])
    rank = imp.rank(node.input[0])
    if slope is None or rank is None:
        return None
    if imp.opset < 7 and slope.ndim == 1 and rank > 2:  # opset 6: per-channel slope [C]
        slope = slope.reshape((-1,) + (1,) * (rank - 2))
    return imp.g.op("BinaryMath", [ins[0], imp.g.const(slope, name + "/slope")], name, fn="prelu")


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
    """Min, Max (variadic: folded left), Pow and Mod (fmod=1) on the native ``BinaryMath``."""

    def handle(
        imp: Importer, node: Any, name: str, ins: list[str], attrs: dict[str, Any]
    ) -> str | None:
        present = [i for i in ins if i]
        if fn == "fmod" and not attrs.get("fmod", 0):
            return None  # integer Mod: the engine computes in float32
        acc = present[0]
        for i, x in enumerate(present[1:]):
            last = i == len(present) - 2
            acc = imp.g.op("BinaryMath", [acc, x], name if last else f"{name}/{i}", fn=fn)
        return acc

    return handle


def _cast(imp: Importer, node: Any, name: str, ins: list[str], attrs: dict[str, Any]) -> str | None:
    to = attrs.get("to")
    if to == imp.onnx.TensorProto.BOOL and ins[0] in imp.boolean:
        out = imp.g.op("Identity", ins[:1], name)
        imp.boolean.add(out)
        return out
    if to != imp.onnx.TensorProto.FLOAT:
        return None
    # A bool to float: the same 0 / 1, under a fresh name that is no longer a boolean.
    return imp.g.op("Identity", ins[:1], name) if ins[0] in imp.boolean else ins[0]


# ONNX comparisons and logic -> the native BinaryMath's fn (answers booleans as 0 / 1).
_COMPARE = {
    "Equal": "equal", "Less": "less", "Greater": "greater", "LessOrEqual": "less_equal",
    "GreaterOrEqual": "greater_equal", "And": "and", "Or": "or", "Xor": "xor",
}


def _compare(imp: Importer, node: Any, name: str, ins: list[str], attrs: dict[str, Any]) -> str:
    a, b = (as_float(imp, v, f"{name}/{i}") for i, v in enumerate(ins[:2]))
    out = imp.g.op("BinaryMath", [a, b], name, fn=_COMPARE[node.op_type])
    imp.boolean.add(out)
    return out


def _not(imp: Importer, node: Any, name: str, ins: list[str], attrs: dict[str, Any]) -> str:
    out = imp.g.op("Math", [as_float(imp, ins[0], name + "/x")], name, fn="not")
    imp.boolean.add(out)
    return out


def _where(imp: Importer, node: Any, name: str, ins: list[str], attrs: dict[str, Any]) -> str | None:
    cond, a, b = ins[:3]
    if not (cond in imp.boolean or imp.const_of(cond) is not None):
        return None
    for v in (a, b):
        c = imp.const_of(v)
        if c is not None and c.dtype.kind != "f":
            return None  # an integer Where: the engine computes in float32
    return imp.g.op(
        "Where", [as_float(imp, v, f"{name}/{i}") for i, v in enumerate((cond, a, b))], name
    )


def _cast_like(imp: Importer, node: Any, name: str, ins: list[str], attrs: dict[str, Any]) -> str | None:
    like = imp.const_of(ins[1])
    if ins[1] in imp.boolean or (like is not None and like.dtype != np.float32):
        return None  # to a bool or an integer type
    # Run-time values are float32 (or booleans as 0 / 1): the target is float32.
    c = imp.const_of(ins[0])
    return ins[0] if c is None else imp.g.const(c.astype(np.float32), name)


HANDLERS: dict[str, Handler] = {
    "Add": _binary("Add"),
    "Sub": _binary("Sub"),
    "Mul": _binary("Mul"),
    "Div": _binary("Div"),
    "Sum": _sum,
    "Neg": _math("neg"),
    "Relu": _unary("Relu"),
    "Sigmoid": _unary("Sigmoid"),
    "Tanh": _unary("Tanh"),
    "LeakyRelu": _unary("LeakyRelu"),
    "PRelu": _prelu,
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
    "Not": _not,
    **{op: _compare for op in _COMPARE},
}
