"""The graph every importer builds: constant folding as nodes are added, then batch norm and
affine folding into the preceding Conv2D/Dense, activation fusion, dead-node removal, and
emission through :class:`pyengine.GraphBuilder`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from pyengine.builder import DTYPES, GraphBuilder
from pyengine.errors import UnsupportedOpsError

_FUSABLE_ACTIVATIONS = {
    "Relu": "relu",
    "Relu6": "relu6",
    "Sigmoid": "sigmoid",
    "Tanh": "tanh",
    "HardSwish": "hard_swish",
    "Silu": "silu",
}
#: x * gate(x) -> one op: (gate op, its attributes that must hold) -> fused op.
_SWISH_GATES = {"Sigmoid": "Silu", "HardSigmoid": "HardSwish"}


@dataclass
class Node:
    """One native op: ``out`` is the name of its (single) output value."""

    name: str
    op: str
    inputs: list[str]
    out: str
    attrs: dict[str, Any] = field(default_factory=dict)


def _reshape(x: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    target = [x.shape[i] if d == 0 else d for i, d in enumerate(shape)]
    return x.reshape(target)


def _squeeze(x: np.ndarray, axes: Sequence[int]) -> np.ndarray:
    return np.squeeze(x, axis=tuple(axes)) if axes else np.squeeze(x)


def _flatten(x: np.ndarray, axis: int) -> np.ndarray:
    axis = axis % x.ndim if x.ndim else 0
    return x.reshape(int(np.prod(x.shape[:axis])), -1)


# Native ops evaluated with numpy when every input is a constant.
_FOLD: dict[str, Callable[..., np.ndarray]] = {
    "Add": lambda a, b: a + b,
    "Sub": lambda a, b: a - b,
    "Mul": lambda a, b: a * b,
    "Div": lambda a, b: a / b,
    "Relu": lambda x: np.maximum(x, 0),
    "Identity": lambda x: x,
    "Reshape": lambda x, shape: _reshape(x, shape),
    "Transpose": lambda x, perm: np.transpose(x, perm),
    "Squeeze": lambda x, axes=(): _squeeze(x, axes),
    "Flatten": lambda x, axis=1: _flatten(x, axis),
    "Concat": lambda *xs, axis: np.concatenate(xs, axis=axis),
    "Gather": lambda x, indices, axis=0: np.take(x, indices, axis=axis),
}


def batch_copied(shape: list[int], source: list[int] | None, batch_only: bool) -> list[int]:
    """A run-time reshape target whose first entry is the (free) batch: 0, which copies it.

    Valid when the batch is the graph's only free dimension, so every run-time -1 is the batch.
    """
    if batch_only and source and source[0] == -1 and shape and shape[0] == -1:
        return [0, *shape[1:]]
    return shape


def input_shapes_hint(inputs: Sequence[tuple[str, Sequence[int]]]) -> str:
    """``input_shapes={...}`` for an error message: each input's shape with SIZE where a
    dimension beyond the batch is free."""
    def dims(shape: Sequence[int]) -> str:
        return ", ".join(("-1" if i == 0 else "SIZE") if d < 0 else str(d) for i, d in enumerate(shape))

    return "input_shapes={" + ", ".join(f"'{name}': [{dims(shape)}]" for name, shape in inputs) + "}"


class Graph:
    """A native graph under construction by one importer.

    Parameters
    ----------
    path
        The source model (named in errors).
    framework
        The importer's framework (named in errors and the producer field).
    """

    def __init__(self, path: str, framework: str, keep_dtypes: bool = False) -> None:
        self.path = path
        self.framework = framework
        # Whether constants keep their element type in the file (the importer tracks dtypes);
        # otherwise every constant is stored as float32.
        self.keep_dtypes = keep_dtypes
        self.inputs: list[tuple[str, list[int], str]] = []
        self.outputs: list[tuple[str, str]] = []
        # Output name -> its shape as the source model declares it (-1: free), written for the
        # engine to report when the output's shape follows parameter values (docs/format.md).
        self.output_shapes: dict[str, list[int]] = {}
        self.nodes: list[Node] = []
        self.consts: dict[str, np.ndarray] = {}
        # Constant name -> (scale, zero point, axis) of an int8/uint8 weight a quantized op reads.
        self.quant: dict[str, tuple[list[float], list[int], int]] = {}
        self.unsupported: list[tuple[str, str]] = []
        self._names: set[str] = set()

    # ---- naming ----
    def fresh(self, hint: str) -> str:
        """A name not used yet, based on ``hint``."""
        hint = hint or "v"
        name, i = hint, 0
        while name in self._names:
            i += 1
            name = f"{hint}_{i}"
        self._names.add(name)
        return name

    # ---- building ----
    def input(self, name: str, shape: Sequence[int], dtype: str = "float32") -> str:
        """Declare a graph input of ``dtype``; -1 marks a free dimension."""
        name = self.fresh(name)
        self.inputs.append((name, [int(d) for d in shape], dtype))
        return name

    def const(self, array: Any, hint: str = "const") -> str:
        """Store a constant; float64 is kept as float32 (unless the graph keeps dtypes)."""
        arr = np.asarray(array)
        if arr.dtype == np.float64 and not self.keep_dtypes:
            arr = arr.astype(np.float32)
        name = self.fresh(hint)
        self.consts[name] = arr
        return name

    def quantized_const(self, array: np.ndarray, scale: Sequence[float], zero_point: Sequence[int],
                        axis: int, hint: str) -> str:
        """Store int8/uint8 ``array`` with its quantization (real = (q - zero_point) * scale, one
        entry per tensor or per index of ``axis``)."""
        name = self.const(array, hint)
        self.quant[name] = ([float(s) for s in scale], [int(z) for z in zero_point], int(axis))
        return name

    def is_const(self, value: str) -> bool:
        return value in self.consts

    def value(self, value: str) -> np.ndarray:
        """The array of constant ``value``."""
        return self.consts[value]

    def op(self, op: str, inputs: Sequence[str], hint: str, **attrs: Any) -> str:
        """Add native op ``op``; folds it to a constant when every input is one."""
        inputs = list(inputs)
        fold = _FOLD.get(op)
        if fold is not None and inputs and all(self.is_const(i) for i in inputs):
            return self.const(fold(*[self.consts[i] for i in inputs], **attrs), hint)
        name = self.fresh(hint)
        out = self.fresh(name + ":0")
        self.nodes.append(Node(name, op, inputs, out, dict(attrs)))
        return out

    def unsupported_op(self, node: str, op: str) -> str:
        """Record an op the engine lacks; returns a placeholder so conversion can list them all."""
        self.unsupported.append((node, op))
        return self.fresh(f"unsupported:{node}")

    def output(self, value: str, name: str | None = None, shape: list[int] | None = None) -> None:
        """Mark ``value`` as a graph output, exposed as ``name`` when given; ``shape`` is the
        shape the source model declares for it (-1: free), when it declares one."""
        self.outputs.append((value, name or value))
        if shape is not None:
            self.output_shapes[name or value] = list(shape)

    # ---- passes ----
    def _producers(self) -> dict[str, Node]:
        return {n.out: n for n in self.nodes}

    def _uses(self) -> dict[str, int]:
        uses: dict[str, int] = {}
        for n in self.nodes:
            for i in n.inputs:
                uses[i] = uses.get(i, 0) + 1
        for v, _ in self.outputs:
            uses[v] = uses.get(v, 0) + 2  # outputs must stay visible
        return uses

    def _replace(self, old: str, new: str) -> None:
        for n in self.nodes:
            n.inputs = [new if i == old else i for i in n.inputs]
        self.outputs = [(new if v == old else v, name) for v, name in self.outputs]

    def _channel_vector(self, producer: Node, c: np.ndarray) -> np.ndarray | None:
        """``c`` as a vector over ``producer``'s output channels, or None when it is not one."""
        w = self.consts[producer.inputs[1]]
        if producer.op == "Conv2D":
            n_out, rank = w.shape[0], 4
            axis = 3 if producer.attrs.get("layout") == "NHWC" else 1
        else:
            n_out = w.shape[0] if producer.attrs.get("transpose_b") else w.shape[1]
            rank = max(c.ndim, 1)
            if rank > 2:
                return None
            axis = rank - 1
        if c.ndim > rank:
            return None
        shape = (1,) * (rank - c.ndim) + c.shape
        if any(d != 1 for i, d in enumerate(shape) if i != axis) or shape[axis] not in (1, n_out):
            return None
        return np.broadcast_to(c.astype(np.float32).reshape(-1), (n_out,)).copy()

    def _scale_shift(
        self, node: Node, x: str
    ) -> tuple[np.ndarray | None, np.ndarray | None, str] | None:
        """(scale, shift, kind) a node applies per channel to ``x``, or None."""
        if node.op == "BatchNorm":
            if (node.inputs[0] != x or not all(self.is_const(i) for i in node.inputs[1:])
                    or node.attrs.get("activation", "none") != "none"):
                return None
            g, beta, m, v = (self.consts[i].astype(np.float64) for i in node.inputs[1:])
            s = g / np.sqrt(v + node.attrs.get("epsilon", 1e-5))
            return s, beta - m * s, "bn"
        if node.op not in ("Add", "Sub", "Mul") or len(node.inputs) != 2:
            return None
        a, b = node.inputs
        other = b if a == x else a
        if not self.is_const(other) or (node.op == "Sub" and a != x):
            return None
        c = self.consts[other]
        if node.op == "Mul":
            return c, None, "mul"
        return None, (-c if node.op == "Sub" else c), "add"

    def _fold_affine(self) -> bool:
        producers, uses = self._producers(), self._uses()
        for node in self.nodes:
            for x in node.inputs[:2]:
                p = producers.get(x)
                if p is None or p.op not in ("Conv2D", "Dense") or uses.get(x, 0) != 1:
                    continue
                if p.attrs.get("activation", "none") != "none" or not self.is_const(p.inputs[1]):
                    continue
                if len(p.inputs) > 2 and not self.is_const(p.inputs[2]):
                    continue
                ss = self._scale_shift(node, x)
                if ss is None:
                    continue
                scale, shift, kind = ss
                w = self.consts[p.inputs[1]]
                s: np.ndarray | None
                t: np.ndarray | None
                n_out = (
                    w.shape[0] if (p.op == "Conv2D" or p.attrs.get("transpose_b")) else w.shape[1]
                )
                if kind == "bn":
                    nchw = p.op == "Conv2D" and p.attrs.get("layout", "NCHW") == "NCHW"
                    axis = node.attrs.get("axis", 1)
                    if axis not in (
                        (1,) if nchw else (-1, 3 if p.op == "Conv2D" else 1)
                    ) or np.asarray(scale).shape != (n_out,):
                        continue
                    s, t = np.asarray(scale), np.asarray(shift)
                else:
                    s = None if scale is None else self._channel_vector(p, np.asarray(scale))
                    t = None if shift is None else self._channel_vector(p, np.asarray(shift))
                    if (scale is not None and s is None) or (shift is not None and t is None):
                        continue
                w = w.astype(np.float64)
                bias = (
                    self.consts[p.inputs[2]].astype(np.float64)
                    if len(p.inputs) > 2
                    else np.zeros(n_out)
                )
                if s is not None:
                    if p.op == "Conv2D" or p.attrs.get("transpose_b"):
                        w = w * s.reshape((-1,) + (1,) * (w.ndim - 1))
                    else:
                        w = w * s.reshape(1, -1)
                    bias = bias * s
                if t is not None:
                    bias = bias + t
                p.inputs = [
                    p.inputs[0],
                    self.const(w.astype(np.float32), p.name + "/w"),
                    self.const(bias.astype(np.float32), p.name + "/b"),
                ]
                self.nodes.remove(node)
                self._replace(node.out, p.out)
                return True
        return False

    def _fuse_activation(self) -> bool:
        producers, uses = self._producers(), self._uses()
        for node in self.nodes:
            act = _FUSABLE_ACTIVATIONS.get(node.op)
            attrs: dict[str, Any] = {}
            if node.op == "LeakyRelu":
                act, attrs = "leaky_relu", {"alpha": node.attrs.get("alpha", 0.01)}
            elif node.op == "Clip":
                act = "clip"
                attrs = {k: node.attrs[k] for k in ("min", "max") if k in node.attrs}
            elif node.op == "HardSigmoid":
                act = "hard_sigmoid"
                attrs = {k: node.attrs[k] for k in ("alpha", "beta") if k in node.attrs}
            if act is None:
                continue
            p = producers.get(node.inputs[0])
            if p is None or uses.get(p.out, 0) != 1:
                continue
            # The int8 ops clamp before requantizing. For ReLU that equals clamping after it
            # (rounding is monotone and maps a real 0 onto the zero point); another bound need
            # not lie on the output grid, so only an op writing float sums takes those.
            requantized = "y_scale" in p.attrs
            # A BatchNorm that stayed (pre-activation: DenseNet's BN-ReLU-conv on each
            # concatenation) takes an activation that keeps 0 at 0, so the zero channels that pad
            # a channel-blocked tensor stay zero.
            keeps_zero = act in ("relu", "relu6", "leaky_relu") or (
                act == "clip" and attrs.get("min", -np.inf) <= 0.0 <= attrs.get("max", np.inf))
            if p.op not in ("Conv2D", "Dense") and not (
                    p.op in ("QLinearConv2D", "QLinearDense")
                    and (act == "relu" or (not requantized and act in ("relu6", "clip")))) and not (
                    p.op == "BatchNorm" and keeps_zero):
                continue
            if p.attrs.get("activation", "none") != "none":
                continue
            p.attrs["activation"] = act
            p.attrs.update(attrs)
            self.nodes.remove(node)
            self._replace(node.out, p.out)
            return True
        return False

    def _scalar(self, value: str) -> float | None:
        """The value of a constant holding one number, else None."""
        if not self.is_const(value) or self.consts[value].size != 1:
            return None
        return float(self.consts[value].reshape(()))

    def _drop_identity_arith(self) -> bool:
        """x * 1, x / 1, x + 0, x - 0 -> x, for a one-number constant of rank 0 (which never
        broadcasts x to another shape): tf.nn.silu writes sigmoid(1.0 * x)."""
        neutral = {"Mul": 1.0, "Div": 1.0, "Add": 0.0, "Sub": 0.0}
        out_values = {v for v, _ in self.outputs}
        for node in self.nodes:
            if node.op not in neutral or len(node.inputs) != 2 or node.out in out_values:
                continue
            a, b = node.inputs
            for x, c in [(a, b)] + ([(b, a)] if node.op in ("Mul", "Add") else []):
                if (
                    not self.is_const(x)
                    and self.is_const(c)
                    and self.consts[c].ndim == 0
                    and self._scalar(c) == neutral[node.op]
                ):
                    self.nodes.remove(node)
                    self._replace(node.out, x)
                    return True
        return False

    def _fuse_hard_sigmoid(self) -> bool:
        """Relu6(x + b) / 6 (or * 1/6) -> HardSigmoid(x, alpha 1/6, beta b/6): how Keras and
        TensorFlow write hard_sigmoid (and, times x, hard_swish)."""
        producers, uses = self._producers(), self._uses()
        for node in self.nodes:
            if node.op not in ("Div", "Mul") or len(node.inputs) != 2:
                continue
            r, c = node.inputs
            if node.op == "Mul" and self.is_const(r):  # (1/6) * Relu6(...)
                r, c = c, r
            s = self._scalar(c)
            if s is None or abs((s if node.op == "Div" else 1 / s if s else 0) - 6.0) > 1e-5:
                continue
            relu6 = producers.get(r)
            if relu6 is None or relu6.op != "Relu6" or uses.get(r) != 1:
                continue
            add = producers.get(relu6.inputs[0])
            if add is None or add.op != "Add" or uses.get(add.out) != 1:
                continue
            x, b = add.inputs if not self.is_const(add.inputs[0]) else add.inputs[::-1]
            shift = self._scalar(b)
            if shift is None or self.is_const(x):
                continue
            node.op, node.inputs = "HardSigmoid", [x]
            node.attrs = {"alpha": 1.0 / 6.0, "beta": shift / 6.0}
            self.nodes.remove(relu6)
            self.nodes.remove(add)
            return True
        return False

    def _fuse_swish(self) -> bool:
        """Mul(x, Sigmoid(x)) -> Silu(x); Mul(x, HardSigmoid(x) with alpha 1/6, beta 1/2) ->
        HardSwish(x) (how exporters write SiLU/swish and hard-swish), when the gate has no
        other reader."""
        producers, uses = self._producers(), self._uses()
        for node in self.nodes:
            if node.op != "Mul" or len(node.inputs) != 2:
                continue
            for x, gate in (node.inputs, node.inputs[::-1]):
                g = producers.get(gate)
                if g is None or g.op not in _SWISH_GATES or g.inputs[0] != x or uses.get(gate) != 1:
                    continue
                if g.op == "HardSigmoid" and not (
                    abs(g.attrs.get("alpha", 0.2) - 1 / 6) < 1e-6 and g.attrs.get("beta", 0.5) == 0.5
                ):
                    continue
                node.op, node.inputs, node.attrs = _SWISH_GATES[g.op], [x], {}
                self.nodes.remove(g)
                return True
        return False

    def _prune(self) -> None:
        producers = self._producers()
        needed: set[str] = set()
        stack = [v for v, _ in self.outputs]
        while stack:
            v = stack.pop()
            if v in needed:
                continue
            needed.add(v)
            p = producers.get(v)
            if p is not None:
                stack.extend(p.inputs)
        self.nodes = [n for n in self.nodes if n.out in needed]
        self.consts = {k: a for k, a in self.consts.items() if k in needed}

    def finish(self) -> GraphBuilder:
        """Run the folding passes and return a builder holding the native graph.

        Raises
        ------
        UnsupportedOpsError
            Some nodes used ops the native engine lacks (all of them are listed).
        """
        if self.unsupported:
            raise UnsupportedOpsError(self.path, self.framework, self.unsupported)
        self._prune()
        while (
            self._drop_identity_arith()
            or self._fuse_hard_sigmoid()  # before its "+ 3" folds into a convolution's bias
            or self._fold_affine()
            or self._fuse_swish()
            or self._fuse_activation()
        ):
            pass
        self._prune()
        return self._emit()

    def _emit(self) -> GraphBuilder:
        g = GraphBuilder(producer=f"pyengine.convert.{self.framework}")
        input_names = {n for n, _, _ in self.inputs}
        # Expose outputs under their requested names where a node produces them.
        rename: dict[str, str] = {}
        taken = set(input_names) | set(self.consts)
        for v, want in self.outputs:
            if v in rename or v in input_names or v in self.consts or want == v:
                continue
            if (
                want not in taken
                and want not in rename.values()
                and not any(n.out == want for n in self.nodes)
            ):
                rename[v] = want
        values = taken | {rename.get(n.out, n.out) for n in self.nodes}
        for name, shape, dtype in self.inputs:
            g.input(name, shape, dtype)
        for name, arr in self.consts.items():
            if arr.dtype != np.float32 and not (self.keep_dtypes and arr.dtype.name in DTYPES):
                arr = arr.astype(np.float32)
            if name in self.quant:
                scale, zero_point, axis = self.quant[name]
                g.quantized_constant(name, arr, scale, zero_point, axis)
            else:
                g.constant(name, arr, exact=self.keep_dtypes)
        used_node_names: set[str] = set()
        for n in self.nodes:
            node_name = n.name
            i = 0
            while node_name in values or node_name in used_node_names:
                i += 1
                node_name = f"{n.name}#{i}"
            used_node_names.add(node_name)
            attrs = {k: v for k, v in n.attrs.items() if not (k == "activation" and v == "none")}
            g.node(
                n.op,
                [rename.get(i, i) for i in n.inputs],
                name=node_name,
                outputs=[rename.get(n.out, n.out)],
                **attrs,
            )
        for v, want in self.outputs:
            g.output(rename.get(v, v), shape=self.output_shapes.get(want))
        return g
