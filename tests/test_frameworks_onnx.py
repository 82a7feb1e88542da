"""ONNX: models built with onnx.helper, run by onnxruntime through pyengine.load and converted to
the native engine; unsupported ops; damaged files; the CLI converter."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from framework_models import (
    IMAGE,
    MLP_FEATURES,
    assert_close,
    check_backend_and_native,
    data,
    onnx_cnn,
    onnx_mlp,
    onnx_save,
)

import pyengine

pytestmark = pytest.mark.frameworks
onnx = pytest.importorskip(
    "onnx", reason="the onnx extra (pip install 'pyengine[onnx]') is not installed"
)
ort = pytest.importorskip("onnxruntime", reason="the onnx extra is not installed")


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    d = tmp_path_factory.mktemp("onnx")
    return {
        "mlp": onnx_save(onnx_mlp(data((64, MLP_FEATURES))), str(d / "mlp.onnx")),
        "cnn": onnx_save(onnx_cnn(data((64, 3, IMAGE, IMAGE))), str(d / "cnn.onnx")),
    }


def _session_reference(path: str):  # type: ignore[no-untyped-def]
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    return lambda x: sess.run(None, {"x": x})[0]


@pytest.mark.parametrize("kind, shape", [("mlp", (MLP_FEATURES,)), ("cnn", (3, IMAGE, IMAGE))])
def test_onnx_backend_and_native_match(models: dict[str, str], tmp_path, kind: str, shape) -> None:  # type: ignore[no-untyped-def]
    path = models[kind]
    check_backend_and_native(
        path, "onnx", _session_reference(path), str(tmp_path / f"{kind}.pyem"), shape
    )


def test_cnn_batch_norm_and_activations_fold_into_conv(models: dict[str, str]) -> None:
    from pyengine.convert import to_builder
    from pyengine.locate import locate

    ops = [n["op"] for n in to_builder(locate(models["cnn"])).graph["nodes"]]
    assert "BatchNorm" not in ops and "Clip" not in ops and "Relu" not in ops
    assert ops.count("Conv2D") == 2


def _pre_activation_model(path: str, activation: str, rank4: bool = True) -> str:
    """x -> conv -> concat(conv, x) -> BatchNorm -> activation -> conv: DenseNet's pre-activation
    unit, whose BatchNorm cannot fold into a convolution (it follows a concatenation). 20
    channels after the concatenation, so a channel-blocked tensor has padded channels. rank4
    False: a [N, 20] BatchNorm and activation (the plain path)."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(5)
    f = lambda *s: (rng.standard_normal(s) * 0.5).astype(np.float32)  # noqa: E731
    c = 20
    bn = [numpy_helper.from_array(f(c), "g"), numpy_helper.from_array(f(c), "b"),
          numpy_helper.from_array(f(c), "m"), numpy_helper.from_array(np.abs(f(c)) + 0.5, "v")]
    act_attrs: dict[str, float] = {}
    act_inputs = ["n"]
    inits = list(bn)
    if activation == "Clip":
        inits += [numpy_helper.from_array(np.array(-0.2, np.float32), "lo"),
                  numpy_helper.from_array(np.array(0.5, np.float32), "hi")]
        act_inputs += ["lo", "hi"]
    if rank4:
        inits += [numpy_helper.from_array(f(12, 8, 3, 3), "w1"), numpy_helper.from_array(f(6, c, 3, 3), "w2")]
        nodes = [helper.make_node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1]),
                 helper.make_node("Concat", ["c1", "x"], ["cat"], axis=1),
                 helper.make_node("BatchNormalization", ["cat", "g", "b", "m", "v"], ["n"]),
                 helper.make_node(activation, act_inputs, ["a"], **act_attrs),
                 helper.make_node("Conv", ["a", "w2"], ["y"], pads=[1, 1, 1, 1])]
        x_shape, y_shape = [None, 8, 9, 11], [None, 6, 9, 11]
    else:
        inits += [numpy_helper.from_array(f(8, 12), "w1"), numpy_helper.from_array(f(c, 6), "w2")]
        nodes = [helper.make_node("MatMul", ["x", "w1"], ["c1"]),
                 helper.make_node("Concat", ["c1", "x"], ["cat"], axis=1),
                 helper.make_node("BatchNormalization", ["cat", "g", "b", "m", "v"], ["n"]),
                 helper.make_node(activation, act_inputs, ["a"], **act_attrs),
                 helper.make_node("MatMul", ["a", "w2"], ["y"])]
        x_shape, y_shape = [None, 8], [None, 6]
    graph = helper.make_graph(nodes, "pre_activation",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, y_shape)], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), path)
    return path


@pytest.mark.parametrize("activation, fuses", [("Relu", True), ("Clip", True), ("Sigmoid", False)])
@pytest.mark.parametrize("rank4", [True, False])
def test_pre_activation_batchnorm_takes_its_activation(tmp_path, activation: str, fuses: bool,  # type: ignore[no-untyped-def]
                                                       rank4: bool) -> None:
    """A BatchNorm left standing takes the activation after it when that keeps 0 at 0 (ReLU, a
    clip around 0), in the blocked and the plain layout; one that does not (sigmoid) stays a node
    of its own. Either way the outputs are onnxruntime's."""
    from pyengine.convert import to_builder
    from pyengine.locate import locate

    path = _pre_activation_model(str(tmp_path / "m.onnx"), activation, rank4)
    nodes = to_builder(locate(path)).graph["nodes"]
    bn = [n for n in nodes if n["op"] == "BatchNorm"]
    assert len(bn) == 1
    if fuses:
        assert activation not in [n["op"] for n in nodes]
        assert bn[0]["attrs"]["activation"] == activation.lower()
    else:
        assert bn[0]["attrs"].get("activation", "none") == "none"
    x = data((3, 8, 9, 11) if rank4 else (3, 8))
    want = ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    native = pyengine.load(pyengine.convert(path, str(tmp_path / "m.pyem")), backend="native")
    assert_close(native.predict(x), want)


def _unsupported_model(path: str) -> str:
    from onnx import TensorProto, helper

    nodes = [
        helper.make_node("Scaler", ["x"], ["e"], name="scaler_node", domain="ai.onnx.ml",
                         offset=[0.5], scale=[2.0]),
        helper.make_node("Relu", ["e"], ["r"], name="relu_node"),
        helper.make_node("Normalizer", ["r"], ["y"], name="normalizer_node", domain="ai.onnx.ml",
                         norm="MAX"),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 4])],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14),
                                                      helper.make_opsetid("ai.onnx.ml", 1)]), path)
    return path


def test_unsupported_ops_listed_and_auto_falls_back_once(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = _unsupported_model(str(tmp_path / "ml.onnx"))
    with pytest.raises(pyengine.UnsupportedOpsError) as info:
        pyengine.convert(path, str(tmp_path / "ml.pyem"))
    msg = str(info.value)
    assert "scaler_node (ai.onnx.ml.Scaler)" in msg and "normalizer_node (ai.onnx.ml.Normalizer)" in msg
    assert path in msg
    assert info.value.ops == [("scaler_node", "ai.onnx.ml.Scaler"), ("normalizer_node", "ai.onnx.ml.Normalizer")]
    with pytest.raises(pyengine.UnsupportedOpsError):
        pyengine.load(path, backend="native")
    with pytest.warns(pyengine.FrameworkFallbackWarning, match="runs this model on onnx") as caught:
        model = pyengine.load(path)
    assert len(caught) == 1
    assert model.backend == "onnx"
    x = data((3, 4))
    scaled = np.maximum((x - 0.5) * 2.0, 0)
    want = scaled / np.maximum(np.max(scaled, axis=1, keepdims=True), 1e-30)  # Normalizer MAX
    np.testing.assert_allclose(model.predict(x), want, rtol=1e-5, atol=1e-5)


def test_cli_convert(models: dict[str, str], tmp_path) -> None:  # type: ignore[no-untyped-def]
    dst = tmp_path / "cli.pyem"
    done = subprocess.run(
        [sys.executable, "-m", "pyengine", "convert", models["mlp"], "-o", str(dst)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "wrote" in done.stdout and str(dst) in done.stdout
    x = data((4, MLP_FEATURES))
    assert_close(pyengine.load(str(dst)).predict(x), _session_reference(models["mlp"])(x))
    bad = _unsupported_model(str(tmp_path / "ml.onnx"))
    done = subprocess.run(
        [sys.executable, "-m", "pyengine", "convert", bad, "-o", str(tmp_path / "x.pyem")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert "scaler_node (ai.onnx.ml.Scaler)" in done.stderr and "normalizer_node (ai.onnx.ml.Normalizer)" in done.stderr


def test_corrupt_onnx_is_a_clear_error(models: dict[str, str], tmp_path) -> None:  # type: ignore[no-untyped-def]
    from pathlib import Path

    blob = Path(models["cnn"]).read_bytes()
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(blob[: len(blob) // 2])
    for backend in ("onnx", "auto"):
        with pytest.raises(pyengine.ModelFormatError, match="bad.onnx' is not a valid ONNX model"):
            pyengine.load(str(bad), backend=backend)


def test_run_time_batch_reshape_converts(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """PyTorch's x.view(x.size(0), -1): Shape, Gather, Unsqueeze, Concat feeding a Reshape."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(5)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    fc = rng.standard_normal((4 * 6 * 6, 5)).astype(np.float32)
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], name="conv"),
        helper.make_node("Shape", ["c"], ["s"], name="shape"),
        helper.make_node("Gather", ["s", "zero"], ["n"], axis=0, name="batch"),
        helper.make_node("Unsqueeze", ["n", "axes"], ["n1"], name="unsqueeze"),
        helper.make_node("Concat", ["n1", "minus1"], ["target"], axis=0, name="target"),
        helper.make_node("Reshape", ["c", "target"], ["flat"], name="view"),
        helper.make_node("MatMul", ["flat", "fc"], ["y"], name="fc"),
    ]
    inits = [
        numpy_helper.from_array(w, "w"),
        numpy_helper.from_array(fc, "fc"),
        numpy_helper.from_array(np.array(0, np.int64), "zero"),
        numpy_helper.from_array(np.array([0], np.int64), "axes"),
        numpy_helper.from_array(np.array([-1], np.int64), "minus1"),
    ]
    graph = helper.make_graph(
        nodes,
        "view",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 5])],
        inits,
    )
    path = str(tmp_path / "view.onnx")
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), path)
    model = pyengine.load(path, backend="native")
    for batch in (1, 4):
        x = data((batch, 3, 8, 8), seed=batch)
        assert_close(model.predict(x), _session_reference(path)(x))


def test_options_must_apply_to_the_model(models: dict[str, str]) -> None:
    with pytest.raises(ValueError, match="option\\(s\\) chain do not apply to onnx models"):
        pyengine.load(models["mlp"], chain=object())
    model = pyengine.load(models["mlp"], backend="onnx", threads=1)
    assert model.predict(data((1, MLP_FEATURES))).shape == (1, 5)


# ---- coverage real CNNs need (tests/cnn_zoo.py, small versions) ----
def _native_ops(path: str) -> list[str]:
    from pyengine.convert import to_builder
    from pyengine.locate import locate

    return [n["op"] for n in to_builder(locate(path)).graph["nodes"]]


def _check_against_onnxruntime(path: str, tmp_path, image: int) -> pyengine.Model:  # type: ignore[no-untyped-def]
    native = pyengine.load(pyengine.convert(path, str(tmp_path / "model.pyem")))
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    for batch in (1, 3):
        x = data((batch, 3, image, image), seed=batch)
        assert_close(native.predict(x), sess.run(None, {"x": x})[0])
    return native


@pytest.mark.parametrize("name, image, width", [("alexnet", 67, 8), ("zfnet", 64, 8), ("googlenet", 64, 8)])
def test_lrn_networks_convert(tmp_path, name: str, image: int, width: int) -> None:  # type: ignore[no-untyped-def]
    """AlexNet, ZFNet and GoogLeNet (Inception v1) need LRN; small versions of each."""
    import cnn_zoo

    path = tmp_path / f"{name}.onnx"
    path.write_bytes(getattr(cnn_zoo, name)(image=image, classes=10, width=width))
    _check_against_onnxruntime(str(path), tmp_path, image)
    assert _native_ops(str(path)).count("LRN") == 2


@pytest.mark.parametrize("name", ["mobilenet_v3_small", "efficientnet_b0", "shufflenet_v2"])
def test_hard_swish_silu_and_split_networks_convert(tmp_path, name: str) -> None:  # type: ignore[no-untyped-def]
    """MobileNetV3 (HardSwish, HardSigmoid), EfficientNet (SiLU as x * Sigmoid(x)), ShuffleNetV2
    (Split); the activations all fuse into the convolution or Dense before them."""
    import cnn_zoo

    path = tmp_path / f"{name}.onnx"
    path.write_bytes(cnn_zoo.MODELS[name](image=32, classes=10))
    _check_against_onnxruntime(str(path), tmp_path, 32)
    ops = set(_native_ops(str(path)))
    assert not ops & {"HardSwish", "HardSigmoid", "Sigmoid", "Silu"}, ops
    assert ("Slice" in ops) == (name == "shufflenet_v2")


def test_standalone_activations_lrn_slice_and_split(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The ops where nothing fuses them: HardSigmoid (its own alpha and beta), HardSwish, x *
    sigmoid(x) on a graph input, LRN (onnxruntime takes odd sizes only), Split into unequal parts, Slice with negative
    bounds on two axes."""
    from onnx import TensorProto, helper, numpy_helper

    nodes = [
        helper.make_node("HardSigmoid", ["x"], ["hs"], alpha=0.3, beta=0.4),
        helper.make_node("HardSwish", ["x"], ["hw"]),
        helper.make_node("Sigmoid", ["x"], ["sig"]),
        helper.make_node("Mul", ["x", "sig"], ["silu"]),
        helper.make_node("Add", ["hs", "hw"], ["a"]),
        helper.make_node("Add", ["a", "silu"], ["b"]),
        helper.make_node("LRN", ["b"], ["lrn"], size=3, alpha=0.05, beta=0.6, bias=1.2),
        helper.make_node("Split", ["lrn", "parts"], ["s0", "s1", "s2"], axis=1),
        helper.make_node("Slice", ["s2", "starts", "ends", "axes"], ["sl"]),
        helper.make_node("Concat", ["s0", "s1"], ["s01"], axis=1),
        helper.make_node("Slice", ["s01", "zero", "five", "three", "one"], ["s01w"]),
        helper.make_node("Concat", ["s01w", "sl"], ["y"], axis=1),
    ]
    inits = [
        numpy_helper.from_array(np.array([1, 2, 3], np.int64), "parts"),
        numpy_helper.from_array(np.array([-2, 1], np.int64), "starts"),
        numpy_helper.from_array(np.array([2**62, -1], np.int64), "ends"),
        numpy_helper.from_array(np.array([1, -1], np.int64), "axes"),
        *(numpy_helper.from_array(np.array([v], np.int64), k)
          for k, v in (("zero", 0), ("five", 5), ("three", 3), ("one", 1))),
    ]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 6, 5, 7])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 5, 5, 5])], initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    path = onnx_save(model, str(tmp_path / "ops.onnx"))
    native = pyengine.load(pyengine.convert(path, str(tmp_path / "ops.pyem")))
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    for batch in (1, 4):
        x = data((batch, 6, 5, 7), seed=batch) * 4
        assert_close(native.predict(x), sess.run(None, {"x": x})[0])
    ops = _native_ops(path)
    assert {"HardSigmoid", "HardSwish", "Silu", "LRN"} <= set(ops) and ops.count("Slice") == 6


@pytest.mark.parametrize("name, reweight", [("bvlc_alexnet", False), ("zfnet512", False),
                                           ("inception_v1", True)])
def test_model_zoo_lrn_graphs_convert(tmp_path, name: str, reweight: bool) -> None:  # type: ignore[no-untyped-def]
    """The ONNX model zoo's AlexNet, ZFNet and GoogLeNet graphs (opset 9), as the onnx package
    ships them for its backend tests: weights stripped to ConstantOfShape (every logit equal).
    GoogLeNet also runs with random weights put back, so that its output varies (AlexNet's and
    ZFNet's 60M weights would take most of a minute to write out; the small versions in
    test_lrn_networks_convert check their numbers)."""
    import os

    from onnx import numpy_helper

    light = os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data", "light")
    model = onnx.load(os.path.join(light, f"light_{name}.onnx"))
    if reweight:
        shapes = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
        rng = np.random.default_rng(0)
        kept = []
        for node in model.graph.node:
            if node.op_type == "ConstantOfShape" and node.input[0] in shapes:
                shape = tuple(int(d) for d in shapes[node.input[0]])
                fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else 1
                w = rng.standard_normal(shape, dtype=np.float32)
                w *= np.float32(np.sqrt(2.0 / fan_in) if len(shape) > 1 else 0.1)
                model.graph.initializer.append(numpy_helper.from_array(w, node.output[0]))
            else:
                kept.append(node)
        del model.graph.node[:]
        model.graph.node.extend(kept)
        model.ir_version = max(model.ir_version, 4)  # initializers that are not graph inputs
    path = onnx_save(model, str(tmp_path / f"{name}.onnx"))
    native = pyengine.load(pyengine.convert(path, str(tmp_path / f"{name}.pyem")))
    (spec,) = native.inputs
    x = data(spec.shape)
    expected = ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(None, {spec.name: x})[0]
    assert (expected.std() > 1e-4) == reweight  # with random weights, the softmax output varies
    assert_close(native.predict(x), expected)


def _free_size_cnn(tmp_path, pool: str) -> str:  # type: ignore[no-untyped-def]
    """["N", 3, "H", "W"] -> Conv -> (Flatten | PyTorch's x.view(x.size(0), -1) |
    GlobalAveragePool + Flatten) -> Gemm to 5."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    feats = 4 if pool == "gap" else 4 * IMAGE * IMAGE
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1])]
    if pool == "gap":
        nodes.append(helper.make_node("GlobalAveragePool", ["c"], ["c2"]))
    if pool == "view":
        nodes += [helper.make_node("Shape", ["c"], ["s"]),
                  helper.make_node("Gather", ["s", "zero"], ["n"], axis=0),
                  helper.make_node("Unsqueeze", ["n", "zero1"], ["n1"]),
                  helper.make_node("Concat", ["n1", "minus1"], ["target"], axis=0),
                  helper.make_node("Reshape", ["c", "target"], ["f"])]
    else:
        nodes.append(helper.make_node("Flatten", ["c2" if pool == "gap" else "c"], ["f"]))
    nodes.append(helper.make_node("Gemm", ["f", "fw"], ["y"]))
    inits = [numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "w"),
             numpy_helper.from_array(rng.standard_normal((feats, 5)).astype(np.float32), "fw"),
             numpy_helper.from_array(np.array(0, np.int64), "zero"),
             numpy_helper.from_array(np.array([0], np.int64), "zero1"),
             numpy_helper.from_array(np.array([-1], np.int64), "minus1")]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, "H", "W"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 5])], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    return onnx_save(model, str(tmp_path / f"{pool}.onnx"))


@pytest.mark.parametrize("flatten", ["flatten", "view"])
def test_free_image_size_with_flatten_is_refused_at_convert(tmp_path, flatten: str) -> None:  # type: ignore[no-untyped-def]
    path = _free_size_cnn(tmp_path, flatten)
    with pytest.raises(pyengine.InputShapeUnknownError,
                       match=r"x.? \[-1, 3, -1, -1\].*input_shapes=\{'x': \[-1, 3, SIZE, SIZE\]\}"):
        pyengine.convert(path, str(tmp_path / "no.pyem"))
    with pytest.raises(ValueError, match="input_shapes names 'image', which is not an input .*its inputs: x"):
        pyengine.convert(path, str(tmp_path / "no.pyem"), input_shapes={"image": [-1, 3, 8, 8]})
    with pytest.raises(ValueError, match=r"input_shapes\['x'\] = \[3, 8, 8\] does not fit .* rank 4"):
        pyengine.convert(path, str(tmp_path / "no.pyem"), input_shapes={"x": [3, 8, 8]})
    native = pyengine.load(pyengine.convert(path, str(tmp_path / "fixed.pyem"),
                                            input_shapes={"x": [-1, 3, IMAGE, IMAGE]}))
    assert native.inputs[0].shape == (-1, 3, IMAGE, IMAGE)
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    x = data((2, 3, IMAGE, IMAGE))
    assert_close(native.predict(x), sess.run(None, {"x": x})[0])


def test_free_image_size_with_global_pool_runs_at_any_size(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = _free_size_cnn(tmp_path, "gap")
    native = pyengine.load(pyengine.convert(path, str(tmp_path / "gap.pyem")))
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    for size in (IMAGE, 2 * IMAGE + 1):
        x = data((2, 3, size, size))
        assert_close(native.predict(x), sess.run(None, {"x": x})[0])


def test_hard_swish_written_out_becomes_one_op(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """x * ((1/6) * Clip(x + 3, 0, 6)), as older exporters write hard-swish: one HardSwish, and
    Relu6(x + 3) / 6 alone one HardSigmoid."""
    from onnx import TensorProto, helper, numpy_helper

    consts = {"three": 3.0, "zero": 0.0, "six": 6.0, "sixth": 1 / 6}
    nodes = [
        helper.make_node("Add", ["x", "three"], ["a"]),
        helper.make_node("Clip", ["a", "zero", "six"], ["r"]),
        helper.make_node("Mul", ["sixth", "r"], ["hs"]),
        helper.make_node("Mul", ["x", "hs"], ["hw"]),
        helper.make_node("Add", ["hw", "three"], ["b"]),
        helper.make_node("Clip", ["b", "zero", "six"], ["r2"]),
        helper.make_node("Div", ["r2", "six"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 11])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 11])],
        initializer=[numpy_helper.from_array(np.array(v, np.float32), k) for k, v in consts.items()],
    )
    path = onnx_save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]),
                     str(tmp_path / "hs.onnx"))
    assert _native_ops(path) == ["HardSwish", "HardSigmoid"]
    native = pyengine.load(pyengine.convert(path, str(tmp_path / "hs.pyem")))
    x = data((5, 11)) * 5
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    assert_close(native.predict(x), sess.run(None, {"x": x})[0])
