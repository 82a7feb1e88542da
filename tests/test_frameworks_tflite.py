"""TFLite: small Keras models and tf.functions of each family (classification, detection/
segmentation decoders, keyword spotting, a small transformer, shape plumbing) converted with
tf.lite.TFLiteConverter here, converted natively from the flatbuffer and compared with
tf.lite.Interpreter; quantized, unknown-op and damaged files are refused naming what was found."""

from __future__ import annotations

import re
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
from framework_models import (
    IMAGE,
    MLP_FEATURES,
    assert_close,
    data,
    keras_cnn,
    keras_flatten_cnn,
    keras_lrn_cnn,
    keras_mlp,
    keras_train,
    tf_quiet,
)

import pyengine

pytestmark = [pytest.mark.frameworks,
              # TFLiteConverter warns about its own deprecations while converting.
              pytest.mark.filterwarnings("ignore::UserWarning")]
tf_quiet()
tf = pytest.importorskip(
    "tensorflow",
    reason="the tensorflow extra (pip install 'pyengine[tensorflow]') is not installed",
)
pytest.importorskip("tflite", reason="the tflite extra (pip install 'pyengine[tflite]') is not installed")


def native_input(path: str) -> str:
    """The name of a one-input model's input (its serving signature's)."""
    return str(pyengine.load(path, backend="tflite").inputs[0].name)


def write(path: Path, converter: Any) -> str:
    path.write_bytes(converter.convert())
    return str(path)


def from_keras(path: Path, model: Any) -> str:
    return write(path, tf.lite.TFLiteConverter.from_keras_model(model))


def from_function(path: Path, fn: Callable[..., Any], *specs: Any) -> str:
    concrete = tf.function(fn).get_concrete_function(*specs)
    return write(path, tf.lite.TFLiteConverter.from_concrete_functions([concrete]))


def interpret(path: str, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The outputs tf.lite.Interpreter gives, by name (the serving signature's, else the
    tensors')."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        it = tf.lite.Interpreter(model_path=path)
    if it.get_signature_list():
        return dict(it.get_signature_runner()(**feed))
    # No signature (from_concrete_functions): tensors by their own names.
    ins = {d["name"]: d["index"] for d in it.get_input_details()}
    for name, x in feed.items():
        it.resize_tensor_input(ins[name], list(x.shape))
    it.allocate_tensors()
    for name, x in feed.items():
        it.set_tensor(ins[name], x)
    it.invoke()
    return {d["name"]: it.get_tensor(d["index"]) for d in it.get_output_details()}


def check(path: str, inputs: Callable[[int], dict[str, np.ndarray]], batches=(1, 3), tol=1e-4) -> None:  # type: ignore[no-untyped-def]
    """The native model converted from ``path`` matches the interpreter at each batch size."""
    native = pyengine.load(path, backend="native")
    assert native.backend == "native"
    for batch in batches:
        feed = inputs(batch)
        got = native.predict(feed if len(feed) > 1 else next(iter(feed.values())))
        expected = interpret(path, feed)
        got = got if isinstance(got, dict) else {native.outputs[0].name: got}
        assert sorted(got) == sorted(expected)
        for name, e in expected.items():
            assert_close(np.asarray(got[name]), e, tol)


@pytest.fixture(scope="module")
def keras_files(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    d = tmp_path_factory.mktemp("tflite")
    out = {}
    for kind, build, shape in (("mlp", keras_mlp, (MLP_FEATURES,)), ("cnn", keras_cnn, (IMAGE, IMAGE, 3)),
                               ("flatten", keras_flatten_cnn, (IMAGE, IMAGE, 3)),
                               ("lrn", keras_lrn_cnn, (IMAGE, IMAGE, 3))):
        model = build()
        keras_train(model, data((32, *shape)))
        out[kind] = (model, from_keras(d / f"{kind}.tflite", model), shape)
    return out


@pytest.mark.parametrize("kind", ["mlp", "cnn", "flatten", "lrn"])
def test_keras_classifiers_match_interpreter_and_keras(keras_files, tmp_path, kind) -> None:  # type: ignore[no-untyped-def]
    model, path, shape = keras_files[kind]
    check(path, lambda b: {native_input(path): data((b, *shape), seed=b)})
    # The converted file, the tflite backend and auto (native) agree with Keras itself.
    native = pyengine.load(pyengine.convert(path, str(tmp_path / "m.pyem")))
    backend = pyengine.load(path, backend="tflite")
    auto = pyengine.load(path)
    assert (backend.backend, auto.backend) == ("tflite", "native")
    assert [s.name for s in native.inputs] == [s.name for s in backend.inputs]
    assert [s.name for s in native.outputs] == [s.name for s in backend.outputs] == ["output_0"]
    x = data((4, *shape), seed=9)
    expected = model(x, training=False).numpy()
    assert_close(native.predict(x), expected)
    assert_close(backend.predict(x), expected)
    assert_close(auto.predict(x), expected)


def test_segmentation_decoder(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Conv2DTranspose, bilinear and nearest upsampling, a skip concat, a sigmoid head."""
    import keras
    from keras import layers
    inp = keras.Input((16, 16, 3), name="image")
    e1 = layers.Conv2D(8, 3, padding="same", activation="relu")(inp)
    e2 = layers.Conv2D(16, 3, strides=2, padding="same", activation="relu")(e1)
    e3 = layers.Conv2D(16, 3, strides=2, padding="same", activation="relu6")(e2)
    u2 = layers.UpSampling2D(2, interpolation="bilinear")(e3)
    d2 = layers.Concatenate()([u2, e2])
    d1 = layers.Conv2DTranspose(8, 3, strides=2, padding="same", activation="relu")(d2)
    d1 = layers.Add()([d1, e1])
    n = layers.UpSampling2D(2, interpolation="nearest")(layers.MaxPooling2D(2)(d1))
    out = layers.Conv2D(2, 1, activation="sigmoid")(layers.Concatenate()([d1, n]))
    model = keras.Model(inp, out)
    path = from_keras(tmp_path / "seg.tflite", model)
    check(path, lambda b: {"image": data((b, 16, 16, 3), seed=b)})


def test_detector_with_two_inputs_and_two_outputs(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A YOLO-style head: a strided backbone, a nearest-upsampled neck concatenated with a skip,
    box offsets (sigmoid, reshaped per anchor) added to a second input of anchors, and class
    scores (softmax); both outputs keep the signature's names."""
    import keras
    from keras import layers

    image = keras.Input((16, 16, 3), name="image")
    anchors = keras.Input((16, 4), name="anchors")
    c1 = layers.Conv2D(8, 3, strides=2, padding="same", activation="swish")(image)
    c2 = layers.Conv2D(16, 3, strides=2, padding="same", activation="relu")(c1)
    neck = layers.Concatenate()([layers.UpSampling2D(2)(c2), c1])
    neck = layers.MaxPooling2D(2)(layers.Conv2D(8, 1, activation="relu")(neck))
    boxes = layers.Reshape((16, 4))(layers.Conv2D(4, 1, activation="sigmoid")(neck))
    boxes = layers.Add(name="boxes")([boxes, anchors])
    scores = layers.Softmax(name="scores")(layers.Reshape((16, 3))(layers.Conv2D(3, 1)(neck)))
    model = keras.Model([image, anchors], [boxes, scores])
    path = from_keras(tmp_path / "det.tflite", model)
    check(path, lambda b: {"image": data((b, 16, 16, 3), seed=b), "anchors": data((b, 16, 4), seed=b + 10)})
    native, backend = pyengine.load(path, backend="native"), pyengine.load(path, backend="tflite")
    assert [s.name for s in native.outputs] == [s.name for s in backend.outputs]
    assert sorted(s.name for s in native.inputs) == ["anchors", "image"]


def test_keyword_spotting_conv1d(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Conv1D (EXPAND_DIMS / RESHAPE around CONV_2D), batch norm, global pooling, dense."""
    import keras
    from keras import layers
    inp = keras.Input((49, 10), name="mfcc")
    h = layers.Conv1D(16, 5, strides=2, activation="relu")(inp)
    h = layers.BatchNormalization()(h)
    h = layers.SeparableConv1D(16, 3, padding="same", activation="relu")(h)
    h = layers.GlobalMaxPooling1D()(h)
    out = layers.Dense(12, activation="softmax")(h)
    model = keras.Model(inp, out)
    keras_train(model, data((24, 49, 10)))
    check(from_keras(tmp_path / "kws.tflite", model), lambda b: {"mfcc": data((b, 49, 10), seed=b)})


def test_small_transformer_with_token_inputs(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Embedding (GATHER on int32 ids), multi-head attention (BATCH_MATMUL, TRANSPOSE), layer norm,
    GELU, a residual MLP, mean pooling."""
    import keras
    from keras import layers
    ids = keras.Input((12,), dtype="int32", name="ids")
    h = layers.Embedding(50, 16)(ids)
    a = layers.MultiHeadAttention(num_heads=2, key_dim=8)(h, h)
    h = layers.LayerNormalization()(h + a)
    m = layers.Dense(32, activation="gelu")(h)
    h = layers.LayerNormalization()(h + layers.Dense(16)(m))
    out = layers.Dense(3)(layers.GlobalAveragePooling1D()(h))
    model = keras.Model(ids, out)
    path = from_keras(tmp_path / "bert.tflite", model)
    rng = np.random.default_rng(0)
    check(path, lambda b: {"ids": rng.integers(0, 50, (b, 12)).astype(np.int32)})


def test_shape_and_movement_ops(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Strided slices (steps, shrink, new axis, ellipsis, negative bounds) on run-time tensors,
    split, unpack/pack, mirror and constant pads, transpose, align-corners resize, reductions,
    elementwise math."""
    def fn(x):  # type: ignore[no-untyped-def]
        a = x[:, ::2, 1:-1, :]                 # step 2, negative end
        b = x[:, 3, ..., tf.newaxis]           # shrink, ellipsis, new axis
        c = x[..., ::-1]                       # reversed channels
        parts = tf.split(x, 3, axis=3)
        rows = tf.unstack(x[:, :2], axis=1)
        stacked = tf.stack(rows, axis=2)
        p = tf.pad(a, [[0, 0], [1, 1], [2, 0], [0, 0]], mode="REFLECT")
        r = tf.compat.v1.image.resize_bilinear(x, [9, 5], align_corners=True)
        t = tf.transpose(x, [0, 2, 1, 3])
        s = tf.reduce_sum(tf.square(x - 0.5), axis=[1, 2]) + tf.reduce_max(x, axis=[1, 2])
        e = tf.exp(-tf.abs(parts[0])) * tf.math.rsqrt(tf.abs(parts[1]) + 1.0) - tf.maximum(parts[2], 0.1)
        return (tf.reduce_mean(p, axis=[1, 2]) + tf.reduce_mean(b, axis=[1, 2, 3])[:, None]
                + tf.reduce_mean(c, axis=[1, 2]) + tf.reduce_mean(stacked, axis=[1, 2]) + s
                + tf.reduce_mean(r, axis=[1, 2]) + tf.reduce_mean(t, axis=[1, 2])
                + tf.reduce_mean(e, axis=[1, 2, 3])[:, None])

    path = from_function(tmp_path / "shape.tflite", fn, tf.TensorSpec([None, 7, 6, 3], tf.float32, name="x"))
    check(path, lambda b: {native_input(path): data((b, 7, 6, 3), seed=b)})


def test_more_builtin_ops(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Nearest resize, depth/space moves, SLICE, SQUEEZE, SPLIT_V, PADV2, DIV, LOG_SOFTMAX,
    ARG_MAX and CAST, comparisons, ELU, PRELU, MINIMUM, POW, unary math, RELU6 and clipping."""
    import keras
    prelu = keras.layers.PReLU(alpha_initializer=keras.initializers.Constant(0.25))

    def flat(t):  # type: ignore[no-untyped-def]
        return tf.reshape(tf.cast(t, tf.float32), [tf.shape(t)[0], -1])

    def fn(x):  # type: ignore[no-untyped-def]
        pos = tf.abs(x) + 1.0
        a, b = tf.split(x, [1, 3], axis=3)
        return tf.concat([flat(t) for t in (
            tf.compat.v1.image.resize_nearest_neighbor(x, [12, 10], half_pixel_centers=True),
            tf.nn.depth_to_space(x, 2), tf.nn.space_to_depth(x, 2), x / pos,
            tf.slice(x, [0, 1, 2, 0], [-1, 3, 4, 2]),
            tf.squeeze(tf.reduce_min(x, axis=[1], keepdims=True), axis=1),
            tf.concat([b, a], 3), tf.pad(x, [[0, 0], [1, 0], [0, 2], [0, 0]], constant_values=0.5),
            tf.nn.log_softmax(x), tf.argmax(x, axis=-1), tf.cast(x > 0.2, tf.float32),
            tf.cast(tf.less_equal(x, a), tf.float32), tf.nn.elu(x), prelu(x),
            tf.minimum(x, 0.3), tf.pow(pos, 1.5), tf.sqrt(pos), tf.square(x), tf.floor(x),
            tf.math.ceil(x), tf.round(x * 3.0), tf.sin(x), tf.cos(x), tf.math.log(pos),
            tf.nn.relu6(x * 4.0), tf.clip_by_value(x, -1.0, 1.0))], axis=1)

    path = from_function(tmp_path / "more.tflite", fn, tf.TensorSpec([None, 6, 8, 4], tf.float32, name="x"))
    check(path, lambda b: {native_input(path): data((b, 6, 8, 4), seed=b)})


def test_float16_weights_convert(tmp_path, keras_files) -> None:  # type: ignore[no-untyped-def]
    """Post-training float16 quantization stores float16 weights read through DEQUANTIZE: they
    become float32 constants."""
    model = keras_files["cnn"][0]
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.target_spec.supported_types = [tf.float16]
    path = write(tmp_path / "f16.tflite", converter)
    check(path, lambda b: {"image": data((b, IMAGE, IMAGE, 3), seed=b)})


@pytest.mark.parametrize("mode", ["int8", "dynamic"])
def test_quantized_model_is_refused_naming_what_was_found(tmp_path, keras_files, mode) -> None:  # type: ignore[no-untyped-def]
    """Full int8 (a representative data set) and dynamic-range (int8 weights of layers past
    1,024 weights, float activations) quantization: refused as quantized, with the ops named;
    auto falls back to the interpreter, saying why."""
    import keras
    if mode == "int8":
        model, shape, op = keras_files["cnn"][0], (IMAGE, IMAGE, 3), "CONV_2D"
    else:
        inp = keras.Input((32,), name="x")
        model = keras.Model(inp, keras.layers.Dense(5)(keras.layers.Dense(64, activation="relu")(inp)))
        shape, op = (32,), "FULLY_CONNECTED"
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if mode == "int8":
        converter.representative_dataset = lambda: ([data((1, *shape), seed=i)] for i in range(8))
    path = write(tmp_path / f"{mode}.tflite", converter)
    with pytest.raises(pyengine.UnsupportedOpsError) as info:
        pyengine.convert(path, str(tmp_path / "q.pyem"))
    msg = str(info.value)
    assert msg.startswith(f"'{path}': a quantized tflite model: ")
    assert re.search(r"\d+ int8 tensors with quantization scales", msg), msg
    assert re.search(rf"{op} \(operators? \d", msg) and "quantized tflite import is not supported yet" in msg
    with pytest.warns(pyengine.FrameworkFallbackWarning, match="a quantized tflite model"):
        auto = pyengine.load(path)
    assert auto.backend == "tflite"
    x = data((2, *shape))
    assert_close(auto.predict(x), next(iter(interpret(path, {auto.inputs[0].name: x}).values())))


def test_unknown_builtin_op_is_refused_naming_op_and_index(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = from_function(tmp_path / "cumsum.tflite", lambda x: tf.math.cumsum(tf.nn.relu(x), axis=1) * 2.0,
                         tf.TensorSpec([None, 6], tf.float32, name="x"))
    with pytest.raises(pyengine.UnsupportedOpsError, match=r"operator 1 '[^']+' \(CUMSUM\)") as info:
        pyengine.convert(path, str(tmp_path / "c.pyem"))
    assert info.value.ops[0][1] == "CUMSUM" and len(info.value.ops) == 1


def _damaged(tmp_path: Path, good: str) -> list[tuple[str, str]]:
    blob = Path(good).read_bytes()
    cases = []
    for name, content, reason in (
        ("half.tflite", blob[: len(blob) // 2], "corrupted or truncated TFLite file"),
        ("short.tflite", blob[:6], "is not a TensorFlow Lite model"),
        ("text.tflite", b"not a flatbuffer at all" * 4, "is not a TensorFlow Lite model"),
        ("empty.tflite", b"", "is not a TensorFlow Lite model"),
    ):
        p = tmp_path / name
        p.write_bytes(content)
        cases.append((str(p), reason))
    rng = np.random.default_rng(0)
    for i in range(20):  # random bytes over the tables (the weights of the end are left alone)
        b = bytearray(blob)
        for pos in rng.integers(8, min(len(b), 2048), 16):
            b[pos] = int(rng.integers(0, 256))
        p = tmp_path / f"flip{i}.tflite"
        p.write_bytes(bytes(b))
        cases.append((str(p), ""))
    return cases


def test_damaged_tflite_files_are_clear_errors(tmp_path, keras_files) -> None:  # type: ignore[no-untyped-def]
    """Truncated, foreign and byte-flipped files: a ModelFormatError naming the file (or, for a
    flip that leaves a readable graph, a model that converts or names an unsupported op), never
    another exception."""
    refused = 0
    for path, reason in _damaged(tmp_path, keras_files["cnn"][1]):
        try:
            pyengine.convert(path, str(tmp_path / "d.pyem"))
        except pyengine.ModelFormatError as exc:
            refused += 1
            assert path in str(exc) and reason in str(exc), str(exc)
        else:
            assert reason == "", path  # a flip the file survives
    assert refused >= 4


def test_input_shapes_option(tmp_path, keras_files) -> None:  # type: ignore[no-untyped-def]
    path = keras_files["cnn"][1]
    native = pyengine.load(pyengine.convert(path, str(tmp_path / "b2.pyem"),
                                            input_shapes={"image": [2, IMAGE, IMAGE, 3]}))
    assert native.inputs[0].shape == (2, IMAGE, IMAGE, 3)
    with pytest.raises(pyengine.InputShapeUnknownError, match=r"\['nope'\].*\['image'\]"):
        pyengine.convert(path, str(tmp_path / "no.pyem"), input_shapes={"nope": [1]})
