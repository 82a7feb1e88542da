"""ONNX ops the importer builds from native ones (Swish, SwiGLU, Shrink, Hardmax,
MeanVarianceNormalization, GroupNormalization, InstanceNormalization, PRelu with a run-time
slope, Gemm with transA, Size, EyeLike, GatherND, Einsum): real one-node graphs, converted and
compared with onnx's reference implementation, with a free batch where the op allows it; and
the attribute values they do not take, refused naming the node and the value."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import pyengine

pytestmark = pytest.mark.frameworks
onnx = pytest.importorskip(
    "onnx", reason="the onnx extra (pip install 'pyengine[onnx]') is not installed"
)
from onnx import TensorProto, helper  # noqa: E402
from onnx.reference import ReferenceEvaluator  # noqa: E402

RNG = np.random.default_rng(5)


def r(*shape: int) -> np.ndarray:
    return RNG.standard_normal(shape).astype(np.float32)


def _graph(op: str, feeds: dict[str, np.ndarray], opset: int, consts: dict[str, np.ndarray] | None = None,
           free_batch: bool = False, **attrs: Any) -> Any:
    """One ``op`` node over ``feeds`` (graph inputs) and ``consts`` (initializers)."""
    consts = consts or {}
    names = list(feeds) + list(consts)
    node = helper.make_node(op, names, ["y"], name="the_node", **attrs)

    def info(name: str, a: np.ndarray) -> Any:
        shape: list[Any] = list(a.shape)
        if free_batch:
            shape[0] = "batch"
        return helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(a.dtype), shape)

    def build(out: Any) -> Any:
        graph = helper.make_graph([node], "g", [info(n, a) for n, a in feeds.items()], [out],
                                  [onnx.numpy_helper.from_array(a, n) for n, a in consts.items()])
        return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])

    y = ReferenceEvaluator(build(helper.make_tensor_value_info("y", 0, None))).run(None, feeds)[0]
    out_shape: list[Any] = list(np.shape(y))
    if free_batch:
        out_shape[0] = "batch"
    return build(helper.make_tensor_value_info("y", helper.np_dtype_to_tensor_dtype(y.dtype), out_shape)), y


def _check(tmp_path, op: str, feeds: dict[str, np.ndarray], opset: int, **kw: Any) -> None:  # type: ignore[no-untyped-def]
    model, want = _graph(op, feeds, opset, **kw)
    src, dst = str(tmp_path / "m.onnx"), str(tmp_path / "m.pyem")
    onnx.save(model, src)
    pyengine.convert(src, dst)
    got = pyengine.load(dst).predict(feeds)
    assert got.dtype == want.dtype and got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("op,feeds,opset,attrs", [
    ("Swish", {"x": r(3, 5)}, 24, {"alpha": 0.5}),
    ("Swish", {"x": r(3, 5)}, 24, {}),
    ("SwiGLU", {"a": r(3, 6), "b": r(3, 6)}, 28, {"alpha": 1.7}),
    ("Shrink", {"x": r(4, 7) * 2}, 9, {"lambd": 0.7, "bias": 0.2}),
    ("PRelu", {"x": r(2, 3, 4), "slope": r(3, 1)}, 16, {}),
    ("MeanVarianceNormalization", {"x": r(2, 3, 4, 5)}, 13, {"axes": [1, 3]}),
    ("Hardmax", {"x": r(2, 5, 3)}, 13, {"axis": 1}),
    ("LpPool", {"x": r(2, 3, 9, 8)}, 18, {"kernel_shape": [3, 2], "p": 3, "pads": [1, 0, 2, 1], "strides": [2, 1]}),
    ("LpPool", {"x": r(2, 3, 11)}, 18, {"kernel_shape": [4], "auto_pad": "SAME_UPPER"}),
])
def test_elementwise_and_normalising_ops_with_a_free_batch(tmp_path, op, feeds, opset, attrs) -> None:  # type: ignore[no-untyped-def]
    _check(tmp_path, op, feeds, opset, free_batch=True, **attrs)


def test_hardmax_before_opset_13_is_over_the_flattened_trailing_dims(tmp_path) -> None:  # type: ignore[no-untyped-def]
    # onnx's reference takes the opset 13 form for every opset: onnxruntime is the reference here.
    ort = pytest.importorskip("onnxruntime", reason="the onnx extra is not installed")
    x = r(4, 5, 3)
    model, _ = _graph("Hardmax", {"x": x}, 11, free_batch=True, axis=1)
    src, dst = str(tmp_path / "h.onnx"), str(tmp_path / "h.pyem")
    onnx.save(model, src)
    pyengine.convert(src, dst)
    want = ort.InferenceSession(src, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    assert want.reshape(4, -1).sum(axis=1).tolist() == [1.0] * 4  # one 1 per flattened row
    np.testing.assert_array_equal(pyengine.load(dst).predict(x), want)


def test_hardmax_ties_pick_the_first(tmp_path) -> None:  # type: ignore[no-untyped-def]
    x = np.array([[1, 3, 3, 0], [2, 2, 2, 2]], np.float32)
    _check(tmp_path, "Hardmax", {"x": x}, 13)


@pytest.mark.parametrize("op,opset,groups,channels", [
    ("GroupNormalization", 21, 2, 6), ("GroupNormalization", 21, 6, 6), ("InstanceNormalization", 22, 0, 4),
])
def test_group_and_instance_norm(tmp_path, op, opset, groups, channels) -> None:  # type: ignore[no-untyped-def]
    consts = {"scale": r(channels), "bias": r(channels)}
    attrs = {"num_groups": groups, "epsilon": 1e-3} if groups else {}
    _check(tmp_path, op, {"x": r(2, channels, 3, 5)}, opset, consts=consts, free_batch=True, **attrs)


def test_gemm_transposed_a_and_b(tmp_path) -> None:  # type: ignore[no-untyped-def]
    _check(tmp_path, "Gemm", {"a": r(4, 3), "b": r(5, 4), "c": r(1, 5)}, 13, transA=1, transB=1,
           alpha=0.5, beta=2.0)


def test_size_is_a_scalar_and_eye_like_a_constant(tmp_path) -> None:  # type: ignore[no-untyped-def]
    _check(tmp_path, "Size", {"x": r(2, 3, 4)}, 21)
    _check(tmp_path, "EyeLike", {"x": np.zeros((3, 5), np.int32)}, 22, k=-1, dtype=TensorProto.FLOAT)


def test_group_norm_stash_type_other_than_float_is_refused_naming_the_value(tmp_path) -> None:  # type: ignore[no-untyped-def]
    model, _ = _graph("GroupNormalization", {"x": r(2, 4, 3)}, 21,
                      consts={"scale": r(4), "bias": r(4)}, num_groups=2)
    model.graph.node[0].attribute.append(helper.make_attribute("stash_type", 11))
    src = str(tmp_path / "g.onnx")
    onnx.save(model, src)
    with pytest.raises(pyengine.UnsupportedOpsError) as info:
        pyengine.convert(src, str(tmp_path / "g.pyem"))
    assert info.value.ops == [("the_node", "GroupNormalization with stash_type 11")]


@pytest.mark.parametrize("data,indices,batch_dims", [
    (r(3, 4, 5), np.array([[0, -1], [2, 1], [-3, 0]], np.int64), 0),
    (r(2, 3, 4, 5), np.array([[[2, -1]], [[0, 3]]], np.int64), 1),
    (r(4, 6), np.array([3], np.int64), 0),  # one full index: a row
])
def test_gather_nd_with_negative_indices_and_batch_dims(tmp_path, data, indices, batch_dims) -> None:  # type: ignore[no-untyped-def]
    _check(tmp_path, "GatherND", {"data": data, "indices": indices}, 13, batch_dims=batch_dims)


@pytest.mark.parametrize("equation,shapes", [
    ("bhqd,bhkd->bhqk", [(2, 3, 4, 5), (2, 3, 6, 5)]),  # attention scores
    ("ij,jk", [(3, 4), (4, 5)]),  # implicit output
    ("abc,cd->abd", [(2, 3, 4), (4, 5)]),
    ("ij,jk,kl->li", [(2, 3), (3, 4), (4, 5)]),
    ("...ij,...j->...i", [(2, 3, 4), (2, 4)]),
    ("ijk->ki", [(2, 3, 4)]),  # a sum and a transpose
    ("ij,kj->", [(2, 3), (4, 3)]),  # everything summed
])
def test_einsum_common_forms(tmp_path, equation, shapes) -> None:  # type: ignore[no-untyped-def]
    feeds = {f"x{i}": r(*s) for i, s in enumerate(shapes)}
    model, want = _graph("Einsum", feeds, 12, equation=equation)
    src, dst = str(tmp_path / "e.onnx"), str(tmp_path / "e.pyem")
    onnx.save(model, src)
    pyengine.convert(src, dst)
    got = pyengine.load(dst).predict(feeds)
    got = got if not isinstance(got, dict) else got["y"]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_einsum_diagonal_is_refused_naming_the_equation(tmp_path) -> None:  # type: ignore[no-untyped-def]
    model, _ = _graph("Einsum", {"x": r(3, 3)}, 12, equation="ii->i")
    src = str(tmp_path / "d.onnx")
    onnx.save(model, src)
    with pytest.raises(pyengine.UnsupportedOpsError) as info:
        pyengine.convert(src, str(tmp_path / "d.pyem"))
    assert info.value.ops == [("the_node", "Einsum 'ii->i' with an index repeated in one operand (a diagonal)")]


@pytest.mark.parametrize("x,to", [
    (np.array([1.5, -0.0, np.nan, np.inf], np.float32), TensorProto.INT32),
    (np.array([[-1, 7], [3, 128]], np.int64), TensorProto.DOUBLE),
    (np.array([True, False, True]), TensorProto.UINT8),
])
def test_bitcast_reads_the_same_bytes(tmp_path, x, to) -> None:  # type: ignore[no-untyped-def]
    model, want = _graph("BitCast", {"x": x}, 26, to=to)
    src, dst = str(tmp_path / "b.onnx"), str(tmp_path / "b.pyem")
    onnx.save(model, src)
    pyengine.convert(src, dst)
    got = pyengine.load(dst).predict(x)
    assert got.dtype == want.dtype and got.tobytes() == want.tobytes()


@pytest.mark.parametrize("rank,interleaved,dim,positions", [
    (4, 0, 0, True), (3, 1, 6, True), (4, 1, 0, False), (3, 0, 4, False),
])
def test_rotary_embedding(tmp_path, rank, interleaved, dim, positions) -> None:  # type: ignore[no-untyped-def]
    b, heads, seq, size = 2, 3, 5, 10
    half = (dim or size) // 2
    x = r(b, heads, seq, size) if rank == 4 else r(b, seq, heads * size)
    feeds = {"x": x, "cos": r(7, half) if positions else r(b, seq, half)}
    feeds["sin"] = r(*feeds["cos"].shape)
    if positions:
        feeds["pos"] = RNG.integers(0, 7, (b, seq)).astype(np.int64)
    attrs: dict[str, Any] = {"interleaved": interleaved, "rotary_embedding_dim": dim}
    if rank == 3:
        attrs["num_heads"] = heads
    _check(tmp_path, "RotaryEmbedding", feeds, 23, **attrs)


@pytest.mark.parametrize("mode", ["linear", "nearest"])
@pytest.mark.parametrize("padding", ["zeros", "border", "reflection"])
@pytest.mark.parametrize("align", [0, 1])
@pytest.mark.parametrize("spatial", [(4, 5), (3, 2, 4)])
def test_grid_sample_points_inside_and_outside(tmp_path, mode, padding, align, spatial) -> None:  # type: ignore[no-untyped-def]
    out = (3, 2) if len(spatial) == 2 else (2, 2, 2)
    grid = RNG.uniform(-1.4, 1.4, (2, *out, len(spatial))).astype(np.float32)
    grid[0, 0, 0] = 0.25  # a nearest half-way point (rounded to even)
    _check(tmp_path, "GridSample", {"x": r(2, 3, *spatial), "grid": grid}, 22, mode=mode,
           padding_mode=padding, align_corners=align)


def test_grid_sample_cubic_is_refused_naming_the_value(tmp_path) -> None:  # type: ignore[no-untyped-def]
    model, _ = _graph("GridSample", {"x": r(1, 1, 3, 3), "grid": r(1, 2, 2, 2)}, 22, mode="cubic")
    src = str(tmp_path / "c.onnx")
    onnx.save(model, src)
    with pytest.raises(pyengine.UnsupportedOpsError) as info:
        pyengine.convert(src, str(tmp_path / "c.pyem"))
    assert info.value.ops == [("the_node", "GridSample with mode 'cubic'")]


@pytest.mark.parametrize("reduction", ["none", "add", "mul", "max", "min"])
def test_scatter_elements_and_nd_with_repeated_negative_indices(tmp_path, reduction) -> None:  # type: ignore[no-untyped-def]
    elements = {"data": r(3, 4), "indices": np.array([[1, -1, 1], [0, 3, 1]], np.int64), "updates": r(2, 3)}
    _check(tmp_path, "ScatterElements", elements, 18, axis=1, reduction=reduction)
    nd = {"data": np.arange(24, dtype=np.int64).reshape(2, 3, 4),
          "indices": np.array([[1, -1], [0, 2], [1, 2]], np.int64),
          "updates": np.arange(12, dtype=np.int64).reshape(3, 4) + 5}
    _check(tmp_path, "ScatterND", nd, 18, reduction=reduction)


def test_scatter_index_out_of_range_is_an_error_naming_it(tmp_path) -> None:  # type: ignore[no-untyped-def]
    feeds = {"data": r(2, 3), "indices": np.array([[0, 1]], np.int64), "updates": r(1, 2)}
    model, _ = _graph("ScatterElements", feeds, 18, axis=1)
    src, dst = str(tmp_path / "s.onnx"), str(tmp_path / "s.pyem")
    onnx.save(model, src)
    pyengine.convert(src, dst)
    feeds["indices"] = np.array([[0, 3]], np.int64)
    with pytest.raises(ValueError, match="ScatterElements index 3 is out of range for a dimension of 3"):
        pyengine.load(dst).predict(feeds)


@pytest.mark.parametrize("op,x", [
    ("CumSum", r(3, 4, 5)), ("CumSum", np.arange(-6, 18, dtype=np.int64).reshape(2, 3, 4)),
    ("CumProd", RNG.uniform(0.5, 1.5, (3, 4, 5)))])
@pytest.mark.parametrize("axis,exclusive,reverse", [(1, 0, 0), (-1, 1, 0), (0, 0, 1), (2, 1, 1)])
def test_cumulative_along_a_run_time_axis(tmp_path, op, x, axis, exclusive, reverse) -> None:  # type: ignore[no-untyped-def]
    feeds = {"x": x, "axis": np.array(axis, np.int32)}
    _check(tmp_path, op, feeds, 26 if op == "CumProd" else 14, exclusive=exclusive, reverse=reverse)


@pytest.mark.parametrize("x_shape,w_shape,attrs", [
    ((2, 4, 9, 8), (6, 4, 3, 3), {"pads": [1, 0, 2, 1], "strides": [2, 1]}),
    ((1, 6, 7, 7), (6, 2, 3, 3), {"group": 3, "auto_pad": "SAME_UPPER"}),
    ((2, 3, 11), (5, 3, 4), {"dilations": [2], "pads": [1, 2]}),
])
def test_conv_with_run_time_weights(tmp_path, x_shape, w_shape, attrs) -> None:  # type: ignore[no-untyped-def]
    """Conv whose weights are a graph input (a hypernetwork, ONNX's own Conv cases): it runs
    unblocked on the weights given at each call."""
    rng = np.random.default_rng(len(x_shape) + len(attrs))
    feeds = {"x": rng.standard_normal(x_shape).astype(np.float32),
             "w": rng.standard_normal(w_shape).astype(np.float32)}
    _check(tmp_path, "Conv", feeds, 13, **attrs)
