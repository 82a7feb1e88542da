"""The MLP and CNN of models.py as ONNX graphs, and a small Model subclass that runs them with
onnxruntime: a real framework model for the batcher's callback path (tests and bench)."""

from __future__ import annotations

from typing import Optional

import numpy as np
from models import MLP_SIZES, cnn_params, mlp_params

from pyengine.model import SpecListModel, TensorSpec


def _model_bytes(nodes: list, inputs: list, outputs: list, weights: dict[str, np.ndarray]) -> bytes:
    import onnx
    from onnx import helper, numpy_helper

    graph = helper.make_graph(
        nodes,
        "g",
        inputs,
        outputs,
        initializer=[numpy_helper.from_array(v, name=k) for k, v in weights.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def mlp_onnx(sizes: tuple[int, ...] = MLP_SIZES, seed: int = 0) -> bytes:
    """models.mlp as ONNX: Gemm/Relu layers, softmax over the last axis."""
    from onnx import TensorProto, helper

    weights: dict[str, np.ndarray] = {}
    nodes = []
    h = "x"
    params = mlp_params(sizes, seed)
    for i, (w, b) in enumerate(params):
        weights[f"w{i}"], weights[f"b{i}"] = w, b
        nodes.append(helper.make_node("Gemm", [h, f"w{i}", f"b{i}"], [f"fc{i}"]))
        h = f"fc{i}"
        if i < len(params) - 1:
            nodes.append(helper.make_node("Relu", [h], [f"relu{i}"]))
            h = f"relu{i}"
    nodes.append(helper.make_node("Softmax", [h], ["probs"], axis=-1))
    return _model_bytes(
        nodes,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", sizes[0]])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["n", sizes[-1]])],
        weights,
    )


def cnn_onnx(size: int = 28, channels: int = 16, seed: int = 0) -> bytes:
    """models.cnn (NCHW) as ONNX."""
    from onnx import TensorProto, helper

    p = cnn_params(channels, seed)
    weights = {k.replace("/", "_"): v for k, v in p.items()}
    nodes = []
    h = "image"
    for i in range(2):
        nodes += [
            helper.make_node("Conv", [h, f"conv{i}_w"], [f"conv{i}"], pads=[1, 1, 1, 1]),
            helper.make_node(
                "BatchNormalization",
                [f"conv{i}"] + [f"bn{i}_{k}" for k in ("scale", "bias", "mean", "var")],
                [f"bn{i}"],
                epsilon=1e-5,
            ),
            helper.make_node("Relu", [f"bn{i}"], [f"relu{i}"]),
            helper.make_node(
                "MaxPool", [f"relu{i}"], [f"pool{i}"], kernel_shape=[2, 2], strides=[2, 2]
            ),
        ]
        h = f"pool{i}"
    nodes += [
        helper.make_node("GlobalAveragePool", [h], ["gap"]),
        helper.make_node("Flatten", ["gap"], ["flat"]),
        helper.make_node("Gemm", ["flat", "fc_w", "fc_b"], ["logits"]),
    ]
    return _model_bytes(
        nodes,
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["n", 1, size, size])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["n", 10])],
        weights,
    )


class OrtModel(SpecListModel):
    """An onnxruntime InferenceSession behind the Model interface (not a native model)."""

    backend = "onnx"

    def __init__(self, model_bytes: bytes, threads: Optional[int] = 1) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        if threads is not None:
            opts.intra_op_num_threads = threads
            opts.inter_op_num_threads = 1
        self.session = ort.InferenceSession(model_bytes, opts, providers=["CPUExecutionProvider"])

        def spec(v: object) -> TensorSpec:
            shape = tuple(d if isinstance(d, int) else -1 for d in v.shape)  # type: ignore[attr-defined]
            return TensorSpec(v.name, shape, "float32")  # type: ignore[attr-defined]

        self._inputs = [spec(v) for v in self.session.get_inputs()]
        self._outputs = [spec(v) for v in self.session.get_outputs()]
        self.calls = 0

    def _run(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        self.calls += 1
        return list(self.session.run(None, {s.name: a for s, a in zip(self._inputs, arrays)}))
