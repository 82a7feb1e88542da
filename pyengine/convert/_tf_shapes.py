"""Static shapes of a frozen TensorFlow graph's tensors, for the importer.

TensorFlow's own shape inference loses sizes behind computed reshapes (a Keras Dense on 3-D
inputs freezes to a Tensordot whose result is ``[?, ?, 32]`` although only the batch is free).
So the graph is also inferred with its inputs' free batch set to 2 and to 3: a size equal in
both is static, one that grows from 2 to 3 is the batch, and one that grows 2k to 3k is a
multiple of it (:data:`BATCH_MULTIPLE`), which a reshape must not mistake for the batch.
"""

from __future__ import annotations

from typing import Any, Sequence

from pyengine.convert._slicing import BATCH_MULTIPLE

#: The batch sizes the graph is probed with.
_PROBES = (2, 3)


class StaticShapes:
    """Shapes of ``graph_def``'s tensors: sizes, -1 for the batch (or a size only the run time
    knows), BATCH_MULTIPLE for the batch times a known size."""

    def __init__(self, tf: Any, graph_def: Any, inputs: Sequence[str],
                 input_shapes: dict[str, Sequence[int]]) -> None:
        self.tf = tf
        self.graph_def = graph_def
        self.inputs = list(inputs)
        self.input_shapes = input_shapes
        self._graphs: dict[int | None, Any] = {}

    def _graph(self, batch: int | None) -> Any:
        if batch not in self._graphs:
            graph_def = self.graph_def
            if batch is not None:
                graph_def = self.tf.compat.v1.GraphDef()
                graph_def.CopyFrom(self.graph_def)
                for n in graph_def.node:
                    if n.name in self.inputs and n.op == "Placeholder" and "shape" in n.attr:
                        dims = n.attr["shape"].shape.dim
                        given = self.input_shapes.get(n.name)
                        for i, d in enumerate(dims):
                            size = given[i] if given is not None and i < len(given) else d.size
                            d.size = batch if i == 0 and size < 0 else size
            graph = self.tf.Graph()
            with graph.as_default():
                self.tf.compat.v1.import_graph_def(graph_def, name="")
            self._graphs[batch] = graph
        return self._graphs[batch]

    def _shape(self, batch: int | None, tensor: str) -> list[int] | None:
        name = tensor if ":" in tensor else tensor + ":0"
        shape = self._graph(batch).get_tensor_by_name(name).shape
        if shape.rank is None:
            return None
        return [-1 if d is None else int(d) for d in shape.as_list()]

    def tensor(self, tensor: str) -> Any:
        """The tf.Tensor ``tensor`` of the graph as frozen."""
        return self._graph(None).get_tensor_by_name(tensor if ":" in tensor else tensor + ":0")

    def shape(self, tensor: str) -> list[int] | None:
        """``tensor``'s shape, or None when its rank is unknown."""
        base = self._shape(None, tensor)
        if base is None or all(d >= 0 for d in base):
            return base
        try:
            probes = [self._shape(b, tensor) for b in _PROBES]
        except (ValueError, TypeError):  # the graph does not take another batch size
            return base
        if any(p is None or len(p) != len(base) for p in probes):
            return base
        out = []
        for d, a, b in zip(base, *probes):  # type: ignore[misc]
            if d >= 0 or a < 0 or b < 0:
                out.append(d)
            elif a == b:
                out.append(a)  # static; TensorFlow's inference had lost it
            elif a * _PROBES[1] == b * _PROBES[0]:
                out.append(-1 if a == _PROBES[0] else BATCH_MULTIPLE)
            else:
                out.append(-1)
        return out
