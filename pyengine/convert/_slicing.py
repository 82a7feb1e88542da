"""StridedSlice, Pack and Unpack as native ops, and the arithmetic of run-time shape vectors:
shared by the TensorFlow and TFLite importers,
whose ops have the same semantics (numpy's basic indexing, written as begin/end/strides with
five bit masks).

On constants they fold with numpy; on run-time tensors they become native ``Slice`` (step 1),
``Gather`` (other steps, over an axis whose size is known), ``Squeeze``, ``Reshape`` and
``Concat``. Shapes use -1 for a size known only at run time (the batch).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from pyengine.convert._graph import Graph, batch_copied

#: Slice bounds past an axis mean "to its end"; kept within what the .pyem attributes hold.
BOUND = 2**31

#: In a run-time shape vector: a size that is the batch times known sizes (-1 is the batch
#: itself); a reshape to it infers it.
BATCH_MULTIPLE = -2

Index = Any  # an entry of a numpy index: slice, int (the axis is removed), or None (new axis)


def strided_index(
    begin: Sequence[int], end: Sequence[int], strides: Sequence[int], rank: int,
    begin_mask: int = 0, end_mask: int = 0, ellipsis_mask: int = 0, new_axis_mask: int = 0,
    shrink_axis_mask: int = 0,
) -> list[Index] | str:
    """The numpy index a StridedSlice takes on a tensor of ``rank``, one entry per input axis
    (plus the new axes), with the ellipsis expanded; or why it cannot be one."""
    spec: list[Any] = []
    for i in range(len(begin)):
        bit = 1 << i
        if ellipsis_mask & bit:
            spec.append(Ellipsis)
        elif new_axis_mask & bit:
            spec.append(None)
        elif shrink_axis_mask & bit:
            spec.append(int(begin[i]))
        else:
            if int(strides[i]) == 0:
                return "a zero stride"
            spec.append(slice(None if begin_mask & bit else int(begin[i]),
                              None if end_mask & bit else int(end[i]), int(strides[i])))
    ellipses = [i for i, s in enumerate(spec) if s is Ellipsis]
    if len(ellipses) > 1:
        return "several ellipses"
    consumed = sum(1 for s in spec if s is not None and s is not Ellipsis)
    if consumed > rank:
        return f"{consumed} sliced axes on a tensor of rank {rank}"
    fill = [slice(None)] * (rank - consumed)
    if ellipses:
        k = ellipses[0]
        return spec[:k] + fill + spec[k + 1:]
    return spec + fill


def slice_value(g: Graph, x: str, shape: Sequence[int], index: list[Index], name: str) -> str:
    """``x[index]`` (``index`` from :func:`strided_index`) for a run-time ``x`` of ``shape``.

    Raises
    ------
    ValueError
        A slice the native ops cannot take (a step over an axis of unknown size, an empty
        result); the importer records it as unsupported with the reason.
    """
    if g.is_const(x):
        return g.const(g.value(x)[tuple(index)], name)
    y, axis, sizes, squeeze = x, 0, [], []
    for entry in index:
        if entry is None:
            continue
        dim = int(shape[axis])
        if isinstance(entry, int):
            start = entry
            if dim >= 0:
                if not -dim <= entry < dim:
                    raise ValueError(f"index {entry} out of range for an axis of size {dim}")
                start = entry % dim
            y = g.op("Slice", [y], f"{name}/{axis}", axis=axis, start=start,
                     end=BOUND if start == -1 else start + 1)
            sizes.append(1)
            squeeze.append(axis)
        elif entry.step == 1 or entry.step is None:
            start = 0 if entry.start is None else entry.start
            stop = BOUND if entry.stop is None else entry.stop
            size = dim if dim < 0 else len(range(*entry.indices(dim)))
            if size == 0:
                raise ValueError(f"an empty slice {start}:{stop} of an axis of size {dim}")
            if (start, stop) != (0, BOUND) and not (dim >= 0 and size == dim):
                y = g.op("Slice", [y], f"{name}/{axis}", axis=axis,
                         start=max(-BOUND, min(start, BOUND)), end=max(-BOUND, min(stop, BOUND)))
            sizes.append(size)
        else:
            if dim < 0:
                raise ValueError(f"step {entry.step} over axis {axis}, whose size is known only "
                                 "at run time")
            picked = np.arange(dim, dtype=np.int64)[entry]
            if picked.size == 0:
                raise ValueError(f"an empty slice with step {entry.step} of an axis of size {dim}")
            y = g.op("Gather", [y, g.const(picked, f"{name}/{axis}/indices")],
                     f"{name}/{axis}", axis=axis)
            sizes.append(int(picked.size))
        axis += 1
    sizes += list(shape[axis:])
    final: list[int] = []
    kept = iter(range(len(sizes)))
    for entry in index:
        if entry is None:
            final.append(1)
            continue
        a = next(kept)
        if not isinstance(entry, int):
            final.append(sizes[a])
    final += [sizes[a] for a in kept]
    if None not in index:
        return g.op("Squeeze", [y], name, axes=squeeze) if squeeze else (
            y if y != x else g.op("Identity", [y], name))
    return reshape_to(g, y, sizes, final, name)


def reshape_to(g: Graph, x: str, shape: Sequence[int], target: Sequence[int], name: str) -> str:
    """Reshape ``x`` of ``shape`` to ``target`` (same elements, -1 for run-time sizes): an unknown
    size that keeps its position copies it (0), one other may be inferred (-1).

    Raises
    ------
    ValueError
        Several sizes known only at run time move.
    """
    out = [0 if d < 0 and i < len(shape) and shape[i] == d and all(
        shape[j] == target[j] for j in range(i)) else d for i, d in enumerate(target)]
    if out.count(-1) > 1:
        raise ValueError(f"reshape {list(shape)} -> {list(target)} moves several sizes known "
                         "only at run time")
    return g.op("Reshape", [x], name, shape=out)


def pack(g: Graph, xs: Sequence[str], shapes: Sequence[Sequence[int]], axis: int,
         name: str) -> str:
    """Stack ``xs`` (each of its shape) along a new ``axis`` (negative counts from the end)."""
    if all(g.is_const(x) for x in xs):
        return g.const(np.stack([g.value(x) for x in xs], axis=axis), name)
    rank = len(shapes[0])
    axis = axis + rank + 1 if axis < 0 else axis
    parts = []
    for i, (x, shape) in enumerate(zip(xs, shapes)):
        target = [*shape[:axis], 1, *shape[axis:]]
        parts.append(reshape_to(g, x, shape, target, f"{name}/expand{i}"))
    return g.op("Concat", parts, name, axis=axis) if len(parts) > 1 else parts[0]


def unpack(g: Graph, x: str, shape: Sequence[int], axis: int, num: int, name: str) -> list[str]:
    """The ``num`` slices of ``x`` along ``axis``, each without that axis."""
    axis = axis + len(shape) if axis < 0 else axis
    if g.is_const(x):
        arr = g.value(x)
        return [g.const(np.take(arr, i, axis=axis), f"{name}:{i}") for i in range(num)]
    outs = []
    for i in range(num):
        part = g.op("Slice", [x], f"{name}/{i}", axis=axis, start=i, end=i + 1)
        outs.append(g.op("Squeeze", [part], f"{name}:{i}" if i else name, axes=[axis]))
    return outs


def symbolic_prod(sizes: np.ndarray, keepdims: bool) -> np.ndarray:
    """The product of a vector of sizes where -1 is the run-time batch: the batch times other
    sizes is BATCH_MULTIPLE (a reshape infers it); the batch alone stays -1."""
    if sizes.ndim != 1:
        raise ValueError("a product over a multi-dimensional run-time shape")
    known = int(np.prod(sizes[sizes >= 0]))
    if not np.any(sizes < 0):
        value = known
    elif known == 1 and list(sizes[sizes < 0]) == [-1]:
        value = -1
    else:
        value = BATCH_MULTIPLE
    return np.array([value] if keepdims else value, dtype=sizes.dtype)


def runtime_reshape_target(target: Sequence[int], source: Sequence[int] | None) -> list[int]:
    """A reshape target computed from a run-time shape vector as native Reshape takes it: a
    BATCH_MULTIPLE is inferred (-1); when the batch (-1) and another inferred size are both
    there, the batch is copied from the source's first dimension (0)."""
    shape = [-1 if d == BATCH_MULTIPLE else int(d) for d in target]
    if shape.count(-1) > 1:
        shape = batch_copied(shape, list(source) if source is not None else None, True)
    return shape
