"""Detection post-processing on the host (pyengine.detection): NonMaxSuppression gives ONNX's own
conformance answers and onnxruntime's on random and tied boxes, and a detector exported with
NonMaxSuppression at its end converts up to the op's inputs and, with the helper, answers what
onnxruntime answers on the whole model."""

from __future__ import annotations

import os
import warnings

import numpy as np
import pytest

import pyengine
from pyengine.detection import non_max_suppression
from pyengine.errors import UnsupportedOpsError

onnx = pytest.importorskip("onnx", reason="the ONNX tests need onnx (pip install 'pyengine[onnx]')")
ort = pytest.importorskip("onnxruntime", reason="the comparison needs onnxruntime "
                          "(pip install 'pyengine[onnx]')")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402


def _nms_cases() -> list:
    from onnx.backend.test.case.node import collect_testcases

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return [c for c in collect_testcases(None)
                if c.model.graph.node and c.model.graph.node[0].op_type == "NonMaxSuppression"]


def _run_case(model, inputs: list[np.ndarray]) -> np.ndarray:
    node = model.graph.node[0]
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    named = dict(zip(node.input, inputs))

    def scalar(i: int):
        name = node.input[i] if len(node.input) > i else ""
        return named[name].reshape(-1)[0] if name and named[name].size else None

    limit, iou, score = scalar(2), scalar(3), scalar(4)
    return non_max_suppression(named[node.input[0]], named[node.input[1]],
                               0 if limit is None else int(limit),
                               0.0 if iou is None else float(iou), score,
                               attrs.get("center_point_box", 0))


def test_onnx_conformance_cases() -> None:
    cases = _nms_cases()
    assert len(cases) >= 9, [c.name for c in cases]
    for case in cases:
        for inputs, outputs in case.data_sets:
            got = _run_case(case.model, list(inputs))
            assert got.dtype == np.int64
            np.testing.assert_array_equal(got, outputs[0].reshape(-1, 3), err_msg=case.name)


def _ort_nms(boxes, scores, limit, iou, score, center) -> np.ndarray:
    inputs = [helper.make_tensor_value_info("boxes", TensorProto.FLOAT, list(boxes.shape)),
              helper.make_tensor_value_info("scores", TensorProto.FLOAT, list(scores.shape))]
    inits = [numpy_helper.from_array(np.array([limit], np.int64), "limit"),
             numpy_helper.from_array(np.array([iou], np.float32), "iou")]
    names = ["boxes", "scores", "limit", "iou"]
    if score is not None:
        inits.append(numpy_helper.from_array(np.array([score], np.float32), "score"))
        names.append("score")
    node = helper.make_node("NonMaxSuppression", names, ["selected"], center_point_box=center)
    graph = helper.make_graph([node], "nms", inputs,
                              [helper.make_tensor_value_info("selected", TensorProto.INT64, [None, 3])],
                              inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"boxes": boxes, "scores": scores})[0]


@pytest.mark.parametrize("center", [0, 1])
def test_matches_onnxruntime_on_random_and_tied_boxes(center: int) -> None:
    rng = np.random.default_rng(center)
    for trial in range(12):
        n, classes, batches = int(rng.integers(1, 60)), int(rng.integers(1, 4)), int(rng.integers(1, 3))
        if center == 0:
            corner = rng.uniform(0, 10, (batches, n, 2))
            size = rng.uniform(-2, 4, (batches, n, 2))  # negative: corners given in either order
            boxes = np.concatenate([corner, corner + size], 2).astype(np.float32)
        else:
            boxes = np.concatenate([rng.uniform(0, 10, (batches, n, 2)),
                                    rng.uniform(0, 4, (batches, n, 2))], 2).astype(np.float32)
        # Coarse scores: many exact ties, which the op breaks by the lower box index.
        scores = (rng.integers(0, 8, (batches, classes, n)) / 8).astype(np.float32)
        limit = int(rng.integers(1, n + 2))
        iou = float(rng.choice([0.0, 0.3, 0.5, 0.9]))
        score = None if trial % 3 == 0 else float(rng.choice([0.0, 0.25, 0.5]))
        got = non_max_suppression(boxes, scores, limit, iou, score, center)
        want = _ort_nms(boxes, scores, limit, iou, score, center)
        np.testing.assert_array_equal(got, want, err_msg=f"trial {trial}")


def test_bad_input_names_the_shapes() -> None:
    boxes = np.zeros((1, 5, 4), np.float32)
    with pytest.raises(ValueError, match=r"boxes must have shape \[batches, boxes, 4\], got \[1, 5, 3\]"):
        non_max_suppression(np.zeros((1, 5, 3), np.float32), np.zeros((1, 1, 5), np.float32), 1)
    with pytest.raises(ValueError, match=r"scores must have shape \[batches, classes, boxes\] = "
                       r"\[1, C, 5\] .*got \[1, 2, 4\]"):
        non_max_suppression(boxes, np.zeros((1, 2, 4), np.float32), 1)
    with pytest.raises(ValueError, match="center_point_box must be 0 .* got 2"):
        non_max_suppression(boxes, np.zeros((1, 1, 5), np.float32), 1, center_point_box=2)
    # ONNX's default limit selects nothing.
    assert non_max_suppression(boxes, np.ones((1, 1, 5), np.float32)).shape == (0, 3)


def _detector(path: str) -> None:
    """A tiny single-shot detector: a convolution predicts, per cell of a 4x4 grid, a box
    (sigmoid-squashed corners) and 3 class scores (softmax); NonMaxSuppression ends the graph."""
    rng = np.random.default_rng(7)
    inits = [numpy_helper.from_array(rng.standard_normal((7, 3, 3, 3)).astype(np.float32), "w"),
             numpy_helper.from_array(rng.standard_normal(7).astype(np.float32), "b"),
             numpy_helper.from_array(np.array([1, 7, 16], np.int64), "flat"),
             numpy_helper.from_array(np.array([4, 3], np.int64), "split"),
             numpy_helper.from_array(np.array([10], np.int64), "limit"),
             numpy_helper.from_array(np.array([0.4], np.float32), "iou"),
             numpy_helper.from_array(np.array([0.2], np.float32), "score")]
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["y"], pads=[1, 1, 1, 1], strides=[2, 2]),
        helper.make_node("Reshape", ["y", "flat"], ["cells"]),
        helper.make_node("Split", ["cells", "split"], ["raw_boxes", "raw_scores"], axis=1),
        helper.make_node("Sigmoid", ["raw_boxes"], ["unit_boxes"]),
        helper.make_node("Transpose", ["unit_boxes"], ["boxes"], perm=[0, 2, 1]),
        helper.make_node("Softmax", ["raw_scores"], ["scores"], axis=1),
        helper.make_node("NonMaxSuppression", ["boxes", "scores", "limit", "iou", "score"], ["selected"]),
    ]
    graph = helper.make_graph(nodes, "detector",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("selected", TensorProto.INT64, [None, 3])],
                              inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    onnx.checker.check_model(model)
    onnx.save(model, path)


def test_detector_converts_up_to_nms_and_the_helper_finishes_it(tmp_path) -> None:  # noqa: ANN001
    src = os.path.join(tmp_path, "detector.onnx")
    _detector(src)
    with pytest.raises(UnsupportedOpsError) as err:
        pyengine.convert(src, os.path.join(tmp_path, "whole.pyem"))
    assert "NonMaxSuppression" in str(err.value) and "pyengine.detection.non_max_suppression" in str(err.value)
    with pytest.raises(ValueError, match=r"outputs names \['nope'\], which no node of"):
        pyengine.convert(src, os.path.join(tmp_path, "bad.pyem"), outputs=["nope"])
    dst = pyengine.convert(src, os.path.join(tmp_path, "det.pyem"), outputs=["boxes", "scores"])
    model = pyengine.load(dst, backend="native")
    assert [s.name for s in model.outputs] == ["boxes", "scores"]
    session = ort.InferenceSession(src, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(3)
    total = 0
    for _ in range(5):
        x = rng.standard_normal((1, 3, 8, 8)).astype(np.float32)
        out = model.predict(x)
        selected = non_max_suppression(out["boxes"], out["scores"], 10, 0.4, 0.2)
        want = session.run(None, {"x": x})[0]
        np.testing.assert_array_equal(selected, want)
        total += len(want)
    assert total > 0  # the case selects boxes
