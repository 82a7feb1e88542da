"""Keras files: a conv net and an MLP built and briefly trained here, saved as .keras archives and
legacy .h5 files, run by TensorFlow through pyengine.load (backend "tensorflow") and converted to
the native engine (pyengine.convert and the CLI), compared with Keras's own predictions; damaged
files are clear errors naming the file."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

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
    keras_mlp,
    keras_train,
    tf_quiet,
)

import pyengine

pytestmark = [
    pytest.mark.frameworks,
    # Keras warns that .h5 is a legacy format when it saves one; that is the file under test.
    pytest.mark.filterwarnings("ignore::UserWarning"),
]
tf_quiet()
tf = pytest.importorskip(
    "tensorflow",
    reason="the tensorflow extra (pip install 'pyengine[tensorflow]') is not installed",
)

SHAPES = {"mlp": (MLP_FEATURES,), "cnn": (IMAGE, IMAGE, 3), "flatten": (IMAGE, IMAGE, 3)}


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """{kind: (keras model, {suffix: path})}, each model saved as .keras and as .h5."""
    d = tmp_path_factory.mktemp("keras")
    out = {}
    for kind, build in (("mlp", keras_mlp), ("cnn", keras_cnn), ("flatten", keras_flatten_cnn)):
        model = build()
        keras_train(model, data((32, *SHAPES[kind])))
        paths = {}
        for suffix in (".keras", ".h5"):
            paths[suffix] = str(d / f"{kind}{suffix}")
            model.save(paths[suffix])
        out[kind] = (model, paths)
    return out


@pytest.mark.parametrize("suffix", [".keras", ".h5"])
@pytest.mark.parametrize("kind", ["mlp", "cnn", "flatten"])
def test_keras_file_backend_and_native_match_keras(saved, tmp_path, kind, suffix) -> None:  # type: ignore[no-untyped-def]
    model, paths = saved[kind]

    def reference(x: np.ndarray) -> np.ndarray:
        return model(x, training=False).numpy()

    check_backend_and_native(paths[suffix], "tensorflow", reference,
                             str(tmp_path / f"{kind}.pyem"), SHAPES[kind])


def test_keras_names_are_the_models(saved) -> None:  # type: ignore[no-untyped-def]
    model, paths = saved["cnn"]
    native = pyengine.load(paths[".keras"], backend="native")
    framework = pyengine.load(paths[".h5"], backend="tensorflow")
    assert [s.name for s in native.inputs] == ["image"] == [s.name for s in framework.inputs]
    assert [s.name for s in native.outputs] == list(model.output_names)
    assert [s.name for s in framework.outputs] == list(model.output_names)
    assert native.inputs[0].shape == (-1, IMAGE, IMAGE, 3)


def test_cli_converts_a_keras_file(saved, tmp_path) -> None:  # type: ignore[no-untyped-def]
    model, paths = saved["mlp"]
    dst = tmp_path / "mlp.pyem"
    run = subprocess.run([sys.executable, "-m", "pyengine", "convert", paths[".h5"], "-o", str(dst)],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    x = data((4, MLP_FEATURES))
    assert_close(pyengine.load(str(dst)).predict(x), model(x, training=False).numpy())


def _damaged(tmp_path, saved) -> list[tuple[str, str]]:  # type: ignore[no-untyped-def]
    """(path, what the message must say) for damaged copies of the CNN's files."""
    paths = saved["cnn"][1]
    blobs = {s: Path(p).read_bytes() for s, p in paths.items()}
    cases = []
    trunc_k = tmp_path / "trunc.keras"
    trunc_k.write_bytes(blobs[".keras"][: len(blobs[".keras"]) // 2])
    cases.append((str(trunc_k), "not a readable zip"))
    trunc_h = tmp_path / "trunc.h5"
    trunc_h.write_bytes(blobs[".h5"][: len(blobs[".h5"]) // 2])
    cases.append((str(trunc_h), "Keras cannot load this model"))
    text = tmp_path / "notes.h5"
    text.write_bytes(b"just some text, not HDF5\n")
    cases.append((str(text), "does not start with the HDF5 signature"))
    flipped = bytearray(blobs[".keras"])
    with zipfile.ZipFile(paths[".keras"]) as z:
        info = z.getinfo("model.weights.h5")
    middle = info.header_offset + 30 + len(info.filename) + info.compress_size // 2
    flipped[middle] ^= 0xFF
    crc = tmp_path / "crc.keras"
    crc.write_bytes(bytes(flipped))
    cases.append((str(crc), "damaged Keras archive"))
    no_config = tmp_path / "noconfig.keras"
    with zipfile.ZipFile(no_config, "w") as z:
        z.writestr("metadata.json", "{}")
    cases.append((str(no_config), "without config.json"))
    return cases


def test_damaged_keras_files_are_clear_errors(saved, tmp_path) -> None:  # type: ignore[no-untyped-def]
    for path, reason in _damaged(tmp_path, saved):
        for backend in ("tensorflow", "auto"):
            with pytest.raises(pyengine.ModelFormatError) as info:
                pyengine.load(path, backend=backend)
            assert path in str(info.value) and reason in str(info.value), (path, str(info.value))


def test_weights_only_h5_is_refused_naming_it(saved, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A weights file (model.save_weights) holds no architecture: Keras's reason is passed on."""
    path = str(tmp_path / "cnn.weights.h5")
    saved["cnn"][0].save_weights(path)
    with pytest.raises(pyengine.ModelFormatError, match=r"cnn\.weights\.h5': Keras cannot load"):
        pyengine.convert(path, str(tmp_path / "w.pyem"))


def test_keras_embedding_takes_int32_ids(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A keyword-style text model: int32 ids into an Embedding, Conv1D, pooling; the input keeps
    its dtype natively and on the backend."""
    import keras
    from keras import layers

    ids = keras.Input((10,), dtype="int32", name="ids")
    h = layers.Conv1D(8, 3, activation="relu")(layers.Embedding(30, 8)(ids))
    model = keras.Model(ids, layers.Dense(3, activation="softmax")(layers.GlobalAveragePooling1D()(h)))
    path = str(tmp_path / "emb.keras")
    model.save(path)
    x = np.random.default_rng(0).integers(0, 30, (4, 10)).astype(np.int32)
    for backend in ("native", "tensorflow"):
        loaded = pyengine.load(path, backend=backend)
        assert [(s.name, s.dtype) for s in loaded.inputs] == [("ids", "int32")]
        assert_close(loaded.predict(x), model(x).numpy())


def test_keras_transformer_block_converts_natively(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Embedding, MultiHeadAttention (its Einsums), LayerNormalization, a GELU Dense on 3-D inputs
    (Tensordot's run-time reshapes, the GELU's Erfc) and mean pooling: all native."""
    import keras
    from keras import layers

    ids = keras.Input((12,), dtype="int32", name="ids")
    h = layers.Embedding(50, 16)(ids)
    h = layers.LayerNormalization()(h + layers.MultiHeadAttention(num_heads=2, key_dim=8)(h, h))
    h = layers.LayerNormalization()(h + layers.Dense(16)(layers.Dense(32, activation="gelu")(h)))
    model = keras.Model(ids, layers.Dense(3)(layers.GlobalAveragePooling1D()(h)))
    path = str(tmp_path / "bert.keras")
    model.save(path)
    native = pyengine.load(path, backend="native")
    for batch in (1, 4):
        x = np.random.default_rng(batch).integers(0, 50, (batch, 12)).astype(np.int32)
        assert_close(native.predict(x), model(x).numpy())
