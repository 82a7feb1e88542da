"""Exports a GraphBuilder graph to ONNX (onnx.helper), so that a bench runs the same graph and
weights in onnxruntime. Covers the ops the benches use; anything else is a ValueError."""

from __future__ import annotations

from typing import Any

import numpy as np
from onnx import TensorProto, helper, numpy_helper

import pyengine

_ACT = {"relu": "Relu", "sigmoid": "Sigmoid", "tanh": "Tanh"}


def to_onnx(g: pyengine.GraphBuilder, opset: int = 17) -> bytes:
    """The graph of `g` as a serialized ONNX model (NCHW layouts only)."""
    graph = g.graph
    inits = [numpy_helper.from_array(np.asarray(a), name) for name, a in g.tensors.items()]
    nodes: list[Any] = []
    extra: list[Any] = []

    def const(name: str, value: np.ndarray) -> str:
        extra.append(numpy_helper.from_array(value, name))
        return name

    def activation(x: str, act: str, out: str, name: str) -> None:
        if act == "relu6":
            lo = const(f"{name}/min", np.array(0, np.float32))
            hi = const(f"{name}/max", np.array(6, np.float32))
            nodes.append(helper.make_node("Clip", [x, lo, hi], [out], name=f"{name}/act"))
        elif act in _ACT:
            nodes.append(helper.make_node(_ACT[act], [x], [out], name=f"{name}/act"))
        else:
            raise ValueError(f"activation {act!r} has no ONNX export here")

    for n in graph["nodes"]:
        op, name, ins, out = n["op"], n["name"], n["inputs"], n["outputs"][0]
        attrs = n.get("attrs", {})
        if attrs.get("layout", "NCHW") != "NCHW":
            raise ValueError(f"node '{name}': only NCHW exports to ONNX here")
        act = attrs.get("activation", "none")
        core_out = out if act == "none" else f"{out}/pre"
        if op == "Dense":
            nodes.append(
                helper.make_node(
                    "Gemm", ins, [core_out], name=name, transB=int(attrs.get("transpose_b", False))
                )
            )
        elif op == "Conv2D":
            w = g.tensors[ins[1]]
            p = attrs.get("pads", [0, 0, 0, 0])
            nodes.append(
                helper.make_node(
                    "Conv",
                    ins,
                    [core_out],
                    name=name,
                    kernel_shape=list(w.shape[2:]),
                    pads=[p[0], p[1], p[2], p[3]],
                    strides=attrs.get("strides", [1, 1]),
                    dilations=attrs.get("dilations", [1, 1]),
                    group=attrs.get("groups", 1),
                )
            )
        elif op in ("MaxPool", "AvgPool"):
            p = attrs.get("pads", [0, 0, 0, 0])
            nodes.append(
                helper.make_node(
                    "MaxPool" if op == "MaxPool" else "AveragePool",
                    ins,
                    [out],
                    name=name,
                    kernel_shape=attrs["kernel"],
                    strides=attrs.get("strides", [1, 1]),
                    pads=p,
                )
            )
        elif op == "GlobalAvgPool":
            nodes.append(helper.make_node("GlobalAveragePool", ins, [out], name=name))
        elif op == "BatchNorm":
            nodes.append(
                helper.make_node(
                    "BatchNormalization", ins, [out], name=name, epsilon=attrs.get("epsilon", 1e-5)
                )
            )
        elif op in ("Relu", "Add", "Identity", "Sigmoid", "Tanh"):
            nodes.append(helper.make_node(op, ins, [out], name=name))
        elif op == "Flatten":
            nodes.append(
                helper.make_node("Flatten", ins, [out], name=name, axis=attrs.get("axis", 1))
            )
        elif op == "Softmax":
            nodes.append(
                helper.make_node("Softmax", ins, [out], name=name, axis=attrs.get("axis", -1))
            )
        else:
            raise ValueError(f"node '{name}': op {op} has no ONNX export here")
        if act != "none" and op in ("Dense", "Conv2D"):
            activation(core_out, act, out, name)

    def value_info(name: str, shape: list[int]) -> Any:
        dims: list[Any] = ["N" if d < 0 else d for d in shape]
        return helper.make_tensor_value_info(name, TensorProto.FLOAT, dims)

    inputs = [value_info(i["name"], i["shape"]) for i in graph["inputs"]]
    outputs = [
        helper.make_tensor_value_info(o["name"], TensorProto.FLOAT, None) for o in graph["outputs"]
    ]
    model = helper.make_model(
        helper.make_graph(nodes, "pyengine", inputs, outputs, inits + extra),
        opset_imports=[helper.make_opsetid("", opset)],
        producer_name="pyengine-bench",
    )
    model.ir_version = 8
    return model.SerializeToString()
