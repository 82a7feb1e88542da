"""Chainer model (``model.npz`` + the network's code) -> native graph, by tracing one forward pass
on a sample input through Chainer's computational graph (NCHW)."""

from __future__ import annotations

import importlib.util
import os
import sys
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from pyengine.builder import DTYPES, GraphBuilder
from pyengine.convert import _chainer_ops
from pyengine.convert._graph import Graph
from pyengine.convert._imports import framework
from pyengine.errors import InputShapeUnknownError, ModelFormatError
from pyengine.frameworks import CHAINER_MANIFEST
from pyengine.locate import ModelLocation

#: Batch size of the traced sample; a Reshape that names it in dimension 0 keeps the batch free.
TRACE_BATCH = 3


def import_chainer() -> Any:
    """The chainer module (BackendUnavailableError naming the extra when missing)."""
    return framework("chainer", "chainer")


@dataclass
class ChainerPackage:
    """A Chain with its weights loaded, and its input/output names and shapes."""

    chain: Any
    inputs: list[tuple[str, list[int] | None]]
    outputs: list[str] | None
    #: Input name -> element type, where the manifest gives one other than float32.
    dtypes: dict[str, str] = field(default_factory=dict)


def _instantiate(path: str, manifest: dict[str, Any]) -> Any:
    module_path = os.path.join(manifest["_dir"], manifest["module"])
    if not os.path.isfile(module_path):
        raise ModelFormatError(
            f"'{path}': the {CHAINER_MANIFEST} manifest names module '{manifest['module']}', "
            f"but '{module_path}' does not exist"
        )
    name = f"pyengine_chainer_{abs(hash(os.path.abspath(module_path)))}"
    spec = importlib.util.spec_from_file_location(name, module_path)
    if spec is None or spec.loader is None:
        raise ModelFormatError(f"'{module_path}' is not an importable Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    cls = getattr(module, manifest["class"], None)
    if cls is None:
        raise ModelFormatError(
            f"'{module_path}' defines no class '{manifest['class']}' (named in the manifest)"
        )
    return cls(*manifest.get("args", []), **manifest.get("kwargs", {}))


def read_package(
    location: ModelLocation,
    chain: Any = None,
    input_shapes: dict[str, Sequence[int]] | None = None,
) -> ChainerPackage:
    """Build the network (``chain`` or the manifest's class) and load ``model.npz`` into it.

    Raises
    ------
    ModelFormatError
        No code for the network, a damaged ``.npz``, or weights that do not fit the network.
    """
    chainer = import_chainer()
    path = location.path
    manifest = location.extra.get("manifest")
    if chain is None:
        if manifest is None:
            raise ModelFormatError(
                f"'{path}': a Chainer model.npz holds weights only, and no network code was found; "
                "expected chain=<a chainer.Chain instance> or a "
                f"{CHAINER_MANIFEST} manifest beside it "
                "naming the module file and class (see docs/frameworks.md)"
            )
        chain = _instantiate(path, manifest)
    elif not isinstance(chain, chainer.Chain):
        raise ValueError(f"chain= must be a chainer.Chain instance, got {type(chain).__name__}")
    try:
        # Our own file object: numpy leaks the descriptor it opens when the zip is damaged.
        with open(path, "rb") as f:
            chainer.serializers.load_npz(f, chain)
    except (OSError, ValueError, KeyError, EOFError) as exc:
        raise ModelFormatError(
            f"'{path}' is not a readable Chainer .npz for {type(chain).__name__}: "
            f"{type(exc).__name__}: {exc}"
        ) from None
    except Exception as exc:  # zipfile.BadZipFile and friends
        raise ModelFormatError(
            f"'{path}' is not a readable Chainer .npz: {type(exc).__name__}: {exc}"
        ) from None
    shapes = dict(input_shapes or {})
    dtypes: dict[str, str] = {}
    specs = manifest.get("inputs", []) if manifest else []
    where = os.path.join(manifest["_dir"], CHAINER_MANIFEST) if manifest else path
    for i, spec in enumerate(specs):
        if not input_shapes:
            shapes[spec["name"]] = spec.get("shape")
        dtype = spec.get("dtype", "float32")
        if dtype not in DTYPES:
            raise ModelFormatError(
                f"'{where}': inputs[{i}].dtype is {dtype!r}; "
                f"expected one of {', '.join(DTYPES)}")
        if dtype != "float32":
            dtypes[spec["name"]] = dtype
    inputs = list(shapes.items()) if shapes else [("x", None)]
    outputs = manifest.get("outputs") if manifest else None
    return ChainerPackage(chain, [(n, None if s is None else list(s)) for n, s in inputs], outputs,
                          dtypes)


def flatten_outputs(y: Any) -> list[Any]:
    """A forward result (Variable, tuple, list or dict of them) as a list."""
    if isinstance(y, dict):
        return [y[k] for k in sorted(y)]
    if isinstance(y, (tuple, list)):
        return list(y)
    return [y]


def output_names(package: ChainerPackage, n: int) -> list[str]:
    if package.outputs and len(package.outputs) == n:
        return list(package.outputs)
    return ["y"] if n == 1 else [f"y{i}" for i in range(n)]


class _Importer:
    def __init__(self, chainer: Any, location: ModelLocation, package: ChainerPackage) -> None:
        self.chainer = chainer
        self.path = location.path
        self.package = package
        self.g = Graph(location.path, "chainer")
        self.values: dict[int, str] = {}
        self.trace_batch = TRACE_BATCH
        self.params = {id(p.node): name.lstrip("/") for name, p in package.chain.namedparams()}

    def run(self) -> GraphBuilder:
        chainer = self.chainer
        calls: dict[int, tuple[Any, tuple[Any, ...]]] = {}

        class Trace(chainer.FunctionHook):  # type: ignore[name-defined]
            name = "pyengine_trace"

            def forward_preprocess(self, function: Any, in_data: Any) -> None:
                calls[id(function)] = (function, tuple(in_data))

        xs = []
        rng = np.random.default_rng(0)
        for name, shape in self.package.inputs:
            if shape is None or any(d < 0 for d in shape[1:]):
                raise InputShapeUnknownError(
                    f"'{self.path}': converting needs input '{name}''s shape "
                    "(only the batch may be "
                    f"free); pass input_shapes={{'{name}': [-1, ...]}} or list it in the manifest"
                )
            dtype = self.package.dtypes.get(name, "float32")
            # Integer inputs are ids (EmbedID): 0 and 1 index any table.
            sample = (rng.standard_normal([TRACE_BATCH, *shape[1:]]) if dtype.startswith("float")
                      else rng.integers(0, 2, [TRACE_BATCH, *shape[1:]]))
            xs.append(chainer.Variable(sample.astype(dtype)))
            self.values[id(xs[-1].node)] = self.g.input(name, [-1, *shape[1:]], dtype)
        with (
            chainer.using_config("train", False),
            chainer.using_config("enable_backprop", True),
            Trace(),
        ):
            outs = flatten_outputs(self.package.chain(*xs))
        order: list[Any] = []
        seen: set[int] = set()
        for y in outs:
            stack: list[tuple[Any, bool]] = (
                [(y.creator_node, False)] if y.creator_node is not None else []
            )
            while stack:
                f, done = stack.pop()
                if done:
                    order.append(f)
                    continue
                if id(f) in seen:
                    continue
                seen.add(id(f))
                stack.append((f, True))
                for node in f.inputs:
                    if node.creator_node is not None:
                        stack.append((node.creator_node, False))
        for f in order:
            self.convert(f, calls[id(f)][1])
        for y, name in zip(outs, output_names(self.package, len(outs))):
            self.g.output(self.values[id(y.node)], name)
        return self.g.finish()

    def convert(self, f: Any, in_data: tuple[Any, ...]) -> None:
        ins: list[str] = []
        out: str | list[str]
        for i, node in enumerate(f.inputs):
            if id(node) not in self.values:
                hint = self.params.get(id(node), f"{f.label}/const")
                self.values[id(node)] = self.g.const(np.asarray(in_data[i]), hint)
            ins.append(self.values[id(node)])
        kind = type(f).__name__
        label = f"{kind.lower()}"
        handler = _HANDLERS.get(kind)
        if handler is None:
            out = self.g.unsupported_op(f"{label}#{len(self.values)}", kind)
        elif any(v.startswith("unsupported:") for v in ins):
            out = self.g.fresh("unsupported:" + label)
        else:
            result = handler(self, f, ins, label)
            out = (
                self.g.unsupported_op(f"{label}#{len(self.values)}", kind)
                if result is None
                else result
            )
        # A handler gives one value per output where a function has several (split_axis).
        for k, ref in enumerate(f.outputs):
            node = ref()
            if node is not None:
                self.values[id(node)] = out[k] if isinstance(out, list) else out


Handler = Callable[[_Importer, Any, list[str], str], "str | list[str] | None"]


def _linear(imp: _Importer, f: Any, ins: list[str], label: str) -> str | None:
    if not imp.g.is_const(ins[1]):
        return None
    w = imp.g.const(np.ascontiguousarray(imp.g.value(ins[1]).T), label + "/w")
    return imp.g.op("Dense", [ins[0], w] + ins[2:3], label)


def _conv(imp: _Importer, f: Any, ins: list[str], label: str) -> str | None:
    if getattr(f, "cover_all", False) or not imp.g.is_const(ins[1]):
        return None
    return imp.g.op(
        "Conv2D",
        ins[:3],
        label,
        strides=[f.sy, f.sx],
        pads=[f.ph, f.pw, f.ph, f.pw],
        dilations=[getattr(f, "dy", 1), getattr(f, "dx", 1)],
        groups=int(getattr(f, "groups", 1)),
    )


def _bn(imp: _Importer, f: Any, ins: list[str], label: str) -> str | None:
    if f.axis not in (None, (0, 2, 3), (0,)):
        return None
    return imp.g.op("BatchNorm", ins[:5], label, epsilon=float(f.eps), axis=1)


def _max_pool(imp: _Importer, f: Any, ins: list[str], label: str) -> str | None:
    if getattr(f, "ndim", 2) != 2 or getattr(f, "return_indices", False):
        return None
    # cover_all=True (Chainer's default) sizes the output like ceil mode
    return imp.g.op(
        "MaxPool",
        ins[:1],
        label,
        kernel=list(f.ksize),
        strides=list(f.stride),
        pads=[f.pad[0], f.pad[1], f.pad[0], f.pad[1]],
        ceil_mode=bool(f.cover_all),
    )


def _avg_pool(imp: _Importer, f: Any, ins: list[str], label: str) -> str | None:
    if getattr(f, "cover_all", False):
        return None
    if hasattr(f, "kh"):  # AveragePooling2D: the window always divides by kh*kw (padding counts)
        k, s, p = [f.kh, f.kw], [f.sy, f.sx], [f.ph, f.pw]
    elif getattr(f, "ndim", 2) == 2:
        k, s, p = list(f.ksize), list(f.stride), list(f.pad)
        if getattr(f, "pad_value", 0) is None:
            return None
    else:
        return None
    return imp.g.op(
        "AvgPool",
        ins[:1],
        label,
        kernel=k,
        strides=s,
        pads=[p[0], p[1], p[0], p[1]],
        count_include_pad=True,
    )


def _unary(op: str) -> Handler:
    return lambda imp, f, ins, label: imp.g.op(op, ins[:1], label)


def _leaky(imp: _Importer, f: Any, ins: list[str], label: str) -> str:
    return imp.g.op("LeakyRelu", ins[:1], label, alpha=float(f.slope))


def _clipped(imp: _Importer, f: Any, ins: list[str], label: str) -> str:
    cap = float(f.cap)
    if cap == 6.0:
        return imp.g.op("Relu6", ins[:1], label)
    return imp.g.op("Clip", ins[:1], label, min=0.0, max=cap)


def _lrn(imp: _Importer, f: Any, ins: list[str], label: str) -> str:
    """Chainer's LRN: x / (k + alpha * sum of squares over channels c - n // 2 .. c + n // 2)^beta;
    native LRN divides alpha by the window's size."""
    size = 2 * (int(f.n) // 2) + 1
    return imp.g.op(
        "LRN",
        ins[:1],
        label,
        size=size,
        alpha=float(f.alpha) * size,
        beta=float(f.beta),
        bias=float(f.k),
        axis=1,
    )


def _hard_sigmoid(imp: _Importer, f: Any, ins: list[str], label: str) -> str:
    return imp.g.op("HardSigmoid", ins[:1], label, alpha=0.2, beta=0.5)  # Chainer's fixed slope


def _swish(imp: _Importer, f: Any, ins: list[str], label: str) -> str | None:
    """x * sigmoid(beta * x), beta per channel (axis 1 on): SiLU where beta is all ones."""
    if not imp.g.is_const(ins[1]):
        return None
    beta = imp.g.value(ins[1])
    if np.all(beta == 1):
        return imp.g.op("Silu", ins[:1], label)
    rank = len(f.inputs[0].shape)
    b = imp.g.const(beta.reshape(beta.shape + (1,) * (rank - 1 - beta.ndim)), label + "/beta")
    gate = imp.g.op("Sigmoid", [imp.g.op("Mul", [ins[0], b], label + "/scaled")], label + "/gate")
    return imp.g.op("Mul", [ins[0], gate], label)


def _softmax(imp: _Importer, f: Any, ins: list[str], label: str) -> str:
    return imp.g.op("Softmax", ins[:1], label, axis=int(f.axis))


def _reshape(imp: _Importer, f: Any, ins: list[str], label: str) -> str:
    shape = [int(d) for d in f.shape]
    if shape and shape[0] == TRACE_BATCH:  # x.reshape(len(x), ...): keep the batch free
        shape[0] = 0
    return imp.g.op("Reshape", ins[:1], label, shape=shape)


def _concat(imp: _Importer, f: Any, ins: list[str], label: str) -> str:
    return imp.g.op("Concat", ins, label, axis=int(f.axis))


def _binary(op: str) -> Handler:
    return lambda imp, f, ins, label: imp.g.op(op, ins[:2], label)


def _constant_op(op: str, reverse: bool = False) -> Handler:
    def handle(imp: _Importer, f: Any, ins: list[str], label: str) -> str | None:
        value = np.asarray(f.value, dtype=np.float32)
        c = imp.g.const(value, label + "/value")
        return imp.g.op(op, [c, ins[0]] if reverse else [ins[0], c], label)

    return handle


def _neg(imp: _Importer, f: Any, ins: list[str], label: str) -> str:
    return imp.g.op("Mul", [ins[0], imp.g.const(np.float32(-1.0), label + "/minus1")], label)


def _transpose(imp: _Importer, f: Any, ins: list[str], label: str) -> str | None:
    if f.axes is None:
        return None
    return imp.g.op("Transpose", ins[:1], label, perm=[int(a) for a in f.axes])


def _embed_id(imp: _Importer, f: Any, ins: list[str], label: str) -> str | None:
    """EmbedID: rows of W picked by the ids (an ignore_label, whose rows are zeros, is refused)."""
    if getattr(f, "ignore_label", None) is not None:
        return None
    return imp.g.op("Gather", [ins[1], ins[0]], label, axis=0)


def _identity(imp: _Importer, f: Any, ins: list[str], label: str) -> str:
    return ins[0]


_HANDLERS: dict[str, Handler] = {
    "LinearFunction": _linear,
    "EmbedIDFunction": _embed_id,
    "Convolution2DFunction": _conv,
    "FixedBatchNormalization": _bn,
    "MaxPoolingND": _max_pool,
    "MaxPooling2D": _max_pool,
    "AveragePooling2D": _avg_pool,
    "AveragePoolingND": _avg_pool,
    "ReLU": _unary("Relu"),
    "Sigmoid": _unary("Sigmoid"),
    "Tanh": _unary("Tanh"),
    "LeakyReLU": _leaky,
    "ClippedReLU": _clipped,
    "Softmax": _softmax,
    "LocalResponseNormalization": _lrn,
    "HardSigmoid": _hard_sigmoid,
    "Swish": _swish,
    "Reshape": _reshape,
    "Concat": _concat,
    "Add": _binary("Add"),
    "Sub": _binary("Sub"),
    "Mul": _binary("Mul"),
    "Div": _binary("Div"),
    "AddConstant": _constant_op("Add"),
    "SubFromConstant": _constant_op("Sub", reverse=True),
    "MulConstant": _constant_op("Mul"),
    "DivFromConstant": _constant_op("Div", reverse=True),
    "Neg": _neg,
    "Transpose": _transpose,
    "Identity": _identity,
    "Copy": _identity,
    **_chainer_ops.HANDLERS,
}


def convert(
    location: ModelLocation,
    chain: Any = None,
    input_shapes: dict[str, Sequence[int]] | None = None,
) -> GraphBuilder:
    """Trace the network once and import the traced graph into a native graph."""
    chainer = import_chainer()
    package = read_package(location, chain, input_shapes)
    return _Importer(chainer, location, package).run()
