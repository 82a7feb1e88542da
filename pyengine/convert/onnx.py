"""ONNX model -> native graph (NCHW). Opset 9 and later, plus the opset 6-8 forms of the same ops
(attribute-style broadcast, Clip/Pad/Reshape attributes) that older exporters wrote."""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

from pyengine.builder import GraphBuilder
from pyengine.convert._graph import Graph, batch_copied, input_shapes_hint
from pyengine.convert._imports import framework
from pyengine.convert._onnx_fuse import fuse_gelu
from pyengine.convert._onnx_rnn import rnn as _rnn
from pyengine.errors import InputShapeUnknownError, ModelFormatError
from pyengine.locate import ModelLocation


def import_onnx() -> Any:
    """The onnx module (BackendUnavailableError naming the extra when missing)."""
    return framework("onnx", "onnx")


def read_model(path: str) -> Any:
    """Parse and check an ONNX file; a damaged one is a ModelFormatError naming the path."""
    onnx = import_onnx()
    try:
        model = onnx.load(path)
        onnx.checker.check_model(model)
    except Exception as exc:  # DecodeError, ValidationError
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelFormatError(f"'{path}' is not a valid ONNX model: {first}") from None
    return model


def _shape_of(type_proto: Any) -> list[int] | None:
    t = type_proto.tensor_type
    if not t.HasField("shape"):
        return None
    return [d.dim_value if d.HasField("dim_value") else -1 for d in t.shape.dim]


class _Importer:
    def __init__(self, onnx: Any, path: str, model: Any) -> None:
        self.onnx = onnx
        self.path = path
        self.model = model
        self.opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 1)
        self.g = Graph(path, "onnx")
        self.values: dict[str, str] = {}
        self.shapes: dict[str, list[int] | None] = {}
        # Constants computed from a tensor's shape with -1 for a dimension known only at run time
        # (the batch): only shape plumbing (_SHAPE_OPS) may consume them.
        self.symbolic: set[str] = set()
        # Run-time values that stand for ONNX bools as float 0 / 1 (comparison results): only
        # Where, Not, And/Or/Xor, Equal and Cast may read them, and no graph output may be one.
        self.boolean: set[str] = set()
        # Whether the batch (dimension 0) is the graph inputs' only free dimension.
        self.batch_only = all(-1 not in (_shape_of(vi.type) or [0])[1:] for vi in model.graph.input)
        try:
            inferred = onnx.shape_inference.infer_shapes(model)
            for vi in (
                list(inferred.graph.value_info)
                + list(inferred.graph.input)
                + list(inferred.graph.output)
            ):
                self.shapes[vi.name] = _shape_of(vi.type)
        except Exception:  # shape inference is only a help
            pass

    def rank(self, name: str) -> int | None:
        s = self.shapes.get(name)
        return None if s is None else len(s)

    def const_of(self, value: str) -> np.ndarray | None:
        return self.g.value(value) if self.g.is_const(value) else None

    def fold(self, node: Any, ins: list[str]) -> list[str]:
        """Evaluate a node whose inputs are all constants with onnx's reference evaluator."""
        from onnx.reference import ReferenceEvaluator

        helper = self.onnx.helper
        names = [f"in{i}" for i in range(len(ins))]
        n = helper.make_node(
            node.op_type,
            [names[i] if x else "" for i, x in enumerate(node.input)],
            [f"out{i}" for i in range(len(node.output))],
            domain=node.domain,
        )
        n.attribute.extend(node.attribute)
        arrays = [self.g.value(v) for v in ins]
        graph = helper.make_graph(
            [n],
            "fold",
            [
                helper.make_tensor_value_info(nm, helper.np_dtype_to_tensor_dtype(a.dtype), a.shape)
                for nm, a in zip(names, arrays)
            ],
            [helper.make_tensor_value_info(f"out{i}", 0, None) for i in range(len(node.output))],
        )
        m = helper.make_model(graph, opset_imports=list(self.model.opset_import))
        outs = ReferenceEvaluator(m).run(None, dict(zip(names, arrays)))
        return [
            self.g.const(np.asarray(o), f"{node.name or node.output[0]}/{i}")
            for i, o in enumerate(outs)
        ]

    def run(self) -> GraphBuilder:
        onnx = self.onnx
        graph = self.model.graph
        for init in graph.initializer:
            self.values[init.name] = self.g.const(onnx.numpy_helper.to_array(init), init.name)
        for vi in graph.input:
            if vi.name in self.values:
                continue
            if vi.type.tensor_type.elem_type != onnx.TensorProto.FLOAT:
                self.values[vi.name] = self.g.unsupported_op(
                    vi.name,
                    "input of type "
                    + onnx.TensorProto.DataType.Name(vi.type.tensor_type.elem_type),
                )
                continue
            shape = _shape_of(vi.type)
            if shape is None:
                raise InputShapeUnknownError(f"'{self.path}': input '{vi.name}' has no shape")
            self.values[vi.name] = self.g.input(vi.name, shape)
        for node in fuse_gelu(onnx, graph):
            self.convert_node(node)
        for vi in graph.output:
            value = self.values[vi.name]
            if value in self.boolean:  # the engine's outputs are float32
                value = self.g.unsupported_op(vi.name, "bool output")
            self.g.output(value, vi.name)
        return self.g.finish()

    def convert_node(self, node: Any) -> None:
        name = node.name or node.output[0]
        if node.domain not in ("", "ai.onnx"):
            self._set(node, [self.g.unsupported_op(name, f"{node.domain}.{node.op_type}")])
            return
        ins = [self.values[i] if i else "" for i in node.input]
        present = [v for v in ins if v]
        if node.op_type != "Constant" and present and all(self.g.is_const(v) for v in present):
            dynamic = any(v in self.symbolic for v in present)
            if dynamic and node.op_type not in _SHAPE_OPS:
                self._set(
                    node, [self.g.unsupported_op(name, f"{node.op_type} of a run-time shape")]
                )
                return
            try:
                outs = self.fold(node, present)
            except Exception:  # not evaluable here: convert it as a node
                outs = []
            if outs:
                if dynamic:
                    self.symbolic.update(outs)
                self._set(node, outs)
                return
        if node.op_type not in _HANDLERS:
            self._set(node, [self.g.unsupported_op(name, node.op_type)] * len(node.output))
            return
        if any(v.startswith("unsupported:") for v in ins):  # downstream of an unsupported op
            self._set(node, [self.g.fresh("unsupported:" + name) for _ in node.output])
            return
        if node.op_type not in _SHAPE_OPS and any(v in self.symbolic for v in ins):
            self._set(node, [self.g.unsupported_op(name, f"{node.op_type} of a run-time shape")])
            return
        if node.op_type not in _BOOL_OPS and any(v in self.boolean for v in ins):
            self._set(node, [self.g.unsupported_op(name, f"{node.op_type} of a bool")])
            return
        handler = _HANDLERS.get(node.op_type)
        attrs = {a.name: self.onnx.helper.get_attribute_value(a) for a in node.attribute}
        out = handler(self, node, name, ins, attrs) if handler is not None else None
        if out is None:
            self._set(node, [self.g.unsupported_op(name, node.op_type)] * len(node.output))
        else:
            self._set(node, out if isinstance(out, list) else [out])

    def _set(self, node: Any, outs: list[str]) -> None:
        for i, o in enumerate(node.output):
            if not o:
                continue
            if i < len(outs):
                self.values[o] = outs[i]
            else:  # an extra output (MaxPool indices, Dropout mask...) that has no native form
                self.values[o] = self.g.fresh(f"unsupported:{o}")
                if self._used(o):
                    self.g.unsupported_op(node.name or o, f"{node.op_type} output {i}")

    def _used(self, value: str) -> bool:
        graph = self.model.graph
        return any(value in n.input for n in graph.node) or any(
            value == o.name for o in graph.output
        )


Handler = Callable[[_Importer, Any, str, list[str], dict[str, Any]], "str | list[str] | None"]


def _s(v: Any) -> Any:
    return v.decode() if isinstance(v, bytes) else v


def _pads2d(attrs: dict[str, Any], spatial: int) -> dict[str, Any]:
    auto = _s(attrs.get("auto_pad", "NOTSET"))
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        return {"padding": "SAME" if auto == "SAME_UPPER" else "SAME_LOWER"}
    if auto == "VALID":
        return {"padding": "VALID"}
    p = list(attrs.get("pads", [0] * 2 * spatial))
    if spatial == 1:
        return {"pads": [0, p[0], 0, p[1]]}
    return {"pads": [p[0], p[1], p[2], p[3]]}


def _two(v: list[int] | None, spatial: int, default: int) -> list[int]:
    v = list(v) if v else [default] * spatial
    return [1, v[0]] if spatial == 1 and len(v) == 1 else v


def _to_4d(imp: _Importer, x: str, name: str) -> str:
    return imp.g.op("Reshape", [x], name + "/to4d", shape=[0, 0, 1, -1])


def _from_4d(imp: _Importer, y: str, name: str) -> str:
    return imp.g.op("Reshape", [y], name + "/to3d", shape=[0, 0, -1])


def _conv(
    imp: _Importer, node: Any, name: str, ins: list[str], attrs: dict[str, Any]
) -> str | None:
    w = imp.const_of(ins[1])
    if w is None or w.ndim not in (3, 4):
        return None
    spatial = w.ndim - 2
    x = ins[0] if spatial == 2 else _to_4d(imp, ins[0], name)
    wv = imp.g.const(w if spatial == 2 else w[:, :, None, :], name + "/w")
    y = imp.g.op(
        "Conv2D",
        [x, wv] + ([ins[2]] if len(ins) > 2 and ins[2] else []),
        name,
        strides=_two(attrs.get("strides"), spatial, 1),
        dilations=_two(attrs.get("dilations"), spatial, 1),
        groups=int(attrs.get("group", 1)),
        **_pads2d(attrs, spatial),
    )
    return y if spatial == 2 else _from_4d(imp, y, name)


def _pool(
    imp: _Importer, node: Any, name: str, ins: list[str], attrs: dict[str, Any]
) -> str | None:
    kernel = list(attrs.get("kernel_shape", []))
    if len(kernel) not in (1, 2) or any(d != 1 for d in attrs.get("dilations", [])):
        return None
    if len(node.output) > 1 and node.output[1] and imp._used(node.output[1]):
        return None
    spatial = len(kernel)
    x = ins[0] if spatial == 2 else _to_4d(imp, ins[0], name)
    is_max = node.op_type == "MaxPool"
    extra: dict[str, Any] = (
        {} if is_max else {"count_include_pad": bool(attrs.get("count_include_pad", 0))}
    )
    y = imp.g.op(
        "MaxPool" if is_max else "AvgPool",
        [x],
        name,
        kernel=_two(kernel, spatial, 1),
        strides=_two(attrs.get("strides"), spatial, 1),
        ceil_mode=bool(attrs.get("ceil_mode", 0)),
        **_pads2d(attrs, spatial),
        **extra,
    )
    return y if spatial == 2 else _from_4d(imp, y, name)


def _global_pool(
    imp: _Importer, node: Any, name: str, ins: list[str], attrs: dict[str, Any]
) -> str | None:
    if imp.rank(node.input[0]) not in (None, 4):
        return None
    return imp.g.op(
        "GlobalMaxPool" if node.op_type == "GlobalMaxPool" else "GlobalAvgPool", ins[:1], name
    )


def _gemm(
    imp: _Importer, node: Any, name: str, ins: list[str], attrs: dict[str, Any]
) -> str | None:
    if attrs.get("transA", 0):
        return None
    alpha = float(attrs.get("alpha", 1.0))
    b = imp.const_of(ins[1])
    if b is not None:
        w = alpha * (b.T if attrs.get("transB", 0) else b)
        y = imp.g.op(
            "Dense",
            [ins[0], imp.g.const(np.ascontiguousarray(w, dtype=np.float32), name + "/w")],
            name,
        )
    else:  # a computed B: a plain matrix product, then the alpha scale
        if imp.rank(node.input[1]) not in (None, 2):
            return None
        y = imp.g.op("Dense", ins[:2], name, transpose_b=bool(attrs.get("transB", 0)))
        if alpha != 1.0:
            y = imp.g.op(
                "Mul", [y, imp.g.const(np.float32(alpha), name + "/alpha")], name + "/scaled"
            )
    if len(ins) > 2 and ins[2]:
        beta = float(attrs.get("beta", 1.0))
        c = imp.const_of(ins[2])
        bias = (
            imp.g.const(beta * c, name + "/b")
            if c is not None
            else (
                imp.g.op("Mul", [ins[2], imp.g.const(np.float32(beta))], name + "/beta")
                if beta != 1
                else ins[2]
            )
        )
        y = imp.g.op("Add", [y, bias], name + "/bias")
    return y


def _matmul(
    imp: _Importer, node: Any, name: str, ins: list[str], attrs: dict[str, Any]
) -> str | None:
    b = imp.const_of(ins[1])
    if (b is not None and b.ndim != 2) or (b is None and imp.rank(node.input[1]) != 2):
        return _batch_matmul(imp, node, name, ins)
    if imp.rank(node.input[0]) == 1:
        return _batch_matmul(imp, node, name, ins)
    return imp.g.op("Dense", ins[:2], name)


def _binary(op: str) -> Handler:
    def handle(
        imp: _Importer, node: Any, name: str, ins: list[str], attrs: dict[str, Any]
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


def _sum(imp: _Importer, node: Any, name: str, ins: list[str], attrs: dict[str, Any]) -> str:
    acc = ins[0]
    for i, x in enumerate(ins[1:]):
        acc = imp.g.op("Add", [acc, x], f"{name}/{i}")
    return acc


def _unary(op: str) -> Handler:
    def handle(imp: _Importer, node: Any, name: str, ins: list[str], attrs: dict[str, Any]) -> str:
        extra = {"alpha": float(attrs.get("alpha", 0.01))} if op == "LeakyRelu" else {}
        return imp.g.op(op, ins[:1], name, **extra)

    return handle


def _prelu(
    imp: _Importer, node: Any, name: str, ins: list[str], attrs: dict[str, Any]
) -> str | None:
    slope = imp.const_of(ins[1])
    rank = imp.rank(node.input[0])
    if slope is None or rank is None:
        return None
    if imp.opset < 7 and slope.ndim == 1 and rank > 2:  # opset 6: per-channel slope [C]
        slope = slope.reshape((-1,) + (1,) * (rank - 2))
    return imp.g.op("BinaryMath", [ins[0], imp.g.const(slope, name + "/slope")], name, fn="prelu")


def _clip(
    imp: _Importer, node: Any, name: str, ins: list[str], attrs: dict[str, Any]
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
    imp: _Importer, node: Any, name: str, ins: list[str], attrs: dict[str, Any]
) -> str:
    return imp.g.op(
        "HardSigmoid",
        ins[:1],
        name,
        alpha=float(attrs.get("alpha", 0.2)),
        beta=float(attrs.get("beta", 0.5)),
    )


def _lrn(imp: _Importer, node: Any, name: str, ins: list[str], attrs: dict[str, Any]) -> str:
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


# Slice bounds past an axis mean "to its end"; kept within what the .pyem attributes hold.
_BOUND = 2**31


def _slice(
    imp: _Importer, node: Any, name: str, ins: list[str], attrs: dict[str, Any]
) -> str | None:
    if imp.opset < 10:
        starts, ends = attrs.get("starts"), attrs.get("ends")
        axes, steps = attrs.get("axes"), None
    else:
        got = [imp.const_of(v) if v else None for v in (ins + [""] * 4)[1:5]]
        if any(v and c is None for v, c in zip((ins + [""] * 4)[1:5], got)):
            return None  # run-time bounds
        starts, ends, axes, steps = got
    if starts is None or ends is None:
        return None
    starts, ends = [int(s) for s in np.ravel(starts)], [int(e) for e in np.ravel(ends)]
    axes = [int(a) for a in np.ravel(axes)] if axes is not None else list(range(len(starts)))
    if steps is not None and any(int(s) != 1 for s in np.ravel(steps)):
        return None
    y = ins[0]
    for i, (axis, s, e) in enumerate(zip(axes, starts, ends)):
        y = imp.g.op(
            "Slice",
            [y],
            name if i == len(axes) - 1 else f"{name}/{i}",
            axis=axis,
            start=max(-_BOUND, min(s, _BOUND)),
            end=max(-_BOUND, min(e, _BOUND)),
        )
    return y


def _split(
    imp: _Importer, node: Any, name: str, ins: list[str], attrs: dict[str, Any]
) -> list[str] | None:
    axis = int(attrs.get("axis", 0))
    if len(ins) > 1 and ins[1]:
        sizes = imp.const_of(ins[1])
        if sizes is None:
            return None
        split = [int(s) for s in np.ravel(sizes)]
    elif "split" in attrs:
        split = [int(s) for s in attrs["split"]]
    else:  # equal parts (the last one smaller with num_outputs, opset 18)
        shape = imp.shapes.get(node.input[0])
        if shape is None or shape[axis] < 0:
            return None
        n = int(attrs.get("num_outputs", len(node.output)))
        part = -(-shape[axis] // n)
        split = [min(part, shape[axis] - i * part) for i in range(n)]
    outs, start = [], 0
    for i, size in enumerate(split):
        outs.append(
            imp.g.op("Slice", ins[:1], f"{name}/{i}", axis=axis, start=start, end=start + size)
        )
        start += size
    return outs


def _softmax(
    imp: _Importer, node: Any, name: str, ins: list[str], attrs: dict[str, Any]
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


def _bn(imp: _Importer, node: Any, name: str, ins: list[str], attrs: dict[str, Any]) -> str | None:
    if not attrs.get("spatial", 1) or attrs.get("training_mode", 0):
        return None
    if len(node.output) > 1 and any(o and imp._used(o) for o in node.output[1:]):
        return None
    return imp.g.op("BatchNorm", ins[:5], name, epsilon=float(attrs.get("epsilon", 1e-5)), axis=1)


def _flatten(imp: _Importer, node: Any, name: str, ins: list[str], attrs: dict[str, Any]) -> str:
    return imp.g.op("Flatten", ins[:1], name, axis=int(attrs.get("axis", 1)))


def _shape(
    imp: _Importer, node: Any, name: str, ins: list[str], attrs: dict[str, Any]
) -> str | None:
    shape = imp.shapes.get(node.input[0])
    if shape is None:
        return None
    shape = shape[attrs.get("start", 0) : attrs.get("end", len(shape))]
    out = imp.g.const(np.array(shape, np.int64), name)
    if -1 in shape:
        imp.symbolic.add(out)
    return out


def _reshape(
    imp: _Importer, node: Any, name: str, ins: list[str], attrs: dict[str, Any]
) -> str | None:
    shape = attrs.get("shape") if imp.opset < 5 else imp.const_of(ins[1])
    if shape is None:
        return None
    shape = [int(d) for d in np.ravel(shape)]
    if imp.opset >= 5 and ins[1] in imp.symbolic:
        shape = batch_copied(shape, imp.shapes.get(node.input[0]), imp.batch_only)
        if shape.count(-1) > 1 and not imp.batch_only:
            weights = {i.name for i in imp.model.graph.initializer}
            free = [(vi.name, _shape_of(vi.type) or []) for vi in imp.model.graph.input
                    if vi.name not in weights]
            raise InputShapeUnknownError(
                f"'{imp.path}': node '{name}' reshapes to {shape}, sizes computed at run time from "
                f"input(s) {', '.join(f'{n} {s}' for n, s in free)}, which leave dimensions beyond "
                f"the batch free; pass {input_shapes_hint(free)} with the sizes the model was "
                "trained for"
            )
    if (attrs.get("allowzero", 0) and 0 in shape) or shape.count(-1) > 1:
        return None
    return imp.g.op("Reshape", ins[:1], name, shape=shape)


def _concat(imp: _Importer, node: Any, name: str, ins: list[str], attrs: dict[str, Any]) -> str:
    return imp.g.op("Concat", [i for i in ins if i], name, axis=int(attrs.get("axis", 1)))


def _transpose(
    imp: _Importer, node: Any, name: str, ins: list[str], attrs: dict[str, Any]
) -> str | None:
    perm = attrs.get("perm")
    if perm is None:
        rank = imp.rank(node.input[0])
        if rank is None:
            return None
        perm = list(range(rank))[::-1]
    return imp.g.op("Transpose", ins[:1], name, perm=[int(p) for p in perm])


def _axes(imp: _Importer, ins: list[str], attrs: dict[str, Any]) -> list[int] | None:
    if "axes" in attrs:
        return [int(a) for a in attrs["axes"]]
    if len(ins) > 1 and ins[1]:
        c = imp.const_of(ins[1])
        return None if c is None else [int(a) for a in np.ravel(c)]
    return []


def _squeeze(
    imp: _Importer, node: Any, name: str, ins: list[str], attrs: dict[str, Any]
) -> str | None:
    axes = _axes(imp, ins, attrs)
    return None if axes is None else imp.g.op("Squeeze", ins[:1], name, axes=axes)


def _unsqueeze(
    imp: _Importer, node: Any, name: str, ins: list[str], attrs: dict[str, Any]
) -> str | None:
    axes, src = _axes(imp, ins, attrs), imp.shapes.get(node.input[0])
    if not axes or src is None:
        return None
    rank = len(src) + len(axes)
    axes = sorted(a % rank for a in axes)
    # Before the first new axis, 0 copies the input's dimension; after it, dims come from inference.
    shape = [
        1 if i in axes else (0 if i < axes[0] else src[i - sum(a < i for a in axes)])
        for i in range(rank)
    ]
    if sum(d < 0 for d in shape) > 1:
        return None
    return imp.g.op("Reshape", ins[:1], name, shape=shape)


def _pad(imp: _Importer, node: Any, name: str, ins: list[str], attrs: dict[str, Any]) -> str | None:
    mode = _s(attrs.get("mode", "constant"))
    if mode not in ("constant", "reflect", "edge"):
        return None
    if imp.opset < 11:
        pads, value = attrs.get("pads", attrs.get("paddings")), float(attrs.get("value", 0.0))
    else:
        pads = imp.const_of(ins[1])
        value = 0.0
        if len(ins) > 2 and ins[2]:
            v = imp.const_of(ins[2])
            if v is None:
                return None
            value = float(v)
        if len(ins) > 3 and ins[3]:
            return None
    if pads is None:
        return None
    return imp.g.op(
        "Pad", ins[:1], name, pads=[int(p) for p in np.ravel(pads)], mode=mode, value=value
    )


def _reduce_mean(
    imp: _Importer, node: Any, name: str, ins: list[str], attrs: dict[str, Any]
) -> str | None:
    axes = _axes(imp, ins, attrs)
    if axes is None or (not axes and attrs.get("noop_with_empty_axes", 0)):
        return None
    return imp.g.op("Mean", ins[:1], name, axes=axes, keepdims=bool(attrs.get("keepdims", 1)))


def _identity(imp: _Importer, node: Any, name: str, ins: list[str], attrs: dict[str, Any]) -> str:
    return ins[0]


def _constant(
    imp: _Importer, node: Any, name: str, ins: list[str], attrs: dict[str, Any]
) -> str | None:
    if "value" in attrs:
        return imp.g.const(imp.onnx.numpy_helper.to_array(attrs["value"]), name)
    for key, dtype in (("value_float", np.float32), ("value_floats", np.float32),
                       ("value_int", np.int64), ("value_ints", np.int64)):
        if key in attrs:
            return imp.g.const(np.array(attrs[key], dtype), name)
    return None  # a string or sparse constant


def _math(fn: str, **defaults: float) -> Handler:
    """An elementwise function of the native ``Math`` op; ``defaults`` maps the ONNX attributes
    it reads (alpha, gamma...) to their ONNX defaults, passed on as ``alpha`` and ``beta``."""

    def handle(imp: _Importer, node: Any, name: str, ins: list[str], attrs: dict[str, Any]) -> str:
        params = {
            ("alpha" if i == 0 else "beta"): float(attrs.get(key, default))
            for i, (key, default) in enumerate(defaults.items())
        }
        return imp.g.op("Math", ins[:1], name, fn=fn, **params)

    return handle


def _gelu(imp: _Importer, node: Any, name: str, ins: list[str], attrs: dict[str, Any]) -> str | None:
    approximate = _s(attrs.get("approximate", "none"))
    if approximate not in ("none", "tanh"):
        return None
    return imp.g.op("Math", ins[:1], name, fn="gelu" if approximate == "none" else "gelu_tanh")


def _binary_math(fn: str) -> Handler:
    """Min, Max (variadic: folded left), Pow and Mod (fmod=1) on the native ``BinaryMath``."""

    def handle(
        imp: _Importer, node: Any, name: str, ins: list[str], attrs: dict[str, Any]
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


# ONNX Reduce* -> the native Reduce's kind.
_REDUCE_KINDS = {
    "ReduceSum": "sum", "ReduceMax": "max", "ReduceMin": "min", "ReduceProd": "prod",
    "ReduceL1": "l1", "ReduceL2": "l2", "ReduceLogSum": "log_sum",
    "ReduceLogSumExp": "log_sum_exp", "ReduceSumSquare": "sum_square",
}


def _reduce(imp: _Importer, node: Any, name: str, ins: list[str], attrs: dict[str, Any]) -> str | None:
    axes = _axes(imp, ins, attrs)
    if axes is None:
        return None  # axes computed at run time
    if not axes and attrs.get("noop_with_empty_axes", 0):
        return ins[0]
    shape = imp.shapes.get(node.input[0])
    if shape is not None and 0 in shape:
        return None  # an empty input: the engine holds no zero-size tensors
    return imp.g.op(
        "Reduce", ins[:1], name, kind=_REDUCE_KINDS[node.op_type], axes=axes,
        keepdims=bool(attrs.get("keepdims", 1)),
    )


def _inverse_rms(imp: _Importer, x: str, axes: list[int], eps: float, name: str) -> str:
    """1 / sqrt(mean(x², axes, keepdims) + eps) with native ops."""
    ms = imp.g.op("Reduce", [imp.g.op("Mul", [x, x], name + "/sq")], name + "/ms", kind="mean",
                  axes=axes, keepdims=True)
    shifted = imp.g.op("Add", [ms, imp.g.const(np.float32(eps), name + "/eps")], name + "/shift")
    return imp.g.op("Math", [imp.g.op("Math", [shifted], name + "/sqrt", fn="sqrt")], name + "/inv",
                    fn="reciprocal")


def _layer_norm(
    imp: _Importer, node: Any, name: str, ins: list[str], attrs: dict[str, Any]
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
    imp: _Importer, node: Any, name: str, ins: list[str], attrs: dict[str, Any]
) -> str | None:
    rank = imp.rank(node.input[0])
    if rank is None:
        return None
    axes = list(range(int(attrs.get("axis", -1)) % rank, rank))
    inv = _inverse_rms(imp, ins[0], axes, float(attrs.get("epsilon", 1e-5)), name)
    return imp.g.op("Mul", [imp.g.op("Mul", [ins[0], inv], name + "/normed"), ins[1]], name)


def _batch_matmul(imp: _Importer, node: Any, name: str, ins: list[str]) -> str | None:
    """MatMul with numpy semantics: batch dimensions broadcast, 1-D operands promoted."""
    ra, rb = imp.rank(node.input[0]), imp.rank(node.input[1])
    if ra is None or rb is None or ra == 0 or rb == 0:
        return None
    a, b = ins[0], ins[1]
    if ra == 1:
        a = imp.g.op("Reshape", [a], name + "/a2d", shape=[1, -1])
    if rb == 1:
        b = imp.g.op("Reshape", [b], name + "/b2d", shape=[-1, 1])
    rank = max(ra, rb, 2)
    squeeze = ([rank - 2] if ra == 1 else []) + ([rank - 1] if rb == 1 else [])
    y = imp.g.op("BatchMatMul", [a, b], name + "/mm" if squeeze else name)
    return imp.g.op("Squeeze", [y], name, axes=squeeze) if squeeze else y


def _expand(imp: _Importer, node: Any, name: str, ins: list[str], attrs: dict[str, Any]) -> str | None:
    shape = imp.const_of(ins[1])
    if shape is None or ins[1] in imp.symbolic:
        return None
    # x broadcast against zeros of the target shape: numpy's rules, as Expand's.
    zeros = np.zeros([int(d) for d in np.ravel(shape)], np.float32)
    return imp.g.op("Add", [ins[0], imp.g.const(zeros, name + "/zeros")], name)


def _cast(imp: _Importer, node: Any, name: str, ins: list[str], attrs: dict[str, Any]) -> str | None:
    to = attrs.get("to")
    if to == imp.onnx.TensorProto.BOOL and ins[0] in imp.boolean:
        out = imp.g.op("Identity", ins[:1], name)
        imp.boolean.add(out)
        return out
    if to != imp.onnx.TensorProto.FLOAT:
        return None
    # A bool to float: the same 0 / 1, under a fresh name that is no longer a boolean.
    return imp.g.op("Identity", ins[:1], name) if ins[0] in imp.boolean else ins[0]



def _as_float(imp: _Importer, value: str, name: str) -> str:
    """``value`` as a float32 input of a native op (a bool or integer constant converted)."""
    c = imp.const_of(value)
    if c is None or c.dtype == np.float32:
        return value
    return imp.g.const(c.astype(np.float32), name)


# ONNX comparisons and logic -> the native BinaryMath's fn (answers booleans as 0 / 1).
_COMPARE = {
    "Equal": "equal", "Less": "less", "Greater": "greater", "LessOrEqual": "less_equal",
    "GreaterOrEqual": "greater_equal", "And": "and", "Or": "or", "Xor": "xor",
}


def _compare(imp: _Importer, node: Any, name: str, ins: list[str], attrs: dict[str, Any]) -> str:
    a, b = (_as_float(imp, v, f"{name}/{i}") for i, v in enumerate(ins[:2]))
    out = imp.g.op("BinaryMath", [a, b], name, fn=_COMPARE[node.op_type])
    imp.boolean.add(out)
    return out


def _not(imp: _Importer, node: Any, name: str, ins: list[str], attrs: dict[str, Any]) -> str:
    out = imp.g.op("Math", [_as_float(imp, ins[0], name + "/x")], name, fn="not")
    imp.boolean.add(out)
    return out


def _where(imp: _Importer, node: Any, name: str, ins: list[str], attrs: dict[str, Any]) -> str | None:
    cond, a, b = ins[:3]
    if not (cond in imp.boolean or imp.const_of(cond) is not None):
        return None
    for v in (a, b):
        c = imp.const_of(v)
        if c is not None and c.dtype.kind != "f":
            return None  # an integer Where: the engine computes in float32
    return imp.g.op(
        "Where", [_as_float(imp, v, f"{name}/{i}") for i, v in enumerate((cond, a, b))], name
    )


def _cast_like(imp: _Importer, node: Any, name: str, ins: list[str], attrs: dict[str, Any]) -> str | None:
    like = imp.const_of(ins[1])
    if ins[1] in imp.boolean or (like is not None and like.dtype != np.float32):
        return None  # to a bool or an integer type
    # Run-time values are float32 (or booleans as 0 / 1): the target is float32.
    c = imp.const_of(ins[0])
    return ins[0] if c is None else imp.g.const(c.astype(np.float32), name)



_RESIZE_COORDS = (
    "half_pixel", "half_pixel_symmetric", "pytorch_half_pixel", "align_corners", "asymmetric"
)
_RESIZE_NEAREST = ("round_prefer_floor", "round_prefer_ceil", "floor", "ceil")


def _resize(imp: _Importer, node: Any, name: str, ins: list[str], attrs: dict[str, Any]) -> str | None:
    """Resize (opset 10+) and Upsample: nearest and linear with constant scales or sizes. An
    attribute value the kernel lacks is refused naming the node and the value."""
    mode = _s(attrs.get("mode", "nearest"))
    coord = _s(attrs.get("coordinate_transformation_mode",
                         "asymmetric" if node.op_type == "Upsample" or imp.opset < 11 else "half_pixel"))
    nearest = _s(attrs.get("nearest_mode", "round_prefer_floor"))
    if node.op_type == "Upsample" or imp.opset < 11:
        if mode == "bilinear":  # Upsample opset 7's name
            mode = "linear"
        nearest = "floor" if node.op_type == "Upsample" or imp.opset < 11 else nearest
    refusals = [
        (mode not in ("nearest", "linear"), f"mode '{mode}'"),
        (coord not in _RESIZE_COORDS, f"coordinate_transformation_mode '{coord}'"),
        (mode == "nearest" and nearest not in _RESIZE_NEAREST, f"nearest_mode '{nearest}'"),
        (bool(attrs.get("antialias", 0)), "antialias 1"),
        (_s(attrs.get("keep_aspect_ratio_policy", "stretch")) != "stretch",
         f"keep_aspect_ratio_policy '{_s(attrs.get('keep_aspect_ratio_policy', ''))}'"),
        (bool(attrs.get("exclude_outside", 0)), "exclude_outside 1"),
    ]
    for bad, what in refusals:
        if bad:
            return imp.g.unsupported_op(name, f"Resize with {what}")
    shape = imp.shapes.get(node.input[0])
    if shape is None:
        return None
    rank = len(shape)
    if node.op_type == "Upsample" or imp.opset < 11:
        scales_v = attrs.get("scales") if "scales" in attrs else imp.const_of(ins[1])
        sizes_v = None
    else:
        got = [imp.const_of(v) if v else None for v in (ins + [""] * 4)[2:4]]
        if any(v and c is None for v, c in zip((ins + [""] * 4)[2:4], got)):
            return imp.g.unsupported_op(name, "Resize with run-time scales or sizes")
        scales_v = got[0] if got[0] is not None and np.size(got[0]) else None
        sizes_v = got[1] if got[1] is not None and np.size(got[1]) else None
    if scales_v is None and sizes_v is None:
        return None
    axes = [int(a) % rank for a in attrs.get("axes", range(rank))]
    want_sizes = None if sizes_v is None else [int(v) for v in np.ravel(sizes_v)]
    want_scales = [] if scales_v is None else [float(np.float32(v)) for v in np.ravel(scales_v)]
    scales, sizes = [1.0] * rank, [max(d, 0) for d in shape]
    for i, a in enumerate(axes):
        if shape[a] < 0 and (want_sizes is not None or want_scales[i] != 1.0):
            return None  # a free dimension is resized: its size is not known here
        if shape[a] < 0:
            continue
        if want_sizes is not None:
            sizes[a] = want_sizes[i]
            scales[a] = sizes[a] / shape[a]
        else:
            scales[a] = want_scales[i]
            sizes[a] = int(np.floor(shape[a] * scales[a]))
    if any(s == 0 and shape[i] >= 0 for i, s in enumerate(sizes)):
        return None  # an empty output
    sizes = [0 if shape[i] < 0 else s for i, s in enumerate(sizes)]
    return imp.g.op("Resize", ins[:1], name, sizes=sizes, scales=scales, mode=mode,
                    coordinate_transformation_mode=coord, nearest_mode=nearest)



def _depth_space(
    imp: _Importer, node: Any, name: str, ins: list[str], attrs: dict[str, Any]
) -> str | None:
    """DepthToSpace (DCR and CRD) and SpaceToDepth as Reshape-Transpose-Reshape (NCHW)."""
    shape, b = imp.shapes.get(node.input[0]), int(attrs["blocksize"])
    if shape is None or len(shape) != 4 or any(d < 0 for d in shape[1:]):
        return None
    _, c, h, w = shape
    mode = _s(attrs.get("mode", "DCR"))
    if mode not in ("DCR", "CRD"):
        return imp.g.unsupported_op(name, f"{node.op_type} with mode '{mode}'")
    if node.op_type == "SpaceToDepth":
        perm = [0, 3, 5, 1, 2, 4] if mode == "DCR" else [0, 1, 3, 5, 2, 4]
        split, merged = [0, c, h // b, b, w // b, b], [0, c * b * b, h // b, w // b]
    elif mode == "DCR":
        split, perm, merged = [0, b, b, c // (b * b), h, w], [0, 3, 4, 1, 5, 2], [0, c // (b * b), h * b, w * b]
    else:
        split, perm, merged = [0, c // (b * b), b, b, h, w], [0, 1, 4, 2, 5, 3], [0, c // (b * b), h * b, w * b]
    y = imp.g.op("Reshape", ins[:1], name + "/split", shape=split)
    y = imp.g.op("Transpose", [y], name + "/perm", perm=perm)
    return imp.g.op("Reshape", [y], name, shape=merged)


def _tile(imp: _Importer, node: Any, name: str, ins: list[str], attrs: dict[str, Any]) -> str | None:
    repeats = imp.const_of(ins[1])
    if repeats is None or any(int(r) < 1 or int(r) > 64 for r in np.ravel(repeats)):
        return None
    y = ins[0]
    for axis, r in enumerate(int(r) for r in np.ravel(repeats)):
        if r > 1:
            y = imp.g.op("Concat", [y] * r, f"{name}/{axis}", axis=axis)
    return y if y != ins[0] else imp.g.op("Identity", [y], name)



def _conv_transpose(
    imp: _Importer, node: Any, name: str, ins: list[str], attrs: dict[str, Any]
) -> str | None:
    """ConvTranspose, 1-D and 2-D, constant weights; SAME auto_pad refused naming it."""
    w = imp.const_of(ins[1])
    if w is None:
        return imp.g.unsupported_op(name, "ConvTranspose with run-time weights")
    if w.ndim not in (3, 4):
        return imp.g.unsupported_op(name, f"ConvTranspose {w.ndim - 2}-D")
    spatial = w.ndim - 2
    auto = _s(attrs.get("auto_pad", "NOTSET"))
    if auto not in ("NOTSET", "VALID"):
        return imp.g.unsupported_op(name, f"ConvTranspose with auto_pad '{auto}'")
    kernel = list(w.shape[2:])
    strides = list(attrs.get("strides", [1] * spatial))
    dilations = list(attrs.get("dilations", [1] * spatial))
    out_pad = list(attrs.get("output_padding", [0] * spatial))
    pads = [0] * 2 * spatial if auto == "VALID" else list(attrs.get("pads", [0] * 2 * spatial))
    if "output_shape" in attrs:  # pads follow from the requested size (ONNX's formula)
        shape = imp.shapes.get(node.input[0])
        want = list(attrs["output_shape"])[-spatial:]
        if shape is None or any(d < 0 for d in shape[2:]):
            return None
        for i in range(spatial):
            total = (strides[i] * (shape[2 + i] - 1) + out_pad[i] + (kernel[i] - 1) * dilations[i] + 1
                     - want[i])
            if total < 0:  # larger than the natural size: ONNX pads the end implicitly
                return imp.g.unsupported_op(
                    name, f"ConvTranspose with output_shape {want} beyond its natural size"
                )
            pads[i], pads[spatial + i] = total - total // 2, total // 2
    if spatial == 1:
        strides, dilations, out_pad = [1, strides[0]], [1, dilations[0]], [0, out_pad[0]]
        pads = [0, pads[0], 0, pads[1]]
    x = ins[0] if spatial == 2 else _to_4d(imp, ins[0], name)
    wv = imp.g.const(w if spatial == 2 else w[:, :, None, :], name + "/w")
    y = imp.g.op(
        "ConvTranspose2D", [x, wv] + ([ins[2]] if len(ins) > 2 and ins[2] else []), name,
        strides=strides, dilations=dilations, pads=[pads[0], pads[1], pads[2], pads[3]],
        output_padding=out_pad, groups=int(attrs.get("group", 1)),
    )
    return y if spatial == 2 else _from_4d(imp, y, name)



def _lp_norm(imp: _Importer, node: Any, name: str, ins: list[str], attrs: dict[str, Any]) -> str | None:
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



# Ops that may read a run-time shape (see _Importer.symbolic).
_SHAPE_OPS = {
    "Shape",
    "Gather",
    "Unsqueeze",
    "Squeeze",
    "Concat",
    "Cast",
    "Identity",
    "Slice",
    "Reshape",
}

_HANDLERS: dict[str, Handler] = {
    "Constant": _constant,
    "Shape": _shape,
    "Identity": _identity,
    "Dropout": _identity,
    "Conv": _conv,
    "MaxPool": _pool,
    "AveragePool": _pool,
    "GlobalAveragePool": _global_pool,
    "GlobalMaxPool": _global_pool,
    "Gemm": _gemm,
    "MatMul": _matmul,
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
    "LRN": _lrn,
    "Slice": _slice,
    "Split": _split,
    "Softmax": _softmax,
    "BatchNormalization": _bn,
    "Flatten": _flatten,
    "Reshape": _reshape,
    "Concat": _concat,
    "Transpose": _transpose,
    "Squeeze": _squeeze,
    "Unsqueeze": _unsqueeze,
    "Pad": _pad,
    "ReduceMean": _reduce_mean,
    **{op: _reduce for op in _REDUCE_KINDS},
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
    "LayerNormalization": _layer_norm,
    "RMSNormalization": _rms_norm,
    "LogSoftmax": _softmax,
    "Expand": _expand,
    "Cast": _cast,
    "CastLike": _cast_like,
    "LpNormalization": _lp_norm,
    "ConvTranspose": _conv_transpose,
    "DepthToSpace": _depth_space,
    "SpaceToDepth": _depth_space,
    "Tile": _tile,
    "Resize": _resize,
    "GRU": _rnn,
    "LSTM": _rnn,
    "Upsample": _resize,
    "Where": _where,
    "Not": _not,
    **{op: _compare for op in _COMPARE},
}

# Ops that may read a boolean (see _Importer.boolean).
_BOOL_OPS = {"Where", "Not", "And", "Or", "Xor", "Equal", "Cast", "Identity"}


def _set_input_shapes(model: Any, path: str, input_shapes: dict[str, Sequence[int]]) -> None:
    """Give the model's graph inputs the shapes in ``input_shapes`` (-1: left free)."""
    inputs = {vi.name: vi for vi in model.graph.input}
    for name, shape in input_shapes.items():
        vi = inputs.get(name)
        if vi is None:
            raise ValueError(f"input_shapes names '{name}', which is not an input of '{path}' "
                             f"(its inputs: {', '.join(sorted(inputs))})")
        dims = vi.type.tensor_type.shape.dim
        if len(dims) not in (0, len(shape)) or any(int(d) < -1 for d in shape):
            raise ValueError(f"input_shapes['{name}'] = {list(shape)} does not fit input '{name}' "
                             f"of '{path}', which has rank {len(dims)} (-1 marks a free size)")
        vi.type.tensor_type.shape.Clear()
        for i, d in enumerate(shape):
            dim = vi.type.tensor_type.shape.dim.add()
            if int(d) >= 0:
                dim.dim_value = int(d)
            else:
                dim.dim_param = f"{name}_{i}"


def convert(location: ModelLocation, input_shapes: dict[str, Sequence[int]] | None = None) -> GraphBuilder:
    """Import an ONNX model into a native graph; ``input_shapes`` fixes sizes its inputs leave free."""
    onnx = import_onnx()
    model = read_model(location.path)
    if input_shapes:
        _set_input_shapes(model, location.path, input_shapes)
    return _Importer(onnx, location.path, model).run()
