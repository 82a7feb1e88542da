"""The Model interface every backend returns, and :func:`load`, which picks the backend."""

from __future__ import annotations

import abc
import os
from dataclasses import dataclass
from typing import Any, Mapping, Union

import numpy as np

Array = np.ndarray
Inputs = Union[Array, Mapping[str, Array]]
Outputs = Union[Array, dict]


@dataclass(frozen=True)
class TensorSpec:
    """A model input or output: name, shape (-1 marks a free dimension) and dtype."""

    name: str
    shape: tuple[int, ...]
    dtype: str


class Model(abc.ABC):
    """A loaded model. ``predict`` takes an array (one input) or a dict of arrays by name."""

    #: "native" | "tensorflow" | "mxnet" | "chainer" | "onnx"
    backend: str = ""

    @property
    @abc.abstractmethod
    def inputs(self) -> list[TensorSpec]:
        """The model's inputs."""

    @property
    @abc.abstractmethod
    def outputs(self) -> list[TensorSpec]:
        """The model's outputs."""

    @abc.abstractmethod
    def _run(self, arrays: list[Array]) -> list[Array]:
        """Run on arrays in input order; return arrays in output order."""

    def predict(self, x: Inputs) -> Outputs:
        """Run the model.

        Parameters
        ----------
        x
            An array when the model has one input, else a dict from input name to array.

        Returns
        -------
        An array when the model has one output, else a dict from output name to array.

        Raises
        ------
        ValueError
            A missing or unknown input name, or an array of the wrong shape, dtype or byte order.
        """
        outs = self._run(self._order_inputs(x))
        if len(outs) == 1:
            return outs[0]
        return {spec.name: out for spec, out in zip(self.outputs, outs)}

    def _order_inputs(self, x: Inputs) -> list[Array]:
        specs = self.inputs
        names = [s.name for s in specs]
        if isinstance(x, Mapping):
            unknown = [k for k in x if k not in names]
            if unknown:
                raise ValueError(f"unknown input name(s) {unknown}; the model's inputs are {names}")
            missing = [n for n in names if n not in x]
            if missing:
                raise ValueError(f"missing input(s) {missing}; the model's inputs are {names}")
            arrays = [x[n] for n in names]
        elif len(specs) == 1:
            arrays = [x]
        else:
            raise ValueError(f"the model has {len(specs)} inputs {names}; pass a dict of arrays by name")
        for spec, a in zip(specs, arrays):
            if not isinstance(a, np.ndarray):
                raise ValueError(
                    f"input '{spec.name}' must be a numpy array, got {type(a).__name__}; "
                    f"use np.asarray(value, dtype=np.{spec.dtype})"
                )
        return arrays

    def __repr__(self) -> str:
        ins = ", ".join(f"{s.name}{list(s.shape)}" for s in self.inputs)
        outs = ", ".join(f"{s.name}{list(s.shape)}" for s in self.outputs)
        return f"<{type(self).__name__} backend={self.backend} inputs=({ins}) outputs=({outs})>"


BACKENDS = ("auto", "native", "tensorflow", "mxnet", "chainer", "onnx")


def load(path: str | os.PathLike[str], backend: str = "auto", device: str = "auto", **options: Any) -> Model:
    """Load a model from a file or directory.

    Parameters
    ----------
    path
        A model file (``.pyem``), or a directory holding one.
    backend
        ``"auto"`` picks the native engine for ``.pyem`` files.
    device
        ``"cpu"``, ``"cuda"`` (the first GPU), ``"cuda:N"``, or ``"auto"``: a GPU when one is
        present and, inside a function, granted to it (see :mod:`pyengine.devices`), else the CPU.
    **options
        Backend-specific options.

    Raises
    ------
    FileNotFoundError
        ``path`` does not exist.
    ModelFormatError
        The file is damaged or not a model this backend reads.
    ValueError
        An unknown backend or a malformed device string.
    DeviceUnavailableError
        A GPU was asked for and this build has no CUDA support, the CUDA backend or driver is
        missing, there is no such GPU, or it is not granted to the function.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend={backend!r} is not one of {', '.join(BACKENDS)}")
    from pyengine import devices

    dev = devices.resolve(device)
    fspath = os.fspath(path)
    if not os.path.exists(fspath):
        raise FileNotFoundError(f"no model at '{fspath}' (expected a .pyem file or a model directory)")
    from pyengine.backends import native

    if backend in ("auto", "native"):
        return native.load(fspath, device=dev, **options)
    raise ValueError(f"backend={backend!r} is not available in this build")
