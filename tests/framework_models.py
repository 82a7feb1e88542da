"""Small framework models built and briefly trained here; tests and bench/ share them.

Every builder writes the model the way its framework saves it and returns the path (or the
directory) plus whatever the test needs to run the framework itself.
"""

from __future__ import annotations

import os

import numpy as np

MLP_FEATURES = 16
MLP_CLASSES = 5
IMAGE = 8  # images are IMAGE x IMAGE with 3 channels


def assert_close(actual: np.ndarray, expected: np.ndarray, tol: float = 1e-4) -> None:
    """Outputs match the framework's within ``tol`` (absolute and relative)."""
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    np.testing.assert_allclose(actual, expected, rtol=tol, atol=tol)


def data(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    """Deterministic float32 inputs."""
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def labels(n: int, classes: int = MLP_CLASSES, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, classes, n)


# ---------------------------------------------------------------- TensorFlow (NHWC)
def tf_quiet() -> None:
    """Keep TensorFlow's C++ logging out of test output."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def keras_mlp():  # type: ignore[no-untyped-def]
    import keras

    inp = keras.Input((MLP_FEATURES,), name="x")
    h = keras.layers.Dense(32, activation="relu")(inp)
    h = keras.layers.Dense(32, activation="tanh")(h)
    out = keras.layers.Dense(MLP_CLASSES, activation="softmax")(h)
    return keras.Model(inp, out)


def keras_cnn():  # type: ignore[no-untyped-def]
    import keras
    from keras import layers

    inp = keras.Input((IMAGE, IMAGE, 3), name="image")
    h = layers.Conv2D(8, 3, padding="same")(inp)
    h = layers.BatchNormalization()(h)
    h = layers.ReLU(max_value=6.0)(h)
    h = layers.DepthwiseConv2D(3, padding="same", use_bias=False)(h)
    h = layers.BatchNormalization()(h)
    h = layers.ReLU()(h)
    h = layers.MaxPooling2D(2)(h)
    a = layers.Conv2D(8, 1, activation="relu")(h)
    b = layers.AveragePooling2D(2, strides=1, padding="same")(h)
    h = layers.Concatenate()([a, b])
    h = layers.GlobalAveragePooling2D()(h)
    out = layers.Dense(MLP_CLASSES, activation="softmax")(h)
    return keras.Model(inp, out)


def keras_flatten_cnn():  # type: ignore[no-untyped-def]
    """Strided conv, batch norm, leaky relu, a residual add, padding, dropout and Flatten (whose
    frozen graph computes the batch size at run time: Shape, StridedSlice, Pack, Reshape)."""
    import keras
    from keras import layers

    inp = keras.Input((IMAGE, IMAGE, 3), name="image")
    h = layers.Conv2D(4, 3, strides=2, padding="valid")(inp)
    h = layers.BatchNormalization()(h)
    h = layers.LeakyReLU(0.2)(h)
    h = layers.Add()([h, layers.Conv2D(4, 1, activation="sigmoid")(h)])
    h = layers.ZeroPadding2D(1)(h)
    h = layers.Dropout(0.3)(h)
    h = layers.Flatten()(h)
    h = layers.Dense(8)(h)
    h = layers.BatchNormalization()(h)
    h = layers.Activation("tanh")(h)
    return keras.Model(inp, layers.Dense(MLP_CLASSES)(h))


def keras_lrn_cnn():  # type: ignore[no-untyped-def]
    """tf.nn.local_response_normalization, Keras's hard_swish, hard_sigmoid and silu (frozen as
    LRN; Relu6(x + 3) / 6 patterns; x * sigmoid(1.0 * x) under an IdentityN)."""
    import keras
    import tensorflow as tf
    from keras import layers

    inp = keras.Input((IMAGE, IMAGE, 3), name="image")
    h = layers.Conv2D(8, 3, padding="same")(inp)
    h = layers.Lambda(lambda t: tf.nn.local_response_normalization(
        t, depth_radius=2, bias=1.5, alpha=1e-2, beta=0.75))(h)
    h = layers.Activation("hard_swish")(h)
    h = layers.Conv2D(8, 1, activation="hard_sigmoid")(h)
    h = layers.Conv2D(8, 3, activation="silu")(h)
    h = layers.Lambda(lambda t: tf.nn.local_response_normalization(t, depth_radius=1))(h)
    h = layers.GlobalAveragePooling2D()(h)
    return keras.Model(inp, layers.Dense(MLP_CLASSES)(h))


def keras_train(model, x: np.ndarray, steps: int = 3) -> None:  # type: ignore[no-untyped-def]
    """A few optimizer steps, so batch norm statistics and weights move off their init."""
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    y = labels(len(x))
    model.fit(x, y, batch_size=max(1, len(x) // steps), epochs=1, verbose=0)


def tf_freeze(model, path: str) -> str:  # type: ignore[no-untyped-def]
    """Write ``model`` as a frozen GraphDef (.pb): variables become constants."""
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import (
        convert_variables_to_constants_v2,
    )

    spec = [
        tf.TensorSpec([None, *model.inputs[0].shape[1:]], tf.float32, name=model.inputs[0].name)
    ]
    fn = tf.function(lambda x: model(x, training=False)).get_concrete_function(*spec)
    frozen = convert_variables_to_constants_v2(fn)
    with open(path, "wb") as f:
        f.write(frozen.graph.as_graph_def().SerializeToString())
    return path


def tf_freeze_function(tmp_path, fn, shape, dtype=None, name="x"):  # type: ignore[no-untyped-def]
    """``fn`` frozen to a GraphDef file with input ``name`` of ``shape`` (float32 unless
    ``dtype``); (path, concrete function)."""
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import (
        convert_variables_to_constants_v2,
    )

    concrete = tf.function(fn, input_signature=[tf.TensorSpec(shape, dtype or tf.float32, name=name)])
    frozen = convert_variables_to_constants_v2(concrete.get_concrete_function())
    path = tmp_path / "m.pb"
    path.write_bytes(frozen.graph.as_graph_def().SerializeToString())
    return str(path), concrete


# ---------------------------------------------------------------- MXNet (NCHW)
def import_mxnet():  # type: ignore[no-untyped-def]
    """MXNet 1.9.1 reads numpy.bool, removed in numpy 1.24: restore the alias first."""
    if "bool" not in np.__dict__:
        np.bool = bool  # type: ignore[attr-defined]
    import mxnet

    return mxnet


def mxnet_mlp():  # type: ignore[no-untyped-def]
    mx = import_mxnet()
    nn = mx.gluon.nn
    net = nn.HybridSequential()
    net.add(
        nn.Dense(32, activation="relu"),
        nn.Dense(32),
        nn.LeakyReLU(0.1),
        nn.Dense(32, activation="sigmoid"),
        nn.Dense(MLP_CLASSES),
    )
    return net


class _MXSoftmax:  # marker for readability only
    pass


def mxnet_cnn():  # type: ignore[no-untyped-def]
    mx = import_mxnet()
    nn = mx.gluon.nn

    class Net(mx.gluon.HybridBlock):
        def __init__(self) -> None:
            super().__init__()
            self.conv1 = nn.Conv2D(8, 3, padding=1)
            self.bn1 = nn.BatchNorm()
            self.pool1 = nn.MaxPool2D(2)
            self.conv2 = nn.Conv2D(8, 3, padding=1, groups=8, use_bias=False)
            self.bn2 = nn.BatchNorm()
            self.conv3 = nn.Conv2D(8, 1, activation="tanh")
            self.pool2 = nn.AvgPool2D(2, strides=1, padding=1, count_include_pad=False)
            self.gap = nn.GlobalAvgPool2D()
            self.fc = nn.Dense(MLP_CLASSES)

        def hybrid_forward(self, F, x):  # type: ignore[no-untyped-def]
            h = self.pool1(F.Activation(self.bn1(self.conv1(x)), act_type="relu"))
            h = F.relu(self.bn2(self.conv2(h)))
            h = F.concat(self.conv3(h), F.broadcast_mul(h, F.ones((1, 8, 1, 1)) * 0.5), dim=1)
            h = self.gap(self.pool2(h))
            h = F.reshape(F.flatten(h), (-1, 16))
            return F.softmax(self.fc(h))

    return Net()


def mxnet_lrn_cnn():  # type: ignore[no-untyped-def]
    """MXNet's LRN (odd and even nsize), hard_sigmoid and Gluon's Swish."""
    mx = import_mxnet()
    nn = mx.gluon.nn

    class Net(mx.gluon.HybridBlock):
        def __init__(self) -> None:
            super().__init__()
            self.conv1 = nn.Conv2D(8, 3, padding=1)
            self.conv2 = nn.Conv2D(8, 1)
            self.conv3 = nn.Conv2D(8, 3, padding=1)
            self.swish = nn.Swish()
            self.fc = nn.Dense(MLP_CLASSES)

        def hybrid_forward(self, F, x):  # type: ignore[no-untyped-def]
            h = F.LRN(self.conv1(x), nsize=5, alpha=1e-2, beta=0.75, knorm=1.5)
            h = F.hard_sigmoid(self.conv2(h), alpha=0.3, beta=0.4)
            h = self.swish(self.conv3(h))
            return self.fc(F.LRN(h, nsize=3, alpha=0.1, beta=0.5, knorm=2.0))

    return Net()


def mxnet_train_export(net, x: np.ndarray, prefix: str, steps: int = 3) -> str:  # type: ignore[no-untyped-def]
    """Initialize, train a few steps, hybridize and export ``prefix``-symbol.json/-0000.params."""
    mx = import_mxnet()
    net.initialize(mx.init.Xavier())
    net.hybridize()
    trainer = mx.gluon.Trainer(net.collect_params(), "adam", {"learning_rate": 0.01})
    loss_fn = mx.gluon.loss.SoftmaxCrossEntropyLoss()
    xs, ys = mx.nd.array(x), mx.nd.array(labels(len(x)))
    for _ in range(steps):
        with mx.autograd.record():
            loss = loss_fn(net(xs), ys)
        loss.backward()
        trainer.step(len(x))
    net(xs)
    os.makedirs(os.path.dirname(prefix) or ".", exist_ok=True)
    net.export(prefix, epoch=0)
    return prefix + "-symbol.json"


# ---------------------------------------------------------------- Chainer (NCHW)
CHAINER_NETS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "chainer_nets.py")


def chainer_train_save(chain, x: np.ndarray, folder: str, cls: str, steps: int = 3) -> str:  # type: ignore[no-untyped-def]
    """Train a few steps, save model.npz, ship the network code with a pyengine.json manifest."""
    import json
    import shutil

    import chainer
    import chainer.functions as F

    opt = chainer.optimizers.Adam(alpha=0.01)
    opt.setup(chain)
    y = labels(len(x))
    for _ in range(steps):
        chain.cleargrads()
        loss = F.softmax_cross_entropy(chain(x), y)
        loss.backward()
        opt.update()
    os.makedirs(folder, exist_ok=True)
    chainer.serializers.save_npz(os.path.join(folder, "model.npz"), chain)
    shutil.copy(CHAINER_NETS, os.path.join(folder, "net.py"))
    manifest = {
        "framework": "chainer",
        "module": "net.py",
        "class": cls,
        "weights": "model.npz",
        "inputs": [{"name": "x", "shape": [-1, *x.shape[1:]]}],
    }
    with open(os.path.join(folder, "pyengine.json"), "w") as f:
        json.dump(manifest, f)
    return folder


# ---------------------------------------------------------------- ONNX (NCHW), via onnx.helper
def _onnx_model(
    nodes, inits: dict[str, np.ndarray], x_shape, output: str, rank: int = 2, opset: int = 13
):  # type: ignore[no-untyped-def]
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        nodes,
        "pyengine-test",
        [
            helper.make_tensor_value_info(
                "x", TensorProto.FLOAT, [None if d == -1 else d for d in x_shape]
            )
        ],
        [helper.make_tensor_value_info(output, TensorProto.FLOAT, [None] * rank)],
        [
            numpy_helper.from_array(np.asarray(v, np.float32), k)
            for k, v in inits.items()
            if any(k in n.input for n in nodes)
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    onnx.checker.check_model(model)
    return model


def _onnx_run(model, x: np.ndarray) -> np.ndarray:  # type: ignore[no-untyped-def]
    import onnxruntime as ort

    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {"x": x})[0]


def _train_head(features: np.ndarray, w: np.ndarray, b: np.ndarray, steps: int = 20) -> None:
    """Softmax regression steps (numpy) on the last layer's inputs; updates w [K, N] and b."""
    y = labels(len(features))
    onehot = np.eye(w.shape[1])[y]
    for _ in range(steps):
        z = features @ w + b
        p = np.exp(z - z.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        g = (p - onehot) / len(features)
        w -= 0.5 * (features.T @ g)
        b -= 0.5 * g.sum(0)


def onnx_mlp(x: np.ndarray):  # type: ignore[no-untyped-def]
    """Gemm-Relu-MatMul/Add-Tanh-Gemm-Softmax; the classifier trained on the hidden features."""
    from onnx import helper

    rng = np.random.default_rng(3)
    p = {
        "w1": rng.standard_normal((32, MLP_FEATURES)) * 0.3,
        "b1": rng.standard_normal(32) * 0.1,
        "w2": rng.standard_normal((32, 32)) * 0.2,
        "b2": rng.standard_normal(32) * 0.1,
        "w3": np.zeros((32, MLP_CLASSES)),
        "b3": np.zeros(MLP_CLASSES),
    }
    nodes = [
        helper.make_node("Gemm", ["x", "w1", "b1"], ["h1"], transB=1, name="fc1"),
        helper.make_node("Relu", ["h1"], ["r1"], name="relu1"),
        helper.make_node("MatMul", ["r1", "w2"], ["m2"], name="fc2"),
        helper.make_node("Add", ["m2", "b2"], ["h2"], name="fc2_bias"),
        helper.make_node("Tanh", ["h2"], ["t2"], name="tanh2"),
        helper.make_node("Gemm", ["t2", "w3", "b3"], ["logits"], name="fc3"),
        helper.make_node("Softmax", ["logits"], ["probs"], axis=-1, name="softmax"),
    ]
    features = _onnx_run(
        _onnx_model(
            nodes[:5], {k: p[k] for k in ("w1", "b1", "w2", "b2")}, [-1, MLP_FEATURES], "t2"
        ),
        x,
    )
    _train_head(features, p["w3"], p["b3"])
    return _onnx_model(nodes, p, ["N", MLP_FEATURES], "probs")


def onnx_cnn(x: np.ndarray):  # type: ignore[no-untyped-def]
    """Conv-BN-Relu-MaxPool, depthwise Conv-BN-Clip, AvgPool, GlobalAvgPool, Gemm, Softmax.

    Batch norm statistics are measured on ``x`` (what training's running averages estimate) and
    the classifier is trained on the pooled features."""
    from onnx import helper

    rng = np.random.default_rng(4)
    c = 8
    p: dict[str, np.ndarray] = {
        "w1": rng.standard_normal((c, 3, 3, 3)) * 0.3,
        "b1": rng.standard_normal(c) * 0.1,
        "w2": rng.standard_normal((c, 1, 3, 3)) * 0.3,
        "fc_w": np.zeros((c, MLP_CLASSES)),
        "fc_b": np.zeros(MLP_CLASSES),
    }
    for i in (1, 2):
        p[f"g{i}"] = rng.uniform(0.5, 1.5, c)
        p[f"be{i}"] = rng.standard_normal(c) * 0.1
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
        helper.make_node(
            "BatchNormalization", ["c1", "g1", "be1", "m1", "v1"], ["n1"], epsilon=1e-5, name="bn1"
        ),
        helper.make_node("Relu", ["n1"], ["r1"], name="relu1"),
        helper.make_node(
            "MaxPool", ["r1"], ["p1"], kernel_shape=[2, 2], strides=[2, 2], name="pool1"
        ),
        helper.make_node("Conv", ["p1", "w2"], ["c2"], pads=[1, 1, 1, 1], group=c, name="dwconv2"),
        helper.make_node(
            "BatchNormalization", ["c2", "g2", "be2", "m2", "v2"], ["n2"], epsilon=1e-5, name="bn2"
        ),
        helper.make_node("Clip", ["n2", "lo", "hi"], ["r2"], name="relu6"),
        helper.make_node(
            "AveragePool",
            ["r2"],
            ["p2"],
            kernel_shape=[2, 2],
            strides=[1, 1],
            pads=[0, 0, 1, 1],
            count_include_pad=1,
            name="pool2",
        ),
        helper.make_node("GlobalAveragePool", ["p2"], ["gap"], name="gap"),
        helper.make_node("Flatten", ["gap"], ["flat"], axis=1, name="flatten"),
        helper.make_node("Gemm", ["flat", "fc_w", "fc_b"], ["logits"], name="fc"),
        helper.make_node("Softmax", ["logits"], ["probs"], axis=1, name="softmax"),
    ]
    p["lo"], p["hi"] = np.array(0.0), np.array(6.0)
    for i, (upto, conv_out) in enumerate(((1, "c1"), (5, "c2")), start=1):
        prefix = {k: v for k, v in p.items() if not k.startswith("fc")}
        out = _onnx_run(
            _onnx_model(nodes[:upto], prefix, [-1, 3, IMAGE, IMAGE], conv_out, rank=4), x
        )
        p[f"m{i}"], p[f"v{i}"] = out.mean((0, 2, 3)), out.var((0, 2, 3))
    features = _onnx_run(
        _onnx_model(
            nodes[:10],
            {k: v for k, v in p.items() if not k.startswith("fc")},
            [-1, 3, IMAGE, IMAGE],
            "flat",
        ),
        x,
    )
    _train_head(features, p["fc_w"], p["fc_b"])
    return _onnx_model(nodes, p, ["N", 3, IMAGE, IMAGE], "probs")


def onnx_save(model, path: str) -> str:  # type: ignore[no-untyped-def]
    import onnx

    onnx.save(model, path)
    return path


def check_backend_and_native(
    path: str, backend: str, reference, dst: str, shape: tuple[int, ...], **options
) -> None:  # type: ignore[no-untyped-def]
    """Through pyengine.load the framework backend gives ``reference``'s outputs (the framework
    called directly); the converted native model matches them within 1e-4 at batch 1 and 7."""
    import pyengine

    framework_model = pyengine.load(path, backend=backend, **options)
    assert framework_model.backend == backend
    pyengine.convert(path, dst, **options)
    native = pyengine.load(dst)
    assert native.backend == "native"
    assert [s.name for s in native.inputs] == [s.name for s in framework_model.inputs]
    for batch in (1, 7):
        x = data((batch, *shape), seed=batch)
        expected = np.asarray(reference(x))
        got = framework_model.predict(x)
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
        assert_close(native.predict(x), expected)
    auto = pyengine.load(path, **options)
    assert auto.backend == "native"
    x = data((3, *shape), seed=3)
    assert_close(auto.predict(x), np.asarray(reference(x)))
