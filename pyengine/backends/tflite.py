"""TFLite backend: the model run by a TensorFlow Lite interpreter (LiteRT's ``ai_edge_litert``,
``tflite_runtime`` on a device, or TensorFlow's ``tf.lite``), imported on first use."""

from __future__ import annotations

import importlib
import threading
import warnings
from typing import Any

import numpy as np

from pyengine.convert._imports import framework
from pyengine.convert._tflite_read import IDENTIFIER
from pyengine.errors import BackendUnavailableError, ModelFormatError
from pyengine.locate import ModelLocation
from pyengine.model import SpecListModel, TensorSpec

#: Interpreter modules, the device ones first: each has an ``Interpreter`` class.
_INTERPRETERS = ("ai_edge_litert.interpreter", "tflite_runtime.interpreter")


def _interpreter_class() -> Any:
    for module in _INTERPRETERS:
        try:
            return importlib.import_module(module).Interpreter
        except ImportError:
            continue
    try:
        return framework("tensorflow", "tensorflow").lite.Interpreter
    except BackendUnavailableError as exc:
        raise BackendUnavailableError("tflite", "tensorflow", exc) from None


class TFLiteModel(SpecListModel):
    """A ``.tflite`` model run by a TFLite interpreter; inputs and outputs carry the serving
    signature's names (the tensor names when the file has no signature). The interpreter is
    resized when the batch changes; one run at a time (interpreters are not thread-safe)."""

    backend = "tflite"

    def __init__(self, location: ModelLocation) -> None:
        self.path = location.path
        try:
            with open(self.path, "rb") as f:
                head = f.read(8)
        except OSError as exc:
            raise ModelFormatError(f"'{self.path}': cannot read ({exc})") from None
        if head[4:8] != IDENTIFIER:
            raise ModelFormatError(f"'{self.path}' is not a TensorFlow Lite model (no {IDENTIFIER!r}"
                                   " identifier at bytes 4..8)")
        interpreter = _interpreter_class()
        try:
            with warnings.catch_warnings():
                # tf.lite.Interpreter warns that LiteRT replaces it; it is the fallback here.
                warnings.simplefilter("ignore", UserWarning)
                self._it = interpreter(model_path=self.path)
            self._it.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise ModelFormatError(f"'{self.path}': the TFLite interpreter cannot load this model "
                                   f"({exc})") from None
        names: dict[int, str] = {}
        signatures = self._it.get_signature_list()
        if signatures:
            runner = self._it.get_signature_runner(next(iter(signatures)))
            for details in (runner.get_input_details(), runner.get_output_details()):
                names.update({d["index"]: name for name, d in details.items()})
        self._in = self._it.get_input_details()
        self._out = self._it.get_output_details()
        self._inputs = [self._spec(d, names) for d in self._in]
        self._outputs = [self._spec(d, names) for d in self._out]
        self._lock = threading.Lock()

    @staticmethod
    def _spec(d: dict[str, Any], names: dict[int, str]) -> TensorSpec:
        shape = d.get("shape_signature")
        if shape is None or len(shape) == 0:
            shape = d["shape"]
        return TensorSpec(names.get(d["index"], d["name"]), tuple(int(s) for s in shape),
                          np.dtype(d["dtype"]).name)

    def _run(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        with self._lock:
            resized = False
            for d, a in zip(self._in, arrays):
                current = self._it.get_input_details()[self._in.index(d)]["shape"]
                if tuple(current) != a.shape:
                    self._it.resize_tensor_input(d["index"], list(a.shape))
                    resized = True
            if resized:
                self._it.allocate_tensors()
            for d, a in zip(self._in, arrays):
                self._it.set_tensor(d["index"], np.ascontiguousarray(a, dtype=d["dtype"]))
            self._it.invoke()
            return [self._it.get_tensor(d["index"]).copy() for d in self._out]


def load(location: ModelLocation) -> TFLiteModel:
    """Load a ``.tflite`` model into a TFLite interpreter."""
    return TFLiteModel(location)
