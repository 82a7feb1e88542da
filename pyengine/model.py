"""The Model interface every backend returns (:mod:`pyengine.loader` picks the backend)."""

from __future__ import annotations

import abc
from typing import Mapping, Optional, Sequence

import numpy as np

from pyengine.batching import BatchedModel, BatchingConfig
from pyengine.specs import Array, Inputs, Outputs, TensorSpec

__all__ = ["Array", "Inputs", "Model", "Outputs", "SpecListModel", "TensorSpec"]


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
