"""ONNX model -> native graph (NCHW). Opset 9 and later, plus the opset 6-8 forms of the same ops
(attribute-style broadcast, Clip/Pad/Reshape attributes) that older exporters wrote.

The importer walks the graph (_importer.py); each op family's handlers live in an ops_*.py module."""

from __future__ import annotations

from typing import Any, Sequence

from pyengine.builder import GraphBuilder
from pyengine.convert._imports import framework
from pyengine.convert.onnx import (
    ops_attention,
    ops_einsum,
    ops_elementwise,
    ops_nn,
    ops_norm,
    ops_qoperator,
    ops_quant,
    ops_rnn,
    ops_shape,
    ops_typed,
)
from pyengine.convert.onnx._importer import Handler, Importer
from pyengine.errors import ModelFormatError
from pyengine.locate import ModelLocation

# Every ONNX op the importer converts -> its handler.
HANDLERS: dict[str, Handler] = {
    **ops_nn.HANDLERS,
    **ops_norm.HANDLERS,
    **ops_elementwise.HANDLERS,
    **ops_shape.HANDLERS,
    **ops_rnn.HANDLERS,
    **ops_typed.HANDLERS,
    **ops_attention.HANDLERS,
    **ops_einsum.HANDLERS,
    # Last: ops_quant's Conv, MatMul and Gemm read QDQ patterns and hand the others to ops_nn's.
    **ops_qoperator.HANDLERS,
    **ops_quant.HANDLERS,
}


def import_onnx() -> Any:
    """The onnx module (BackendUnavailableError naming the extra when missing)."""
    return framework("onnx", "onnx")


def read_model(path: str) -> Any:
    """Parse and check an ONNX file; a damaged one is a ModelFormatError naming the path."""
    onnx = import_onnx()
    try:
        model = onnx.load(path)
        onnx.checker.check_model(model)
    except Exception as exc:  # DecodeError, ValidationError
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelFormatError(f"'{path}' is not a valid ONNX model: {first}") from None
    return model


def _set_input_shapes(model: Any, path: str, input_shapes: dict[str, Sequence[int]]) -> None:
    """Give the model's graph inputs the shapes in ``input_shapes`` (-1: left free)."""
    inputs = {vi.name: vi for vi in model.graph.input}
    for name, shape in input_shapes.items():
        vi = inputs.get(name)
        if vi is None:
            raise ValueError(f"input_shapes names '{name}', which is not an input of '{path}' "
                             f"(its inputs: {', '.join(sorted(inputs))})")
        dims = vi.type.tensor_type.shape.dim
        if len(dims) not in (0, len(shape)) or any(int(d) < -1 for d in shape):
            raise ValueError(f"input_shapes['{name}'] = {list(shape)} does not fit input '{name}' "
                             f"of '{path}', which has rank {len(dims)} (-1 marks a free size)")
        vi.type.tensor_type.shape.Clear()
        for i, d in enumerate(shape):
            dim = vi.type.tensor_type.shape.dim.add()
            if int(d) >= 0:
                dim.dim_value = int(d)
            else:
                dim.dim_param = f"{name}_{i}"


def _cut_at(onnx: Any, model: Any, path: str, outputs: Sequence[str]) -> Any:
    """The part of ``model`` that computes the values ``outputs`` (its new graph outputs) from
    its inputs: what follows them (detection post-processing, say) is left out."""
    produced = {o for n in model.graph.node for o in n.output} | {i.name for i in model.graph.input}
    missing = [o for o in outputs if o not in produced]
    if missing:
        raise ValueError(f"outputs names {missing}, which no node of '{path}' produces "
                         f"(its graph outputs: {[o.name for o in model.graph.output]})")
    try:
        # The extractor takes the new outputs' types from value_info, which inference fills.
        constants = {t.name for t in model.graph.initializer}
        inputs = [i.name for i in model.graph.input if i.name not in constants]
        extractor = onnx.utils.Extractor(onnx.shape_inference.infer_shapes(model))
        cut = extractor.extract_model(inputs, list(outputs))
    except Exception as exc:  # shape inference or extraction failed on this graph
        raise ModelFormatError(f"'{path}': cannot cut the graph at {list(outputs)}: {exc}") from None
    # Inputs the kept part does not read go too (a detector's score threshold, say).
    read = {i for n in cut.graph.node for i in n.input} | set(outputs)
    for vi in [i for i in cut.graph.input if i.name not in read]:
        cut.graph.input.remove(vi)
    return cut


def convert(location: ModelLocation, input_shapes: dict[str, Sequence[int]] | None = None,
            outputs: Sequence[str] | None = None) -> GraphBuilder:
    """Import an ONNX model into a native graph; ``input_shapes`` fixes sizes its inputs leave
    free, ``outputs`` ends the graph at these values (leaving out the nodes after them)."""
    onnx = import_onnx()
    model = read_model(location.path)
    if input_shapes:
        _set_input_shapes(model, location.path, input_shapes)
    if outputs:
        model = _cut_at(onnx, model, location.path, outputs)
    return Importer(onnx, location.path, model, HANDLERS).run()
