"""TensorFlow Lite flatbuffer (``.tflite``, float32 weights) -> native graph, NHWC kept.

Only the ``tflite`` reader package is needed (no TensorFlow): this is how a ``.tflite`` file
becomes a ``.pyem`` on a device that has neither TensorFlow nor a TFLite interpreter. The op
handlers are in :mod:`pyengine.convert._tflite_ops`.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from pyengine.builder import DTYPES, GraphBuilder
from pyengine.convert._graph import Graph
from pyengine.convert._tflite_ops import HANDLERS, READS_SHAPE, SHAPE_OPS
from pyengine.convert._tflite_read import Operator, Subgraph, Tensor, read_tflite
from pyengine.errors import InputShapeUnknownError, ModelFormatError, QuantizedModelError
from pyengine.locate import ModelLocation

#: Tensor types of a quantized model's values (with quantization scales).
_QUANTIZED_TYPES = {"int8", "uint8", "int16", "int4"}


class Importer:
    """Builds the native graph of one TFLite subgraph; handlers call back into it."""

    def __init__(self, sub: Subgraph, input_shapes: dict[str, Sequence[int]]) -> None:
        self.sub = sub
        self.g = Graph(sub.path, "tflite", keep_dtypes=True)
        self.values: dict[int, str] = {}
        self.input_shapes = input_shapes
        # Constants computed from a run-time shape (SHAPE of a tensor with a free batch): -1
        # marks the batch; only shape plumbing may read them (see _tflite_ops.SHAPE_OPS).
        self.symbolic: set[str] = set()
        self.producers: dict[int, Operator] = {}  # tensor index -> the operator that wrote it

    # ---- what handlers read ----
    def tensor(self, op: Operator, i: int) -> Tensor:
        return self.sub.tensors[op.inputs[i]]

    def has(self, op: Operator, i: int) -> bool:
        """Whether optional input ``i`` is present."""
        return i < len(op.inputs) and op.inputs[i] >= 0

    def x(self, op: Operator, i: int) -> str:
        """The graph value of input ``i``."""
        return self.value(op.inputs[i])

    def value(self, index: int) -> str:
        if index not in self.values:
            t = self.sub.tensors[index]
            if t.data is None:
                raise ModelFormatError(f"'{self.sub.path}': tensor {index} '{t.name}' is read "
                                       "before any operator writes it")
            self.values[index] = self.g.const(t.data, t.name)
        return self.values[index]

    def const(self, op: Operator, i: int) -> np.ndarray | None:
        """Input ``i``'s values when it is a constant (stored or folded), else None."""
        if not self.has(op, i):
            return None
        t = self.tensor(op, i)
        if t.data is not None and op.inputs[i] not in self.values:
            return t.data
        v = self.x(op, i)
        return self.g.value(v) if self.g.is_const(v) else None

    def shape(self, op: Operator, i: int) -> list[int]:
        """Input ``i``'s shape, -1 where only the run time knows it."""
        v = self.x(op, i) if self.has(op, i) else ""
        if v and self.g.is_const(v):
            return list(self.g.value(v).shape)
        return list(self.tensor(op, i).shape)

    def out_shape(self, op: Operator, k: int = 0) -> list[int]:
        return list(self.sub.tensors[op.outputs[k]].shape)

    def name(self, op: Operator, k: int = 0) -> str:
        return self.sub.tensors[op.outputs[k]].name

    # ---- the walk ----
    def run(self) -> GraphBuilder:
        self._refuse_quantized()
        for index in self.sub.inputs:
            t = self.sub.tensors[index]
            name = self.sub.names.get(index) or t.name
            shape = list(self.input_shapes.get(name, t.shape))
            if t.dtype not in DTYPES:  # float16, strings...: the interpreter runs it under auto
                self.values[index] = self.g.unsupported_op(f"input '{name}'", f"input of type {t.dtype}")
                continue
            self.values[index] = self.g.input(name, shape, t.dtype)
        for op in self.sub.operators:
            handler = HANDLERS.get(op.op)
            label = f"operator {op.index} '{_short(self.name(op)) if op.outputs else '?'}'"
            if handler is None:
                self._unsupported(op, label, op.op)
                continue
            if any(self.values.get(i, "").startswith("unsupported:") for i in op.inputs if i >= 0):
                self._unsupported(op, label, None)
                continue
            symbolic = any(self.values.get(i) in self.symbolic for i in op.inputs if i >= 0)
            if symbolic and op.op not in SHAPE_OPS | READS_SHAPE:
                self._unsupported(op, label, f"{op.op} of a run-time shape")
                continue
            try:
                result = handler(self, op)
            except ModelFormatError:
                raise
            except ValueError as exc:  # a value the native ops cannot take; the reason says which
                self._unsupported(op, label, f"{op.op}: {exc}")
                continue
            if result is None:
                self._unsupported(op, label, op.op)
                continue
            outs = [result] if isinstance(result, str) else list(result)
            if symbolic and op.op in SHAPE_OPS and not all(self.g.is_const(v) for v in outs):
                self._unsupported(op, label, f"{op.op} of a run-time shape")
                continue
            for index, value in zip(op.outputs, outs):
                self.values[index] = value
                self.producers[index] = op
                if symbolic and self.g.is_const(value) and np.any(self.g.value(value) < 0):
                    self.symbolic.add(value)  # a size known only at run time is still in it
        for index in self.sub.outputs:
            if index not in self.values:
                raise ModelFormatError(f"'{self.sub.path}': output tensor {index} is never "
                                       "written")
            t = self.sub.tensors[index]
            self.g.output(self.values[index], self.sub.names.get(index) or t.name)
        return self.g.finish()

    def _unsupported(self, op: Operator, label: str, what: str | None) -> None:
        for index in op.outputs:
            self.values[index] = (self.g.unsupported_op(label, what) if what
                                  else self.g.fresh("unsupported:" + label))
            what = None  # one entry per operator

    def _refuse_quantized(self) -> None:
        """A quantized model (int8/uint8/int16 values with scales, QUANTIZE/DEQUANTIZE of them) is
        refused as a whole, naming what was found, before any op is converted."""
        quantized = [t for t in self.sub.tensors
                     if t.quantized and t.dtype in _QUANTIZED_TYPES]
        if not quantized:
            return
        kinds: dict[str, list[int]] = {}
        for op in self.sub.operators:
            if any(i >= 0 and self.sub.tensors[i] in quantized for i in op.inputs + op.outputs):
                kinds.setdefault(op.op, []).append(op.index)
        types = "/".join(sorted({t.dtype for t in quantized}))
        ops = [("operator" + ("s " if len(idx) > 1 else " ") + ", ".join(map(str, idx[:4]))
                + (f" and {len(idx) - 4} more" if len(idx) > 4 else ""), kind)
               for kind, idx in kinds.items()]
        raise QuantizedModelError(
            self.sub.path, "tflite",
            f"{len(quantized)} {types} tensors with quantization scales (e.g. "
            f"'{_short(quantized[0].name)}')", ops)


def _short(name: str) -> str:
    """A TFLite tensor name without the names of the ops fused into it (joined with ';')."""
    return name.split(";")[0]


def convert(location: ModelLocation,
            input_shapes: dict[str, Sequence[int]] | None = None) -> GraphBuilder:
    """Import a float32 ``.tflite`` model's main subgraph into a native graph.

    Raises
    ------
    ModelFormatError
        Not a TFLite file, truncated or corrupted.
    UnsupportedOpsError
        Builtin ops without a native form (each named with its operator index), or a quantized
        model.
    """
    sub = read_tflite(location.path)
    shapes = dict(input_shapes or {})
    known = {sub.names.get(i) or sub.tensors[i].name for i in sub.inputs}
    wrong = sorted(set(shapes) - known)
    if wrong:
        raise InputShapeUnknownError(f"'{location.path}': input_shapes names {wrong}, which are "
                                     f"not inputs of the model; its inputs are {sorted(known)}")
    return Importer(sub, shapes).run()

