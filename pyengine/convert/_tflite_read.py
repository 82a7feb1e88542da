"""Read a ``.tflite`` flatbuffer (the main subgraph) into plain Python values with the ``tflite``
package (the flatbuffer accessors generated from TensorFlow Lite's published schema).

Every read is checked: a truncated or corrupted file is a :class:`ModelFormatError` naming the
file and what was wrong, never an exception from inside the accessors.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pyengine.convert._imports import framework
from pyengine.errors import ModelFormatError

#: The flatbuffer file identifier of TensorFlow Lite models (bytes 4..8).
IDENTIFIER = b"TFL3"

#: TensorType code -> (name, numpy dtype or None where numpy has none).
TENSOR_TYPES: dict[int, tuple[str, Any]] = {
    0: ("float32", np.float32), 1: ("float16", np.float16), 2: ("int32", np.int32),
    3: ("uint8", np.uint8), 4: ("int64", np.int64), 5: ("string", None), 6: ("bool", np.bool_),
    7: ("int16", np.int16), 8: ("complex64", np.complex64), 9: ("int8", np.int8),
    10: ("float64", np.float64), 11: ("complex128", np.complex128), 12: ("uint64", np.uint64),
    13: ("resource", None), 14: ("variant", None), 15: ("uint32", np.uint32),
    16: ("uint16", np.uint16), 17: ("int4", None), 18: ("bfloat16", None),
}

_READ_ERRORS = (struct.error, IndexError, ValueError, TypeError, UnicodeDecodeError,
                AttributeError, OverflowError, KeyError)


@dataclass
class Tensor:
    """One tensor of the subgraph: ``shape`` with -1 where the signature leaves a size free."""

    index: int
    name: str
    dtype: str
    shape: list[int]
    data: np.ndarray | None  # the constant's values (weights), None for activations
    quantized: bool


@dataclass
class Operator:
    """One operator: its builtin name, tensor indices (-1: an absent optional input), options."""

    index: int
    op: str
    inputs: list[int]
    outputs: list[int]
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class Subgraph:
    """The model's main subgraph, with the names its serving signature gives inputs/outputs."""

    path: str
    tensors: list[Tensor]
    operators: list[Operator]
    inputs: list[int]
    outputs: list[int]
    names: dict[int, str]


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def _options(tfl: Any, op: Any) -> dict[str, Any]:
    """The operator's builtin options as ``{snake_case field: value}`` (vectors as lists)."""
    kind = op.BuiltinOptionsType()
    table = op.BuiltinOptions()
    if not kind or table is None:
        return {}
    names = {v: k for k, v in vars(tfl.BuiltinOptions).items() if not k.startswith("_")}
    cls = getattr(tfl, names.get(kind, ""), None)
    if cls is None:
        return {}
    opts = cls()
    opts.Init(table.Bytes, table.Pos)
    out: dict[str, Any] = {}
    methods = [m for m in dir(cls) if m[:1].isupper()]
    vectors = {m[: -len("AsNumpy")] for m in methods if m.endswith("AsNumpy")}
    for m in methods:
        if m.startswith(("GetRootAs", "Init")) or m.endswith(
            ("BufferHasIdentifier", "Length", "IsNone")
        ) or m in vectors:
            continue
        if m.endswith("AsNumpy"):
            value = getattr(opts, m)()
            out[_snake(m[: -len("AsNumpy")])] = [] if isinstance(value, int) else value.tolist()
        else:
            out[_snake(m)] = getattr(opts, m)()
    return out


def _count(n: int, what: str, size: int, path: str) -> int:
    if not 0 <= n <= size // 4:
        raise ModelFormatError(f"'{path}': corrupted TFLite file: {n} {what} in {size} bytes")
    return n


def _tensor_data(model: Any, t: Any, dtype: Any, shape: list[int], buf: bytes, path: str,
                 name: str) -> np.ndarray | None:
    index = t.Buffer()
    if index <= 0:
        return None
    if index >= model.BuffersLength():
        raise ModelFormatError(f"'{path}': tensor '{name}' reads buffer {index}, past the "
                               f"{model.BuffersLength()} buffers of the file")
    b = model.Buffers(index)
    offset, size = b.Offset(), b.Size()
    if offset > 1:  # a model past 2 GiB keeps its buffers after the flatbuffer
        if offset + size > len(buf):
            raise ModelFormatError(f"'{path}': tensor '{name}' reads bytes {offset}..{offset + size}"
                                   f" of a {len(buf)}-byte file (truncated?)")
        raw = np.frombuffer(buf, np.uint8, count=size, offset=offset)
    else:
        raw = b.DataAsNumpy()
        if isinstance(raw, int):  # an empty buffer: an activation
            return None
    if dtype is None:
        return raw
    expected = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
    if raw.size != expected:
        raise ModelFormatError(f"'{path}': tensor '{name}' of shape {shape} needs {expected} "
                               f"bytes; its buffer {index} holds {raw.size}")
    return raw.view(dtype).reshape(shape).copy()


def read_tflite(path: str) -> Subgraph:
    """Read ``path``'s main subgraph.

    Raises
    ------
    ModelFormatError
        Not a TFLite flatbuffer, truncated or corrupted (the message names what was wrong).
    BackendUnavailableError
        The ``tflite`` reader is not installed (the message names the pip extra).
    """
    try:
        with open(path, "rb") as f:
            buf = f.read()
    except OSError as exc:
        raise ModelFormatError(f"'{path}': cannot read ({exc})") from None
    if len(buf) < 8 or buf[4:8] != IDENTIFIER:
        raise ModelFormatError(
            f"'{path}' is not a TensorFlow Lite model: a .tflite flatbuffer has the identifier "
            f"{IDENTIFIER!r} at bytes 4..8, this file has {buf[4:8]!r} ({len(buf)} bytes)")
    tfl = framework("tflite", "tflite")
    try:
        return _read(tfl, buf, path)
    except _READ_ERRORS as exc:
        what = "an offset past the end of the data" if isinstance(exc, struct.error) else type(exc).__name__
        raise ModelFormatError(
            f"'{path}': corrupted or truncated TFLite file ({what}: {exc})"
        ) from None


def _read(tfl: Any, buf: bytes, path: str) -> Subgraph:
    model = tfl.Model.GetRootAs(buf, 0)
    if _count(model.SubgraphsLength(), "subgraphs", len(buf), path) < 1:
        raise ModelFormatError(f"'{path}': the TFLite model has no subgraph")
    _count(model.BuffersLength(), "buffers", len(buf), path)
    sg = model.Subgraphs(0)
    codes = []
    for i in range(_count(model.OperatorCodesLength(), "operator codes", len(buf), path)):
        oc = model.OperatorCodes(i)
        # Codes past 127 live in builtin_code; deprecated_builtin_code holds the older ones.
        code = max(oc.BuiltinCode(), oc.DeprecatedBuiltinCode())
        name = tfl.utils.BUILTIN_OPCODE2NAME.get(code, f"builtin code {code}")
        if name == "CUSTOM":
            custom = oc.CustomCode()
            name = f"CUSTOM {custom.decode(errors='replace') if custom else '?'}"
        codes.append(name)
    tensors = []
    for i in range(_count(sg.TensorsLength(), "tensors", len(buf), path)):
        t = sg.Tensors(i)
        name = (t.Name() or b"").decode(errors="replace") or f"tensor{i}"
        type_name, dtype = TENSOR_TYPES.get(t.Type(), (f"type {t.Type()}", None))
        static = [int(d) for d in (t.ShapeAsNumpy() if t.ShapeLength() else [])]
        signature = [int(d) for d in (t.ShapeSignatureAsNumpy() if t.ShapeSignatureLength() else [])]
        if len(static) > 8 or any(d < 0 for d in static) or any(d < -1 for d in signature):
            raise ModelFormatError(f"'{path}': tensor {i} '{name}' has shape {static} (signature "
                                   f"{signature}); expected at most 8 sizes, each >= 0 (-1 in "
                                   "the signature for a free one)")
        q = t.Quantization()
        quantized = q is not None and (q.ScaleLength() > 0 or q.DetailsType() != 0)
        data = _tensor_data(model, t, dtype, static, buf, path, name)
        shape = signature if len(signature) == len(static) and data is None else static
        tensors.append(Tensor(i, name, type_name, shape, data, quantized))
    operators = []
    for i in range(_count(sg.OperatorsLength(), "operators", len(buf), path)):
        op = sg.Operators(i)
        if not 0 <= op.OpcodeIndex() < len(codes):
            raise ModelFormatError(f"'{path}': operator {i} names operator code "
                                   f"{op.OpcodeIndex()} of {len(codes)}")
        ins = [int(v) for v in (op.InputsAsNumpy() if op.InputsLength() else [])]
        outs = [int(v) for v in (op.OutputsAsNumpy() if op.OutputsLength() else [])]
        for v in ins + outs:
            if not -1 <= v < len(tensors):
                raise ModelFormatError(f"'{path}': operator {i} ({codes[op.OpcodeIndex()]}) names "
                                       f"tensor {v} of {len(tensors)}")
        operators.append(Operator(i, codes[op.OpcodeIndex()], ins, outs, _options(tfl, op)))
    inputs = [int(v) for v in (sg.InputsAsNumpy() if sg.InputsLength() else [])]
    outputs = [int(v) for v in (sg.OutputsAsNumpy() if sg.OutputsLength() else [])]
    for v in inputs + outputs:
        if not 0 <= v < len(tensors):
            raise ModelFormatError(f"'{path}': the subgraph's inputs/outputs name tensor {v} "
                                   f"of {len(tensors)}")
    names: dict[int, str] = {}
    if model.SignatureDefsLength():
        sig = model.SignatureDefs(0)
        for get, n in ((sig.Inputs, sig.InputsLength()), (sig.Outputs, sig.OutputsLength())):
            for j in range(_count(n, "signature entries", len(buf), path)):
                entry = get(j)
                names[int(entry.TensorIndex())] = (entry.Name() or b"").decode(errors="replace")
    return Subgraph(path, tensors, operators, inputs, outputs, names)
