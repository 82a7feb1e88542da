"""Einsum -> native Transpose, Reduce, Reshape and BatchMatMul (or Dense): shared by the ONNX and
TensorFlow importers.

Operands are folded left to right; each pair becomes one batched matrix product
[batch, left, contracted] x [batch, contracted, right], after summing the indices that only one
operand has and nothing later needs (a pair whose right operand is a constant without batch
indices is one Dense over packed weights). A single operand is a sum and a transpose. Ellipses are
expanded from the operands' ranks. One size may be known only at run time (the batch: -1). What
this does not express (an index repeated in one operand, a diagonal; an index whose sizes differ
or broadcast between operands; several run-time sizes) raises ValueError saying why.
"""

from __future__ import annotations

import string
from typing import Sequence

import numpy as np

from pyengine.convert._graph import Graph


def parse(equation: str, ranks: list[int]) -> tuple[list[str], str]:
    """Each operand's index letters and the output's, with ellipses expanded.

    Raises
    ------
    ValueError
        The terms do not fit the operands.
    """
    eq = equation.replace(" ", "")
    lhs, arrow, rhs = eq.partition("->")
    terms = lhs.split(",")
    if len(terms) != len(ranks):
        raise ValueError(f"{len(terms)} terms for {len(ranks)} inputs")
    spare = [c for c in string.ascii_letters if c not in eq]
    widths = [rank - (len(t) - 3) if "..." in t else 0 for t, rank in zip(terms, ranks)]
    ellipsis = spare[: max(widths, default=0)]
    expanded: list[str] = []
    for term, width in zip(terms, widths):
        term = term.replace("...", "".join(ellipsis[len(ellipsis) - width :])) if width else term
        if width < 0 or len(term) != ranks[len(expanded)] or not term.isalpha():
            raise ValueError(f"term '{term}' for an input of rank {ranks[len(expanded)]}")
        expanded.append(term)
    if arrow:
        out = rhs.replace("...", "".join(ellipsis))
    else:  # implicit: the ellipsis, then the letters used once, in alphabetical order
        letters = "".join(expanded)
        out = "".join(ellipsis) + "".join(sorted(c for c in set(letters) if letters.count(c) == 1
                                                 and c not in ellipsis))
    return expanded, out


def _transpose(g: Graph, value: str, have: str, want: str, name: str) -> str:
    if have == want:
        return value
    return g.op("Transpose", [value], name, perm=[have.index(c) for c in want])


def _sum_out(g: Graph, value: str, term: str, keep: set[str], name: str) -> tuple[str, str]:
    """``value`` summed over the letters of ``term`` not in ``keep``."""
    axes = [i for i, c in enumerate(term) if c not in keep]
    if not axes:
        return value, term
    summed = g.op("Reduce", [value], name, kind="sum", axes=axes, keepdims=False)
    return summed, "".join(c for c in term if c in keep)


def _product(g: Graph, a: str, ta: str, b: str, tb: str, keep: set[str], sizes: dict[str, int],
             name: str) -> tuple[str, str]:
    """a x b over their shared letters, keeping the letters in ``keep``."""
    batch = [c for c in ta if c in tb and c in keep]
    contract = [c for c in ta if c in tb and c not in keep]
    left = [c for c in ta if c not in tb]
    right = [c for c in tb if c not in ta]

    def size(letters: list[str]) -> int:
        if any(sizes[c] < 0 for c in letters):
            return -1
        return int(np.prod([sizes[c] for c in letters], dtype=np.int64))

    a_t = _transpose(g, a, ta, "".join(batch + left + contract), name + "/a")
    b_t = _transpose(g, b, tb, "".join(batch + contract + right), name + "/b")
    if not batch and g.is_const(b_t):  # weights: the GEMM path with packed B
        a2 = g.op("Reshape", [a_t], name + "/a2", shape=[size(left), size(contract)])
        b2 = g.op("Reshape", [b_t], name + "/b2", shape=[size(contract), size(right)])
        prod = g.op("Dense", [a2, b2], name + "/matmul")
    else:
        a3 = g.op("Reshape", [a_t], name + "/a3", shape=[size(batch), size(left), size(contract)])
        b3 = g.op("Reshape", [b_t], name + "/b3", shape=[size(batch), size(contract), size(right)])
        prod = g.op("BatchMatMul", [a3, b3], name + "/matmul")
    out = batch + left + right
    return g.op("Reshape", [prod], name, shape=[sizes[c] for c in out]), "".join(out)


def einsum(g: Graph, ins: Sequence[str], shapes: Sequence[Sequence[int]], equation: str,
           name: str) -> str:
    """``einsum(equation, *ins)`` for operands of ``shapes`` (-1: a size known only at run time).

    Raises
    ------
    ValueError
        A form without a native expression here; the message says which.
    """
    terms, out = parse(equation, [len(s) for s in shapes])
    sizes: dict[str, int] = {}
    for term, shape in zip(terms, shapes):
        if len(set(term)) != len(term):
            raise ValueError("an index repeated in one operand (a diagonal)")
        for c, d in zip(term, shape):
            if sizes.setdefault(c, d) != d:
                raise ValueError(f"index '{c}' of sizes {sizes[c]} and {d}")
    if len(set(out)) != len(out) or any(c not in sizes for c in out):
        raise ValueError(f"output '{out}'")
    if sum(1 for d in sizes.values() if d < 0) > 1:
        raise ValueError("several sizes known only at run time")
    acc, term = ins[0], terms[0]
    for i in range(1, len(terms)):
        needed = set(out).union(*terms[i + 1 :])  # by the output or a later operand
        acc, term = _sum_out(g, acc, term, needed | set(terms[i]), f"{name}/sum{i}")
        other, tother = _sum_out(g, ins[i], terms[i], needed | set(term), f"{name}/sum{i}b")
        acc, term = _product(g, acc, term, other, tother, needed, sizes, f"{name}/pair{i}")
    acc, term = _sum_out(g, acc, term, set(out), f"{name}/sum")
    y = _transpose(g, acc, term, out, name)
    return y if y != ins[0] else g.op("Identity", [y], name)
