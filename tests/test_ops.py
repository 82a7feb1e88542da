"""Every native op against a numpy reference on hypothesis-generated shapes (odd sizes, both layouts)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from oprefs import ACTIVATIONS, conv2d_ref, lrn_ref, pool_ref, run_op, same_pads

import pyengine
from pyengine import _core

TOL = {"rtol": 1e-5, "atol": 1e-5}
SETTINGS = settings(max_examples=25, deadline=None)
dims = st.integers(1, 7)


@pytest.fixture(scope="module", autouse=True, params=_core.kernels_available())
def isa(request: pytest.FixtureRequest):
    """Runs every op test once per kernel variant this build and CPU offer (avx512, avx2, generic)."""
    before = _core.kernel_variant()
    _core.set_isa(request.param)
    yield request.param
    _core.set_isa(before)


def rand(rng: np.random.Generator, *shape: int) -> np.ndarray:
    return rng.standard_normal(shape).astype(np.float32)


@SETTINGS
@given(m=dims, k=st.integers(1, 40), n=st.integers(1, 33), trans=st.booleans(),
       act=st.sampled_from(sorted(ACTIVATIONS)), bias=st.booleans(), seed=st.integers(0, 2**16))
def test_dense(m, k, n, trans, act, bias, seed):
    rng = np.random.default_rng(seed)
    x, w, b = rand(rng, m, k), rand(rng, k, n), rand(rng, n)
    consts = {"w": w.T.copy() if trans else w}
    if bias:
        consts["b"] = b
    y = run_op("Dense", [x], consts, transpose_b=trans, activation=act)
    ref = ACTIVATIONS[act](x.astype(np.float64) @ w + (b if bias else 0))
    np.testing.assert_allclose(y, ref, **TOL)


@pytest.mark.parametrize("trans", [False, True])
def test_dense_packed_weight(tmp_path, isa, trans):
    """Many rows and a wide weight: the weight is packed once, on the first such call; one-row
    calls, and calls under another kernel variant (which pack as they go), still match."""
    rng = np.random.default_rng(7)
    k, n = 300, 600
    w, b = rand(rng, k, n), rand(rng, n)
    g = pyengine.GraphBuilder()
    y = g.node("Dense", [g.input("x", [-1, k]), g.constant("w", w.T.copy() if trans else w),
                         g.constant("b", b)], name="fc", transpose_b=trans, activation="relu")
    g.output(y)
    model = pyengine.load(g.save(str(tmp_path / "dense.pyem")))
    others = [v for v in _core.kernels_available() if v != isa]
    for rows, variant in [(64, isa), (61, isa), (1, isa), (40, others[0] if others else isa), (64, isa)]:
        _core.set_isa(variant)
        x = rand(rng, rows, k)
        ref = np.maximum(x.astype(np.float64) @ w + b, 0)
        np.testing.assert_allclose(model.predict(x), ref, rtol=1e-4, atol=1e-4, err_msg=f"{rows} {variant}")
    _core.set_isa(isa)


@SETTINGS
@given(batch=st.integers(1, 3), m=dims, k=dims, n=dims, seed=st.integers(0, 2**16))
def test_matmul_rank3(batch, m, k, n, seed):
    rng = np.random.default_rng(seed)
    x, w = rand(rng, batch, m, k), rand(rng, k, n)
    np.testing.assert_allclose(run_op("MatMul", [x], {"w": w}), x.astype(np.float64) @ w, **TOL)


@settings(max_examples=40, deadline=None)
@given(layout=st.sampled_from(["NCHW", "NHWC"]), n=st.integers(1, 2), cg=st.integers(1, 4),
       og=st.integers(1, 4), groups=st.sampled_from([1, 1, 2, 3]), h=st.integers(1, 9),
       w=st.integers(1, 9), kh=st.integers(1, 3), kw=st.integers(1, 3),
       stride=st.tuples(st.integers(1, 3), st.integers(1, 3)),
       dil=st.tuples(st.integers(1, 2), st.integers(1, 2)),
       pads=st.tuples(*[st.integers(0, 2)] * 4), padding=st.sampled_from(["EXPLICIT", "SAME", "VALID"]),
       bias=st.booleans(), act=st.sampled_from(["none", "relu", "relu6"]), seed=st.integers(0, 2**16))
def test_conv2d(layout, n, cg, og, groups, h, w, kh, kw, stride, dil, pads, padding, bias, act, seed):
    rng = np.random.default_rng(seed)
    c, o = cg * groups, og * groups
    if padding == "SAME":
        pt, pb = same_pads(h, kh, stride[0], dil[0])
        pl, pr = same_pads(w, kw, stride[1], dil[1])
        pads = (pt, pl, pb, pr)
    elif padding == "VALID":
        pads = (0, 0, 0, 0)
    if h + pads[0] + pads[2] < (kh - 1) * dil[0] + 1 or w + pads[1] + pads[3] < (kw - 1) * dil[1] + 1:
        return  # kernel larger than the padded input: covered by test_conv2d_kernel_too_large
    x = rand(rng, n, c, h, w) if layout == "NCHW" else rand(rng, n, h, w, c)
    wt, b = rand(rng, o, cg, kh, kw), rand(rng, o)
    consts = {"w": wt, **({"b": b} if bias else {})}
    attrs = dict(layout=layout, strides=list(stride), dilations=list(dil), groups=groups,
                 padding=padding, activation=act)
    if padding == "EXPLICIT":
        attrs["pads"] = list(pads)
    y = run_op("Conv2D", [x], consts, **attrs)
    ref = ACTIVATIONS[act](conv2d_ref(x, wt, b if bias else None, stride, dil, pads, groups, layout))
    np.testing.assert_allclose(y, ref, **TOL)


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_conv2d_depthwise(layout):
    rng = np.random.default_rng(0)
    c = 24 + 1
    x = rand(rng, 2, c, 7, 5) if layout == "NCHW" else rand(rng, 2, 7, 5, c)
    wt = rand(rng, c, 1, 3, 3)
    y = run_op("Conv2D", [x], {"w": wt}, layout=layout, groups=c, pads=[1, 1, 1, 1], strides=[2, 1])
    np.testing.assert_allclose(y, conv2d_ref(x, wt, None, (2, 1), (1, 1), (1, 1, 1, 1), c, layout), **TOL)


def test_conv2d_kernel_too_large():
    with pytest.raises(ValueError, match="larger than the padded input"):
        run_op("Conv2D", [np.zeros((1, 1, 2, 2), np.float32)], {"w": np.zeros((1, 1, 3, 3), np.float32)})


@SETTINGS
@given(layout=st.sampled_from(["NCHW", "NHWC"]), shape=st.tuples(dims, dims, dims, dims),
       eps=st.sampled_from([1e-5, 1e-3]), seed=st.integers(0, 2**16))
def test_batchnorm(layout, shape, eps, seed):
    rng = np.random.default_rng(seed)
    x = rand(rng, *shape)
    c = shape[1] if layout == "NCHW" else shape[3]
    scale, bias, mean = rand(rng, c), rand(rng, c), rand(rng, c)
    var = np.abs(rand(rng, c)) + 0.1
    axis = 1 if layout == "NCHW" else -1
    y = run_op("BatchNorm", [x], {"s": scale, "b": bias, "m": mean, "v": var}, epsilon=eps, axis=axis)
    bshape = [1, -1, 1, 1] if layout == "NCHW" else [1, 1, 1, -1]
    r = lambda a: a.reshape(bshape).astype(np.float64)  # noqa: E731
    ref = (x - r(mean)) / np.sqrt(r(var) + eps) * r(scale) + r(bias)
    np.testing.assert_allclose(y, ref, **TOL)


def broadcastable(draw_shape):
    """A pair of shapes that broadcast: the second drops leading dims and sets some to 1."""
    return draw_shape


@SETTINGS
@given(op=st.sampled_from(["Add", "Sub", "Mul", "Div"]), a_shape=st.lists(dims, min_size=1, max_size=4),
       mask=st.lists(st.booleans(), min_size=4, max_size=4), drop=st.integers(0, 3),
       swap=st.booleans(), const=st.booleans(), seed=st.integers(0, 2**16))
def test_binary_broadcast(op, a_shape, mask, drop, swap, const, seed):
    rng = np.random.default_rng(seed)
    b_shape = [1 if m else d for d, m in zip(a_shape, mask)][min(drop, len(a_shape) - 1):]
    if swap:
        a_shape, b_shape = b_shape, a_shape
    a, b = rand(rng, *a_shape), rand(rng, *b_shape)
    if op == "Div":
        b = np.where(np.abs(b) < 0.1, 1.0, b).astype(np.float32)
    y = run_op(op, [a], {"b": b}, free_batch=False) if const else run_op(op, [a, b], free_batch=False)
    ref = {"Add": np.add, "Sub": np.subtract, "Mul": np.multiply, "Div": np.divide}[op](
        a.astype(np.float64), b.astype(np.float64))
    np.testing.assert_allclose(y, ref, **TOL)


@SETTINGS
@given(op=st.sampled_from(["Relu", "Relu6", "Sigmoid", "Tanh", "LeakyRelu", "Clip", "HardSigmoid",
                           "HardSwish", "Silu"]),
       shape=st.lists(dims, min_size=1, max_size=4), seed=st.integers(0, 2**16))
def test_unary(op, shape, seed):
    rng = np.random.default_rng(seed)
    x = rand(rng, *shape) * 4
    attrs = {"LeakyRelu": {"alpha": 0.2}, "Clip": {"min": -1.5, "max": 0.5},
             "HardSigmoid": {"alpha": 0.3, "beta": 0.4}}.get(op, {})
    y = run_op(op, [x], **attrs)
    xd = x.astype(np.float64)
    ref = {
        "Relu": lambda: np.maximum(xd, 0), "Relu6": lambda: np.clip(xd, 0, 6),
        "Sigmoid": lambda: 1 / (1 + np.exp(-xd)), "Tanh": lambda: np.tanh(xd),
        "LeakyRelu": lambda: np.where(xd >= 0, xd, 0.2 * xd), "Clip": lambda: np.clip(xd, -1.5, 0.5),
        "HardSigmoid": lambda: np.clip(0.3 * xd + 0.4, 0, 1), "HardSwish": lambda: ACTIVATIONS["hard_swish"](xd),
        "Silu": lambda: ACTIVATIONS["silu"](xd),
    }[op]()
    np.testing.assert_allclose(y, ref, **TOL)


@SETTINGS
@given(shape=st.lists(dims, min_size=1, max_size=4), data=st.data(), seed=st.integers(0, 2**16))
def test_softmax(shape, data, seed):
    axis = data.draw(st.integers(-len(shape), len(shape) - 1))
    x = rand(np.random.default_rng(seed), *shape) * 5
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    np.testing.assert_allclose(run_op("Softmax", [x], axis=axis), e / e.sum(axis=axis, keepdims=True), **TOL)


@settings(max_examples=40, deadline=None)
@given(kind=st.sampled_from(["max", "avg"]), layout=st.sampled_from(["NCHW", "NHWC"]),
       shape=st.tuples(st.integers(1, 2), st.integers(1, 5), st.integers(1, 9), st.integers(1, 9)),
       kernel=st.tuples(st.integers(1, 3), st.integers(1, 3)),
       strides=st.tuples(st.integers(1, 3), st.integers(1, 3)),
       pads=st.tuples(*[st.integers(0, 1)] * 4), include=st.booleans(), ceil=st.booleans(),
       seed=st.integers(0, 2**16))
def test_pool(kind, layout, shape, kernel, strides, pads, include, ceil, seed):
    n, c, h, w = shape
    if any(p >= k for p, k in zip(pads, kernel * 2)):
        pads = (0, 0, 0, 0)  # padding at least the window would make empty windows
    if h + pads[0] + pads[2] < kernel[0] or w + pads[1] + pads[3] < kernel[1]:
        return
    x = rand(np.random.default_rng(seed), *((n, c, h, w) if layout == "NCHW" else (n, h, w, c)))
    attrs = dict(layout=layout, kernel=list(kernel), strides=list(strides), pads=list(pads), ceil_mode=ceil)
    if kind == "avg":
        attrs["count_include_pad"] = include
    y = run_op("MaxPool" if kind == "max" else "AvgPool", [x], **attrs)
    ref = pool_ref(x, kind, kernel, strides, pads, layout, include and kind == "avg", ceil)
    np.testing.assert_allclose(y, ref, **TOL)


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("op", ["GlobalMaxPool", "GlobalAvgPool"])
def test_global_pool(op, layout):
    x = rand(np.random.default_rng(1), 2, 5, 7, 3)
    axes = (2, 3) if layout == "NCHW" else (1, 2)
    ref = (x.max if op == "GlobalMaxPool" else x.mean)(axis=axes, keepdims=True)
    np.testing.assert_allclose(run_op(op, [x], layout=layout), ref, **TOL)


def test_same_padding_pool_nhwc():
    x = rand(np.random.default_rng(2), 1, 7, 6, 3)
    pt, pb = same_pads(7, 3, 2)
    pl, pr = same_pads(6, 3, 2)
    y = run_op("MaxPool", [x], layout="NHWC", kernel=[3, 3], strides=[2, 2], padding="SAME")
    np.testing.assert_allclose(y, pool_ref(x, "max", (3, 3), (2, 2), (pt, pl, pb, pr), "NHWC"), **TOL)


@SETTINGS
@given(shape=st.lists(dims, min_size=1, max_size=5), data=st.data(), seed=st.integers(0, 2**16))
def test_shape_ops(shape, data, seed):
    x = rand(np.random.default_rng(seed), *shape)
    axis = data.draw(st.integers(0, len(shape)))
    np.testing.assert_array_equal(
        run_op("Flatten", [x], axis=axis), x.reshape(int(np.prod(shape[:axis])), -1))
    perm = data.draw(st.permutations(range(len(shape))))
    np.testing.assert_array_equal(run_op("Transpose", [x], perm=list(perm)), x.transpose(perm))
    np.testing.assert_array_equal(run_op("Reshape", [x], shape=[-1]), x.reshape(-1))
    np.testing.assert_array_equal(run_op("Reshape", [x], shape=[0, -1]), x.reshape(shape[0], -1))
    np.testing.assert_array_equal(run_op("Identity", [x]), x)
    np.testing.assert_array_equal(run_op("Squeeze", [x]), np.squeeze(x))
    axes = sorted(data.draw(st.sets(st.integers(0, len(shape) - 1), min_size=1)))
    keep = data.draw(st.booleans())
    np.testing.assert_allclose(run_op("Mean", [x], axes=axes, keepdims=keep),
                               x.astype(np.float64).mean(axis=tuple(axes), keepdims=keep), **TOL)


@SETTINGS
@given(shape=st.lists(dims, min_size=1, max_size=4), data=st.data(), seed=st.integers(0, 2**16))
def test_concat(shape, data, seed):
    rng = np.random.default_rng(seed)
    axis = data.draw(st.integers(-len(shape), len(shape) - 1))
    parts = []
    for _ in range(data.draw(st.integers(1, 4))):
        s = list(shape)
        s[axis] = data.draw(dims)
        parts.append(rand(rng, *s))
    np.testing.assert_array_equal(run_op("Concat", parts, free_batch=False, axis=axis),
                                  np.concatenate(parts, axis=axis))


@SETTINGS
@given(shape=st.lists(st.integers(2, 6), min_size=1, max_size=4), data=st.data(),
       mode=st.sampled_from(["constant", "reflect", "edge"]), seed=st.integers(0, 2**16))
def test_pad(shape, data, mode, seed):
    x = rand(np.random.default_rng(seed), *shape)
    limit = [d - 1 for d in shape] if mode == "reflect" else [3] * len(shape)
    begin = [data.draw(st.integers(0, lim)) for lim in limit]
    end = [data.draw(st.integers(0, lim)) for lim in limit]
    y = run_op("Pad", [x], free_batch=False, pads=begin + end, mode=mode, value=1.5)
    kw = {"constant_values": 1.5} if mode == "constant" else {}
    np.testing.assert_array_equal(y, np.pad(x, list(zip(begin, end)), mode=mode, **kw))


def test_squeeze_axes_and_errors():
    x = np.zeros((1, 3, 1, 2), np.float32)
    assert run_op("Squeeze", [x], free_batch=False, axes=[2]).shape == (1, 3, 2)
    with pytest.raises(ValueError, match="Squeeze axis 1 has size 3"):
        run_op("Squeeze", [x], free_batch=False, axes=[1])


@SETTINGS
@given(shape=st.lists(dims, min_size=2, max_size=4), size=st.integers(1, 6), axis=st.sampled_from([1, -1]),
       alpha=st.floats(1e-4, 2.0), beta=st.floats(0.1, 1.0), bias=st.floats(0.5, 3.0), seed=st.integers(0, 2**16))
def test_lrn(shape, size, axis, alpha, beta, bias, seed):
    x = rand(np.random.default_rng(seed), *shape) * 3
    y = run_op("LRN", [x], size=size, alpha=alpha, beta=beta, bias=bias, axis=axis)
    np.testing.assert_allclose(y, lrn_ref(x, size, alpha, beta, bias, axis), **TOL)


def test_lrn_large_runs_threaded_and_rejects_bad_attributes():
    x = rand(np.random.default_rng(1), 2, 37, 19, 21)  # big enough to split over the pool
    np.testing.assert_allclose(run_op("LRN", [x], size=5, alpha=1e-3, beta=0.75, bias=2.0),
                               lrn_ref(x, 5, 1e-3, 0.75, 2.0), **TOL)
    with pytest.raises(pyengine.ModelFormatError, match="'size' must be >= 1, got 0"):
        run_op("LRN", [x], size=0)
    with pytest.raises(pyengine.ModelFormatError, match="'bias' .* and 'alpha' .* cannot both be <= 0"):
        run_op("LRN", [x], size=3, alpha=0.0, bias=0.0)


@SETTINGS
@given(shape=st.lists(dims, min_size=1, max_size=4), data=st.data(), seed=st.integers(0, 2**16))
def test_slice(shape, data, seed):
    axis = data.draw(st.integers(-len(shape), len(shape) - 1))
    d = shape[axis]
    start = data.draw(st.integers(-d - 2, d + 2))
    end = data.draw(st.integers(-d - 2, d + 2))
    x = rand(np.random.default_rng(seed), *shape)
    index = [slice(None)] * len(shape)
    index[axis] = slice(start, end)
    ref = x[tuple(index)]
    if ref.size == 0:
        return  # an empty result (start past end) is a valid shape, but run_op cannot hold it
    np.testing.assert_array_equal(run_op("Slice", [x], axis=axis, start=start, end=end), ref)
