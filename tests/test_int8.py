"""int8: quantized tensors in .pyem, QuantizeLinear/DequantizeLinear at the rounding and saturation
edges, QLinearConv2D / QLinearDense against numpy references under every kernel variant, mixed graphs."""

from __future__ import annotations

import json

import numpy as np
import pytest
from qrefs import qconv_ref, quantize, requantize

import pyengine
from pyengine import _core


@pytest.fixture(params=_core.kernels_available())
def isa(request: pytest.FixtureRequest):
    """Each test once per kernel variant this build and CPU offer."""
    before = _core.kernel_variant()
    _core.set_isa(request.param)
    yield request.param
    _core.set_isa(before)


def _quant_node_model(tmp_path, op: str, shape: list[int], **attrs) -> pyengine.Model:
    g = pyengine.GraphBuilder()
    g.output(g.node(op, [g.input("x", shape)], name="q", **attrs))
    return pyengine.load(g.save(str(tmp_path / f"{op}.pyem")))


@pytest.mark.parametrize("dtype", ["uint8", "int8"])
def test_quantize_linear_rounds_half_to_even_and_saturates(tmp_path, isa, dtype):
    lo, hi = (0, 255) if dtype == "uint8" else (-128, 127)
    zp = 3 if dtype == "uint8" else -2
    # Halves on both sides of zero, the last codes before saturation, and far outside.
    x = np.array([0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 0.49, 0.51,
                  hi - zp - 0.5, hi - zp + 0.5, hi - zp + 0.49, hi - zp + 1000,
                  lo - zp + 0.5, lo - zp - 0.5, lo - zp - 0.49, lo - zp - 1000, 0.0, -0.0], np.float32)
    model = _quant_node_model(tmp_path, "QuantizeLinear", [x.size], scale=1.0, zero_point=zp, dtype=dtype)
    got = model.predict(x)
    want = np.clip(np.rint(x) + zp, lo, hi)
    np.testing.assert_array_equal(got, want)
    # Spelled out, so that the reference itself is checked: half to even, then saturation.
    assert got[:6].tolist() == [zp + 0, zp + 2, zp + 2, zp - 0, zp - 2, zp - 2]
    assert got[11] == hi and got[15] == lo


@pytest.mark.parametrize("dtype,x,want", [
    ("int8", [126.5, 127.49, 127.5, -127.5, -128.5, -129.0, 1e9, -1e9], [126, 127, 127, -128, -128, -128, 127, -128]),
    ("uint8", [254.5, 255.5, 0.5, -0.5, -1.0, 1.5, 1e9, -1e9], [254, 255, 0, 0, 0, 2, 255, 0]),
])
def test_quantize_linear_edges_by_hand(tmp_path, isa, dtype, x, want):
    model = _quant_node_model(tmp_path, "QuantizeLinear", [len(x)], scale=1.0, zero_point=0, dtype=dtype)
    assert model.predict(np.array(x, np.float32)).tolist() == want


def test_quantize_linear_divides_exactly_on_random_values(tmp_path, isa):
    """The vector kernels divide by the scale through its reciprocal and a correction step: on
    random values of every magnitude, values a hair from the half-way points, awkward scales
    (significands of all ones), infinities and NaN, the codes are those of a true division."""
    rng = np.random.default_rng(5)
    scales = np.concatenate([10.0 ** rng.uniform(-6, 2, 40),
                             np.frombuffer(np.uint32(0x3B7FFFFF + (rng.integers(0, 20, 8) << 23)).tobytes(),
                                           np.float32)]).astype(np.float32)
    for scale in scales:
        k = rng.integers(-300, 300, 20000).astype(np.float32)
        x = np.concatenate([
            (rng.standard_normal(20000) * 10.0 ** rng.uniform(-8, 4, 20000)).astype(np.float32) * scale * 50,
            (k + np.float32(0.5)) * scale,                      # the quotient's half-way points
            np.nextafter((k + np.float32(0.5)) * scale, np.float32(np.inf)),
            np.nextafter((k + np.float32(0.5)) * scale, np.float32(-np.inf)),
            np.array([np.inf, -np.inf, np.nan, 3e38, -3e38, 1e-45, 0.0], np.float32),
        ]).astype(np.float32)
        model = _quant_node_model(tmp_path, "QuantizeLinear", [x.size], scale=float(scale), zero_point=128,
                                  dtype="uint8")
        with np.errstate(over="ignore"):  # 3e38 / scale is infinite, and saturates
            want = quantize(np.nan_to_num(x, nan=0.0), float(scale), 128)
        np.testing.assert_array_equal(model.predict(x), want, err_msg=f"scale {scale!r}")


def test_quantize_linear_scale_divides_and_edges(tmp_path, isa):
    x = np.array([-1000.0, -0.3, 0.0, 0.05, 0.15, 0.25, 12.7, 12.75, 12.8, 1000.0], np.float32)
    for dtype, zp in (("int8", 0), ("uint8", 128)):
        model = _quant_node_model(tmp_path, "QuantizeLinear", [x.size], scale=0.1, zero_point=zp, dtype=dtype)
        np.testing.assert_array_equal(model.predict(x), quantize(x, 0.1, zp, dtype))
    q = _quant_node_model(tmp_path, "QuantizeLinear", [x.size], scale=0.1, zero_point=0, dtype="int8").predict(x)
    assert q[0] == -128 and q[-1] == 127 and q[6] == 127  # 12.7 / 0.1 rounds to 127


def test_quantize_per_axis_and_dequantize(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 4)).astype(np.float32)
    scales, zps = [0.02, 0.05, 0.1], [0, 10, 250]
    q = _quant_node_model(tmp_path, "QuantizeLinear", [2, 3, 4], scale=scales, zero_point=zps, axis=1).predict(x)
    for c in range(3):
        np.testing.assert_array_equal(q[:, c], quantize(x[:, c], scales[c], zps[c]))
    d = _quant_node_model(tmp_path, "DequantizeLinear", [2, 3, 4], scale=scales, zero_point=zps, axis=1).predict(q)
    for c in range(3):
        np.testing.assert_allclose(d[:, c], (q[:, c] - zps[c]) * np.float32(scales[c]), rtol=1e-6)


def _qconv_model(tmp_path, w, w_scale, w_zp, bias, attrs, x_shape, wdtype=np.int8):
    g = pyengine.GraphBuilder()
    ins = [g.input("x", x_shape), g.quantized_constant("w", w.astype(wdtype), w_scale, w_zp, axis=0)]
    if bias is not None:
        ins.append(g.constant("b", bias.astype(np.int32)))
    g.output(g.node("QLinearConv2D", ins, name="conv", **attrs))
    return pyengine.load(g.save(str(tmp_path / "qconv.pyem")))


CONV_CASES = [
    # (N, C, H, W, O, k, stride, pad, groups, dilation)
    (1, 3, 9, 11, 8, 3, 1, 1, 1, 1),
    (2, 16, 7, 7, 33, 1, 1, 0, 1, 1),
    (1, 5, 10, 9, 20, 3, 2, 1, 1, 1),
    (1, 12, 8, 8, 12, 3, 1, 1, 12, 1),  # depthwise
    (1, 24, 9, 9, 24, 3, 2, 1, 24, 1),  # depthwise, stride 2
    (1, 8, 9, 9, 12, 3, 1, 2, 4, 2),    # grouped, dilated
    (1, 70, 6, 5, 65, 1, 1, 0, 1, 1),   # 1x1, K not a multiple of 4, N past 64
]


@pytest.mark.parametrize("case", CONV_CASES, ids=[str(c) for c in CONV_CASES])
@pytest.mark.parametrize("requant", [True, False])
def test_qlinear_conv_matches_reference(tmp_path, isa, case, requant):
    n, c, h, w_, o, k, stride, pad, groups, dil = case
    rng = np.random.default_rng(hash(case) % 2**32)
    x = rng.uniform(-1, 3, (n, c, h, w_)).astype(np.float32)
    w = rng.integers(-128, 128, (o, c // groups, k, k))
    w_scale = rng.uniform(0.001, 0.01, o).astype(np.float32)
    w_zp = np.zeros(o, np.int64)
    bias = rng.integers(-5000, 5000, o)
    xq = {"scale": 0.02, "zp": 50}
    y = {"scale": 0.05, "zp": 7} if requant else None
    attrs = dict(strides=[stride, stride], pads=[pad] * 4, groups=groups, dilations=[dil, dil],
                 x_scale=xq["scale"], x_zero_point=xq["zp"], activation="relu")
    if y:
        attrs.update(y_scale=y["scale"], y_zero_point=y["zp"])
    model = _qconv_model(tmp_path, w, w_scale, w_zp, bias, attrs, [n, c, h, w_])
    got = model.predict(x)
    want = qconv_ref(x, xq, w, w_scale, w_zp, bias, stride, pad, groups, dil, y, 0.0, np.inf)
    if requant:
        np.testing.assert_array_equal(got, want)
    else:
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


def test_qlinear_conv_int8_activations_uint8_weights_and_saturation(tmp_path, isa):
    """int8 activations (shifted to u8 inside), uint8 weights with zero point 128, extreme codes,
    per-tensor weight scale, and an output range that saturates at both ends."""
    rng = np.random.default_rng(5)
    x = rng.uniform(-6, 6, (1, 9, 6, 6)).astype(np.float32)
    w = rng.choice([0, 1, 128, 254, 255], (10, 9, 3, 3))
    xq = {"scale": 0.04, "zp": -3, "dtype": "int8"}
    y = {"scale": 0.01, "zp": 0, "dtype": "int8"}
    attrs = dict(pads=[1, 1, 1, 1], x_scale=0.04, x_zero_point=-3, x_dtype="int8",
                 y_scale=0.01, y_zero_point=0, y_dtype="int8")
    model = _qconv_model(tmp_path, w, 0.003, 128, None, attrs, [1, 9, 6, 6], wdtype=np.uint8)
    got = model.predict(x)
    want = qconv_ref(x, xq, w, np.full(10, 0.003, np.float32), np.full(10, 128), None, 1, 1, 1, 1, y,
                     -np.inf, np.inf)
    np.testing.assert_array_equal(got, want)
    assert got.min() == pytest.approx(-1.28) and got.max() == pytest.approx(1.27)


@pytest.mark.parametrize("trans", [False, True])
def test_qlinear_dense_matches_reference(tmp_path, isa, trans):
    rng = np.random.default_rng(3)
    m, k, n = 37, 83, 70
    x = rng.standard_normal((m, k)).astype(np.float32)
    w = rng.integers(-127, 128, (k, n))
    ws = rng.uniform(0.001, 0.02, n).astype(np.float32)
    b = rng.integers(-3000, 3000, n)
    g = pyengine.GraphBuilder()
    wt = (w.T if trans else w).astype(np.int8)
    ins = [g.input("x", [-1, k]), g.quantized_constant("w", wt, ws, 0, axis=0 if trans else 1),
           g.constant("b", b.astype(np.int32))]
    g.output(g.node("QLinearDense", ins, name="fc", transpose_b=trans, x_scale=0.03, x_zero_point=128,
                    y_scale=0.1, y_zero_point=100, activation="relu6"))
    model = pyengine.load(g.save(str(tmp_path / "qdense.pyem")))
    xi = quantize(x, 0.03, 128) - 128
    acc = xi @ w + b
    want = requantize(acc, np.float32(0.03) * ws, {"scale": 0.1, "zp": 100}, 0.0, 6.0)
    np.testing.assert_array_equal(model.predict(x), want)


def test_mixed_graph_pool_and_add_run_in_float(tmp_path, isa):
    """QLinearConv2D -> MaxPool (no int8 kernel: float on grid values) -> Add -> QLinearConv2D."""
    rng = np.random.default_rng(11)
    x = rng.uniform(0, 1, (1, 4, 8, 8)).astype(np.float32)
    w1 = rng.integers(-100, 100, (6, 4, 3, 3))
    w2 = rng.integers(-100, 100, (5, 6, 1, 1))
    s1, s2 = np.full(6, 0.004, np.float32), np.full(5, 0.003, np.float32)
    g = pyengine.GraphBuilder()
    xin = g.input("x", [1, 4, 8, 8])
    h = g.node("QLinearConv2D", [xin, g.quantized_constant("w1", w1.astype(np.int8), s1, 0, axis=0)],
               pads=[1, 1, 1, 1], x_scale=0.01, x_zero_point=0, y_scale=0.02, y_zero_point=0, activation="relu")
    p = g.node("MaxPool", [h], kernel=[2, 2], strides=[2, 2])
    a = g.node("Add", [p, p])
    g.output(g.node("QLinearConv2D", [a, g.quantized_constant("w2", w2.astype(np.int8), s2, 0, axis=0)],
                    x_scale=0.04, x_zero_point=0, y_scale=0.05, y_zero_point=128))
    got = pyengine.load(g.save(str(tmp_path / "mixed.pyem"))).predict(x)
    h_ref = qconv_ref(x, {"scale": 0.01, "zp": 0}, w1, s1, np.zeros(6, np.int64), None, 1, 1, 1, 1,
                      {"scale": 0.02, "zp": 0}, 0.0, np.inf)
    p_ref = h_ref.reshape(1, 6, 4, 2, 4, 2).max(axis=(3, 5))
    want = qconv_ref(p_ref + p_ref, {"scale": 0.04, "zp": 0}, w2, s2, np.zeros(5, np.int64), None, 1, 0, 1, 1,
                     {"scale": 0.05, "zp": 128}, -np.inf, np.inf)
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("layout", ["blocked", "nchw"])
def test_qlinear_conv_chain_in_each_layout(tmp_path, isa, layout, monkeypatch):
    """A chain of int8 convolutions (full, depthwise 5x5 stride 2 and 7x7, 1x1) whose outputs
    the blocked layout keeps in NCHW[c] with 20 channels (a partial last block) between them,
    and the plain layout in NCHW: both give the reference's values exactly."""
    monkeypatch.setenv("PYENGINE_LAYOUT", layout)
    rng = np.random.default_rng(21)
    x = rng.uniform(-1, 2, (2, 5, 13, 11)).astype(np.float32)
    layers = [  # (weights, stride, pad, groups)
        (rng.integers(-100, 100, (20, 5, 3, 3)), 1, 1, 1),
        (rng.integers(-100, 100, (20, 1, 5, 5)), 2, 2, 20),
        (rng.integers(-100, 100, (20, 1, 7, 7)), 1, 3, 20),
        (rng.integers(-100, 100, (33, 20, 1, 1)), 1, 0, 1),
    ]
    g = pyengine.GraphBuilder()
    h = g.input("x", list(x.shape))
    want = x
    for i, (w, stride, pad, groups) in enumerate(layers):
        o = w.shape[0]
        scale = rng.uniform(0.001, 0.004, o).astype(np.float32)
        bias = rng.integers(-3000, 3000, o)
        xq, yq = {"scale": 0.02 + 0.01 * i, "zp": 60}, {"scale": 0.03 + 0.01 * i, "zp": 100}
        h = g.node("QLinearConv2D", [h, g.quantized_constant(f"w{i}", w.astype(np.int8), scale, 0, axis=0),
                                     g.constant(f"b{i}", bias.astype(np.int32))],
                   strides=[stride, stride], pads=[pad] * 4, groups=groups, x_scale=xq["scale"],
                   x_zero_point=xq["zp"], y_scale=yq["scale"], y_zero_point=yq["zp"])
        want = qconv_ref(want, xq, w, scale, np.zeros(o, np.int64), bias, stride, pad, groups, 1, yq,
                         -np.inf, np.inf)
    g.output(h)
    model = pyengine.load(g.save(str(tmp_path / "chain.pyem")))
    np.testing.assert_array_equal(model.predict(x), want)
    layouts = {op.layout for op in model.profile(x, runs=1).ops if op.op == "QLinearConv2D"}
    assert layouts == ({"NCHW"} if layout == "nchw" else {f"NCHW{_core.nchwc_block()}c"}), layouts


@pytest.mark.parametrize("dtype", ["uint8", "int8"])
def test_int8_convolutions_pass_codes_on_a_shared_grid(tmp_path, isa, dtype):
    """Where one int8 convolution's output grid is the next ones' input grid and nothing else
    reads it, the two pass u8 codes instead of floats: the results stay the reference's, a
    value read also by a float op (the Add) stays float, and the profile says which pass codes."""
    rng = np.random.default_rng(33)
    zp = 10 if dtype == "uint8" else -5
    grids = [{"scale": 0.02 * (i + 1), "zp": zp, "dtype": dtype} for i in range(5)]
    x = rng.uniform(-1, 2, (2, 6, 11, 9)).astype(np.float32)
    g = pyengine.GraphBuilder()

    def conv(name, h, w, grid_in, grid_out, stride=1, pad=0, groups=1):
        o = w.shape[0]
        scale = rng.uniform(0.001, 0.003, o).astype(np.float32)
        bias = rng.integers(-2000, 2000, o)
        node = g.node("QLinearConv2D", [h, g.quantized_constant(name + "/w", w.astype(np.int8), scale, 0, axis=0),
                                        g.constant(name + "/b", bias.astype(np.int32))],
                      name=name, strides=[stride, stride], pads=[pad] * 4, groups=groups,
                      x_scale=grid_in["scale"], x_zero_point=grid_in["zp"], x_dtype=dtype,
                      y_scale=grid_out["scale"], y_zero_point=grid_out["zp"], y_dtype=dtype)
        return node, (w, scale, bias, stride, pad, groups, grid_in, grid_out)

    def ref(v, spec):
        w, scale, bias, stride, pad, groups, grid_in, grid_out = spec
        return qconv_ref(v, grid_in, w, scale, np.zeros(w.shape[0], np.int64), bias, stride, pad, groups, 1,
                         grid_out, -np.inf, np.inf)

    xin = g.input("x", list(x.shape))
    a, sa = conv("expand", xin, rng.integers(-90, 90, (20, 6, 1, 1)), grids[0], grids[1])
    b, sb = conv("depthwise", a, rng.integers(-90, 90, (20, 1, 3, 3)), grids[1], grids[2], 2, 1, 20)
    c, sc = conv("grouped", b, rng.integers(-90, 90, (20, 5, 3, 3)), grids[2], grids[3], 1, 1, 4)
    d, sd = conv("project", b, rng.integers(-90, 90, (20, 20, 1, 1)), grids[2], grids[3])
    e, se = conv("head", c, rng.integers(-90, 90, (8, 20, 1, 1)), grids[3], grids[4])
    g.output(g.node("Add", [c, d], name="add"))
    g.output(e)
    model = pyengine.load(g.save(str(tmp_path / "codes.pyem")))
    got = model.predict(x)
    ra = ref(x, sa)
    rb = ref(ra, sb)
    rc, rd = ref(rb, sc), ref(rb, sd)
    outs = list(got.values())
    np.testing.assert_array_equal(outs[0], rc + rd)
    np.testing.assert_array_equal(outs[1], ref(rc, se))
    kernel = {op.name: op.kernel for op in model.profile(x, runs=1).ops}
    assert kernel["expand"].endswith("u8 codes out"), kernel
    assert kernel["depthwise"].endswith("u8 codes in and out"), kernel  # read by two int8 convs
    assert kernel["grouped"].endswith("u8 codes in") and kernel["project"].endswith("u8 codes in"), kernel
    assert "codes" not in kernel["head"], kernel  # its input is read by the Add too


def _write_raw(tmp_path, quant: dict, name: str = "bad.pyem") -> str:
    """A model whose graph JSON carries `quant` verbatim as its quantization section."""
    g = pyengine.GraphBuilder()
    w = g.quantized_constant("conv/w", np.ones((2, 1, 1, 1), np.int8), 0.1, 0, axis=0)
    g.output(g.node("QLinearConv2D", [g.input("x", [1, 1, 2, 2]), w], name="conv", x_scale=0.1))
    doc = g.graph
    doc["quantization"] = quant
    path = str(tmp_path / name)
    _core.write_pyem(path, json.dumps(doc), list(g.tensors.items()))
    return path


@pytest.mark.parametrize("scale,needle", [
    (0.0, "scale[0] is 0"), (-0.5, "scale[0] is -0.5"), ([0.1, 0.0], "scale[1] is 0"),
    ([0.1, -1e-3], "scale[1] is -0.001"), (1e-50, "scale[0] is 1e-50"),
])
def test_zero_or_negative_scale_is_a_format_error(tmp_path, scale, needle):
    path = _write_raw(tmp_path, {"conv/w": {"scale": scale, "zero_point": 0, "axis": 0}})
    with pytest.raises(pyengine.ModelFormatError) as e:
        pyengine.load(path)
    assert "conv/w" in str(e.value) and needle in str(e.value)


@pytest.mark.parametrize("quant,needle", [
    ({"conv/w": {"scale": 0.1, "zero_point": 200}}, "zero_point[0] is 200"),
    ({"conv/w": {"scale": [0.1, 0.2, 0.3], "axis": 0}}, "expected 1 or 2"),
    ({"nope": {"scale": 0.1}}, "'nope'"),
    ({"conv/w": {"scale": 0.1, "zeropoint": 0}}, "unknown key 'zeropoint'"),
])
def test_bad_quantization_parameters_are_named(tmp_path, quant, needle):
    with pytest.raises(pyengine.ModelFormatError, match="quantization of tensor") as e:
        pyengine.load(_write_raw(tmp_path, quant))
    assert needle in str(e.value)


def test_activation_scale_and_missing_weight_parameters_are_refused(tmp_path):
    g = pyengine.GraphBuilder()
    g.output(g.node("QuantizeLinear", [g.input("x", [3])], name="q", scale=0.0))
    with pytest.raises(pyengine.ModelFormatError, match="node 'q'.*'scale' is 0"):
        pyengine.load(g.save(str(tmp_path / "q.pyem")))
    g = pyengine.GraphBuilder()
    w = g.constant("w", np.ones((2, 1, 1, 1), np.int8))  # int8 but no scale / zero point
    g.output(g.node("QLinearConv2D", [g.input("x", [1, 1, 2, 2]), w], name="conv", x_scale=0.1))
    with pytest.raises(pyengine.ModelFormatError, match="node 'conv'.*no scale and zero point"):
        pyengine.load(g.save(str(tmp_path / "c.pyem")))
    g = pyengine.GraphBuilder()
    w = g.quantized_constant("w", np.ones((2, 2), np.int8), 0.1)
    g.output(g.node("Dense", [g.input("x", [1, 2]), w], name="fc"))
    with pytest.raises(pyengine.ModelFormatError,
                       match="node 'fc' \\(Dense\\): input 1 \\('w'\\) has dtype int8; it takes float32"):
        pyengine.load(g.save(str(tmp_path / "d.pyem")))


def test_info_names_the_int8_path():
    info = pyengine.info()
    assert info["int8_kernel"] == _core.int8_kernel()
    if info["kernel_variant"] == "avx512" and info["cpu"]["avx512_vnni"]:
        # AMX where the CPU has it and Linux grants the tile state, else vpdpbusd on zmm.
        assert info["int8_kernel"] in (("amx", "avx512-vnni") if info["cpu"]["amx_int8"] else ("avx512-vnni",))


def test_avx2_variant_takes_avx_vnni_where_the_cpu_has_it():
    """The AVX2 table's int8 GEMM is the VEX vpdpbusd one on a CPU with AVX-VNNI, and the
    widening vpmaddwd one without; either way the results are the generic one's (above)."""
    if "avx2" not in _core.kernels_available():
        pytest.skip("this CPU or build has no AVX2 kernels")
    before = _core.kernel_variant()
    try:
        _core.set_isa("avx2")
        want = "avx-vnni" if _core.cpu_features()["avx_vnni"] else "avx2"
        assert _core.int8_kernel() == want
    finally:
        _core.set_isa(before)
