"""Rewrites of an ONNX node list before conversion: exporters' spelled-out forms of one op folded
into that op, so that it runs as one vector kernel instead of several passes over the tensor.

- GELU below opset 20 (PyTorch, Keras): ``x * 0.5 * (1 + erf(x / sqrt 2))`` in any of its
  operand orders -> one ``Gelu`` node.
- Multi-head self-attention as encoders export it: heads split from [batch, seq, heads * size]
  by Reshape + Transpose, ``MatMul(Q, K^T)``, an optional scale (Div or Mul by a constant),
  ``Softmax`` over the keys, ``MatMul`` by V, heads merged back by Transpose + Reshape -> one
  ``Attention`` node on the 3-D values (the native kernel reads the heads in place: no head
  transposes, no score tensor). Folded only where ONNX's shape inference proves every shape.

A pattern is folded only when its intermediate values feed nothing else and are no graph output.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np


def _constants(onnx: Any, graph: Any) -> dict[str, np.ndarray]:
    consts = {i.name: onnx.numpy_helper.to_array(i) for i in graph.initializer}
    for n in graph.node:
        if n.op_type == "Constant":
            for a in n.attribute:
                if a.name == "value":
                    consts[n.output[0]] = onnx.numpy_helper.to_array(a.t)
    return consts


class _Links:
    """Who produces and who reads each value of a node list, and the graph's constants."""

    def __init__(self, onnx: Any, graph: Any, nodes: list[Any]) -> None:
        self.consts = _constants(onnx, graph)
        self.producer = {o: n for n in nodes for o in n.output}
        self.readers: dict[str, list[Any]] = {}
        for n in nodes:
            for i in n.input:
                self.readers.setdefault(i, []).append(n)
        self.outputs = {o.name for o in graph.output}

    def sole_reader(self, value: str) -> Any:
        """The one node reading ``value`` (None when several, none, or it is a graph output)."""
        r = self.readers.get(value, [])
        return r[0] if len(r) == 1 and value not in self.outputs else None

    def scalar(self, value: str) -> float | None:
        """The value of a one-element float constant, else None."""
        c = self.consts.get(value)
        return float(c.ravel()[0]) if c is not None and c.size == 1 and c.dtype.kind == "f" else None


def fuse_gelu(onnx: Any, graph: Any) -> list[Any]:
    """``graph.node`` with each spelled-out exact GELU replaced by one ``Gelu`` node."""
    nodes = list(graph.node)
    links = _Links(onnx, graph, nodes)
    producer = links.producer
    sole_reader = links.sole_reader

    def is_scalar(value: str, want: float) -> bool:
        c = links.scalar(value)
        return c is not None and abs(c - want) <= 1e-5 * abs(want)

    def other(node: Any, value: str) -> str | None:
        """The input of two-input ``node`` that is not ``value``."""
        if len(node.input) != 2 or value not in node.input:
            return None
        return node.input[1] if node.input[0] == value else node.input[0]

    def match(erf: Any) -> tuple[str, list[Any]] | None:
        """(x, the pattern's nodes, last first) for the GELU around ``erf``, or None."""
        pre = producer.get(erf.input[0])
        if pre is None or sole_reader(pre.output[0]) is not erf or len(pre.input) != 2:
            return None
        inv = 1 / math.sqrt(2.0)
        if (pre.op_type == "Div" and is_scalar(pre.input[1], math.sqrt(2.0))) or (
                pre.op_type == "Mul" and is_scalar(pre.input[1], inv)):
            x = pre.input[0]
        elif pre.op_type == "Mul" and is_scalar(pre.input[0], inv):
            x = pre.input[1]
        else:
            return None
        add = sole_reader(erf.output[0])
        if add is None or add.op_type != "Add" or not is_scalar(other(add, erf.output[0]) or "", 1.0):
            return None
        m1 = sole_reader(add.output[0])
        if m1 is None or m1.op_type != "Mul":
            return None
        k = other(m1, add.output[0])
        if k is None:
            return None
        if is_scalar(k, 0.5):  # (1 + erf) * 0.5, then * x
            m2 = sole_reader(m1.output[0])
            if m2 is not None and m2.op_type == "Mul" and other(m2, m1.output[0]) == x:
                return x, [m2, m1, add, erf, pre]
            return None
        if k == x:  # x * (1 + erf), then * 0.5
            m2 = sole_reader(m1.output[0])
            if m2 is not None and m2.op_type == "Mul" and is_scalar(other(m2, m1.output[0]) or "", 0.5):
                return x, [m2, m1, add, erf, pre]
            return None
        half = producer.get(k)  # (x * 0.5) * (1 + erf)
        if (half is not None and half.op_type == "Mul" and sole_reader(k) is m1
                and is_scalar(other(half, x) or "", 0.5)):
            return x, [m1, half, add, erf, pre]
        return None

    drop: set[int] = set()
    replace: dict[int, Any] = {}
    for n in nodes:
        if n.op_type != "Erf" or n.domain not in ("", "ai.onnx"):
            continue
        found = match(n)
        if found is None or any(id(m) in drop for m in found[1]):
            continue
        x, pattern = found
        last = pattern[0]
        replace[id(last)] = onnx.helper.make_node(
            "Gelu", [x], [last.output[0]], name=(last.name or last.output[0]) + "/gelu")
        drop.update(id(m) for m in pattern[1:])
    return [replace.get(id(n), n) for n in nodes if id(n) not in drop]


def fuse_attention(onnx: Any, graph: Any, nodes: list[Any], shapes: dict[str, list[int] | None],
                   batch_only: bool, opset: int) -> list[Any]:
    """``nodes`` with each spelled-out multi-head self-attention (module docstring) replaced by
    one ``Attention`` node. ``shapes`` are ONNX's inferred shapes (-1: unknown); ``batch_only``
    says the batch is the inputs' only free dimension, so that unknown batches are one size."""
    links = _Links(onnx, graph, nodes)

    def attr(node: Any, name: str) -> Any:
        return next((onnx.helper.get_attribute_value(a) for a in node.attribute if a.name == name), None)

    def step(value: str, op: str, reader: Any) -> Any:
        """The ``op`` node producing ``value``, when ``reader`` is its only reader."""
        n = links.producer.get(value)
        ok = n is not None and n.op_type == op and n.domain in ("", "ai.onnx")
        return n if ok and links.sole_reader(value) is reader else None

    def heads(value: str, reader: Any, perm: list[int]) -> tuple[str, Any, Any] | None:
        """(x, Reshape, Transpose) for ``value`` = Transpose(Reshape(x), perm): the heads of a
        3-D x [batch, seq, heads * size] split to [batch, seq, heads, size] and permuted."""
        t = step(value, "Transpose", reader)
        if t is None or list(attr(t, "perm") or []) != perm:
            return None
        r = step(t.input[0], "Reshape", t)
        return None if r is None else (r.input[0], r, t)

    def split_sizes(x: str, split: str) -> tuple[int, int, int, int] | None:
        """(batch, seq, heads, size) when x [b, s, h * d] reshapes to split [b, s, h, d]."""
        xs, ss = shapes.get(x), shapes.get(split)
        if xs is None or ss is None or len(xs) != 3 or len(ss) != 4 or min(ss[1:]) < 1:
            return None
        if xs[1:] != [ss[1], ss[2] * ss[3]] or xs[0] != ss[0]:
            return None
        return ss[0], ss[1], ss[2], ss[3]

    def match(softmax: Any) -> tuple[Any, list[Any]] | None:
        """(the Attention node, the pattern's other nodes) around ``softmax``, or None."""
        axis = attr(softmax, "axis")
        if (axis if axis is not None else (-1 if opset >= 13 else 1)) not in (-1, 3):
            return None
        pre = links.producer.get(softmax.input[0])
        scale, scaled, scores, reader = 1.0, [], softmax.input[0], softmax
        if pre is not None and pre.op_type in ("Div", "Mul") and links.sole_reader(pre.output[0]) is softmax:
            c = links.scalar(pre.input[1])
            if c is None or not c > 0 or not math.isfinite(c):
                return None
            scale, scaled, scores, reader = (1.0 / c if pre.op_type == "Div" else c), [pre], pre.input[0], pre
        first = step(scores, "MatMul", reader)
        second = links.sole_reader(softmax.output[0])
        if first is None or second is None or second.op_type != "MatMul" or second.input[0] != softmax.output[0]:
            return None
        merge_t = links.sole_reader(second.output[0])
        if merge_t is None or merge_t.op_type != "Transpose" or list(attr(merge_t, "perm") or []) != [0, 2, 1, 3]:
            return None
        merge = links.sole_reader(merge_t.output[0])
        q = heads(first.input[0], first, [0, 2, 1, 3])
        k = heads(first.input[1], first, [0, 2, 3, 1])
        v = heads(second.input[1], second, [0, 2, 1, 3])
        if merge is None or merge.op_type != "Reshape" or q is None or k is None or v is None:
            return None
        qs, ks, vs = (split_sizes(x, r.output[0]) for x, r, _ in (q, k, v))
        if qs is None or ks is None or vs is None:
            return None
        batch = {qs[0], ks[0], vs[0]}
        if len(batch) != 1 or (-1 in batch and not batch_only):
            return None
        if qs[2] != ks[2] or ks[2] != vs[2] or qs[3] != ks[3] or ks[1] != vs[1]:
            return None
        if shapes.get(merge.output[0]) != [qs[0], qs[1], qs[2] * vs[3]]:
            return None
        fused = onnx.helper.make_node(
            "Attention", [q[0], k[0], v[0]], [merge.output[0]], name=(merge.name or merge.output[0]) + "/attention",
            q_num_heads=qs[2], kv_num_heads=qs[2], scale=scale)
        return fused, [q[1], q[2], k[1], k[2], v[1], v[2], first, *scaled, softmax, second, merge_t, merge]

    drop: set[int] = set()
    replace: dict[int, Any] = {}
    for n in nodes:
        if n.op_type != "Softmax" or n.domain not in ("", "ai.onnx"):
            continue
        found = match(n)
        if found is None or any(id(m) in drop for m in found[1]):
            continue
        fused, pattern = found
        replace[id(pattern[-1])] = fused
        drop.update(id(m) for m in pattern[:-1])
    return [replace.get(id(n), n) for n in nodes if id(n) not in drop]
