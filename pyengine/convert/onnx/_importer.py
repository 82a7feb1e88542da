"""The ONNX importer: walks the graph, folds constant subgraphs and hands each node to its
handler (the ops_*.py modules)."""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from pyengine.builder import GraphBuilder
from pyengine.convert._graph import Graph
from pyengine.convert.onnx._fuse import fuse_attention, fuse_gelu
from pyengine.errors import InputShapeUnknownError


def shape_of(type_proto: Any) -> list[int] | None:
    t = type_proto.tensor_type
    if not t.HasField("shape"):
        return None
    return [d.dim_value if d.HasField("dim_value") else -1 for d in t.shape.dim]


class Importer:
    """One ONNX model's conversion: ONNX value names -> native graph values."""

    def __init__(self, onnx: Any, path: str, model: Any, handlers: dict[str, Handler]) -> None:
        self.onnx = onnx
        self.handlers = handlers
        self.path = path
        self.model = model
        self.opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 1)
        self.g = Graph(path, "onnx", keep_dtypes=True)
        self.values: dict[str, str] = {}
        self.shapes: dict[str, list[int] | None] = {}
        # Constants computed from a tensor's shape with -1 for a dimension known only at run time
        # (the batch): only shape plumbing (SHAPE_OPS) may consume them.
        self.symbolic: set[str] = set()
        # The element type (a numpy dtype name) of each run-time native value; constants carry
        # their own (Importer.dtype_of).
        self.vdtypes: dict[str, str] = {}
        # ONNX value name -> its element type from ONNX's type inference.
        self.onnx_dtypes: dict[str, str] = {}
        # Quantized tensors (ops_quant.py). A run-time int8/uint8 ONNX tensor with known scale
        # and zero point is held as a float32 native value of its real values
        # ((q - zero_point) * scale): qparams maps that native value to its quantization, raw
        # maps it to the float value it was rounded from (a fused int8 op reads that one and
        # rounds it itself, skipping the Q/DQ pair), and done maps an ONNX value that a fused
        # producer already computed to its native value.
        self.qparams: dict[str, Any] = {}
        self.raw: dict[str, str] = {}
        self.done: dict[str, str] = {}
        self.readers: dict[str, list[Any]] = {}
        self.producers: dict[str, Any] = {o: n for n in model.graph.node for o in n.output if o}
        for n in model.graph.node:
            for i in n.input:
                self.readers.setdefault(i, []).append(n)
        # Whether the batch (dimension 0) is the graph inputs' only free dimension.
        self.batch_only = all(-1 not in (shape_of(vi.type) or [0])[1:] for vi in model.graph.input)
        # Whether every graph input's shape is fully known: a size left -1 inside the graph is
        # then only a gap in onnx's shape inference, and a native Shape op computes it.
        self.static_inputs = all(-1 not in (shape_of(vi.type) or [-1]) for vi in model.graph.input)
        try:
            inferred = onnx.shape_inference.infer_shapes(model)
            for vi in (
                list(inferred.graph.value_info)
                + list(inferred.graph.input)
                + list(inferred.graph.output)
            ):
                self.shapes[vi.name] = shape_of(vi.type)
                dt = onnx_dtype(onnx, vi.type.tensor_type.elem_type)
                if dt is not None:
                    self.onnx_dtypes[vi.name] = dt
        except Exception:  # shape inference is only a help
            pass

    def rank(self, name: str) -> int | None:
        s = self.shapes.get(name)
        return None if s is None else len(s)

    def dtype_of(self, value: str) -> str:
        """The element type of native value ``value`` (numpy dtype name)."""
        if self.g.is_const(value):
            return str(self.g.value(value).dtype)
        return self.vdtypes.get(value, "float32")

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
            dtype = onnx_dtype(onnx, vi.type.tensor_type.elem_type)
            if dtype is None:
                self.values[vi.name] = self.g.unsupported_op(
                    vi.name,
                    "input of type "
                    + onnx.TensorProto.DataType.Name(vi.type.tensor_type.elem_type),
                )
                continue
            shape = shape_of(vi.type)
            if shape is None:
                raise InputShapeUnknownError(f"'{self.path}': input '{vi.name}' has no shape")
            self.values[vi.name] = self.g.input(vi.name, shape, dtype)
            self.vdtypes[self.values[vi.name]] = dtype
        nodes = fuse_attention(onnx, graph, fuse_gelu(onnx, graph), self.shapes, self.batch_only,
                               self.opset)
        for node in nodes:
            self.convert_node(node)
        for vi in graph.output:
            value = self.values[vi.name]
            want = onnx_dtype(onnx, vi.type.tensor_type.elem_type)
            if value in self.qparams and want in ("int8", "uint8"):  # real values -> codes
                value = self.codes_of(value, want, vi.name)
            if not value.startswith("unsupported:") and want is not None and self.dtype_of(value) != want:
                value = self.g.unsupported_op(
                    vi.name, f"output '{vi.name}' of type {want} (computed as {self.dtype_of(value)})"
                )
            self.g.output(value, vi.name, shape_of(vi.type))
        return self.g.finish()

    def convert_node(self, node: Any) -> None:
        name = node.name or node.output[0]
        outs_done = [o for o in node.output if o]
        if outs_done and all(o in self.done for o in outs_done):  # computed by a fused producer
            self._set(node, [self.done.get(o, "") for o in node.output])
            return
        op_type = node.op_type
        if node.domain not in ("", "ai.onnx"):
            op_type = f"{node.domain}.{node.op_type}"
            if op_type not in self.handlers:
                self._set(node, [self.g.unsupported_op(name, op_type)])
                return
        ins = [self.values[i] if i else "" for i in node.input]
        if op_type not in QUANT_OPS:
            # ONNX int8/uint8 codes held as real values: only ops that commute with the
            # dequantization (moving or selecting elements) may read them.
            coded = [i for i in node.input if i and self.values[i] in self.qparams
                     and self.onnx_dtypes.get(i) in ("int8", "uint8")]
            if coded and op_type not in CODE_PRESERVING_OPS:
                dt = self.onnx_dtypes[coded[0]]
                self._set(node, [self.g.unsupported_op(
                    name, f"{op_type} of a quantized {dt} tensor (no quantized form of this op)")]
                    * len(node.output))
                return
            if coded:
                self._convert_coded(node, name, op_type, ins, self.qparams[self.values[coded[0]]])
                return
        present = [v for v in ins if v]
        # Quantized ops on constants are computed by their handlers (which check the scales).
        if (node.op_type != "Constant" and op_type not in QUANT_OPS and present
                and all(self.g.is_const(v) for v in present)):
            dynamic = any(v in self.symbolic for v in present)
            if dynamic and node.op_type not in SHAPE_OPS:
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
        if op_type not in self.handlers:
            self._set(node, [self.g.unsupported_op(name, op_type)] * len(node.output))
            return
        if any(v.startswith("unsupported:") for v in ins):  # downstream of an unsupported op
            self._set(node, [self.g.fresh("unsupported:" + name) for _ in node.output])
            return
        if node.op_type not in SHAPE_OPS and any(v in self.symbolic for v in ins):
            self._set(node, [self.g.unsupported_op(name, f"{node.op_type} of a run-time shape")])
            return
        # Run-time values of other types than float32 (constants are read by the handlers, and
        # parameters the engine reads by value, PARAM_INPUTS, by the native op).
        params = PARAM_INPUTS.get(node.op_type, set())
        typed = sorted({self.dtype_of(v) for i, v in enumerate(ins)
                        if v and not self.g.is_const(v) and i not in params} - {"float32"})
        widened = False
        if typed and op_type not in TYPED_OPS and op_type not in QUANT_OPS:
            if typed != ["float64"]:
                self._set(node, [self.g.unsupported_op(name, f"{node.op_type} of {', '.join(typed)}")])
                return
            # A float32 op on float64 values: computed in float32 between two Casts.
            ins = [self.cast(v, "float32", f"{name}/in{i}")
                   if v and self.dtype_of(v) == "float64" and i not in params else v
                   for i, v in enumerate(ins)]
            widened = True
        handler = self.handlers.get(op_type)
        attrs = {a.name: self.onnx.helper.get_attribute_value(a) for a in node.attribute}
        out = handler(self, node, name, ins, attrs) if handler is not None else None
        if out is None:
            self._set(node, [self.g.unsupported_op(name, op_type)] * len(node.output))
            return
        outs = out if isinstance(out, list) else [out]
        if widened:
            outs = [self.cast(v, "float64", f"{name}/out{i}")
                    if i < len(node.output) and self.onnx_dtypes.get(node.output[i]) == "float64"
                    and not v.startswith("unsupported:") else v
                    for i, v in enumerate(outs)]
        self._set(node, outs)

    def _convert_coded(self, node: Any, name: str, op_type: str, ins: list[str], q: Any) -> None:
        """A CODE_PRESERVING_OPS node on quantized values: the float op on the real values, whose
        outputs keep the input's quantization (every quantized input must share it)."""
        for i, v in zip(node.input, ins):
            # Data inputs holding codes must share the grid; indices, shapes and axes are free.
            coded = self.dtype_of(v) in ("int8", "uint8") if self.g.is_const(v) else (
                v in self.qparams and self.onnx_dtypes.get(i) in ("int8", "uint8"))
            if v and (coded or self.dtype_of(v) in ("int8", "uint8")) and self.qparams.get(v) != q:
                self._set(node, [self.g.unsupported_op(
                    name, f"{op_type} of quantized tensors with different scales or zero points")]
                    * len(node.output))
                return
        attrs = {a.name: self.onnx.helper.get_attribute_value(a) for a in node.attribute}
        out = self.handlers[op_type](self, node, name, ins, attrs)
        if out is None:
            self._set(node, [self.g.unsupported_op(name, op_type)] * len(node.output))
            return
        outs = out if isinstance(out, list) else [out]
        for o, v in zip(node.output, outs):
            if o and o not in self.onnx_dtypes:  # shape inference stopped at a com.microsoft op
                self.onnx_dtypes[o] = "int64" if op_type in ("Shape", "Size") else q.dtype
            if not self.g.is_const(v) and self.onnx_dtypes.get(o) in ("int8", "uint8"):
                self.qparams[v] = q
                self.vdtypes[v] = "float32"
        self._set(node, outs)

    def codes_of(self, value: str, dtype: str, name: str) -> str:
        """The int8/uint8 codes of quantized real value ``value`` as a ``dtype`` native value."""
        q = self.qparams[value]
        codes = self.g.op("QuantizeLinear", [value], name + "/codes", **q.native_attrs())
        out = self.g.op("Cast", [codes], name + "/cast", to=dtype)
        self.vdtypes[out] = dtype
        return out

    def cast(self, value: str, dtype: str, name: str) -> str:
        """``value`` as ``dtype``: a converted constant, a native Cast, or ``value`` itself."""
        if self.dtype_of(value) == dtype:
            return value
        c = self.const_of(value)
        if c is not None:
            return self.g.const(c.astype(dtype), name)
        out = self.g.op("Cast", [value], name, to=dtype)
        self.vdtypes[out] = dtype
        return out

    def _set(self, node: Any, outs: list[str]) -> None:
        for i, o in enumerate(node.output):
            if not o:
                continue
            if i < len(outs):
                self.values[o] = outs[i]
                if not self.g.is_const(outs[i]) and outs[i] not in self.vdtypes:
                    self.vdtypes[outs[i]] = self.onnx_dtypes.get(o, "float32")
            else:  # an extra output (MaxPool indices, Dropout mask...) that has no native form
                self.values[o] = self.g.fresh(f"unsupported:{o}")
                if self._used(o):
                    self.g.unsupported_op(node.name or o, f"{node.op_type} output {i}")

    def _used(self, value: str) -> bool:
        graph = self.model.graph
        return any(value in n.input for n in graph.node) or any(
            value == o.name for o in graph.output
        )


Handler = Callable[[Importer, Any, str, list[str], dict[str, Any]], "str | list[str] | None"]


def attr_str(v: Any) -> Any:
    return v.decode() if isinstance(v, bytes) else v


def axes_of(imp: Importer, ins: list[str], attrs: dict[str, Any]) -> list[int] | None:
    if "axes" in attrs:
        return [int(a) for a in attrs["axes"]]
    if len(ins) > 1 and ins[1]:
        c = imp.const_of(ins[1])
        return None if c is None else [int(a) for a in np.ravel(c)]
    return []


def param_input(imp: Importer, ins: list[str], i: int) -> str | None:
    """Input ``i`` when it is a run-time parameter (a value the native op reads by value at plan
    time, docs/format.md "Parameter inputs"); None when it is absent or a constant."""
    return ins[i] if len(ins) > i and ins[i] and not imp.g.is_const(ins[i]) else None


# ONNX op -> the input positions that are parameters (axes, sizes, pads, shape, k...). At run time
# such an input is read by value by the native op (Op::reads_value), so its dtype is not the op's
# element type: the importer's dtype check skips it.
PARAM_INPUTS: dict[str, set[int]] = {
    **{op: {1} for op in ("ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd",
                          "ReduceL1", "ReduceL2", "ReduceLogSum", "ReduceLogSumExp",
                          "ReduceSumSquare", "Reshape", "Squeeze", "Unsqueeze", "Split", "Expand",
                          "Tile", "TopK", "Upsample")},
    "Slice": {1, 2, 3, 4},
    "Pad": {1, 3},
    "Resize": {1, 2, 3},
    "ConstantOfShape": {0},
    "Range": {0, 1, 2},
}


# Ops that may read a run-time shape (see Importer.symbolic).
SHAPE_OPS = {
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


# The element types the engine holds (numpy names); ONNX's others (float16, strings...) are
# refused naming the type.
ENGINE_DTYPES = {"float32", "float64", "int8", "int16", "int32", "int64", "uint8", "uint16",
                 "uint32", "uint64", "bool"}


def onnx_dtype(onnx: Any, elem_type: int) -> str | None:
    """The numpy name of ONNX element type ``elem_type``, or None when the engine lacks it."""
    try:
        name = str(np.dtype(onnx.helper.tensor_dtype_to_np_dtype(elem_type)))
    except Exception:  # undefined, string, 4-bit and other types numpy has no form of
        return None
    return name if name in ENGINE_DTYPES else None


# The quantized ops (ops_quant.py): they read int8/uint8 codes, whether held as real values
# (Importer.qparams) or as int8/uint8 native values.
QUANT_OPS = {
    "QuantizeLinear", "DequantizeLinear", "QLinearConv", "QLinearMatMul", "MatMulInteger",
    "ConvInteger", "com.microsoft.QLinearAdd", "com.microsoft.QLinearMul",
    "com.microsoft.QLinearGlobalAveragePool", "com.microsoft.QLinearAveragePool",
    "com.microsoft.QLinearConcat", "com.microsoft.QLinearSigmoid", "com.microsoft.QLinearLeakyRelu",
    "com.microsoft.QGemm",
}

# Ops that commute with dequantization (they move, select or compare elements): on quantized
# codes they run on the real values, and their outputs keep the input's scale and zero point.
CODE_PRESERVING_OPS = {
    "Identity", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Transpose", "Slice", "Split",
    "Concat", "Gather", "MaxPool", "GlobalMaxPool", "DepthToSpace", "SpaceToDepth", "Tile",
    "Expand", "Dropout", "Shape", "Size",
}

# Ops whose handlers take values of other dtypes than float32 (the rest are refused naming the
# op and the dtype before their handler runs).
TYPED_OPS = {
    "Identity", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Transpose", "Concat", "Slice",
    "Split", "Tile", "Expand", "Shape", "Size", "Cast", "CastLike", "Equal", "Less", "Greater",
    "LessOrEqual", "GreaterOrEqual", "And", "Or", "Xor", "Not", "Where", "Add", "Sub", "Mul",
    "Div", "Sum", "Min", "Max", "Pow", "Mod", "Abs", "Neg", "Sign", "ArgMax", "ArgMin",
    "Gather", "GatherElements", "Trilu", "IsNaN", "IsInf", "Dropout", "Constant", "BitwiseAnd",
    "BitwiseOr", "BitwiseXor", "BitwiseNot", "BitShift", "Attention", "EyeLike", "GatherND", "BitCast",
    "RotaryEmbedding", "Scatter", "ScatterElements", "ScatterND", "CumSum", "CumProd", "TopK",
    "Pad",
}
