"""TensorFlow frozen GraphDef (or SavedModel or Keras file, frozen on the fly) -> native graph,
NHWC kept."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from pyengine.builder import DTYPES, GraphBuilder
from pyengine.convert import _tf_ops
from pyengine.convert._graph import Graph, input_shapes_hint
from pyengine.convert._imports import framework
from pyengine.convert._keras import freeze_keras
from pyengine.convert._slicing import BATCH_MULTIPLE, runtime_reshape_target
from pyengine.convert._tf_attrs import _attr, _layout, _spatial
from pyengine.convert._tf_shapes import StaticShapes
from pyengine.errors import InputShapeUnknownError, ModelFormatError
from pyengine.locate import ModelLocation

_NOT_OUTPUTS = {"NoOp", "Const", "Placeholder", "Assert"}


def import_tf() -> Any:
    """The tensorflow module (BackendUnavailableError naming the extra when missing)."""
    return framework("tensorflow", "tensorflow")


@dataclass
class FrozenGraph:
    """A parsed GraphDef with its chosen inputs and outputs (node names)."""

    path: str
    graph_def: Any
    inputs: list[str]
    outputs: list[str]


def _read_pb(tf: Any, path: str) -> Any:
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise ModelFormatError(f"'{path}': cannot read ({exc})") from None
    graph_def = tf.compat.v1.GraphDef()
    try:
        graph_def.ParseFromString(data)
    except Exception as exc:  # protobuf's DecodeError, or RuntimeWarning-free failures
        raise ModelFormatError(
            f"'{path}' is not a TensorFlow frozen GraphDef (.pb); parsing failed: {exc}"
        ) from None
    if not graph_def.node:
        raise ModelFormatError(
            f"'{path}' is not a TensorFlow frozen GraphDef (.pb): it holds no nodes"
        )
    return graph_def


def load_saved_model(tf: Any, path: str, signature: str) -> tuple[Any, Any]:
    """The loaded SavedModel (keep it alive: it owns the variables) and its signature function."""
    try:
        loaded = tf.saved_model.load(path)
    except Exception as exc:
        raise ModelFormatError(f"'{path}': not a loadable TensorFlow SavedModel ({exc})") from None
    if signature not in loaded.signatures:
        raise ModelFormatError(
            f"'{path}': SavedModel has no signature '{signature}'; "
            f"it has {sorted(loaded.signatures)}"
        )
    return loaded, loaded.signatures[signature]


def _freeze_saved_model(tf: Any, path: str, signature: str) -> tuple[Any, list[str], list[str]]:
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    loaded, fn = load_saved_model(tf, path, signature)
    frozen = convert_variables_to_constants_v2(fn)  # reads the variables ``loaded`` owns
    del loaded
    graph_def = frozen.graph.as_graph_def()
    inputs = [t.name.split(":")[0] for t in frozen.inputs if t.dtype != tf.resource]
    outputs = [t.name.split(":")[0] for t in frozen.outputs]
    return graph_def, inputs, outputs


def read_graph(
    location: ModelLocation,
    inputs: Sequence[str] | None = None,
    outputs: Sequence[str] | None = None,
    signature: str = "serving_default",
) -> FrozenGraph:
    """Parse the frozen graph (or freeze the SavedModel's signature or the Keras model) and pick
    inputs and outputs.

    Inputs default to the Placeholders; outputs to the nodes nothing consumes.

    Raises
    ------
    ModelFormatError
        A damaged file, or a named input/output that is not in the graph.
    """
    tf = import_tf()
    path = location.path
    if location.extra.get("saved_model"):
        graph_def, sig_in, sig_out = _freeze_saved_model(tf, path, signature)
    elif location.extra.get("keras"):
        graph_def, sig_in, sig_out = freeze_keras(tf, path)
    else:
        graph_def = _read_pb(tf, path)
        sig_in, sig_out = [], []
    nodes = {n.name: n for n in graph_def.node}
    for n in graph_def.node:
        for i in n.input:
            if i.lstrip("^").split(":")[0] not in nodes:
                raise ModelFormatError(
                    f"'{path}': node '{n.name}' reads '{i}', which is not a node of the graph"
                )
    placeholders = [n.name for n in graph_def.node if n.op == "Placeholder"]
    if inputs is None:
        inputs = sig_in or placeholders
    for name in inputs:
        if name.split(":")[0] not in nodes:
            raise ModelFormatError(
                f"'{path}': input '{name}' is not a node of the graph; expected one of the "
                f"Placeholders {placeholders}"
            )
    consumed = {
        i.lstrip("^").split(":")[0]
        for n in graph_def.node
        for i in n.input
        if not i.startswith("^")
    }
    if outputs is None:
        outputs = sig_out or [
            n.name for n in graph_def.node if n.name not in consumed and n.op not in _NOT_OUTPUTS
        ]
    for name in outputs:
        if name.split(":")[0] not in nodes:
            raise ModelFormatError(f"'{path}': output '{name}' is not a node of the graph")
    if not outputs:
        raise ModelFormatError(f"'{path}': the graph has no output (every node is consumed)")
    return FrozenGraph(
        path, graph_def, [i.split(":")[0] for i in inputs], [o.split(":")[0] for o in outputs]
    )


# ---------------------------------------------------------------- importer
class _Importer:
    def __init__(
        self, tf: Any, frozen: FrozenGraph, input_shapes: dict[str, Sequence[int]]
    ) -> None:
        self.tf = tf
        self.frozen = frozen
        # Constants keep their TensorFlow dtype (int32 indices, bool masks): TF is strictly typed.
        self.g = Graph(frozen.path, "tensorflow", keep_dtypes=True)
        self.nodes = {n.name: n for n in frozen.graph_def.node}
        self.values: dict[str, str] = {}
        self.input_shapes = input_shapes
        # Constants computed from a tensor's shape with -1 for a dimension known only at run time
        # (the batch): only shape plumbing (StridedSlice, Pack, Reshape...) may consume them.
        self.symbolic: set[str] = set()
        self.shapes = StaticShapes(tf, frozen.graph_def, frozen.inputs, input_shapes)

    def static_shape(self, tensor: str) -> list[int] | None:
        """A tensor's shape (-1 for the batch or a size known only at run time, BATCH_MULTIPLE
        for the batch times a size; see :mod:`pyengine.convert._tf_shapes`), or None."""
        return self.shapes.shape(tensor)

    def ref(self, name: str) -> str:
        """The graph value of tensor ``name`` (``node`` or ``node:k``)."""
        key = _key(name)
        if key not in self.values:
            raise ModelFormatError(
                f"'{self.frozen.path}': tensor '{name}' is an output its op does not give here"
            )
        return self.values[key]

    def const(self, node: Any, i: int) -> np.ndarray | None:
        v = self.ref(node.input[i])
        return self.g.value(v) if self.g.is_const(v) else None

    def run(self) -> GraphBuilder:
        order: list[str] = []
        seen: set[str] = set()
        for out in self.frozen.outputs:
            stack: list[tuple[str, bool]] = [(out, False)]
            while stack:
                name, done = stack.pop()
                if done:
                    order.append(name)
                    continue
                if name in seen:
                    continue
                seen.add(name)
                stack.append((name, True))
                if name in self.frozen.inputs:
                    continue
                for i in self.nodes[name].input:
                    if not i.startswith("^"):
                        stack.append((i.split(":")[0], False))
        for name in order:
            self.convert_node(self.nodes[name])
        for out in self.frozen.outputs:
            self.g.output(self.values[out], out)
        return self.g.finish()

    def convert_node(self, n: Any) -> None:
        g = self.g
        if n.name in self.frozen.inputs:
            shape = self.input_shapes.get(n.name)
            if shape is None:
                s = n.attr["shape"].shape if "shape" in n.attr else None
                if s is None or s.unknown_rank:
                    raise InputShapeUnknownError(
                        f"'{self.frozen.path}': input '{n.name}' has no known rank; pass "
                        f"input_shapes={{'{n.name}': [...]}}"
                    )
                shape = [d.size if d.size >= 0 else -1 for d in s.dim]
            dtype = self.tf.as_dtype(_attr(n, "dtype", 1)).name
            if dtype not in DTYPES:
                self.values[n.name] = g.unsupported_op(n.name, f"input of type {dtype}")
                return
            self.values[n.name] = g.input(n.name, shape, dtype)
            return
        handler = _HANDLERS.get(n.op)
        if handler is None:
            self.values[n.name] = g.unsupported_op(n.name, n.op)
            return
        if any(self.values.get(_key(i), "").startswith("unsupported:") for i in _data_inputs(n)):
            self.values[n.name] = g.fresh("unsupported:" + n.name)
            return
        symbolic = any(self.values.get(_key(i)) in self.symbolic for i in _data_inputs(n))
        if symbolic and n.op not in _SHAPE_OPS:
            self.values[n.name] = g.unsupported_op(n.name, f"{n.op} of a run-time shape")
            return
        try:
            result = handler(self, n)
        except ModelFormatError:
            raise
        except ValueError as exc:  # a value the native ops cannot take; the reason says which
            self.values[n.name] = g.unsupported_op(n.name, f"{n.op}: {exc}")
            return
        if result is None:
            self.values[n.name] = g.unsupported_op(n.name, n.op)
            return
        outs = [result] if isinstance(result, str) else list(result)
        if symbolic and n.op not in _READS_SHAPE and not all(g.is_const(v) for v in outs):
            self.values[n.name] = g.unsupported_op(n.name, f"{n.op} of a run-time shape")
            return
        for k, value in enumerate(outs):
            self.values[n.name if k == 0 else f"{n.name}:{k}"] = value
            # A size known only at run time (-1) is still in it: only shape plumbing may read it.
            if symbolic and g.is_const(value) and g.value(value).dtype.kind == "i" and np.any(
                g.value(value) < 0
            ):
                self.symbolic.add(value)


def _key(tensor: str) -> str:
    """The key of a tensor in ``_Importer.values``: ``node`` for output 0, else ``node:k``."""
    name = tensor.lstrip("^")
    return name[:-2] if name.endswith(":0") else name


def _data_inputs(n: Any) -> list[str]:
    return [i for i in n.input if not i.startswith("^")]


def _padding(n: Any) -> dict[str, Any]:
    pad = _attr(n, "padding", "VALID")
    if pad == "EXPLICIT":
        e = _attr(n, "explicit_paddings")
        hw = e[4:8] if _layout(n) == "NCHW" else e[2:6]
        return {"padding": "EXPLICIT", "pads": [hw[0], hw[2], hw[1], hw[3]]}
    return {"padding": pad}


def _const(imp: _Importer, n: Any) -> str:
    return imp.g.const(imp.tf.make_ndarray(n.attr["value"].tensor), n.name)


def _identity(imp: _Importer, n: Any) -> str:
    return imp.ref(_data_inputs(n)[0])


def _cast(imp: _Importer, n: Any) -> str | None:
    x = imp.ref(n.input[0])
    if imp.g.is_const(x):
        return imp.g.const(
            imp.g.value(x).astype(imp.tf.as_dtype(_attr(n, "DstT")).as_numpy_dtype), n.name
        )
    src, dst = (imp.tf.as_dtype(_attr(n, k)).name for k in ("SrcT", "DstT"))
    if src == dst:
        return x
    return imp.g.op("Cast", [x], n.name, to=dst) if {src, dst} <= set(DTYPES) else None


def _conv(imp: _Importer, n: Any) -> str | None:
    w = imp.const(n, 1)
    if w is None:
        return None
    if n.op == "DepthwiseConv2dNative":
        kh, kw, c, m = w.shape
        wt, groups = w.reshape(kh, kw, c * m).transpose(2, 0, 1)[:, None], c
    else:
        shape = imp.static_shape(n.input[0]) or []
        c = shape[1 if _layout(n) == "NCHW" else 3] if len(shape) == 4 else -1
        # A grouped convolution's filter holds C / groups input channels.
        groups = c // w.shape[2] if c > w.shape[2] > 0 and c % w.shape[2] == 0 else 1
        wt = w.transpose(3, 2, 0, 1)
    return imp.g.op(
        "Conv2D",
        [imp.ref(n.input[0]), imp.g.const(np.ascontiguousarray(wt), n.name + "/w")],
        n.name,
        layout=_layout(n),
        strides=_spatial(n, "strides", [1, 1]),
        dilations=_spatial(n, "dilations", [1, 1]),
        groups=groups,
        **_padding(n),
    )


def _pool(imp: _Importer, n: Any) -> str:
    return imp.g.op(
        "MaxPool" if n.op == "MaxPool" else "AvgPool",
        [imp.ref(n.input[0])],
        n.name,
        layout=_layout(n),
        kernel=_spatial(n, "ksize", [1, 1]),
        strides=_spatial(n, "strides", [1, 1]),
        **_padding(n),
    )


def _bias_add(imp: _Importer, n: Any) -> str | None:
    """BiasAdd: the bias over the last axis (NHWC), or over axis 1 of an input of any rank
    (NCHW: NCW, NCHW, NCDHW), constant or computed."""
    bias = imp.ref(n.input[1])
    if _layout(n) == "NCHW":
        shape = imp.static_shape(n.input[0])
        if shape is None:
            return None
        target = [-1] + [1] * (len(shape) - 2)
        bias = imp.g.op("Reshape", [bias], n.name + "/b", shape=target)
    return imp.g.op("Add", [imp.ref(n.input[0]), bias], n.name)


def _binary(op: str) -> Callable[[_Importer, Any], str]:
    def handle(imp: _Importer, n: Any) -> str:
        return imp.g.op(op, [imp.ref(n.input[0]), imp.ref(n.input[1])], n.name)

    return handle


def _unary(op: str, **attrs: Any) -> Callable[[_Importer, Any], str]:
    def handle(imp: _Importer, n: Any) -> str:
        extra = dict(attrs)
        if op == "LeakyRelu":
            extra["alpha"] = float(_attr(n, "alpha", 0.2))
        return imp.g.op(op, [imp.ref(n.input[0])], n.name, **extra)

    return handle


def _matmul(imp: _Importer, n: Any) -> str | None:
    if _attr(n, "transpose_a", False):
        return None
    return imp.g.op(
        "Dense",
        [imp.ref(n.input[0]), imp.ref(n.input[1])],
        n.name,
        transpose_b=bool(_attr(n, "transpose_b", False)),
    )


def _mean(imp: _Importer, n: Any) -> str | None:
    axes = imp.const(n, 1)
    if axes is None:
        return None
    return imp.g.op(
        "Mean",
        [imp.ref(n.input[0])],
        n.name,
        axes=[int(a) for a in np.ravel(axes)],
        keepdims=bool(_attr(n, "keep_dims", False)),
    )


def _reshape(imp: _Importer, n: Any) -> str | None:
    shape = imp.const(n, 1)
    if shape is None:
        return None
    x = imp.ref(n.input[0])
    dynamic = imp.ref(n.input[1]) in imp.symbolic
    target = [int(d) for d in np.ravel(shape)]
    if imp.g.is_const(x):
        return None if dynamic else imp.g.const(imp.g.value(x).reshape(target), n.name)
    if 0 in target:  # TensorFlow's 0 is an empty dimension; the native 0 copies the input's
        return None
    if dynamic:
        placeholders = [list(imp.input_shapes.get(i) or imp.static_shape(i) or [0])
                        for i in imp.frozen.inputs]
        batch_only = all(-1 not in s[1:] for s in placeholders)
        target = (runtime_reshape_target(target, imp.static_shape(n.input[0])) if batch_only
                  else [-1 if d == BATCH_MULTIPLE else d for d in target])
        if target.count(-1) > 1 and not batch_only:
            free = list(zip(imp.frozen.inputs, placeholders))
            raise InputShapeUnknownError(
                f"'{imp.frozen.path}': node '{n.name}' reshapes to {target}, sizes computed at run "
                f"time from input(s) {', '.join(f'{i} {s}' for i, s in free)}, which leave "
                f"dimensions beyond the batch free; pass {input_shapes_hint(free)} with the sizes "
                "the model was trained for"
            )
    if target.count(-1) > 1:
        return None  # several dimensions only known at run time
    return imp.g.op("Reshape", [x], n.name, shape=target)


def _squeeze(imp: _Importer, n: Any) -> str:
    return imp.g.op(
        "Squeeze", [imp.ref(n.input[0])], n.name, axes=list(_attr(n, "squeeze_dims") or [])
    )


def _concat(imp: _Importer, n: Any) -> str | None:
    ins = _data_inputs(n)
    axis = imp.const(n, len(ins) - 1)
    if axis is None:
        return None
    return imp.g.op("Concat", [imp.ref(i) for i in ins[:-1]], n.name, axis=int(axis))


def _transpose(imp: _Importer, n: Any) -> str | None:
    perm = imp.const(n, 1)
    return (
        None
        if perm is None
        else imp.g.op("Transpose", [imp.ref(n.input[0])], n.name, perm=[int(p) for p in perm])
    )


def _pad(imp: _Importer, n: Any) -> str | None:
    pads = imp.const(n, 1)
    if pads is None:
        return None
    attrs: dict[str, Any] = {"pads": [int(p) for p in pads[:, 0]] + [int(p) for p in pads[:, 1]]}
    if n.op == "MirrorPad":
        if _attr(n, "mode") != "REFLECT":
            return None
        attrs["mode"] = "reflect"
    elif n.op == "PadV2":
        v = imp.const(n, 2)
        if v is None:
            return None
        attrs["value"] = float(v)
    return imp.g.op("Pad", [imp.ref(n.input[0])], n.name, **attrs)


def _lrn(imp: _Importer, n: Any) -> str:
    """tf.nn.local_response_normalization: over the last axis, x / (bias + alpha * sum of
    squares within depth_radius)^beta; native LRN divides alpha by the window's size."""
    size = 2 * int(_attr(n, "depth_radius", 5)) + 1
    return imp.g.op(
        "LRN",
        [imp.ref(n.input[0])],
        n.name,
        size=size,
        alpha=float(_attr(n, "alpha", 1.0)) * size,
        beta=float(_attr(n, "beta", 0.5)),
        bias=float(_attr(n, "bias", 1.0)),
        axis=-1,
    )


def _fused_bn(imp: _Importer, n: Any) -> str | None:
    if _attr(n, "is_training", False):
        return None
    params = [imp.ref(i) for i in n.input[1:5]]
    return imp.g.op(
        "BatchNorm",
        [imp.ref(n.input[0]), *params],
        n.name,
        epsilon=float(_attr(n, "epsilon", 1e-3)),
        axis=1 if _layout(n) == "NCHW" else -1,
    )


def _shape(imp: _Importer, n: Any) -> str | None:
    x = imp.ref(n.input[0])
    if imp.g.is_const(x):
        return imp.g.const(np.array(imp.g.value(x).shape, np.int32), n.name)
    shape = imp.static_shape(n.input[0])
    if shape is None:
        return None
    out = imp.g.const(np.array(shape, np.int32), n.name)
    if -1 in shape:
        imp.symbolic.add(out)
    return out


def _softmax(imp: _Importer, n: Any) -> str:
    return imp.g.op("Softmax", [imp.ref(n.input[0])], n.name, axis=-1)


# Ops that may read a run-time shape (see _Importer.symbolic).
# Conv2DBackpropInput reads only the spatial part of its run-time output size.
_SHAPE_OPS = {"Shape", "StridedSlice", "Pack", "Reshape", "Identity", "Cast", "ConcatV2",
              "Conv2DBackpropInput", "ResizeBilinear", "ResizeNearestNeighbor", "GatherV2", "Prod",
              "Unpack", "ExpandDims", "Squeeze"}
# Of those, the ops that read a run-time shape as a size (the others must fold to a constant).
_READS_SHAPE = {"Reshape", "Conv2DBackpropInput", "ResizeBilinear", "ResizeNearestNeighbor"}

_HANDLERS: dict[str, Callable[[_Importer, Any], str | list[str] | None]] = {
    "Const": _const,
    "Identity": _identity,
    "StopGradient": _identity,
    # Output i is input i (tf.custom_gradient wraps tf.nn.silu in one); output 0 is the first
    # data input, and a reader of another output gets the multi-output error from ref().
    "IdentityN": _identity,
    "Snapshot": _identity,
    "Cast": _cast,
    "Conv2D": _conv,
    "DepthwiseConv2dNative": _conv,
    "MaxPool": _pool,
    "AvgPool": _pool,
    "BiasAdd": _bias_add,
    "Add": _binary("Add"),
    "AddV2": _binary("Add"),
    "Sub": _binary("Sub"),
    "Mul": _binary("Mul"),
    "RealDiv": _binary("Div"),
    "Relu": _unary("Relu"),
    "Relu6": _unary("Relu6"),
    "Sigmoid": _unary("Sigmoid"),
    "Tanh": _unary("Tanh"),
    "LeakyRelu": _unary("LeakyRelu"),
    "Softmax": _softmax,
    "Shape": _shape,
    "MatMul": _matmul,
    "Mean": _mean,
    "Reshape": _reshape,
    "Squeeze": _squeeze,
    "ConcatV2": _concat,
    "Transpose": _transpose,
    "Pad": _pad,
    "PadV2": _pad,
    "MirrorPad": _pad,
    "LRN": _lrn,
    "FusedBatchNorm": _fused_bn,
    "FusedBatchNormV3": _fused_bn,
}
_HANDLERS.update(_tf_ops.HANDLERS)


def convert(
    location: ModelLocation,
    inputs: Sequence[str] | None = None,
    outputs: Sequence[str] | None = None,
    input_shapes: dict[str, Sequence[int]] | None = None,
    signature: str = "serving_default",
) -> GraphBuilder:
    """Import a TensorFlow frozen graph or SavedModel signature into a native graph."""
    tf = import_tf()
    frozen = read_graph(location, inputs, outputs, signature)
    return _Importer(tf, frozen, dict(input_shapes or {})).run()
