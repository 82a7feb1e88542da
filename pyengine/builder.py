"""A small builder for native graphs; tests and the converters write .pyem files with it."""

from __future__ import annotations

import json
import os
from typing import Any, Sequence

import numpy as np

from pyengine import _core

#: The NCHW[c] blocks the engine's kernels use: 16 AVX-512, 8 AVX2 and generic, 4 NEON.
WEIGHT_BLOCKS = (16, 8, 4)

# The element types a .pyem file holds (docs/format.md's dtype codes).
DTYPES = ("float32", "int32", "int64", "uint8", "int8", "bool", "int16", "uint16", "uint32", "uint64",
          "float64")
_DTYPES = {np.dtype(d) for d in DTYPES}


def _plain(value: Any) -> Any:
    """Attribute values as JSON types (numpy scalars and arrays become Python numbers and lists)."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


class GraphBuilder:
    """Builds a native graph node by node, then writes it as a .pyem file.

    Example
    -------
    >>> g = GraphBuilder()
    >>> x = g.input("x", [-1, 64])
    >>> h = g.node("Dense", [x, g.constant("w", w), g.constant("b", b)], activation="relu")
    >>> g.output(h)
    >>> g.save("mlp.pyem")
    """

    def __init__(self, producer: str = "pyengine.GraphBuilder") -> None:
        self.producer = producer
        self._inputs: list[dict[str, Any]] = []
        self._outputs: list[str] = []
        self._output_shapes: dict[str, list[int]] = {}
        self._nodes: list[dict[str, Any]] = []
        self._tensors: dict[str, np.ndarray] = {}
        self._quant: dict[str, dict[str, Any]] = {}
        self._names: set[str] = set()
        self._counter = 0

    def _claim(self, name: str) -> str:
        if not name:
            raise ValueError("names must not be empty")
        if name in self._names:
            raise ValueError(f"name '{name}' is already used in this graph")
        self._names.add(name)
        return name

    def fresh_name(self, prefix: str) -> str:
        """A name not used yet, starting with ``prefix``."""
        while True:
            self._counter += 1
            name = f"{prefix}_{self._counter}"
            if name not in self._names:
                return name

    def input(self, name: str, shape: Sequence[int], dtype: str = "float32") -> str:
        """Declare a graph input; -1 marks a free dimension (the batch, usually)."""
        shape = [int(d) for d in shape]
        if any(d < -1 for d in shape):
            raise ValueError(f"input '{name}' shape {shape} has entries below -1")
        if dtype not in DTYPES:
            raise ValueError(f"input '{name}' has dtype '{dtype}'; expected one of {', '.join(DTYPES)}")
        self._inputs.append({"name": self._claim(name), "dtype": dtype, "shape": shape})
        return name

    def constant(self, name: str, array: Any, exact: bool = False) -> str:
        """Store a tensor (weights) in the file; float64 arrays are stored as float32 unless
        ``exact`` (a graph whose float64 values stay float64)."""
        arr = np.asarray(array)
        if arr.dtype == np.float64 and not exact:
            arr = arr.astype(np.float32)
        # reshape: ascontiguousarray makes a 0-d array 1-d, and a scalar must stay a scalar.
        arr = np.ascontiguousarray(arr).reshape(arr.shape).astype(arr.dtype.newbyteorder("<"), copy=False)
        if arr.dtype.newbyteorder("=") not in _DTYPES:
            raise ValueError(f"tensor '{name}' has dtype {arr.dtype}; expected one of {', '.join(DTYPES)}")
        self._tensors[self._claim(name)] = arr
        return name

    def quantized_constant(
        self,
        name: str,
        array: Any,
        scale: float | Sequence[float],
        zero_point: int | Sequence[int] = 0,
        axis: int = 0,
    ) -> str:
        """Store an int8/uint8 tensor with its scale and zero point (real = (q - zero_point) * scale).

        ``scale`` and ``zero_point`` are one number (per tensor) or one entry per slice along
        ``axis`` (per channel); the reader checks them at load (docs/format.md).
        """
        arr = np.asarray(array)
        if arr.dtype not in (np.dtype(np.int8), np.dtype(np.uint8)):
            raise ValueError(f"quantized tensor '{name}' has dtype {arr.dtype}; expected int8 or uint8")
        self.constant(name, arr)
        scales = np.atleast_1d(np.asarray(scale, dtype=np.float64)).tolist()
        zps = np.atleast_1d(np.asarray(zero_point, dtype=np.int64)).tolist()
        if len(zps) == 1 and len(scales) > 1:
            zps = zps * len(scales)
        self._quant[name] = {"scale": scales, "zero_point": zps, "axis": int(axis)}
        return name

    def node(
        self,
        op: str,
        inputs: Sequence[str],
        *,
        name: str | None = None,
        outputs: Sequence[str] | None = None,
        **attrs: Any,
    ) -> str:
        """Add a node; returns the name of its (first) output."""
        name = self._claim(name or self.fresh_name(op.lower()))
        outs = list(outputs) if outputs is not None else [name + ":0"]
        for o in outs:
            self._claim(o)
        node: dict[str, Any] = {"name": name, "op": op, "inputs": list(inputs), "outputs": outs}
        if attrs:
            node["attrs"] = {k: _plain(v) for k, v in attrs.items()}
        self._nodes.append(node)
        return outs[0]

    def output(self, name: str, shape: Sequence[int] | None = None) -> None:
        """Mark a value as a graph output.

        Parameters
        ----------
        name
            The value.
        shape
            Its shape as the source declares it (-1: free). Optional: the engine reports it only
            for models whose output shapes follow parameter inputs' values (docs/format.md).
        """
        self._outputs.append(name)
        if shape is not None:
            self._output_shapes[name] = [int(d) for d in shape]

    @property
    def tensors(self) -> dict[str, np.ndarray]:
        """The stored tensors by name (a copy of the mapping; the arrays are shared)."""
        return dict(self._tensors)

    @property
    def graph(self) -> dict[str, Any]:
        """The graph document (without tensor data)."""
        doc: dict[str, Any] = {
            "format": "pyem",
            "producer": self.producer,
            "inputs": self._inputs,
            "outputs": [
                {"name": o, **({"shape": self._output_shapes[o]} if o in self._output_shapes else {})}
                for o in self._outputs
            ],
            "nodes": self._nodes,
        }
        if self._quant:
            doc["quantization"] = self._quant
        return doc

    def to_json(self) -> str:
        return json.dumps(self.graph, separators=(",", ":"))

    def add_blocked_weights(self, block: int) -> int:
        """Store each NCHW Conv2D's constant weight also in the blocked form that kernels of
        NCHW[``block``]c use (``block`` 4, 8 or 16), beside the plain OIHW one: an engine whose
        kernels use that block reads it in place from the mapped file instead of repacking it
        at load (docs/format.md, "Blocked convolution weights"). Returns how many were added.

        Raises
        ------
        ValueError
            ``block`` is not 4, 8 or 16.
        """
        if block not in WEIGHT_BLOCKS:
            raise ValueError(f"block {block!r} is not one of {', '.join(map(str, WEIGHT_BLOCKS))}")
        # A weight shared by several convolutions with the same grouping is stored once.
        packed: dict[tuple[str, int], str | None] = {}
        added = 0
        for node in self._nodes:
            attrs = node.get("attrs", {})
            ins = node["inputs"]
            if node["op"] != "Conv2D" or attrs.get("layout", "NCHW") != "NCHW" or len(ins) < 2:
                continue
            weight = self._tensors.get(ins[1])
            if weight is None or weight.dtype != np.float32 or weight.ndim != 4:
                continue
            if len(ins) > 2 and ins[2] not in self._tensors:
                continue  # a computed bias: the engine runs this convolution plain
            groups = int(attrs.get("groups", 1))
            key = (ins[1], groups)
            if key not in packed:
                form = _core.pack_conv_weights(weight, groups, block)
                packed[key] = None if form is None else self.constant(
                    self.fresh_name(f"{ins[1]}@nchwc{block}"), form)
            name = packed[key]
            if name is None:
                continue
            entries = [e for e in node.get("blocked_weights", []) if e["block"] != block]
            node["blocked_weights"] = entries + [{"block": block, "tensor": name}]
            added += 1
        return added

    def save(self, path: str | os.PathLike[str]) -> str:
        """Write the .pyem file atomically; returns its path."""
        path = os.fspath(path)
        _core.write_pyem(path, self.to_json(), list(self._tensors.items()))
        return path
