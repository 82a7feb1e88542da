"""Parameters given at run time: ONNX graphs whose axes, sizes, scales, pads, shape, k, repeats or
slice bounds arrive as graph inputs. The native engine reads those values when it plans (the plan
cache keys on them), so one loaded model answers each value correctly, a value out of range is a
clear error naming the node, the input and the value, and models built with onnx.helper match
onnxruntime (or numpy)."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import pyengine

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper  # noqa: E402

RNG = np.random.default_rng(11)
_MODELS = itertools.count()
NP_TO_ONNX = {np.dtype(np.float32): TensorProto.FLOAT, np.dtype(np.int64): TensorProto.INT64,
              np.dtype(np.int32): TensorProto.INT32, np.dtype(np.float64): TensorProto.DOUBLE}


def convert(tmp_path: Path, node: Any, feeds: dict[str, np.ndarray], opset: int = 18,
            fixed: tuple[str, ...] = ("x",)) -> tuple[Any, Any]:
    """``node`` as a one-node ONNX model whose inputs are ``feeds``' names and dtypes (the shapes
    of ``fixed`` as in ``feeds``, the other inputs' lengths free; the outputs' rank and dtype as
    onnx's reference evaluator gives them for ``feeds``, every dimension free), converted
    natively and loaded; also an onnxruntime session."""
    from onnx.reference import ReferenceEvaluator

    ins = [helper.make_tensor_value_info(k, NP_TO_ONNX[v.dtype],
                                         v.shape if k in fixed else [f"{k}_{i}" for i in range(v.ndim)])
           for k, v in feeds.items()]
    opsets = [helper.make_opsetid("", opset)]
    probe = helper.make_model(helper.make_graph([node], "g", ins, [helper.make_empty_tensor_value_info(o)
                                                                  for o in node.output]),
                              opset_imports=opsets, ir_version=8)
    outs = ReferenceEvaluator(probe).run(None, feeds)
    graph = helper.make_graph([node], "g", ins, [
        helper.make_tensor_value_info(o, helper.np_dtype_to_tensor_dtype(a.dtype),
                                      [f"{o}_{i}" for i in range(a.ndim)])
        for o, a in zip(node.output, outs)
    ])
    model = helper.make_model(graph, opset_imports=opsets, ir_version=8)
    n = next(_MODELS)  # several models per test share its folder
    src, dst = tmp_path / f"m{n}.onnx", tmp_path / f"m{n}.pyem"
    onnx.save(model, str(src))
    pyengine.convert(str(src), str(dst))
    return pyengine.load(str(dst), backend="native"), ort.InferenceSession(str(src))


def check(model: Any, sess: Any, feeds: dict[str, np.ndarray]) -> None:
    """The native answer equals onnxruntime's (shapes exactly, values to float32 rounding)."""
    got = model.predict(feeds)
    got = list(got.values()) if isinstance(got, dict) else [got]
    want = sess.run(None, feeds)
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g.shape == w.shape
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)


def x_of(*shape: int) -> np.ndarray:
    return RNG.standard_normal(shape).astype(np.float32)


@pytest.mark.parametrize("op", ["ReduceSum", "ReduceMean", "ReduceMax", "ReduceL2", "ReduceLogSumExp"])
@pytest.mark.parametrize("keepdims", [0, 1])
def test_reduce_axes_input_each_value_gets_its_own_plan(tmp_path, op, keepdims):
    x = x_of(2, 3, 4, 5)
    node = helper.make_node(op, ["x", "axes"], ["y"], keepdims=keepdims)
    model, sess = convert(tmp_path, node, {"x": x, "axes": np.array([1, 2], np.int64)})
    # The same model, other values of the same shape, then the first again: never a stale plan.
    for axes in ([1, 2], [-1, 0], [3, -3], [1, 2]):
        check(model, sess, {"x": x, "axes": np.array(axes, np.int64)})


def test_reduce_axes_input_empty_with_noop(tmp_path):
    x = x_of(3, 4)
    node = helper.make_node("ReduceSum", ["x", "axes"], ["y"], keepdims=1, noop_with_empty_axes=1)
    model, sess = convert(tmp_path, node, {"x": x, "axes": np.zeros(0, np.int64)})
    check(model, sess, {"x": x, "axes": np.zeros(0, np.int64)})


@pytest.mark.parametrize("op", ["ReduceSum", "ReduceMax", "ReduceProd", "ReduceLogSumExp", "ReduceL2"])
def test_reduce_over_an_empty_axis(tmp_path, op):
    """Reducing a zero-size axis gives the reduction's identity (0, -inf, 1...), as ONNX's."""
    x = np.zeros((2, 0, 4), np.float32)
    node = helper.make_node(op, ["x", "axes"], ["y"], keepdims=1)
    model, sess = convert(tmp_path, node, {"x": x, "axes": np.array([1], np.int64)})
    check(model, sess, {"x": x, "axes": np.array([1], np.int64)})


def test_reduce_axes_out_of_range_names_node_input_and_value(tmp_path):
    x = x_of(2, 3)
    node = helper.make_node("ReduceSum", ["x", "axes"], ["y"], name="sum1")
    model, _ = convert(tmp_path, node, {"x": x, "axes": np.array([0], np.int64)})
    with pytest.raises(ValueError, match=r"node 'sum1'.*axis 5 is out of range.*'axes' = \[5\]"):
        model.predict({"x": x, "axes": np.array([5], np.int64)})
    # The model still answers good values after a bad one.
    np.testing.assert_allclose(model.predict({"x": x, "axes": np.array([0], np.int64)}),
                               x.sum(axis=0, keepdims=True), rtol=1e-6)


def test_parameter_inputs_are_listed_and_batching_is_refused(tmp_path):
    x = x_of(2, 3)
    node = helper.make_node("ReduceSum", ["x", "axes"], ["y"], keepdims=1)
    model, _ = convert(tmp_path, node, {"x": x, "axes": np.array([0], np.int64)})
    assert [s.name for s in model.inputs] == ["x", "axes"]
    with pytest.raises(ValueError, match="'axes' sets output shapes by its value"):
        model.batched(4)


def test_output_shape_is_what_the_file_declares(tmp_path):
    x = x_of(2, 3, 4)
    node = helper.make_node("ReduceSum", ["x", "axes"], ["y"], keepdims=0)
    model, _ = convert(tmp_path, node, {"x": x, "axes": np.array([1], np.int64)})
    # The test's ONNX graph declares y with two free dimensions: load cannot know more.
    assert [tuple(s.shape) for s in model.outputs] == [(-1, -1)]
    assert model.predict({"x": x, "axes": np.array([2], np.int64)}).shape == (2, 3)


I64 = np.int64


@pytest.mark.parametrize("op,feeds,values", [
    ("Reshape", {"x": x_of(2, 3, 4), "shape": np.array([4, -1, 2], I64)},
     [{"shape": np.array([0, -1], I64)}, {"shape": np.array([24], I64)}, {"shape": np.array([4, 0, 2], I64)}]),
    ("Unsqueeze", {"x": x_of(3, 4), "axes": np.array([0], I64)},
     [{"axes": np.array([-1, 1], I64)}, {"axes": np.array([2], I64)}]),
    ("Squeeze", {"x": x_of(1, 3, 1, 4), "axes": np.array([0], I64)},
     [{"axes": np.array([-2, 0], I64)}, {"axes": np.array([2], I64)}]),
    ("Expand", {"x": x_of(3, 1), "shape": np.array([2, 1, 4], I64)},
     [{"shape": np.array([3, 5], I64)}, {"shape": np.array([1], I64)}]),
    ("Tile", {"x": x_of(2, 3), "repeats": np.array([2, 1], I64)},
     [{"repeats": np.array([1, 3], I64)}, {"repeats": np.array([3, 2], I64)}]),
])
def test_shape_parameters_at_run_time(tmp_path, op, feeds, values):
    node = helper.make_node(op, list(feeds), ["y"])
    model, sess = convert(tmp_path, node, feeds)
    check(model, sess, feeds)
    for v in values:
        check(model, sess, {**feeds, **v})


def test_slice_bounds_axes_and_steps_at_run_time(tmp_path):
    x = x_of(5, 6, 7)
    feeds = {"x": x, "starts": np.array([0, 1], I64), "ends": np.array([3, 5], I64),
             "axes": np.array([0, 2], I64), "steps": np.array([1, 2], I64)}
    model, sess = convert(tmp_path, helper.make_node("Slice", list(feeds), ["y"]), feeds)
    for starts, ends, axes, steps in [
        ([0, 1], [3, 5], [0, 2], [1, 2]),
        ([-1, 2**62], [-2**62, 0], [1, -1], [-2, -3]),  # backwards, saturated bounds
        ([-10, 0], [20, 7], [0, 1], [1, 1]),  # bounds past the axis are clamped
        ([4, -3], [0, -1], [2, 0], [-1, 1]),
        ([0, 6], [5, 0], [0, 2], [2**63 - 1, -(2**63)]),  # extreme steps take one element
    ]:
        check(model, sess, {"x": x, "starts": np.array(starts, I64), "ends": np.array(ends, I64),
                            "axes": np.array(axes, I64), "steps": np.array(steps, I64)})


def test_split_sizes_at_run_time(tmp_path):
    x = x_of(2, 9)
    feeds = {"x": x, "split": np.array([2, 3, 4], I64)}
    node = helper.make_node("Split", ["x", "split"], ["a", "b", "c"], axis=1)
    model, sess = convert(tmp_path, node, feeds)
    for split in ([2, 3, 4], [1, 1, 7], [4, 4, 1]):
        check(model, sess, {"x": x, "split": np.array(split, I64)})
    with pytest.raises(ValueError, match=r"sizes \[4, 4, 4\] add up to 12, not the axis' 9.*'split' = \[4, 4, 4\]"):
        model.predict({"x": x, "split": np.array([4, 4, 4], I64)})


def test_pad_pads_axes_and_value_at_run_time(tmp_path):
    x = x_of(2, 3, 4)
    feeds = {"x": x, "pads": np.array([1, 0, 2, 1], I64), "value": np.array(1.5, np.float32),
             "axes": np.array([0, -1], I64)}
    model, sess = convert(tmp_path, helper.make_node("Pad", list(feeds), ["y"]), feeds)
    for pads, axes, value in [([1, 0, 2, 1], [0, -1], 1.5), ([0, -1, 3, -2], [1, 2], -2.0)]:
        check(model, sess, {"x": x, "pads": np.array(pads, I64), "axes": np.array(axes, I64),
                            "value": np.array(value, np.float32)})
    with pytest.raises(ValueError, match=r"Pad has 3 pads for 2 axes.*'pads' = \[1, 2, 3\]"):
        model.predict({**feeds, "pads": np.array([1, 2, 3], I64)})


@pytest.mark.parametrize("mode", ["constant", "reflect", "edge", "wrap"])
@pytest.mark.parametrize("dtype", [np.float32, np.int32])
def test_pad_modes_and_dtypes(tmp_path, mode, dtype):
    x = (x_of(3, 4) * 10).astype(dtype)
    feeds = {"x": x, "pads": np.array([1, 2, 2, 1], I64)}
    model, sess = convert(tmp_path, helper.make_node("Pad", ["x", "pads"], ["y"], mode=mode), feeds,
                          opset=19)
    for pads in ([1, 2, 2, 1], [0, 3, 2, 0]):
        check(model, sess, {"x": x, "pads": np.array(pads, I64)})


@pytest.mark.parametrize("mode", ["nearest", "linear"])
def test_resize_sizes_and_scales_at_run_time(tmp_path, mode):
    x = x_of(1, 2, 4, 5)
    feeds = {"x": x, "sizes": np.array([7, 3], I64)}
    node = helper.make_node("Resize", ["x", "", "", "sizes"], ["y"], mode=mode, axes=[2, 3])
    model, sess = convert(tmp_path, node, feeds, fixed=("x", "sizes"))
    for sizes in ([7, 3], [8, 10], [2, 2]):
        check(model, sess, {"x": x, "sizes": np.array(sizes, I64)})
    feeds = {"x": x, "scales": np.array([1, 1, 2, 0.5], np.float32)}
    node = helper.make_node("Resize", ["x", "", "scales"], ["y"], mode=mode)
    model, sess = convert(tmp_path, node, feeds, fixed=("x", "scales"))
    for scales in ([1, 1, 2, 0.5], [1, 1, 1.5, 3]):
        check(model, sess, {"x": x, "scales": np.array(scales, np.float32)})
    with pytest.raises(ValueError, match=r"scales \(input 1\) entry -2 is not a positive scale"):
        model.predict({"x": x, "scales": np.array([1, 1, -2, 1], np.float32)})


@pytest.mark.parametrize("policy", ["not_larger", "not_smaller"])
def test_resize_sizes_keep_aspect_ratio(tmp_path, policy):
    x = x_of(1, 1, 4, 6)
    feeds = {"x": x, "sizes": np.array([7, 7], I64)}
    node = helper.make_node("Resize", ["x", "", "", "sizes"], ["y"], mode="linear", axes=[2, 3],
                            keep_aspect_ratio_policy=policy)
    model, sess = convert(tmp_path, node, feeds, fixed=("x", "sizes"))
    for sizes in ([7, 7], [2, 9], [13, 5]):
        check(model, sess, {"x": x, "sizes": np.array(sizes, I64)})


@pytest.mark.parametrize("dtype,largest", [(np.float32, 1), (np.int64, 0), (np.float64, 1)])
def test_top_k_at_run_time(tmp_path, dtype, largest):
    x = np.round(x_of(3, 6) * 2).astype(dtype)  # repeated values: ties keep the lower index
    feeds = {"x": x, "k": np.array([2], I64)}
    node = helper.make_node("TopK", ["x", "k"], ["v", "i"], axis=1, largest=largest)
    model, _ = convert(tmp_path, node, feeds)
    for k in (2, 6, 1):
        got = model.predict({"x": x, "k": np.array([k], I64)})
        order = np.argsort(-x if largest else x, axis=1, kind="stable")[:, :k]
        np.testing.assert_array_equal(got["i"], order)
        np.testing.assert_array_equal(got["v"], np.take_along_axis(x, order, axis=1))
    with pytest.raises(ValueError, match=r"TopK k must be one number in 0 .. 6.*'k' = \[7\]"):
        model.predict({"x": x, "k": np.array([7], I64)})


def test_constant_of_shape_and_range_at_run_time(tmp_path):
    node = helper.make_node("ConstantOfShape", ["shape"], ["y"],
                            value=helper.make_tensor("v", TensorProto.INT64, [1], [7]))
    feeds = {"shape": np.array([2, 3], I64)}
    model, sess = convert(tmp_path, node, feeds)
    for shape in ([2, 3], [4], [1, 2, 3]):
        check(model, sess, {"shape": np.array(shape, I64)})
    feeds = {"start": np.array(1.0, np.float32), "limit": np.array(4.0, np.float32),
             "delta": np.array(0.75, np.float32)}
    model, sess = convert(tmp_path, helper.make_node("Range", list(feeds), ["y"]), feeds)
    check(model, sess, feeds)
    check(model, sess, {**feeds, "delta": np.array(-0.5, np.float32), "limit": np.array(-2.0, np.float32)})
    with pytest.raises(ValueError, match="nonzero delta"):
        model.predict({**feeds, "delta": np.array(0.0, np.float32)})


def test_parameter_computed_from_a_graph_input(tmp_path):
    """A parameter computed by nodes from a graph input (the engine runs them when planning):
    Reshape to (n + 1)-fold rows, where the shape is Concat(Add(n, 1), [-1])."""
    x = x_of(6, 4)
    nodes = [
        helper.make_node("Constant", [], ["one"], value=helper.make_tensor("o", TensorProto.INT64, [1], [1])),
        helper.make_node("Constant", [], ["rest"], value=helper.make_tensor("r", TensorProto.INT64, [1], [-1])),
        helper.make_node("Add", ["n", "one"], ["rows"]),
        helper.make_node("Concat", ["rows", "rest"], ["shape"], axis=0),
        helper.make_node("Reshape", ["x", "shape"], ["y"]),
    ]
    graph = helper.make_graph(nodes, "g", [
        helper.make_tensor_value_info("x", TensorProto.FLOAT, [6, 4]),
        helper.make_tensor_value_info("n", TensorProto.INT64, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["a", "b"])])
    src, dst = tmp_path / "m.onnx", tmp_path / "m.pyem"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=8), str(src))
    pyengine.convert(str(src), str(dst))
    model = pyengine.load(str(dst), backend="native")
    for n in (0, 1, 2, 5):
        got = model.predict({"x": x, "n": np.array([n], I64)})
        np.testing.assert_array_equal(got, x.reshape(n + 1, -1))
    with pytest.raises(ValueError, match=r"cannot reshape \[6, 4\]"):
        model.predict({"x": x, "n": np.array([4], I64)})


def test_shape_of_a_value_onnx_inference_leaves_open(tmp_path):
    """Shape of a Reshape whose target comes at run time: onnx's inference cannot size it, so the
    native Shape op does, and ConstantOfShape of it is planned from the computed value."""
    x = x_of(6, 4)
    nodes = [
        helper.make_node("Reshape", ["x", "target"], ["y"]),
        helper.make_node("Shape", ["y"], ["s"]),
        helper.make_node("ConstantOfShape", ["s"], ["z"],
                         value=helper.make_tensor("v", TensorProto.FLOAT, [1], [2.5])),
    ]
    graph = helper.make_graph(nodes, "g", [
        helper.make_tensor_value_info("x", TensorProto.FLOAT, [6, 4]),
        helper.make_tensor_value_info("target", TensorProto.INT64, [2])],
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, ["a", "b"])])
    src, dst = tmp_path / "m.onnx", tmp_path / "m.pyem"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=8), str(src))
    pyengine.convert(str(src), str(dst))
    model = pyengine.load(str(dst), backend="native")
    for target in ([3, 8], [-1, 2], [24, 1]):
        got = model.predict({"x": x, "target": np.array(target, I64)})
        np.testing.assert_array_equal(got, np.full(x.reshape(target).shape, 2.5, np.float32))


def test_unsqueeze_of_a_value_onnx_inference_leaves_open(tmp_path):
    """Unsqueeze with constant axes of a value whose sizes onnx's inference cannot give: the
    native Unsqueeze sizes it when planning."""
    x = x_of(6, 4)
    nodes = [
        helper.make_node("Reshape", ["x", "target"], ["y"]),
        helper.make_node("Unsqueeze", ["y", "axes"], ["z"]),
    ]
    graph = helper.make_graph(nodes, "g", [
        helper.make_tensor_value_info("x", TensorProto.FLOAT, [6, 4]),
        helper.make_tensor_value_info("target", TensorProto.INT64, [2])],
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, ["a", "b", "c", "d"])],
        [helper.make_tensor("axes", TensorProto.INT64, [2], [0, -2])])
    src, dst = tmp_path / "m.onnx", tmp_path / "m.pyem"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=8), str(src))
    pyengine.convert(str(src), str(dst))
    model = pyengine.load(str(dst), backend="native")
    for target in ([3, 8], [24, 1]):
        got = model.predict({"x": x, "target": np.array(target, I64)})
        np.testing.assert_array_equal(got, x.reshape(1, target[0], 1, target[1]))
