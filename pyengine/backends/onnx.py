"""ONNX backend: the model run by onnxruntime (imported on first use)."""

from __future__ import annotations

from typing import Any

import numpy as np

from pyengine.convert._imports import framework
from pyengine.convert.onnx import read_model
from pyengine.errors import ModelFormatError
from pyengine.locate import ModelLocation
from pyengine.model import SpecListModel, TensorSpec

_DTYPES = {
    "tensor(float)": "float32",
    "tensor(int64)": "int64",
    "tensor(int32)": "int32",
    "tensor(uint8)": "uint8",
    "tensor(double)": "float64",
}


def _spec(arg: Any) -> TensorSpec:
    shape = tuple(d if isinstance(d, int) else -1 for d in (arg.shape or []))
    return TensorSpec(arg.name, shape, _DTYPES.get(arg.type, arg.type))


class ONNXModel(SpecListModel):
    """An ONNX model run by an onnxruntime InferenceSession on the CPU."""

    backend = "onnx"

    def __init__(self, location: ModelLocation, threads: int | None = None) -> None:
        ort = framework("onnxruntime", "onnx")
        self.path = location.path
        read_model(location.path)  # a clear error for a damaged file before onnxruntime's
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        try:
            self._session = ort.InferenceSession(
                location.path, options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnxruntime's Fail / InvalidGraph
            raise ModelFormatError(
                f"'{location.path}': onnxruntime cannot load this model ({exc})"
            ) from None
        self._inputs = [_spec(a) for a in self._session.get_inputs()]
        self._outputs = [_spec(a) for a in self._session.get_outputs()]
        self._names = [s.name for s in self._outputs]

    def _run(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        feed = {s.name: a for s, a in zip(self._inputs, arrays)}
        return list(self._session.run(self._names, feed))


def load(location: ModelLocation, threads: int | None = None) -> ONNXModel:
    """Load an ONNX model into onnxruntime (``threads``: intra-op threads)."""
    return ONNXModel(location, threads)
