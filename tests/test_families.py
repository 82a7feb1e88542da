"""Issue 25's model families (tests/families.py at small sizes) and the ops they need, converted
natively and compared with onnxruntime on the same ONNX graph: RNN, GRU and LSTM in every direction,
layout and output on odd shapes, ConvTranspose, 2-D Resize, batched MatMul in the attention
pattern and the folded GELU; refusals of what the kernels lack name the node and the value."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

import families  # noqa: E402
import onnx  # noqa: E402
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

import pyengine  # noqa: E402

RNG = np.random.default_rng(25)
TOLERANCE = 1e-4


def rel_diff(actual: np.ndarray, expected: np.ndarray) -> float:
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    scale = float(np.max(np.abs(expected))) or 1.0
    return float(np.max(np.abs(actual.astype(np.float64) - expected))) / scale


def convert_and_compare(tmp_path: Path, data: bytes, feed: dict[str, np.ndarray],
                        name: str = "m") -> tuple[list[np.ndarray], Path]:
    """Native outputs of ``data`` (asserted within TOLERANCE of onnxruntime's) and the .pyem."""
    src, dst = tmp_path / f"{name}.onnx", tmp_path / f"{name}.pyem"
    src.write_bytes(data)
    pyengine.convert(str(src), str(dst))
    model = pyengine.load(str(dst), backend="native")
    want = ort.InferenceSession(str(src), providers=["CPUExecutionProvider"]).run(None, feed)
    got = model.predict(feed if len(feed) > 1 else next(iter(feed.values())))
    got = list(got.values()) if isinstance(got, dict) else [got] if len(want) == 1 else list(got)
    for g, w in zip(got, want):
        assert rel_diff(np.asarray(g), w) <= TOLERANCE
    return [np.asarray(g) for g in got], dst


def native_ops(src: Path) -> list[str]:
    """The op of every node of the native graph that ``src`` converts to."""
    from pyengine.convert import to_builder
    from pyengine.locate import locate

    return [n["op"] for n in to_builder(locate(str(src))).graph["nodes"]]


# ---------------------------------------------------------------- the families


@pytest.mark.parametrize("family", ["yolo", "unet", "kws", "bert_tiny", "vit_tiny"])
def test_family_converts_and_matches_onnxruntime(tmp_path, family):
    data, feed = families.FAMILIES[family](**families.SMALL[family])
    out, _ = convert_and_compare(tmp_path, data, feed(2, 3))
    assert np.std(out[0]) > 0  # the random weights give a varied output


# ---------------------------------------------------------------- GRU / LSTM


def rnn_model(op: str, seq: int, batch: int, size: int, hidden: int, *, direction: str = "forward",
              layout: int = 0, outputs: tuple[int, ...] = (0, 1), bias: bool = True,
              initial: bool = False, peepholes: bool = False, **attrs: Any) -> tuple[bytes, dict]:
    """One RNN / GRU / LSTM node with constant weights reading the graph outputs ``outputs`` (0: Y,
    1: Y_h, 2: Y_c), and a feed."""
    gates, dirs = {"RNN": 1, "GRU": 3, "LSTM": 4}[op], (2 if direction == "bidirectional" else 1)
    consts = {
        "W": RNG.uniform(-0.5, 0.5, (dirs, gates * hidden, size)),
        "R": RNG.uniform(-0.5, 0.5, (dirs, gates * hidden, hidden)),
    }
    names = ["x", "W", "R", "B" if bias else "", "", "h0" if initial else ""]
    if bias:
        consts["B"] = RNG.uniform(-0.5, 0.5, (dirs, 2 * gates * hidden))
    x_shape = [batch, seq, size] if layout else [seq, batch, size]
    state = [batch, dirs, hidden] if layout else [dirs, batch, hidden]
    feed = {"x": RNG.standard_normal(x_shape).astype(np.float32)}
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)]
    if initial:
        feed["h0"] = RNG.standard_normal(state).astype(np.float32)
        inputs.append(helper.make_tensor_value_info("h0", TensorProto.FLOAT, state))
    if op == "LSTM":
        names.append("c0" if initial else "")
        names.append("P" if peepholes else "")
        if initial:
            feed["c0"] = RNG.standard_normal(state).astype(np.float32)
            inputs.append(helper.make_tensor_value_info("c0", TensorProto.FLOAT, state))
        if peepholes:
            consts["P"] = RNG.uniform(-0.5, 0.5, (dirs, 3 * hidden))
    while names and not names[-1]:
        names.pop()
    outs = ["Y", "Y_h", "Y_c"][: max(outputs) + 1]
    node = helper.make_node(op, names, [o if i in outputs else "" for i, o in enumerate(outs)],
                            name="rnn", hidden_size=hidden, direction=direction, layout=layout, **attrs)
    y_shape = [batch, seq, dirs, hidden] if layout else [seq, dirs, batch, hidden]
    graph = helper.make_graph(
        [node], "rnn", inputs,
        [helper.make_tensor_value_info(outs[i], TensorProto.FLOAT, y_shape if i == 0 else state)
         for i in outputs],
        initializer=[numpy_helper.from_array(v.astype(np.float32), k) for k, v in consts.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString(), feed


@pytest.mark.parametrize("direction", ["forward", "reverse", "bidirectional"])
@pytest.mark.parametrize("linear_before_reset", [0, 1])
def test_gru_matches_onnxruntime(tmp_path, direction, linear_before_reset):
    data, feed = rnn_model("GRU", 5, 3, 7, 6, direction=direction,
                           linear_before_reset=linear_before_reset, outputs=(0, 1))
    convert_and_compare(tmp_path, data, feed)


@pytest.mark.parametrize("direction", ["forward", "reverse", "bidirectional"])
@pytest.mark.parametrize("peepholes", [False, True])
def test_lstm_matches_onnxruntime(tmp_path, direction, peepholes):
    data, feed = rnn_model("LSTM", 4, 2, 5, 3, direction=direction, peepholes=peepholes,
                           outputs=(0, 1, 2))
    convert_and_compare(tmp_path, data, feed)


@pytest.mark.parametrize("direction", ["forward", "reverse", "bidirectional"])
def test_simple_rnn_matches_onnxruntime(tmp_path, direction):
    data, feed = rnn_model("RNN", 5, 3, 4, 6, direction=direction, outputs=(0, 1))
    convert_and_compare(tmp_path, data, feed)


@pytest.mark.parametrize("op", ["RNN", "GRU", "LSTM"])
def test_rnn_initial_state_no_bias_and_last_state_only(tmp_path, op):
    data, feed = rnn_model(op, 6, 1, 3, 9, direction="bidirectional", initial=True, bias=False,
                           outputs=(1,))
    convert_and_compare(tmp_path, data, feed)


@pytest.mark.parametrize("op", ["RNN", "GRU", "LSTM"])
def test_rnn_batch_first_layout(tmp_path, op):
    """layout 1 ([batch, seq, ...]): onnxruntime's CPU kernels refuse it, so the reference is
    the same weights with the input and outputs transposed through layout 0."""
    data, feed = rnn_model(op, 4, 3, 5, 2, layout=1, initial=True, direction="bidirectional",
                           outputs=(0, 1))
    src, dst = tmp_path / "m.onnx", tmp_path / "m.pyem"
    src.write_bytes(data)
    pyengine.convert(str(src), str(dst))
    y, yh = pyengine.load(str(dst), backend="native").predict(feed).values()
    model = onnx.load_from_string(data)
    model.graph.node[0].attribute[[a.name for a in model.graph.node[0].attribute].index("layout")].i = 0
    for vi in list(model.graph.input) + list(model.graph.output):
        dims = vi.type.tensor_type.shape.dim
        if vi.name == "Y":
            d = [x.dim_value for x in dims]
            for i, v in enumerate([d[1], d[2], d[0], d[3]]):
                dims[i].dim_value = v
        else:
            dims[0].dim_value, dims[1].dim_value = dims[1].dim_value, dims[0].dim_value
    ref_feed = {k: np.ascontiguousarray(np.swapaxes(v, 0, 1)) for k, v in feed.items()}
    want_y, want_h = ort.InferenceSession(model.SerializeToString(),
                                          providers=["CPUExecutionProvider"]).run(None, ref_feed)
    assert rel_diff(np.asarray(y), want_y.transpose(2, 0, 1, 3)) <= TOLERANCE
    assert rel_diff(np.asarray(yh), want_h.transpose(1, 0, 2)) <= TOLERANCE


@pytest.mark.parametrize("attrs,named", [
    ({"activations": ["Relu", "Tanh"]}, "activations ['relu', 'tanh']"),
    ({"clip": 2.0}, "clip 2.0"),
])
def test_rnn_unsupported_attribute_is_refused_naming_node_and_value(tmp_path, attrs, named):
    data, _ = rnn_model("GRU", 3, 2, 4, 5, **attrs)
    src = tmp_path / "m.onnx"
    src.write_bytes(data)
    with pytest.raises(pyengine.UnsupportedOpsError) as info:
        pyengine.convert(str(src), str(tmp_path / "m.pyem"))
    assert info.value.ops == [("rnn", f"GRU with {named}")]


def test_lstm_input_forget_is_refused(tmp_path):
    data, _ = rnn_model("LSTM", 3, 2, 4, 5, input_forget=1)
    src = tmp_path / "m.onnx"
    src.write_bytes(data)
    with pytest.raises(pyengine.UnsupportedOpsError, match="input_forget 1"):
        pyengine.convert(str(src), str(tmp_path / "m.pyem"))


# ---------------------------------------------------------------- the other family ops


def one_node_model(nodes: list[Any], inputs: dict[str, list[int]], outputs: dict[str, list[int]],
                   consts: dict[str, np.ndarray], opset: int = 17) -> bytes:
    graph = helper.make_graph(
        nodes, "m",
        [helper.make_tensor_value_info(k, TensorProto.FLOAT, v) for k, v in inputs.items()],
        [helper.make_tensor_value_info(k, TensorProto.FLOAT, v) for k, v in outputs.items()],
        initializer=[numpy_helper.from_array(v, k) for k, v in consts.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model.SerializeToString()


@pytest.mark.parametrize("stride,pads,groups,dilation,out_pad", [
    (2, [0, 0, 0, 0], 1, 1, 0), (3, [1, 2, 0, 1], 1, 1, 1), (1, [1, 1, 1, 1], 2, 2, 0),
    (2, [2, 0, 1, 3], 3, 1, 1),
])
def test_conv_transpose_odd_shapes(tmp_path, stride, pads, groups, dilation, out_pad):
    c, og, k = 6, 5, 3
    w = RNG.standard_normal((c, og, k, k)).astype(np.float32)
    b = RNG.standard_normal(og * groups).astype(np.float32)
    node = helper.make_node("ConvTranspose", ["x", "w", "b"], ["y"], strides=[stride, stride],
                            pads=pads, group=groups, dilations=[dilation, dilation],
                            output_padding=[out_pad, out_pad])
    data = one_node_model([node], {"x": [2, c, 7, 5]}, {"y": [2, og * groups, -1, -1]},
                          {"w": w, "b": b})
    convert_and_compare(tmp_path, data, {"x": RNG.standard_normal((2, c, 7, 5)).astype(np.float32)})


@pytest.mark.parametrize("mode,coord,scales", [
    ("linear", "half_pixel", [1, 1, 2, 2]), ("linear", "align_corners", [1, 1, 3, 2]),
    ("nearest", "asymmetric", [1, 1, 3, 1]), ("linear", "pytorch_half_pixel", [1, 1, 0.5, 2.5]),
    ("nearest", "half_pixel", [1, 2, 2, 2]),  # the channels change: the axis-by-axis path
])
def test_resize_planes_match_onnxruntime(tmp_path, mode, coord, scales):
    node = helper.make_node("Resize", ["x", "", "s"], ["y"], mode=mode,
                            coordinate_transformation_mode=coord)
    data = one_node_model([node], {"x": [2, 3, 7, 9]}, {"y": [2, -1, -1, -1]},
                          {"s": np.array(scales, np.float32)})
    convert_and_compare(tmp_path, data, {"x": RNG.standard_normal((2, 3, 7, 9)).astype(np.float32)})


@pytest.mark.parametrize("a,b", [([2, 3, 5, 4], [2, 3, 4, 7]), ([2, 3, 5, 4], [4, 6]),
                                 ([3, 1, 5, 4], [1, 2, 4, 3]), ([7, 4], [2, 4, 5])])
def test_batched_matmul_matches_onnxruntime(tmp_path, a, b):
    node = helper.make_node("MatMul", ["a", "b"], ["y"])
    out = list(np.broadcast_shapes(tuple(a[:-2]), tuple(b[:-2]))) + [a[-2], b[-1]]
    data = one_node_model([node], {"a": a, "b": b}, {"y": out}, {})
    feed = {"a": RNG.standard_normal(a).astype(np.float32),
            "b": RNG.standard_normal(b).astype(np.float32)}
    convert_and_compare(tmp_path, data, feed)


@pytest.mark.parametrize("form", ["x*(1+erf)*0.5", "(1+erf)*0.5*x", "(x*0.5)*(1+erf)", "x/sqrt2 read twice"])
def test_spelled_out_gelu_is_folded_into_one_op(tmp_path, form):
    """PyTorch's GELU below opset 20, in each operand order, becomes one native Math gelu;
    when an intermediate is read elsewhere, the pattern is left as it is (still correct)."""
    c = {"sqrt2": np.array(np.sqrt(2.0), np.float32), "one": np.array(1.0, np.float32),
         "half": np.array(0.5, np.float32)}
    mk = helper.make_node
    nodes = [mk("Div", ["x", "sqrt2"], ["d"]), mk("Erf", ["d"], ["e"]), mk("Add", ["e", "one"], ["p"])]
    outputs = {"y": [2, 11]}
    if form == "x*(1+erf)*0.5":
        nodes += [mk("Mul", ["x", "p"], ["m"]), mk("Mul", ["m", "half"], ["y"])]
    elif form == "(1+erf)*0.5*x":
        nodes += [mk("Mul", ["p", "half"], ["m"]), mk("Mul", ["m", "x"], ["y"])]
    elif form == "(x*0.5)*(1+erf)":
        nodes += [mk("Mul", ["x", "half"], ["h"]), mk("Mul", ["h", "p"], ["y"])]
    else:
        nodes += [mk("Mul", ["x", "p"], ["m"]), mk("Mul", ["m", "half"], ["y"]),
                  mk("Neg", ["d"], ["y2"])]
        outputs["y2"] = [2, 11]
    data = one_node_model(nodes, {"x": [2, 11]}, outputs, c)
    x = (RNG.standard_normal((2, 11)) * 3).astype(np.float32)
    convert_and_compare(tmp_path, data, {"x": x})
    ops = native_ops(tmp_path / "m.onnx")
    if form == "x/sqrt2 read twice":
        assert "Math" in ops and len(ops) > 3
    else:
        assert ops == ["Math"]


def test_erf_matches_numpy_closely(tmp_path):
    """The vector erf against float64 erf over its whole range (incl. the clamp at |x| >= 4)."""
    from math import erf

    x = np.concatenate([np.linspace(-6, 6, 2001), [0.0, -0.0, 1e-30, 3.9999, 4.0001]]).astype(np.float32)
    data = one_node_model([helper.make_node("Erf", ["x"], ["y"])], {"x": [x.size]}, {"y": [x.size]}, {})
    src, dst = tmp_path / "erf.onnx", tmp_path / "erf.pyem"
    src.write_bytes(data)
    pyengine.convert(str(src), str(dst))
    got = np.asarray(pyengine.load(str(dst), backend="native").predict(x))
    want = np.array([erf(float(v)) for v in x])
    assert np.max(np.abs(got - want)) < 1e-6


@pytest.mark.parametrize("scales", [[1, 1, 2, 3], [1, 1, 1, 2], [1, 2, 1, 1]])
def test_resize_nearest_keeps_infinities(tmp_path, scales):
    """Nearest reads one input per output: an infinite input stays infinite (never inf - inf)."""
    node = helper.make_node("Resize", ["x", "", "s"], ["y"], mode="nearest")
    data = one_node_model([node], {"x": [1, 2, 3, 4]}, {"y": [1, -1, -1, -1]},
                          {"s": np.array(scales, np.float32)})
    x = RNG.standard_normal((1, 2, 3, 4)).astype(np.float32)
    x[0, 1, 2, 3], x[0, 0, 0, 0] = np.inf, -np.inf
    src, dst = tmp_path / "m.onnx", tmp_path / "m.pyem"
    src.write_bytes(data)
    pyengine.convert(str(src), str(dst))
    got = np.asarray(pyengine.load(str(dst), backend="native").predict(x))
    want = ort.InferenceSession(str(src), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("form", ["div", "mul", "no scale", "cross (kv 7 long)", "scores read twice"])
def test_spelled_out_self_attention_is_fused_into_one_op(tmp_path, form):
    """Heads split by Reshape + Transpose, MatMul, scale, Softmax, MatMul, heads merged: one
    native Attention on the 3-D projections (batch free); when an intermediate is read
    elsewhere, the pattern is left as it is (still correct)."""
    seq, kv, heads, size = 5, 7 if form.startswith("cross") else 5, 3, 4
    mk = helper.make_node
    c = {"qs": np.array([0, seq, heads, size], np.int64), "ks": np.array([0, kv, heads, size], np.int64),
         "os": np.array([0, seq, heads * size], np.int64), "scale": np.array(0.5, np.float32)}
    nodes = [mk("Reshape", ["q", "qs"], ["q4"]), mk("Transpose", ["q4"], ["qt"], perm=[0, 2, 1, 3]),
             mk("Reshape", ["k", "ks"], ["k4"]), mk("Transpose", ["k4"], ["kt"], perm=[0, 2, 3, 1]),
             mk("Reshape", ["v", "ks"], ["v4"]), mk("Transpose", ["v4"], ["vt"], perm=[0, 2, 1, 3]),
             mk("MatMul", ["qt", "kt"], ["s"])]
    scaled = "s"
    if form in ("div", "mul", "scores read twice") or form.startswith("cross"):
        nodes.append(mk("Mul" if form == "mul" else "Div", ["s", "scale"], ["s2"]))
        scaled = "s2"
    nodes += [mk("Softmax", [scaled], ["p"], axis=-1), mk("MatMul", ["p", "vt"], ["o"]),
              mk("Transpose", ["o"], ["ot"], perm=[0, 2, 1, 3]), mk("Reshape", ["ot", "os"], ["y"])]
    outputs = {"y": [-1, seq, heads * size]}
    if form == "scores read twice":
        nodes.append(mk("Neg", ["p"], ["y2"]))
        outputs["y2"] = [-1, heads, seq, kv]
    inputs = {"q": [-1, seq, heads * size], "k": [-1, kv, heads * size], "v": [-1, kv, heads * size]}
    graph = helper.make_graph(
        nodes, "m", [helper.make_tensor_value_info(k, TensorProto.FLOAT, v) for k, v in inputs.items()],
        [helper.make_tensor_value_info(k, TensorProto.FLOAT, v) for k, v in outputs.items()],
        initializer=[numpy_helper.from_array(v, k) for k, v in c.items()])
    for vi in list(graph.input) + list(graph.output):
        vi.type.tensor_type.shape.dim[0].dim_param = "N"
    data = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()
    feed = {k: RNG.standard_normal([2] + v[1:]).astype(np.float32) for k, v in inputs.items()}
    convert_and_compare(tmp_path, data, feed)
    ops = native_ops(tmp_path / "m.onnx")
    if form == "scores read twice":
        assert "Attention" not in ops and "Softmax" in ops
    else:
        assert ops == ["Attention"]
