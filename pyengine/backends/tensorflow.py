"""TensorFlow backend: frozen GraphDefs imported with import_graph_def, SavedModels through their
serving signature. TensorFlow is imported on first use."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from pyengine.convert.tensorflow import import_tf, load_saved_model, read_graph
from pyengine.errors import ModelFormatError
from pyengine.locate import ModelLocation
from pyengine.model import SpecListModel, TensorSpec


def _shape(node: Any) -> tuple[int, ...]:
    if "shape" not in node.attr or node.attr["shape"].shape.unknown_rank:
        return ()
    return tuple(d.size if d.size >= 0 else -1 for d in node.attr["shape"].shape.dim)


class TensorFlowModel(SpecListModel):
    """A TensorFlow graph run by TensorFlow (a pruned function over the imported GraphDef)."""

    backend = "tensorflow"

    def __init__(
        self,
        location: ModelLocation,
        inputs: Sequence[str] | None = None,
        outputs: Sequence[str] | None = None,
        signature: str = "serving_default",
    ) -> None:
        tf = import_tf()
        self._tf = tf
        self.path = location.path
        if location.extra.get("saved_model") and inputs is None and outputs is None:
            self._init_saved_model(location.path, signature)
            return
        frozen = read_graph(location, inputs, outputs, signature)
        graph_def = frozen.graph_def

        def _import() -> None:
            tf.compat.v1.import_graph_def(graph_def, name="")

        try:
            wrapped = tf.compat.v1.wrap_function(_import, [])
            graph = wrapped.graph
            feeds = [graph.get_tensor_by_name(n + ":0") for n in frozen.inputs]
            fetches = [graph.get_tensor_by_name(n + ":0") for n in frozen.outputs]
            self._fn = wrapped.prune(feeds, fetches)
        except (ValueError, KeyError, TypeError) as exc:
            raise ModelFormatError(
                f"'{self.path}': TensorFlow cannot import this graph ({exc})"
            ) from None
        self._inputs = [TensorSpec(n, _shape(f.op.node_def), f.dtype.name)
                        for n, f in zip(frozen.inputs, feeds)]
        self._outputs = [
            TensorSpec(
                n, tuple(-1 if d is None else d for d in (f.shape.as_list() or [])), f.dtype.name
            )
            for n, f in zip(frozen.outputs, fetches)
        ]
        self._signature = False

    def _init_saved_model(self, path: str, signature: str) -> None:
        self._loaded, self._fn = load_saved_model(
            self._tf, path, signature
        )  # _loaded owns variables
        specs = self._fn.structured_input_signature[1]
        self._inputs = [
            TensorSpec(k, tuple(-1 if d is None else d for d in v.shape.as_list()), v.dtype.name)
            for k, v in sorted(specs.items())
        ]
        outs = self._fn.structured_outputs
        self._outputs = [
            TensorSpec(k, tuple(-1 if d is None else d for d in v.shape.as_list()), v.dtype.name)
            for k, v in sorted(outs.items())
        ]
        self._signature = True

    def _run(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        tf = self._tf
        tensors = [tf.constant(a) for a in arrays]
        if self._signature:
            out = self._fn(**{s.name: t for s, t in zip(self._inputs, tensors)})
            return [out[s.name].numpy() for s in self._outputs]
        return [t.numpy() for t in self._fn(*tensors)]


def load(
    location: ModelLocation,
    inputs: Sequence[str] | None = None,
    outputs: Sequence[str] | None = None,
    signature: str = "serving_default",
) -> TensorFlowModel:
    """Load a frozen graph (``inputs``/``outputs`` node names override the defaults) or a
    SavedModel (through ``signature``)."""
    return TensorFlowModel(location, inputs, outputs, signature)
