"""The generic ops of csrc/graph/ops_math.cpp on odd shapes against numpy: batch-broadcast
MatMul, reductions over negative and repeated-rank axes, LayerNorm over trailing dims with
broadcast scale, LogSoftmax on a middle axis, broadcasting binaries, and bad attributes."""

from __future__ import annotations

import numpy as np
import pytest
from oprefs import run_op

import pyengine

RNG = np.random.default_rng(7)


def r(*shape: int) -> np.ndarray:
    return RNG.standard_normal(shape).astype(np.float32)


@pytest.mark.parametrize("a_shape,b_shape", [
    ((2, 1, 3, 5), (4, 5, 2)), ((1, 3, 5), (6, 1, 5, 7)), ((3, 1, 1), (3, 1, 4)), ((2, 7, 1), (1, 9)),
])
def test_batch_matmul_broadcasts_batch_dims(a_shape, b_shape):
    a, b = r(*a_shape), r(*b_shape)
    y = run_op("BatchMatMul", [a], {"b": b}, free_batch=False)
    np.testing.assert_allclose(y, np.matmul(a.astype(np.float64), b), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind,ref", [
    ("sum", np.sum), ("mean", np.mean), ("max", np.max), ("min", np.min), ("prod", np.prod),
    ("l2", lambda x, axis, keepdims: np.sqrt(np.sum(x * x, axis=axis, keepdims=keepdims))),
    ("log_sum_exp", lambda x, axis, keepdims: np.log(np.sum(np.exp(x), axis=axis, keepdims=keepdims))),
])
@pytest.mark.parametrize("axes,keepdims", [([-1], True), ([0, -2], False), ([], False), ([1, 3], True)])
def test_reduce(kind, ref, axes, keepdims):
    x = r(2, 3, 1, 5)
    y = run_op("Reduce", [x], free_batch=False, kind=kind, axes=axes, keepdims=keepdims)
    want = ref(x.astype(np.float64), axis=tuple(axes) if axes else None, keepdims=keepdims)
    np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-6)


def test_layer_norm_trailing_dims_broadcast_scale():
    x, scale, bias = r(3, 4, 5), r(5), r(4, 1)
    y = run_op("LayerNorm", [x], {"s": scale, "b": bias}, axis=-2, epsilon=1e-3)
    xd = x.astype(np.float64)
    mu, var = xd.mean(axis=(1, 2), keepdims=True), xd.var(axis=(1, 2), keepdims=True)
    np.testing.assert_allclose(y, (xd - mu) / np.sqrt(var + 1e-3) * scale + bias, rtol=1e-4, atol=1e-5)


def test_log_softmax_middle_axis_large_values():
    x = r(2, 6, 3) * 1e3
    y = run_op("LogSoftmax", [x], axis=1)
    xd = x.astype(np.float64)
    m = xd.max(axis=1, keepdims=True)
    np.testing.assert_allclose(y, xd - m - np.log(np.exp(xd - m).sum(axis=1, keepdims=True)),
                               rtol=1e-5, atol=1e-3)


@pytest.mark.parametrize("fn,ref", [("pow", np.power), ("min", np.minimum), ("max", np.maximum),
                                    ("prelu", lambda a, b: np.where(a < 0, a * b, a))])
def test_binary_math_broadcast(fn, ref):
    a, b = np.abs(r(4, 1, 3)) + 0.1, r(5, 1)
    y = run_op("BinaryMath", [a], {"b": b}, free_batch=False, fn=fn)
    np.testing.assert_allclose(y, ref(a.astype(np.float64), b), rtol=1e-5, atol=1e-6)


def test_math_fn_unknown_is_refused_naming_it():
    with pytest.raises(pyengine.ModelFormatError, match="tanhh"):
        run_op("Math", [r(2, 3)], fn="tanhh")


def _with_constant_inputs(case, keep: int = 1):
    """ONNX node case ``case`` with every input after the first ``keep`` made an initializer
    holding its data set's value (Resize's scales and sizes are run-time inputs there)."""
    import onnx
    from onnx import numpy_helper

    model = onnx.ModelProto()
    model.CopyFrom(case.model)
    inputs, outputs = case.data_sets[0]
    graph_inputs = list(model.graph.input)
    del model.graph.input[keep:]
    for vi, value in zip(graph_inputs[keep:], inputs[keep:]):
        model.graph.initializer.append(numpy_helper.from_array(np.asarray(value), vi.name))
    return model, inputs[:keep], outputs


def _convert_and_compare(cases, tmp_path):
    """Converts each ONNX node case (inputs after the first made constants) and checks it
    against ONNX's expected output; returns (passed names, refused name -> ops named)."""
    import onnx

    from bench.conformance import matches

    passed, refused = [], {}
    for case in cases:
        model, inputs, expected = _with_constant_inputs(case)
        src, dst = tmp_path / f"{case.name}.onnx", tmp_path / f"{case.name}.pyem"
        onnx.save(model, str(src))
        try:
            pyengine.convert(str(src), str(dst))
        except pyengine.UnsupportedOpsError as exc:
            refused[case.name] = [op for _, op in exc.ops]
            continue
        got = pyengine.load(str(dst)).predict(inputs[0])
        assert matches(got, expected[0], 1e-4, 1e-5), case.name
        passed.append(case.name)
    return passed, refused


def test_resize_matches_onnx_cases_with_constant_scales(tmp_path):
    """Every ONNX Resize node case, with its scales / sizes / roi made constants: the ones the
    kernel covers match ONNX's expected outputs; the others are refused naming the value."""
    pytest.importorskip("onnx")
    from bench.conformance import tensor_cases

    cases = [c for c in tensor_cases() if c.name.startswith("test_resize_")]
    assert len(cases) > 30
    passed, refused = _convert_and_compare(cases, tmp_path)
    assert len(passed) >= 16, (passed, refused)
    # Refusals name what the kernel lacks.
    assert all(ops[0].startswith("Resize with ") for ops in refused.values()), refused
    for name in ("test_resize_upsample_scales_linear_align_corners",
                 "test_resize_upsample_scales_nearest_axes_3_2",
                 "test_resize_downsample_scales_linear_half_pixel_symmetric"):
        assert name in passed, name
    assert refused["test_resize_upsample_scales_cubic"] == ["Resize with mode 'cubic'"]


def test_conv_transpose_matches_onnx_cases_with_constant_weights(tmp_path):
    """Every ONNX ConvTranspose node case with its weights (and bias) made constants: 1-D and
    2-D ones (strides, pads, dilations, groups, output_padding, output_shape, SAME_UPPER) match
    ONNX's outputs; 3-D and an output_shape beyond the natural size are refused naming the value.
    (bench/conformance.py runs the same cases with run-time weights.)"""
    pytest.importorskip("onnx")
    from bench.conformance import tensor_cases

    cases = [c for c in tensor_cases() if c.name.startswith("test_convtranspose")]
    passed, refused = _convert_and_compare(cases, tmp_path)
    assert refused == {
        "test_convtranspose_3d": ["ConvTranspose 3-D"],
        "test_convtranspose_output_shape": [
            "ConvTranspose with output_shape [10, 8] beyond its natural size"],
    }
    assert len(passed) == len(cases) - 2 >= 9, passed
