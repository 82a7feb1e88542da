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

    spec = [tf.TensorSpec([None, *model.inputs[0].shape[1:]], tf.float32, name=model.inputs[0].name)]
    fn = tf.function(lambda x: model(x, training=False)).get_concrete_function(*spec)
    frozen = convert_variables_to_constants_v2(fn)
    with open(path, "wb") as f:
        f.write(frozen.graph.as_graph_def().SerializeToString())
    return path


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
    net.add(nn.Dense(32, activation="relu"), nn.Dense(32), nn.LeakyReLU(0.1),
            nn.Dense(32, activation="sigmoid"), nn.Dense(MLP_CLASSES))
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
    net.export(prefix, epoch=0)
    return prefix + "-symbol.json"


# ---------------------------------------------------------------- Chainer (NCHW)
CHAINER_NETS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "chainer_nets.py")


def chainer_train_save(chain, x: np.ndarray, folder: str, cls: str, steps: int = 3) -> str:  # type: ignore[no-untyped-def]
    """Train a few steps, save ``model.npz`` and ship the network code with a pyengine.json manifest."""
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
    manifest = {"framework": "chainer", "module": "net.py", "class": cls, "weights": "model.npz",
                "inputs": [{"name": "x", "shape": [-1, *x.shape[1:]]}]}
    with open(os.path.join(folder, "pyengine.json"), "w") as f:
        json.dump(manifest, f)
    return folder
