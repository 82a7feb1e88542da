"""The Model interface every backend returns, and :func:`load`, which picks the backend."""

from __future__ import annotations

import abc
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Mapping, Optional, Sequence, Union

import numpy as np

if TYPE_CHECKING:
    from pyengine.batching import BatchedModel, BatchingConfig

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

    def batched(
        self,
        max_batch_size: int = 32,
        max_delay_us: int = 1000,
        *,
        preferred_batch_sizes: Sequence[int] = (),
        max_queue_size: Optional[int] = 1024,
        timeout_s: Optional[float] = None,
        workers: int = 1,
        config: Optional[BatchingConfig] = None,
    ) -> BatchedModel:
        """A thread-safe, asyncio-ready front to this model that batches concurrent calls.

        Native models are batched entirely in C++ (no GIL while batching or running); other
        backends run through one Python call of the model per batch. See
        :class:`pyengine.BatchingConfig` for what each option means; ``config`` replaces them all.

        Returns
        -------
        A :class:`pyengine.BatchedModel`; close it (or use ``with``) when done.

        Raises
        ------
        ValueError
            An option out of range (the message names it).
        """
        from pyengine.batching import BatchedModel, BatchingConfig

        if config is None:
            config = BatchingConfig(
                max_batch_size=max_batch_size,
                max_delay_us=max_delay_us,
                preferred_batch_sizes=tuple(preferred_batch_sizes),
                max_queue_size=max_queue_size,
                timeout_s=timeout_s,
                workers=workers,
            )
        return BatchedModel(self, config)

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


class SpecListModel(Model):
    """A Model whose inputs and outputs are the lists ``_inputs`` and ``_outputs`` its
    constructor sets; :attr:`inputs` and :attr:`outputs` return copies of them."""

    _inputs: list[TensorSpec]
    _outputs: list[TensorSpec]

    @property
    def inputs(self) -> list[TensorSpec]:
        return list(self._inputs)

    @property
    def outputs(self) -> list[TensorSpec]:
        return list(self._outputs)


BACKENDS = ("auto", "native", "tensorflow", "mxnet", "chainer", "onnx")


def load(path: str | os.PathLike[str], backend: str = "auto", device: str = "auto", **options: Any) -> Model:
    """Load a model from a file or directory.

    Parameters
    ----------
    path
        A model file, or a directory holding one model (descending into a single top-level
        folder): ``.pyem``; a TensorFlow frozen graph ``.pb`` or SavedModel directory; an MXNet
        ``<prefix>-symbol.json`` + ``<prefix>-NNNN.params``; a Chainer ``model.npz`` (with a
        ``pyengine.json`` manifest or ``chain=``); an ONNX ``.onnx``. Inside a function, a
        resource id (the handle then follows the resource to its newest version between calls).
    backend
        ``"auto"`` converts framework models to the native engine and runs them there, falling
        back to the framework (with one :class:`~pyengine.errors.FrameworkFallbackWarning`) when
        an op does not convert. ``"native"`` converts or fails. ``"tensorflow"``, ``"mxnet"``,
        ``"chainer"``, ``"onnx"`` run the model on that framework.
    device
        ``"cpu"``, ``"cuda"`` (the first GPU), ``"cuda:N"``, or ``"auto"``: a GPU when one is
        present and, inside a function, granted to it (see :mod:`pyengine.devices`), else the CPU.
    **options
        Framework options (an option that does not apply to the model is a ValueError):
        ``inputs``/``outputs``/``signature`` (TensorFlow), ``epoch``/``strict`` (MXNet),
        ``chain`` (Chainer), ``threads`` (ONNX), ``input_shapes`` (all four: sizes the model leaves free).

    Raises
    ------
    FileNotFoundError
        ``path`` does not exist.
    ModelFormatError
        No recognisable model, several candidates, or a damaged model.
    UnsupportedOpsError
        ``backend="native"`` and some ops do not convert (each is listed with its node).
    BackendUnavailableError
        The framework the model needs is not installed (the message names the pip extra).
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
    if os.environ.get("PYENGINE_RESOURCES"):  # inside a function: a resource id names its model
        from pyengine.core.runtime import load_resource

        handle = load_resource(fspath, backend=backend, device=device, **options)
        if handle is not None:
            return handle
    from pyengine.backends import select

    return select.load(fspath, backend, dev, device == "auto", **options)
