"""ONNX Attention (opsets 23-25) converted to the native Attention op and compared with onnx's
reference implementation: 3-D and 4-D inputs, grouped heads, masks (bool and additive, broadcast,
shorter than the keys), causal with a past cache or padded keys, windows, softcap, the four
qk_matmul_output stages, query lengths over one row block; and the values the kernel does not
compute, refused naming the node and the value."""

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

RNG = np.random.default_rng(11)
_TYPES = {np.dtype("float32"): TensorProto.FLOAT, np.dtype("bool"): TensorProto.BOOL,
          np.dtype("int64"): TensorProto.INT64}
_INPUTS = ["Q", "K", "V", "attn_mask", "past_key", "past_value", "nonpad_kv_seqlen"]


def _model(feeds: dict[str, np.ndarray], outputs: list[str], opset: int, **attrs: Any) -> Any:
    """One Attention node reading ``feeds`` (by ONNX input name) and writing ``outputs``, with
    the output shapes onnx's reference implementation gives."""
    shapes = [a.shape for a in ReferenceEvaluator(_node_model(feeds, outputs, opset, None, attrs)).run(None, feeds)]
    return _node_model(feeds, outputs, opset, shapes, attrs)


def _node_model(feeds: dict[str, np.ndarray], outputs: list[str], opset: int, shapes: Any,
                attrs: dict[str, Any]) -> Any:
    used = [n for n in _INPUTS if n in feeds]
    last = _INPUTS.index(used[-1])
    node = helper.make_node("Attention", [n if n in feeds else "" for n in _INPUTS[: last + 1]],
                            outputs, name="attn_node", **attrs)
    graph = helper.make_graph(
        [node], "attention",
        [helper.make_tensor_value_info(n, _TYPES[feeds[n].dtype], feeds[n].shape) for n in used],
        [helper.make_tensor_value_info(o, TensorProto.FLOAT, None if shapes is None else shapes[i])
         for i, o in enumerate(o for o in outputs if o)],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def _check(tmp_path, feeds: dict[str, np.ndarray], outputs: list[str], opset: int = 23, **attrs: Any) -> None:  # type: ignore[no-untyped-def]
    model = _model(feeds, outputs, opset, **attrs)
    want = ReferenceEvaluator(model).run(None, feeds)
    src, dst = str(tmp_path / "a.onnx"), str(tmp_path / "a.pyem")
    onnx.save(model, src)
    pyengine.convert(src, dst)
    got = pyengine.load(dst).predict(feeds)
    got = list(got.values()) if isinstance(got, dict) else [got]
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g.shape == w.shape
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5)


def r(*shape: int) -> np.ndarray:
    return RNG.standard_normal(shape).astype(np.float32)


def test_bert_style_3d_self_attention_with_additive_padding_mask(tmp_path) -> None:  # type: ignore[no-untyped-def]
    # [batch, seq, heads * size] read in place; the mask [batch, 1, 1, seq] hides padding.
    b, s, heads, size = 2, 70, 4, 16  # 70 rows: two row blocks
    mask = np.zeros((b, 1, 1, s), np.float32)
    mask[1, ..., 50:] = -1e4
    feeds = {"Q": r(b, s, heads * size), "K": r(b, s, heads * size), "V": r(b, s, heads * size),
             "attn_mask": mask}
    _check(tmp_path, feeds, ["Y"], q_num_heads=heads, kv_num_heads=heads)


@pytest.mark.parametrize("attrs", [
    {}, {"is_causal": 1}, {"scale": 0.3}, {"softcap": 1.5}, {"softmax_precision": 11},
])
def test_4d_grouped_heads_with_bool_head_mask_shorter_than_the_keys(tmp_path, attrs) -> None:  # type: ignore[no-untyped-def]
    # 6 query heads over 2 kv heads; a [heads, q, 5] mask over 7 keys (the last two masked).
    mask = RNG.random((6, 4, 5)) > 0.3
    mask[:, :, 0] = True
    feeds = {"Q": r(2, 6, 4, 8), "K": r(2, 2, 7, 8), "V": r(2, 2, 7, 5), "attn_mask": mask}
    _check(tmp_path, feeds, ["Y"], **attrs)


@pytest.mark.parametrize("mode", [1, 2, 3])
def test_past_cache_present_outputs_and_qk_stages_3d(tmp_path, mode: int) -> None:  # type: ignore[no-untyped-def]
    feeds = {"Q": r(2, 3, 24), "K": r(2, 3, 12), "V": r(2, 3, 18), "attn_mask": r(3, 8),
             "past_key": r(2, 2, 5, 6), "past_value": r(2, 2, 5, 9)}
    _check(tmp_path, feeds, ["Y", "present_key", "present_value", "qk"], q_num_heads=4,
           kv_num_heads=2, is_causal=1, softcap=2.0, qk_matmul_output_mode=mode)


def test_padded_keys_causal_from_the_external_cache_offset(tmp_path) -> None:  # type: ignore[no-untyped-def]
    # nonpad 2 < q_len 3 in batch 0: its first row attends nothing and is 0, as ONNX says.
    feeds = {"Q": r(2, 2, 3, 8), "K": r(2, 2, 6, 8), "V": r(2, 2, 6, 8),
             "nonpad_kv_seqlen": np.array([2, 6], np.int64)}
    _check(tmp_path, feeds, ["Y", "", "", "qk"], opset=24, is_causal=1, qk_matmul_output_mode=3)


def test_sliding_window_with_past(tmp_path) -> None:  # type: ignore[no-untyped-def]
    feeds = {"Q": r(1, 2, 4, 8), "K": r(1, 2, 4, 8), "V": r(1, 2, 4, 8),
             "past_key": r(1, 2, 3, 8), "past_value": r(1, 2, 3, 8)}
    _check(tmp_path, feeds, ["Y", "present_key", "present_value"], opset=25, left_window_size=2,
           right_window_size=1)


def test_bert_tiny_encoder_block_matches_onnxruntime(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Projections, Attention and the output projection; onnxruntime as the second opinion."""
    ort = pytest.importorskip("onnxruntime", reason="the onnx extra is not installed")
    hidden, heads = 32, 4
    w = {k: (RNG.standard_normal((hidden, hidden)) / np.sqrt(hidden)).astype(np.float32)
         for k in ("wq", "wk", "wv", "wo")}
    nodes = [helper.make_node("MatMul", ["x", k], [k[1]]) for k in ("wq", "wk", "wv")]
    nodes += [helper.make_node("Attention", ["q", "k", "v"], ["a"], q_num_heads=heads, kv_num_heads=heads),
              helper.make_node("MatMul", ["a", "wo"], ["y"])]
    graph = helper.make_graph(
        nodes, "bert_block", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [-1, 16, hidden])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [-1, 16, hidden])],
        [onnx.numpy_helper.from_array(v, k) for k, v in w.items()],
    )
    graph.input[0].type.tensor_type.shape.dim[0].dim_param = "batch"
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 23)])
    src, dst = str(tmp_path / "b.onnx"), str(tmp_path / "b.pyem")
    onnx.save(model, src)
    pyengine.convert(src, dst)
    x = r(3, 16, hidden)
    want = ort.InferenceSession(src, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    got = pyengine.load(dst).predict(x)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("attrs,outputs,named", [
    ({"softmax_precision": 10}, ["Y"], "softmax_precision 10"),
    ({"softcap": 2.0}, ["Y", "", "", "qk"], "qk_matmul_output_mode 0 and softcap 2.0"),
])
def test_values_the_kernel_does_not_compute_are_refused_naming_node_and_value(tmp_path, attrs, outputs, named) -> None:  # type: ignore[no-untyped-def]
    feeds = {"Q": r(1, 2, 3, 4), "K": r(1, 2, 3, 4), "V": r(1, 2, 3, 4)}
    src = str(tmp_path / "bad.onnx")
    onnx.save(_model(feeds, outputs, 23, **attrs), src)
    with pytest.raises(pyengine.UnsupportedOpsError) as info:
        pyengine.convert(src, str(tmp_path / "bad.pyem"))
    [(node, what)] = info.value.ops
    assert node == "attn_node" and what.startswith(f"Attention with {named}")


def test_mask_that_does_not_broadcast_is_refused_at_load_naming_the_node(tmp_path) -> None:  # type: ignore[no-untyped-def]
    feeds = {"Q": r(1, 2, 3, 4), "K": r(1, 2, 5, 4), "V": r(1, 2, 5, 4), "attn_mask": r(3, 3, 5)}
    src, dst = str(tmp_path / "m.onnx"), str(tmp_path / "m.pyem")
    onnx.save(_node_model(feeds, ["Y"], 23, [(1, 2, 3, 4)], {}), src)
    pyengine.convert(src, dst)
    with pytest.raises(ValueError, match="attn_node.*attn_mask \\[3, 3, 5\\] does not broadcast"):
        pyengine.load(dst).predict(feeds)


@pytest.mark.parametrize("threads", [1, 3])
def test_every_kernel_variant_and_thread_count_agree_with_the_reference(tmp_path, threads) -> None:  # type: ignore[no-untyped-def]
    """The kernel over each dispatched GEMM / softmax variant, with the rows of a head split
    over threads (3 threads, 2 heads: blocks of a head in parallel), a causal mask, and a NaN in
    one batch's Q (the reference row form: that batch's rows are NaN, the other batch exact)."""
    from pyengine import _core

    q = r(2, 2, 37, 8)
    q[1, 0, 3, 5] = np.nan
    feeds = {"Q": q, "K": r(2, 2, 41, 8), "V": r(2, 2, 41, 6)}
    model = _model(feeds, ["Y"], 23, is_causal=1)
    want = ReferenceEvaluator(model).run(None, feeds)[0]
    src, dst = str(tmp_path / "v.onnx"), str(tmp_path / "v.pyem")
    onnx.save(model, src)
    pyengine.convert(src, dst)
    isa, before = _core.kernel_variant(), _core.num_threads()
    try:
        _core.set_num_threads(threads)
        for variant in _core.kernels_available():
            _core.set_isa(variant)
            got = pyengine.load(dst).predict(feeds)
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5, err_msg=variant)
            assert np.isnan(got[1, 0, 3]).all() and not np.isnan(got[0]).any()
    finally:
        _core.set_isa(isa)
        _core.set_num_threads(before)
