"""MXNet backend: a symbol + params checkpoint, bound once per input shape (bindings cached).

MXNet is imported on first use (with numpy.bool restored, which MXNet 1.9.1 still reads)."""

from __future__ import annotations

import threading
from typing import Any, Sequence

import numpy as np

from pyengine.convert.mxnet import (
    guess_input_shape,
    import_mxnet,
    input_dtype,
    load_params,
    model_inputs,
    read_symbol,
)
from pyengine.errors import ModelFormatError
from pyengine.locate import ModelLocation
from pyengine.model import SpecListModel, TensorSpec

#: Bound executors kept per model (one per distinct input shape), oldest dropped first.
_MAX_BINDINGS = 16


class MXNetModel(SpecListModel):
    """An MXNet symbol run by MXNet's executor; one executor per distinct input shape."""

    backend = "mxnet"

    def __init__(
        self,
        location: ModelLocation,
        strict: bool = False,
        input_shapes: dict[str, Sequence[int]] | None = None,
    ) -> None:
        mx = import_mxnet()
        self._mx = mx
        self.path = location.path
        doc = read_symbol(location, strict)
        params = load_params(location)
        try:
            self._symbol = mx.sym.load(location.path)
        except Exception as exc:  # mxnet.base.MXNetError
            raise ModelFormatError(
                f"'{location.path}': MXNet cannot load this symbol ({exc})"
            ) from None
        args = set(self._symbol.list_arguments())
        self._args = {k: v for k, v in params.items() if k in args}
        self._aux = {
            k: v for k, v in params.items() if k in set(self._symbol.list_auxiliary_states())
        }
        names = model_inputs(doc, params)
        shapes = dict(input_shapes or {})
        for n in names:
            if n not in shapes:
                try:
                    shapes[n] = guess_input_shape(location, doc, params, n)
                except ModelFormatError:
                    shapes[n] = ()
        self._inputs = [TensorSpec(n, tuple(shapes[n]), input_dtype(doc, n)) for n in names]
        self._outputs = [TensorSpec(n, (), "float32") for n in self._symbol.list_outputs()]
        self._labels = [
            a for a in self._symbol.list_arguments() if a.endswith("_label") and a not in params
        ]
        self._executors: dict[tuple[tuple[int, ...], ...], Any] = {}
        self._lock = threading.Lock()

    def _executor(self, shapes: tuple[tuple[int, ...], ...]) -> Any:
        exe = self._executors.get(shapes)
        if exe is None:
            mx = self._mx
            feed = {s.name: shape for s, shape in zip(self._inputs, shapes)}
            for label in self._labels:
                feed[label] = shapes[0][:1]
            try:
                types = {s.name: np.dtype(s.dtype) for s in self._inputs if s.dtype != "float32"}
                exe = self._symbol.simple_bind(ctx=mx.cpu(), grad_req="null",
                                               type_dict=types or None, **feed)
            except Exception as exc:  # mxnet.base.MXNetError
                first = str(exc).strip().splitlines()[0]
                raise ValueError(
                    f"MXNet cannot bind '{self.path}' for input shapes {feed}: {first}"
                ) from None
            exe.copy_params_from(self._args, self._aux, allow_extra_params=True)
            if len(self._executors) >= _MAX_BINDINGS:  # drop the oldest binding
                self._executors.pop(next(iter(self._executors)))
            self._executors[shapes] = exe
        return exe

    def _run(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        with self._lock:
            exe = self._executor(tuple(tuple(a.shape) for a in arrays))
            for spec, a in zip(self._inputs, arrays):
                exe.arg_dict[spec.name][:] = a
            exe.forward(is_train=False)
            return [o.asnumpy() for o in exe.outputs]


def load(
    location: ModelLocation,
    strict: bool = False,
    input_shapes: dict[str, Sequence[int]] | None = None,
) -> MXNetModel:
    """Load an MXNet checkpoint; ``strict``: a newer saving MXNet is an error, not a warning;
    ``input_shapes`` are reported in ``inputs``."""
    return MXNetModel(location, strict, input_shapes)
