"""TensorFlow: Keras models built and briefly trained here, frozen to GraphDefs (and exported as a
SavedModel), run by TensorFlow through pyengine.load and converted to the native engine (NHWC)."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
from framework_models import (
    IMAGE,
    MLP_FEATURES,
    assert_close,
    check_backend_and_native,
    data,
    keras_cnn,
    keras_flatten_cnn,
    keras_lrn_cnn,
    keras_mlp,
    keras_train,
    tf_freeze,
    tf_quiet,
)

import pyengine

pytestmark = pytest.mark.frameworks
tf_quiet()
tf = pytest.importorskip(
    "tensorflow",
    reason="the tensorflow extra (pip install 'pyengine[tensorflow]') is not installed",
)


@pytest.fixture(scope="module")
def keras_models(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    d = tmp_path_factory.mktemp("tf")
    mlp, cnn, flat = keras_mlp(), keras_cnn(), keras_flatten_cnn()
    keras_train(mlp, data((32, MLP_FEATURES)))
    keras_train(cnn, data((32, IMAGE, IMAGE, 3)))
    keras_train(flat, data((32, IMAGE, IMAGE, 3)))
    return {
        "mlp": (mlp, tf_freeze(mlp, str(d / "mlp.pb"))),
        "cnn": (cnn, tf_freeze(cnn, str(d / "cnn.pb"))),
        "flatten": (flat, tf_freeze(flat, str(d / "flatten.pb"))),
        "dir": d,
    }


@pytest.mark.parametrize(
    "kind, shape",
    [("mlp", (MLP_FEATURES,)), ("cnn", (IMAGE, IMAGE, 3)), ("flatten", (IMAGE, IMAGE, 3))],
)
def test_tensorflow_backend_and_native_match(keras_models, tmp_path, kind: str, shape) -> None:  # type: ignore[no-untyped-def]
    model, path = keras_models[kind]

    def reference(x: np.ndarray) -> np.ndarray:
        return model(x, training=False).numpy()

    check_backend_and_native(path, "tensorflow", reference, str(tmp_path / f"{kind}.pyem"), shape)


def test_frozen_keras_graph_holds_unfused_batch_norm_and_folds(keras_models) -> None:  # type: ignore[no-untyped-def]
    from pyengine.convert import to_builder
    from pyengine.convert.tensorflow import read_graph
    from pyengine.locate import locate

    location = locate(keras_models["cnn"][1])
    tf_ops = {n.op for n in read_graph(location).graph_def.node}
    assert {
        "Rsqrt",
        "Mul",
        "Sub",
        "AddV2",
        "Relu6",
        "DepthwiseConv2dNative",
        "Mean",
        "MaxPool",
        "AvgPool",
        "ConcatV2",
        "Softmax",
        "MatMul",
        "BiasAdd",
        "Conv2D",
    } <= tf_ops
    nodes = to_builder(location).graph["nodes"]
    ops = [n["op"] for n in nodes]
    assert "Mul" not in ops and "Add" not in ops and "Sub" not in ops  # batch norm folded
    assert [n["attrs"]["layout"] for n in nodes if n["op"] == "Conv2D"] == ["NHWC"] * 3
    assert any(n["op"] == "Conv2D" and n["attrs"].get("groups") == 8 for n in nodes)


def test_saved_model_through_serving_signature(keras_models, tmp_path) -> None:  # type: ignore[no-untyped-def]
    model = keras_models["mlp"][0]
    export = tmp_path / "exported"
    model.export(str(export), verbose=False)
    package = tmp_path / "package"  # an unpacked archive: one top-level folder holding the model
    shutil.copytree(export, package / "mlp_savedmodel")
    x = data((5, MLP_FEATURES))
    expected = model(x, training=False).numpy()
    framework_model = pyengine.load(str(package), backend="tensorflow")
    np.testing.assert_allclose(framework_model.predict(x), expected, rtol=1e-5, atol=1e-6)
    native = pyengine.load(str(package))
    assert native.backend == "native"
    assert_close(native.predict(x), expected)


def test_named_input_must_exist(keras_models) -> None:  # type: ignore[no-untyped-def]
    path = keras_models["mlp"][1]
    for backend in ("tensorflow", "native"):
        with pytest.raises(pyengine.ModelFormatError) as info:
            pyengine.load(path, backend=backend, inputs=["no_such_input"])
        msg = str(info.value)
        assert path in msg and "'no_such_input' is not a node" in msg and "['x']" in msg


def test_corrupt_pb_is_a_clear_error(keras_models, tmp_path) -> None:  # type: ignore[no-untyped-def]
    with open(keras_models["cnn"][1], "rb") as f:
        blob = f.read()
    bad = tmp_path / "model.pb"
    bad.write_bytes(blob[: len(blob) // 3] + b"\xff" * 64)
    for backend in ("tensorflow", "auto"):
        with pytest.raises(
            pyengine.ModelFormatError, match="model.pb' is not a TensorFlow frozen GraphDef"
        ):
            pyengine.load(str(bad), backend=backend)


def test_outputs_default_to_unconsumed_nodes(keras_models) -> None:  # type: ignore[no-untyped-def]
    model = pyengine.load(keras_models["cnn"][1], backend="tensorflow")
    assert [s.name for s in model.inputs] == ["image"]
    assert [s.name for s in model.outputs] == ["Identity"]
    assert model.inputs[0].shape == (-1, IMAGE, IMAGE, 3)
    assert os.path.basename(model.path) == "cnn.pb"


def test_run_time_batch_reshape_converts(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """tf.reshape(h, [tf.shape(h)[0], -1]): the batch read at run time becomes a copied dim."""
    from tensorflow.python.framework.convert_to_constants import (
        convert_variables_to_constants_v2,
    )

    w = tf.Variable(data((3, 3, 3, 4), seed=2))

    @tf.function(input_signature=[tf.TensorSpec([None, IMAGE, IMAGE, 3], tf.float32, name="x")])
    def flatten(x):  # type: ignore[no-untyped-def]
        h = tf.nn.conv2d(x, w, 1, "SAME")
        return tf.reshape(h, [tf.shape(h)[0], -1])

    frozen = convert_variables_to_constants_v2(flatten.get_concrete_function())
    path = tmp_path / "view.pb"
    path.write_bytes(frozen.graph.as_graph_def().SerializeToString())
    model = pyengine.load(str(path), backend="native")
    for batch in (1, 5):
        x = data((batch, IMAGE, IMAGE, 3), seed=batch)
        assert_close(model.predict(x), flatten(x).numpy())


def test_named_outputs(keras_models, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from pyengine.convert.tensorflow import read_graph
    from pyengine.locate import locate

    path = keras_models["mlp"][1]
    logits = [n.name for n in read_graph(locate(path)).graph_def.node if n.op == "BiasAdd"][-1]
    framework_model = pyengine.load(path, backend="tensorflow", inputs=["x"], outputs=[logits])
    native = pyengine.load(path, backend="native", outputs=[logits])
    assert [s.name for s in native.outputs] == [logits] == [s.name for s in framework_model.outputs]
    x = data((3, MLP_FEATURES))
    probs = keras_models["mlp"][0](x, training=False).numpy()
    got = framework_model.predict(x)
    e = np.exp(got - got.max(1, keepdims=True))
    np.testing.assert_allclose(e / e.sum(1, keepdims=True), probs, rtol=1e-5, atol=1e-6)
    assert_close(native.predict(x), got)


def _native_ops(path: str, **options) -> list[tuple[str, str]]:  # type: ignore[no-untyped-def]
    """(op, fused activation) of each node of the converted graph."""
    from pyengine.convert import to_builder
    from pyengine.locate import locate

    nodes = to_builder(locate(path), **options).graph["nodes"]
    return [(n["op"], n.get("attrs", {}).get("activation", "")) for n in nodes]


def test_lrn_hard_swish_hard_sigmoid_silu(tmp_path) -> None:  # type: ignore[no-untyped-def]
    model = keras_lrn_cnn()
    keras_train(model, data((32, IMAGE, IMAGE, 3)))
    path = tf_freeze(model, str(tmp_path / "lrn.pb"))

    def reference(x: np.ndarray) -> np.ndarray:
        return model(x, training=False).numpy()

    check_backend_and_native(path, "tensorflow", reference, str(tmp_path / "lrn.pyem"), (IMAGE, IMAGE, 3))
    # Relu6(x + 3) / 6 became HardSigmoid (fused into its convolution), x * that HardSwish, and
    # x * sigmoid(1.0 * x) SiLU: no Relu6, Div or Sigmoid node is left.
    assert _native_ops(path) == [("Conv2D", ""), ("LRN", ""), ("HardSwish", ""),
                                 ("Conv2D", "hard_sigmoid"), ("Conv2D", "silu"), ("LRN", ""),
                                 ("Mean", ""), ("Dense", "")]


def test_free_image_size_with_flatten_is_refused_at_convert(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A graph taking [None, None, None, 3] images that flattens them (batch read at run time)
    into a matmul: only the trained size fits, so converting without input_shapes says so."""
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    rng = np.random.default_rng(0)
    w = tf.Variable(rng.standard_normal((3, 3, 3, 4)).astype(np.float32))
    fw = tf.Variable(rng.standard_normal((IMAGE * IMAGE * 4, 5)).astype(np.float32) / 16)

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32, name="image")])
    def f(x):  # type: ignore[no-untyped-def]
        h = tf.nn.relu(tf.nn.conv2d(x, w, 1, "SAME"))
        return tf.matmul(tf.reshape(h, [tf.shape(h)[0], -1]), fw)

    path = str(tmp_path / "free.pb")
    with open(path, "wb") as fh:
        fh.write(convert_variables_to_constants_v2(f.get_concrete_function()).graph.as_graph_def().SerializeToString())
    with pytest.raises(pyengine.InputShapeUnknownError,
                       match=r"image \[-1, -1, -1, 3\].*input_shapes=\{'image': \[-1, SIZE, SIZE, 3\]\}"):
        pyengine.convert(path, str(tmp_path / "no.pyem"))
    native = pyengine.load(pyengine.convert(path, str(tmp_path / "fixed.pyem"),
                                            input_shapes={"image": [-1, IMAGE, IMAGE, 3]}))
    x = data((2, IMAGE, IMAGE, 3))
    assert_close(native.predict(x), f(x).numpy())
