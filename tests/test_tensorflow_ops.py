"""TensorFlow converter ops on run-time tensors (pyengine/convert/_tf_ops.py, _slicing.py):
StridedSlice in every mask, Pack/Unpack/Split, BiasAdd in NHWC and NCHW of ranks 3-5,
FusedBatchNormV3, Mean, the three Pads, a resize sized from another tensor's run-time shape, and
graph inputs of other dtypes than float32 (int32 token ids through an embedding, a small
attention block). Each is a tf.function frozen here and compared with TensorFlow."""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import pytest
from framework_models import assert_close, data, tf_freeze_function, tf_quiet

import pyengine

pytestmark = pytest.mark.frameworks
tf_quiet()
tf = pytest.importorskip(
    "tensorflow",
    reason="the tensorflow extra (pip install 'pyengine[tensorflow]') is not installed",
)


def check(tmp_path: Any, fn: Callable[..., Any], shape: list[int | None],
          make: Callable[[int], np.ndarray] | None = None, dtype: Any = None) -> Any:
    """Freeze ``fn``, convert it natively, and compare with TensorFlow at batch 1 and 3; the
    native model is returned."""
    path, concrete = tf_freeze_function(tmp_path, fn, shape, dtype)
    native = pyengine.load(path, backend="native")
    backend = pyengine.load(path, backend="tensorflow")
    assert [(s.name, s.dtype) for s in native.inputs] == [(s.name, s.dtype) for s in backend.inputs]
    for batch in (1, 3):
        x = make(batch) if make else data((batch, *shape[1:]), seed=batch)
        expected = concrete(x).numpy()
        assert_close(native.predict(x), expected)
        assert_close(backend.predict(x), expected)
    return native


def test_strided_slices_on_run_time_tensors(tmp_path) -> None:  # type: ignore[no-untyped-def]
    def fn(x):  # type: ignore[no-untyped-def]
        parts = [
            x[:, ::2, 1:-1, :],            # step 2, negative end
            x[:, 3, ..., tf.newaxis],      # shrink, ellipsis, new axis
            x[..., ::-1],                  # reversed channels
            x[:, -2:, ::3, 1:2],           # negative begin, step 3
            x[:, 1:6:2][:, :, :, 0],       # shrink on the last axis
        ]
        return tf.concat([tf.reshape(p, [tf.shape(p)[0], -1]) for p in parts], axis=1)

    native = check(tmp_path, fn, [None, 7, 6, 3])
    assert native.inputs[0].shape == (-1, 7, 6, 3)


def test_pack_unpack_split_on_run_time_tensors(tmp_path) -> None:  # type: ignore[no-untyped-def]
    def fn(x):  # type: ignore[no-untyped-def]
        rows = tf.unstack(x, axis=1)                       # Unpack: 4 outputs
        stacked = tf.stack(rows[::-1], axis=2)             # Pack of run-time tensors
        a, b, c = tf.split(x, 3, axis=2)                   # Split
        d, e = tf.split(x, [2, -1], axis=2)                # SplitV
        mixed = tf.stack([rows[0] * 2.0, rows[1] - rows[2]], axis=-1)
        return tf.concat([tf.reshape(t, [tf.shape(t)[0], -1]) for t in
                          (stacked, tf.concat([c, b, a], 2), tf.concat([e, d], 2), mixed)], 1)

    check(tmp_path, fn, [None, 4, 6])


@pytest.mark.parametrize("rank", [3, 4, 5])
def test_bias_add_nchw_any_rank_and_nhwc(tmp_path, rank) -> None:  # type: ignore[no-untyped-def]
    b = tf.constant(data((5,), seed=7))
    shape = [None, 5] + [3] * (rank - 2)

    def fn(x):  # type: ignore[no-untyped-def]
        nchw = tf.nn.bias_add(x, b, data_format="NCHW" if rank == 4 else "NC...")
        moved = tf.transpose(x, [0, *range(2, rank), 1])
        return tf.concat([tf.reshape(nchw, [-1, 5 * 3 ** (rank - 2)]),
                          tf.reshape(tf.nn.bias_add(moved, b), [-1, 5 * 3 ** (rank - 2)])], 1)

    check(tmp_path, fn, shape)


def test_fused_batch_norm_mean_and_pads(tmp_path) -> None:  # type: ignore[no-untyped-def]
    scale, offset = tf.constant(data((4,), seed=1)), tf.constant(data((4,), seed=2))
    mean, var = tf.constant(data((4,), seed=3)), tf.constant(np.abs(data((4,), seed=4)) + 0.5)

    def fn(x):  # type: ignore[no-untyped-def]
        y, _, _ = tf.compat.v1.nn.fused_batch_norm(x, scale, offset, mean, var, epsilon=1e-3,
                                                   is_training=False)
        p1 = tf.pad(y, [[0, 0], [1, 2], [2, 1], [0, 0]])
        p2 = tf.pad(y, [[0, 0], [1, 1], [0, 2], [0, 0]], constant_values=-0.5)
        p3 = tf.pad(y, [[0, 0], [2, 1], [1, 1], [0, 0]], mode="REFLECT")
        return tf.concat([tf.reduce_mean(p, axis=[1, 2]) for p in (p1, p2, p3)]
                         + [tf.reduce_mean(y, axis=[2, 3])], axis=1)

    path, _ = tf_freeze_function(tmp_path, fn, [None, 5, 6, 4])
    from pyengine.convert.tensorflow import read_graph
    from pyengine.locate import locate
    ops = {n.op for n in read_graph(locate(path)).graph_def.node}
    assert {"FusedBatchNormV3", "Pad", "PadV2", "MirrorPad", "Mean"} <= ops
    check(tmp_path, fn, [None, 5, 6, 4])


def test_resize_sized_by_another_tensors_run_time_shape(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Decoders write tf.image.resize(x, tf.shape(skip)[1:3]): the size is static though read
    from a run-time shape (only the batch is free)."""
    w = tf.constant(data((3, 3, 3, 4), seed=2) / 4)

    def fn(x):  # type: ignore[no-untyped-def]
        low = tf.nn.relu(tf.nn.conv2d(x, w, 2, "SAME"))
        up = tf.image.resize(low, tf.shape(x)[1:3], method="bilinear")
        return tf.concat([up, x], axis=-1)

    check(tmp_path, fn, [None, 9, 7, 3])


def test_int32_token_inputs_through_embedding_and_attention(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """int32 ids (GatherV2 of an embedding table), a self-attention block (BatchMatMulV2 with
    adj_y, Softmax, run-time Mean and SquaredDifference/Rsqrt of a layer norm, Erf GELU), a Cast
    of the ids to float: the input keeps its dtype through conversion."""
    table = tf.constant(data((20, 8), seed=1))
    wq, wk = tf.constant(data((8, 8), seed=2) / 3), tf.constant(data((8, 8), seed=3) / 3)

    def fn(ids):  # type: ignore[no-untyped-def]
        h = tf.gather(table, ids)                                   # [B, 6, 8]
        q, k = tf.matmul(h, wq), tf.matmul(h, wk)
        att = tf.nn.softmax(tf.matmul(q, k, transpose_b=True) / np.sqrt(8.0))
        h = h + tf.matmul(att, h)
        mu = tf.reduce_mean(h, axis=-1, keepdims=True)
        var = tf.reduce_mean(tf.math.squared_difference(h, mu), axis=-1, keepdims=True)
        h = (h - mu) * tf.math.rsqrt(var + 1e-5)
        h = 0.5 * h * (1.0 + tf.math.erf(h / np.sqrt(2.0)))
        return tf.reduce_sum(h, axis=1) + tf.cast(ids[:, :1], tf.float32)

    rng = np.random.default_rng(0)
    native = check(tmp_path, fn, [None, 6], lambda b: rng.integers(0, 20, (b, 6)).astype(np.int32),
                   tf.int32)
    assert native.inputs[0].dtype == "int32"


def test_einsum_forms(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Einsums through the lowering ONNX shares (convert/_einsum.py): attention scores and context,
    a projection with constant weights (Dense), an outer product, an ellipsis; two sizes known only
    at run time are refused naming the equation."""
    w = tf.constant(data((8, 2, 4), seed=3))

    def fn(x):  # type: ignore[no-untyped-def]
        q = tf.einsum("btd,dnh->btnh", x, w)                 # constant weights: Dense
        s = tf.einsum("btnh,bsnh->bnts", q, q)               # scores: BatchMatMul
        c = tf.einsum("bnts,bsnh->btnh", tf.nn.softmax(s), q)
        o = tf.einsum("bi,bj->bij", x[:, 0], x[:, 1])        # outer product
        e = tf.einsum("...d,de->...e", x, w[:, 0])           # ellipsis
        return tf.concat([tf.reshape(t, [tf.shape(t)[0], -1]) for t in (c, o, e)], axis=1)

    check(tmp_path, fn, [None, 5, 8])
    path, _ = tf_freeze_function(tmp_path, lambda x: tf.einsum("btd,bsd->bts", x, x), [None, None, 8])
    with pytest.raises(pyengine.UnsupportedOpsError,
                       match=r"Einsum: equation 'btd,bsd->bts' with several sizes known only at run"):
        pyengine.convert(path, str(tmp_path / "e.pyem"))
