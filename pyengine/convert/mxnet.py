"""MXNet checkpoint (``<prefix>-symbol.json`` + ``<prefix>-NNNN.params``) -> native graph (NCHW)."""

from __future__ import annotations

import ast
import json
import warnings
from typing import Any, Callable, Sequence

import numpy as np

from pyengine.builder import DTYPES, GraphBuilder
from pyengine.convert import _mxnet_ops
from pyengine.convert._graph import Graph
from pyengine.convert._imports import framework
from pyengine.errors import FrameworkVersionWarning, InputShapeUnknownError, ModelFormatError
from pyengine.locate import ModelLocation


def import_mxnet() -> Any:
    """The mxnet module (BackendUnavailableError if missing)."""
    return framework("mxnet", "mxnet")


def _version_str(v: int) -> str:
    return f"{v // 10000}.{v // 100 % 100}.{v % 100}"


def read_symbol(location: ModelLocation, strict: bool = False) -> dict[str, Any]:
    """Parse the symbol JSON and check the MXNet version that saved it against the installed one.

    A newer saving version gets a :class:`FrameworkVersionWarning` (a ModelFormatError with
    ``strict=True``): MXNet does not promise forward compatibility.
    """
    mx = import_mxnet()
    path = location.path
    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
    except (OSError, ValueError) as exc:
        raise ModelFormatError(f"'{path}' is not an MXNet symbol file (JSON): {exc}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("nodes"), list) or "heads" not in doc:
        raise ModelFormatError(
            f"'{path}' is not an MXNet symbol file: expected 'nodes' and 'heads'"
        )
    upgrade_legacy_attrs(doc)
    saved = (doc.get("attrs") or {}).get("mxnet_version", [None, None])[1]
    major, minor, patch = (int(p) for p in mx.__version__.split(".")[:3])
    installed = major * 10000 + minor * 100 + patch
    if isinstance(saved, int) and saved > installed:
        msg = (
            f"'{path}' was saved by MXNet {_version_str(saved)}, newer than the installed "
            f"MXNet {mx.__version__}; MXNet does not promise forward compatibility"
        )
        if strict:
            raise ModelFormatError(msg + " (strict=True)")
        warnings.warn(msg, FrameworkVersionWarning, stacklevel=4)
    return doc


def upgrade_legacy_attrs(doc: dict[str, Any]) -> None:
    """Move each node's attributes to ``attrs``, where MXNet 1.0 and later save them.

    MXNet 0.9 to 0.12 (v0.11 is what SageMaker long trained with) saved them under ``attr``,
    and MXNet before 0.9 under ``param``; MXNet itself upgrades such files when it loads them
    (``attrs`` or ``attr`` read into one dictionary, ``param`` filling in keys they lack), and
    this does the same, so that the converter reads a kernel size or a stride where it is.
    """
    for node in doc["nodes"]:
        if not isinstance(node, dict):
            continue
        merged: dict[str, Any] = {}
        for key in ("param", "attr", "attrs"):  # later keys win, as in MXNet's loader
            part = node.pop(key, None)
            if isinstance(part, dict):
                merged.update(part)
        if merged:
            node["attrs"] = merged


def load_params(location: ModelLocation) -> dict[str, Any]:
    """The checkpoint's NDArrays by name without the ``arg:``/``aux:`` prefix."""
    mx = import_mxnet()
    path = location.extra["params"]
    try:
        raw = mx.nd.load(path)
    except Exception as exc:  # mxnet.base.MXNetError
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelFormatError(f"'{path}' is not a readable MXNet .params file: {first}") from None
    if not isinstance(raw, dict):
        raise ModelFormatError(f"'{path}': expected named MXNet parameters (arg:/aux:), got a list")
    return {k.split(":", 1)[1] if ":" in k else k: v for k, v in raw.items()}


#: MXNet's type codes (a variable's ``__dtype__`` attribute) -> numpy names.
MXNET_DTYPES = {0: "float32", 1: "float64", 2: "float16", 3: "uint8", 4: "int32", 5: "int8",
                6: "int64", 7: "bool", 8: "int16", 9: "uint16", 10: "uint32", 11: "uint64"}


def input_dtype(doc: dict[str, Any], name: str) -> str:
    """The element type the symbol declares for variable ``name`` (float32 when it says none)."""
    for n in doc["nodes"]:
        if n["op"] == "null" and n["name"] == name:
            code = n.get("attrs", {}).get("__dtype__")
            return MXNET_DTYPES.get(int(_lit(code, 0)), f"type code {code}")
    return "float32"


def model_inputs(doc: dict[str, Any], params: dict[str, Any]) -> list[str]:
    """The symbol's data inputs: free variables that are neither weights nor labels."""
    return [
        n["name"]
        for n in doc["nodes"]
        if n["op"] == "null" and n["name"] not in params and not n["name"].endswith("_label")
    ]


def _lit(s: Any, default: Any = None) -> Any:
    if s is None:
        return default
    if not isinstance(s, str):
        return s
    if s in ("True", "False", "None"):
        return {"True": True, "False": False, "None": None}[s]
    try:
        return ast.literal_eval(s)
    except (ValueError, SyntaxError):
        return s


def _pair(v: Any, default: int) -> list[int]:
    v = _lit(v)
    if v is None or v == ():
        return [default, default]
    if isinstance(v, int):
        return [v, v]
    v = list(v)
    return v * 2 if len(v) == 1 else v


def guess_input_shape(
    location: ModelLocation, doc: dict[str, Any], params: dict[str, Any], name: str
) -> list[int]:
    """Input ``name``'s shape as its first Convolution or FullyConnected implies (-1 = free)."""
    idx = next(i for i, n in enumerate(doc["nodes"]) if n["name"] == name)
    return _Importer(location, doc, params, {}).guess_shape(idx)


class _Importer:
    def __init__(
        self,
        location: ModelLocation,
        doc: dict[str, Any],
        params: dict[str, np.ndarray],
        input_shapes: dict[str, Sequence[int]],
    ) -> None:
        self.path = location.path
        self.doc = doc
        self.nodes = doc["nodes"]
        self.params = params
        self.g = Graph(location.path, "mxnet")
        # Node index -> its output values (one per output: SliceChannel has several).
        self.values: dict[int, list[str]] = {}
        self.ranks: dict[int, int | None] = {}
        self.input_shapes = input_shapes

    def ref(self, entry: Sequence[int]) -> str:
        """The value of a node entry ``[node, output, version]``."""
        outs = self.values[entry[0]]
        k = entry[1] if len(entry) > 1 else 0
        if k < len(outs):
            return outs[k]
        if outs[0].startswith("unsupported:"):
            return outs[0]
        node = self.nodes[entry[0]]  # e.g. BatchNorm's saved mean: converted ops give output 0
        outs.extend(self.g.unsupported_op(node["name"], f"{node['op']} output {i}")
                    for i in range(len(outs), k + 1))
        return outs[k]

    def ins(self, node: dict[str, Any]) -> list[str]:
        return [self.ref(e) for e in node["inputs"]]

    def rank(self, entry: Sequence[int]) -> int | None:
        """The rank of a node entry's value, where the importer could follow it."""
        return self.ranks.get(entry[0])

    def guess_shape(self, idx: int) -> list[int]:
        name = self.nodes[idx]["name"]
        for n in self.nodes:
            if not n["inputs"] or n["inputs"][0][0] != idx:
                continue
            a = n.get("attrs", {})
            w = (
                self.params.get(self.nodes[n["inputs"][1][0]]["name"])
                if len(n["inputs"]) > 1
                else None
            )
            if n["op"] == "Convolution" and w is not None:
                c = w.shape[1] * int(_lit(a.get("num_group"), 1))
                return [-1, -1, -1, c] if _lit(a.get("layout")) == "NHWC" else [-1, c, -1, -1]
            if n["op"] == "FullyConnected" and w is not None:
                return [-1, w.shape[1]]
            if n["op"] == "Embedding":
                return [-1, -1]  # (batch, sequence) ids
        raise InputShapeUnknownError(
            f"'{self.path}': cannot tell the shape of input '{name}'; "
            f"pass input_shapes={{'{name}': [...]}}"
        )

    def run(self) -> GraphBuilder:
        for idx, node in enumerate(self.nodes):
            op, name = node["op"], node["name"]
            if op == "null":
                if name in self.params:
                    value = self.g.const(self.params[name], name)
                    self.ranks[idx] = self.params[name].ndim
                elif name.endswith("_label"):
                    value = self.g.fresh("label:" + name)
                else:
                    shape = self.input_shapes.get(name) or self.guess_shape(idx)
                    dtype = input_dtype(self.doc, name)
                    self.ranks[idx] = len(shape)
                    value = (self.g.input(name, shape, dtype) if dtype in DTYPES
                             else self.g.unsupported_op(name, f"input of type {dtype}"))
                self.values[idx] = [value]
                continue
            attrs = {k: _lit(v) for k, v in node.get("attrs", {}).items()}
            self.ranks[idx] = _mxnet_ops.infer_rank(
                node, attrs, [self.rank(e) for e in node["inputs"]])
            handler = _HANDLERS.get(op)
            if handler is None or any(v.startswith("unsupported:") for v in self.ins(node)):
                self.values[idx] = [
                    self.g.unsupported_op(name, op)
                    if handler is None
                    else self.g.fresh("unsupported:" + name)
                ]
                continue
            out = handler(self, node, attrs)
            self.values[idx] = ([self.g.unsupported_op(name, op)] if out is None
                                else out if isinstance(out, list) else [out])
        for head in self.doc["heads"]:
            node = self.nodes[head[0]]
            many = len(self.values[head[0]]) > 1
            suffix = f"_output{head[1]}" if many else "_output"
            self.g.output(self.ref(head), node["name"] + suffix)
        return self.g.finish()


Handler = Callable[[_Importer, dict[str, Any], dict[str, Any]], "str | list[str] | None"]


def _conv(imp: _Importer, n: dict[str, Any], a: dict[str, Any]) -> str | None:
    ins = imp.ins(n)
    if not imp.g.is_const(ins[1]) or imp.g.value(ins[1]).ndim != 4:  # 2-D convolutions only
        return None
    pad = _pair(a.get("pad"), 0)
    return imp.g.op(
        "Conv2D",
        ins[:2] if a.get("no_bias") else ins[:3],
        n["name"],
        layout=a.get("layout") or "NCHW",
        strides=_pair(a.get("stride"), 1),
        dilations=_pair(a.get("dilate"), 1),
        pads=[pad[0], pad[1], pad[0], pad[1]],
        groups=int(a.get("num_group", 1)),
    )


def _fc(imp: _Importer, n: dict[str, Any], a: dict[str, Any]) -> str | None:
    ins = imp.ins(n)
    x = ins[0]
    if a.get("flatten", True):
        x = imp.g.op("Flatten", [x], n["name"] + "/flatten", axis=1)
    if not imp.g.is_const(ins[1]):
        return imp.g.op(
            "Dense",
            [x, ins[1]] + ([] if a.get("no_bias") else [ins[2]]),
            n["name"],
            transpose_b=True,
        )
    w = imp.g.const(np.ascontiguousarray(imp.g.value(ins[1]).T), n["name"] + "/w")
    return imp.g.op("Dense", [x, w] + ([] if a.get("no_bias") else [ins[2]]), n["name"])


def _bn(imp: _Importer, n: dict[str, Any], a: dict[str, Any]) -> str:
    ins = imp.ins(n)
    if len(ins) == 3:
        # MXNet before 0.9 kept a BatchNorm's moving statistics out of the symbol file; its
        # loader adds them back as variables named <node>_moving_mean/_moving_var.
        stats = []
        for stat in ("moving_mean", "moving_var"):
            key = f"{n['name']}_{stat}"
            if key not in imp.params:
                raise ModelFormatError(
                    f"'{imp.path}': BatchNorm '{n['name']}' has no {stat} input (a file saved "
                    f"by MXNet before 0.9) and the parameters hold no '{key}'"
                )
            stats.append(imp.g.const(imp.params[key], key))
        ins = [*ins, *stats]
    x, gamma, beta, mean, var = ins
    if a.get("fix_gamma", True) and imp.g.is_const(gamma):
        gamma = imp.g.const(np.ones_like(imp.g.value(gamma)), n["name"] + "/gamma")
    return imp.g.op(
        "BatchNorm",
        [x, gamma, beta, mean, var],
        n["name"],
        epsilon=float(a.get("eps", 1e-3)),
        axis=int(a.get("axis", 1)),
    )


_ACT = {"relu": "Relu", "sigmoid": "Sigmoid", "tanh": "Tanh"}


def _activation(imp: _Importer, n: dict[str, Any], a: dict[str, Any]) -> str | None:
    op = _ACT.get(a.get("act_type", ""))
    return None if op is None else imp.g.op(op, imp.ins(n)[:1], n["name"])


def _unary(op: str) -> Handler:
    return lambda imp, n, a: imp.g.op(op, imp.ins(n)[:1], n["name"])


def _leaky(imp: _Importer, n: dict[str, Any], a: dict[str, Any]) -> str | None:
    if a.get("act_type", "leaky") != "leaky":
        return _mxnet_ops.leaky_math(imp, n, a)
    return imp.g.op("LeakyRelu", imp.ins(n)[:1], n["name"], alpha=float(a.get("slope", 0.25)))


def _pool(imp: _Importer, n: dict[str, Any], a: dict[str, Any]) -> str | None:
    kind = a.get("pool_type", "max")
    layout = a.get("layout") or "NCHW"
    if kind not in ("max", "avg"):
        return None
    if a.get("global_pool", False):
        return imp.g.op(
            "GlobalMaxPool" if kind == "max" else "GlobalAvgPool",
            imp.ins(n)[:1],
            n["name"],
            layout=layout,
        )
    if len(tuple(a["kernel"]) if isinstance(a.get("kernel"), (tuple, list)) else ()) != 2:
        return None  # 2-D pooling only
    conv = a.get("pooling_convention", "valid")
    if conv not in ("valid", "full"):
        return None
    pad = _pair(a.get("pad"), 0)
    attrs: dict[str, Any] = {
        "layout": layout,
        "kernel": _pair(a.get("kernel"), 1),
        "strides": _pair(a.get("stride"), 1),
        "pads": [pad[0], pad[1], pad[0], pad[1]],
        "ceil_mode": conv == "full",
    }
    if kind == "avg":
        attrs["count_include_pad"] = bool(a.get("count_include_pad", True))
    return imp.g.op("MaxPool" if kind == "max" else "AvgPool", imp.ins(n)[:1], n["name"], **attrs)


def _binary(op: str) -> Handler:
    return lambda imp, n, a: imp.g.op(op, imp.ins(n)[:2], n["name"])


def _scalar(op: str, reverse: bool = False) -> Handler:
    def handle(imp: _Importer, n: dict[str, Any], a: dict[str, Any]) -> str:
        s = imp.g.const(np.float32(a.get("scalar", 0.0)), n["name"] + "/scalar")
        x = imp.ins(n)[0]
        return imp.g.op(op, [s, x] if reverse else [x, s], n["name"])

    return handle


def _add_n(imp: _Importer, n: dict[str, Any], a: dict[str, Any]) -> str:
    ins = imp.ins(n)
    acc = ins[0]
    for i, x in enumerate(ins[1:]):
        acc = imp.g.op("Add", [acc, x], f"{n['name']}/{i}")
    return acc


def _concat(imp: _Importer, n: dict[str, Any], a: dict[str, Any]) -> str:
    return imp.g.op("Concat", imp.ins(n), n["name"], axis=int(a.get("dim", 1)))


def _softmax(imp: _Importer, n: dict[str, Any], a: dict[str, Any]) -> str | None:
    if a.get("temperature") not in (None, 1, 1.0) or a.get("use_length"):
        return None
    axis = -1 if n["op"] in ("SoftmaxOutput", "SoftmaxActivation") else int(a.get("axis", -1))
    if n["op"] == "SoftmaxActivation" and a.get("mode", "instance") == "channel":
        axis = 1
    return imp.g.op("Softmax", imp.ins(n)[:1], n["name"], axis=axis)


def _reshape(imp: _Importer, n: dict[str, Any], a: dict[str, Any]) -> str | None:
    shape = a.get("shape")
    if shape is None or a.get("reverse") or any(int(d) < -1 for d in shape):
        return None
    return imp.g.op("Reshape", imp.ins(n)[:1], n["name"], shape=[int(d) for d in shape])


def _embedding(imp: _Importer, n: dict[str, Any], a: dict[str, Any]) -> str | None:
    """Embedding: rows of the weight table picked by the ids (MXNet feeds them as floats by
    default: they are cast to int64 first, as MXNet truncates them)."""
    ids, weight = imp.ins(n)[:2]
    dtype = input_dtype(imp.doc, imp.nodes[n["inputs"][0][0]]["name"])
    if not dtype.startswith(("int", "uint")):
        ids = imp.g.op("Cast", [ids], n["name"] + "/ids", to="int64")
    return imp.g.op("Gather", [weight, ids], n["name"], axis=0)


def _cast(imp: _Importer, n: dict[str, Any], a: dict[str, Any]) -> str | None:
    to = str(a.get("dtype", "float32"))
    return imp.g.op("Cast", imp.ins(n)[:1], n["name"], to=to) if to in DTYPES else None


def _flatten(imp: _Importer, n: dict[str, Any], a: dict[str, Any]) -> str:
    return imp.g.op("Flatten", imp.ins(n)[:1], n["name"], axis=1)


def _identity(imp: _Importer, n: dict[str, Any], a: dict[str, Any]) -> str:
    return imp.ins(n)[0]


def _full(value: float | None) -> Handler:
    def handle(imp: _Importer, n: dict[str, Any], a: dict[str, Any]) -> str | None:
        v = float(a.get("value", 0.0)) if value is None else value
        if a.get("dtype", "float32") != "float32":
            return None
        return imp.g.const(np.full(tuple(a.get("shape", ())), v, np.float32), n["name"])

    return handle


def _transpose(imp: _Importer, n: dict[str, Any], a: dict[str, Any]) -> str | None:
    axes = a.get("axes")
    if not axes:
        return None
    return imp.g.op("Transpose", imp.ins(n)[:1], n["name"], perm=[int(p) for p in axes])


def _lrn(imp: _Importer, n: dict[str, Any], a: dict[str, Any]) -> str:
    """MXNet's LRN: x / (knorm + alpha / nsize * sum of squares over channels
    c - nsize // 2 .. c + nsize // 2)^beta."""
    nsize = int(a["nsize"])
    size = 2 * (nsize // 2) + 1  # the window; native LRN divides alpha by it
    return imp.g.op(
        "LRN",
        imp.ins(n)[:1],
        n["name"],
        size=size,
        alpha=float(a.get("alpha", 1e-4)) / nsize * size,
        beta=float(a.get("beta", 0.75)),
        bias=float(a.get("knorm", 2.0)),
        axis=1,
    )


def _hard_sigmoid(imp: _Importer, n: dict[str, Any], a: dict[str, Any]) -> str:
    return imp.g.op(
        "HardSigmoid",
        imp.ins(n)[:1],
        n["name"],
        alpha=float(a.get("alpha", 0.2)),
        beta=float(a.get("beta", 0.5)),
    )


def _clip(imp: _Importer, n: dict[str, Any], a: dict[str, Any]) -> str:
    return imp.g.op("Clip", imp.ins(n)[:1], n["name"], min=float(a["a_min"]), max=float(a["a_max"]))


_HANDLERS: dict[str, Handler] = {
    "Convolution": _conv,
    "FullyConnected": _fc,
    "BatchNorm": _bn,
    "Activation": _activation,
    "relu": _unary("Relu"),
    "sigmoid": _unary("Sigmoid"),
    "tanh": _unary("Tanh"),
    "LeakyReLU": _leaky,
    "Pooling": _pool,
    "Flatten": _flatten,
    "Embedding": _embedding,
    "Cast": _cast,
    "cast": _cast,
    "flatten": _flatten,
    "Concat": _concat,
    "concat": _concat,
    "softmax": _softmax,
    "SoftmaxActivation": _softmax,
    "SoftmaxOutput": _softmax,
    "Reshape": _reshape,
    "reshape": _reshape,
    "Dropout": _identity,
    "BlockGrad": _identity,
    "identity": _identity,
    "_copy": _identity,
    "transpose": _transpose,
    "clip": _clip,
    "LRN": _lrn,
    "hard_sigmoid": _hard_sigmoid,
    "add_n": _add_n,
    "ElementWiseSum": _add_n,
    "_ones": _full(1.0),
    "_zeros": _full(0.0),
    "_full": _full(None),
    "_plus_scalar": _scalar("Add"),
    "_minus_scalar": _scalar("Sub"),
    "_rminus_scalar": _scalar("Sub", reverse=True),
    "_mul_scalar": _scalar("Mul"),
    "_div_scalar": _scalar("Div"),
    "_rdiv_scalar": _scalar("Div", reverse=True),
}
for _op, _native in (
    ("add", "Add"),
    ("plus", "Add"),
    ("sub", "Sub"),
    ("minus", "Sub"),
    ("mul", "Mul"),
    ("div", "Div"),
):
    for _name in (f"elemwise_{_op}", f"broadcast_{_op}", f"_{_op}", f"_{_op.capitalize()}"):
        _HANDLERS.setdefault(_name, _binary(_native))
for _name, _handler in _mxnet_ops.HANDLERS.items():
    _HANDLERS.setdefault(_name, _handler)


def convert(
    location: ModelLocation,
    input_shapes: dict[str, Sequence[int]] | None = None,
    strict: bool = False,
) -> GraphBuilder:
    """Import an MXNet checkpoint into a native graph."""
    doc = read_symbol(location, strict)
    params = {k: v.asnumpy() for k, v in load_params(location).items()}
    return _Importer(location, doc, params, dict(input_shapes or {})).run()
