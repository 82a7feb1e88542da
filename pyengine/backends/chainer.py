"""Chainer backend: the network's code (a Chain instance or the package manifest's class) with
``model.npz`` loaded, run in test mode without backprop. Chainer is imported on first use."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from pyengine.convert.chainer import flatten_outputs, import_chainer, output_names, read_package
from pyengine.locate import ModelLocation
from pyengine.model import SpecListModel, TensorSpec


class ChainerModel(SpecListModel):
    """A Chainer Chain run by Chainer (``train=False``, no backprop graph)."""

    backend = "chainer"

    def __init__(
        self,
        location: ModelLocation,
        chain: Any = None,
        input_shapes: dict[str, Sequence[int]] | None = None,
    ) -> None:
        self._chainer = import_chainer()
        self.path = location.path
        self._package = read_package(location, chain, input_shapes)
        self.chain = self._package.chain
        dtypes = self._package.dtypes
        self._inputs = [TensorSpec(n, tuple(s or ()), dtypes.get(n, "float32"))
                        for n, s in self._package.inputs]
        names = self._package.outputs or ["y"]
        self._outputs = [TensorSpec(n, (), "float32") for n in names]

    def _run(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        chainer = self._chainer
        with chainer.using_config("train", False), chainer.no_backprop_mode():
            outs = flatten_outputs(self.chain(*arrays))
        if len(outs) != len(self._outputs):
            self._outputs = [
                TensorSpec(n, (), "float32") for n in output_names(self._package, len(outs))
            ]
        return [np.asarray(o.array if hasattr(o, "array") else o) for o in outs]


def load(
    location: ModelLocation,
    chain: Any = None,
    input_shapes: dict[str, Sequence[int]] | None = None,
) -> ChainerModel:
    """Load a Chainer model: ``chain`` (a Chain instance; else the package manifest's class)
    with model.npz's weights."""
    return ChainerModel(location, chain, input_shapes)
