"""ONNX Einsum -> native Transpose, Reduce, Reshape and BatchMatMul.

Operands are folded left to right; each pair becomes one batched matrix product
[batch, left, contracted] x [batch, contracted, right], after summing the indices that only one
operand has and nothing later needs. A single operand is a sum and a transpose. Ellipses are
expanded from the operands' ranks. What this does not express (an index repeated in one operand,
a diagonal; an index whose sizes differ or broadcast between operands; sizes unknown at
conversion) is refused naming the node and the equation.
"""

from __future__ import annotations

import string
from typing import Any

import numpy as np

from pyengine.convert.onnx._importer import Handler, Importer, attr_str


class _Refuse(Exception):
    """The equation has no native form here; the message says why."""


def _parse(equation: str, ranks: list[int]) -> tuple[list[str], str]:
    """Each operand's index letters and the output's, with ellipses expanded."""
    eq = equation.replace(" ", "")
    lhs, arrow, rhs = eq.partition("->")
    terms = lhs.split(",")
    if len(terms) != len(ranks):
        raise _Refuse(f"{len(terms)} terms for {len(ranks)} inputs")
    spare = [c for c in string.ascii_letters if c not in eq]
    widths = [rank - (len(t) - 3) if "..." in t else 0 for t, rank in zip(terms, ranks)]
    ellipsis = spare[: max(widths, default=0)]
    expanded: list[str] = []
    for term, width in zip(terms, widths):
        term = term.replace("...", "".join(ellipsis[len(ellipsis) - width :])) if width else term
        if width < 0 or len(term) != ranks[len(expanded)] or not term.isalpha():
            raise _Refuse(f"term '{term}' for an input of rank {ranks[len(expanded)]}")
        expanded.append(term)
    if arrow:
        out = rhs.replace("...", "".join(ellipsis))
    else:  # implicit: the ellipsis, then the letters used once, in alphabetical order
        letters = "".join(expanded)
        out = "".join(ellipsis) + "".join(sorted(c for c in set(letters) if letters.count(c) == 1
                                                 and c not in ellipsis))
    return expanded, out


def _transpose(imp: Importer, value: str, have: str, want: str, name: str) -> str:
    if have == want:
        return value
    return imp.g.op("Transpose", [value], name, perm=[have.index(c) for c in want])


def _sum_out(imp: Importer, value: str, term: str, keep: set[str], name: str) -> tuple[str, str]:
    """``value`` summed over the letters of ``term`` not in ``keep``."""
    axes = [i for i, c in enumerate(term) if c not in keep]
    if not axes:
        return value, term
    summed = imp.g.op("Reduce", [value], name, kind="sum", axes=axes, keepdims=False)
    return summed, "".join(c for c in term if c in keep)


def _product(imp: Importer, a: str, ta: str, b: str, tb: str, keep: set[str], sizes: dict[str, int],
             name: str) -> tuple[str, str]:
    """a x b over their shared letters, keeping the letters in ``keep``."""
    batch = [c for c in ta if c in tb and c in keep]
    contract = [c for c in ta if c in tb and c not in keep]
    left = [c for c in ta if c not in tb]
    right = [c for c in tb if c not in ta]

    def size(letters: list[str]) -> int:
        return int(np.prod([sizes[c] for c in letters], dtype=np.int64))

    a3 = imp.g.op("Reshape", [_transpose(imp, a, ta, "".join(batch + left + contract), name + "/a")],
                  name + "/a3", shape=[size(batch), size(left), size(contract)])
    b3 = imp.g.op("Reshape", [_transpose(imp, b, tb, "".join(batch + contract + right), name + "/b")],
                  name + "/b3", shape=[size(batch), size(contract), size(right)])
    prod = imp.g.op("BatchMatMul", [a3, b3], name + "/matmul")
    out = batch + left + right
    return imp.g.op("Reshape", [prod], name, shape=[sizes[c] for c in out]), "".join(out)


def _einsum(imp: Importer, node: Any, name: str, ins: list[str], attrs: dict[str, Any]) -> str | None:
    equation = attr_str(attrs.get("equation", ""))
    shapes = [imp.shapes.get(i) for i in node.input]
    if any(s is None or min(s, default=0) < 0 for s in shapes):
        return None
    try:
        terms, out = _parse(equation, [len(s) for s in shapes if s is not None])
        sizes: dict[str, int] = {}
        for term, shape in zip(terms, shapes):
            if len(set(term)) != len(term):
                raise _Refuse("an index repeated in one operand (a diagonal)")
            for c, d in zip(term, shape or []):
                if sizes.setdefault(c, d) != d:
                    raise _Refuse(f"index '{c}' of sizes {sizes[c]} and {d}")
        if len(set(out)) != len(out) or any(c not in sizes for c in out):
            raise _Refuse(f"output '{out}'")
    except _Refuse as why:
        return imp.g.unsupported_op(name, f"Einsum '{equation}' with {why}")
    acc, term = ins[0], terms[0]
    for i in range(1, len(terms)):
        needed = set(out).union(*terms[i + 1 :])  # by the output or a later operand
        acc, term = _sum_out(imp, acc, term, needed | set(terms[i]), f"{name}/sum{i}")
        other, tother = _sum_out(imp, ins[i], terms[i], needed | set(term), f"{name}/sum{i}b")
        acc, term = _product(imp, acc, term, other, tother, needed, sizes, f"{name}/pair{i}")
    acc, term = _sum_out(imp, acc, term, set(out), f"{name}/sum")
    y = _transpose(imp, acc, term, out, name)
    return y if y != ins[0] else imp.g.op("Identity", [y], name)


HANDLERS: dict[str, Handler] = {"Einsum": _einsum}
