"""Rewrites of an ONNX node list before conversion: exporters' spelled-out forms of one op folded
into that op, so that it runs as one vector kernel instead of several passes over the tensor.

- GELU below opset 20 (PyTorch, Keras): ``x * 0.5 * (1 + erf(x / sqrt 2))`` in any of its
  operand orders -> one ``Gelu`` node.

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


def fuse_gelu(onnx: Any, graph: Any) -> list[Any]:
    """``graph.node`` with each spelled-out exact GELU replaced by one ``Gelu`` node."""
    nodes = list(graph.node)
    consts = _constants(onnx, graph)
    producer = {o: n for n in nodes for o in n.output}
    readers: dict[str, list[Any]] = {}
    for n in nodes:
        for i in n.input:
            readers.setdefault(i, []).append(n)
    outputs = {o.name for o in graph.output}

    def is_scalar(value: str, want: float) -> bool:
        c = consts.get(value)
        return (c is not None and c.size == 1 and c.dtype.kind == "f"
                and abs(float(c.ravel()[0]) - want) <= 1e-5 * abs(want))

    def sole_reader(value: str) -> Any:
        r = readers.get(value, [])
        return r[0] if len(r) == 1 and value not in outputs else None

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
